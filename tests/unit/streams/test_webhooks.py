"""Webhook delivery against a real HTTP server on 127.0.0.1: retries until it answers, the same
alert once, at most max_per_minute posts with the rest summarised, never a lost alert without a
count."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import httpx
import orjson
import pytest

from adaptloop.schemas import DriftAlert, GuardrailAlert
from adaptloop.streams.notify import Channel, Webhook


class _Receiver(BaseHTTPRequestHandler):
    failures_left = 0
    bodies: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = orjson.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if type(self).failures_left > 0:
            type(self).failures_left -= 1
            self.send_response(503)
        else:
            type(self).bodies.append(body)
            self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def receiver():
    _Receiver.failures_left, _Receiver.bodies = 0, []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hooks/secret-token", _Receiver
    server.shutdown()


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _guardrail(subject: str, rule: str = "tool_loop") -> GuardrailAlert:
    return GuardrailAlert(rule=rule, subject=subject, agent="support", observed=5.0, threshold=4.0)


def test_a_failing_webhook_is_retried_until_it_answers(receiver):
    url, state = receiver
    state.failures_left = 2
    channel = Channel(Webhook(url=url, backoff_seconds=0.01), httpx.Client())
    assert channel.offer("guardrail-alerts", _guardrail("s1")) == "delivered"
    assert state.bodies == [{"text": ":warning: guardrail tool_loop on s1: 5 > 4 (agent support)"}]


def test_a_webhook_that_never_answers_fails_after_its_retries_and_the_next_alert_still_goes(
    receiver,
):
    url, state = receiver
    state.failures_left = 3
    channel = Channel(Webhook(url=url, retries=2, backoff_seconds=0.01), httpx.Client())
    assert channel.offer("guardrail-alerts", _guardrail("s1")) == "failed"
    # the 4th attempt overall
    assert channel.offer("guardrail-alerts", _guardrail("s2")) == "delivered"
    assert [b["text"].split(" on ")[1][:2] for b in state.bodies] == ["s2"]


def test_the_same_alert_is_posted_once_per_window_and_json_carries_the_alert(receiver):
    url, state = receiver
    clock = _Clock()
    channel = Channel(Webhook(url=url, format="json", dedup_seconds=600), httpx.Client(), clock)
    drift = DriftAlert(model="churn", detector="ADWIN", signal="shadow_error", direction="rose")
    assert [channel.offer("drift-alerts", drift) for _ in range(3)] == [
        "delivered",
        "duplicate",
        "duplicate",
    ]
    clock.now += 601
    assert channel.offer("drift-alerts", drift) == "delivered"
    # another alert: not a duplicate
    assert channel.offer("guardrail-alerts", _guardrail("s1")) == "delivered"
    assert [b["alert"].get("signal") for b in state.bodies] == [
        "shadow_error",
        "shadow_error",
        None,
    ]
    assert state.bodies[0]["topic"] == "drift-alerts"


def test_over_the_rate_limit_alerts_are_held_and_summarised_not_lost(receiver):
    url, state = receiver
    clock = _Clock()
    channel = Channel(Webhook(url=url, max_per_minute=3), httpx.Client(), clock)
    results = [channel.offer("guardrail-alerts", _guardrail(f"s{i}")) for i in range(10)]
    assert results == ["delivered"] * 3 + ["rate_limited"] * 7
    clock.now += 60  # the bucket refills
    channel.flush_held()
    assert len(state.bodies) == 4
    assert state.bodies[-1] == {"text": "7 more alerts held back by the rate limit: tool_loop 7"}


def test_a_webhook_only_gets_the_topics_it_wants(receiver):
    url, state = receiver
    channel = Channel(Webhook(url=url, topics=["drift-alerts"]), httpx.Client())
    assert channel.offer("guardrail-alerts", _guardrail("s1")) == "not_wanted"
    assert state.bodies == []
