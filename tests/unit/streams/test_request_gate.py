"""The serving gate refuses what no route should read: headers past their limit, a body that never
comes whole."""

from __future__ import annotations

import asyncio
import time

import orjson

from adaptloop.streams.serve import RequestGate, RequestLimits


async def _answer(
    gate: RequestGate, headers: list[tuple[bytes, bytes]], chunks: list[bytes]
) -> tuple[int, dict]:
    """Send a POST through ``gate``: ``chunks`` of its body, then nothing more (the client
    stalls)."""
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/v1/outcomes",
        "headers": headers,
        "query_string": b"",
    }
    pending = [{"type": "http.request", "body": chunk, "more_body": True} for chunk in chunks]

    async def receive() -> dict:
        if pending:
            return pending.pop(0)
        await asyncio.sleep(3600)  # a client that declared more than it sends
        raise AssertionError("never")

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    await gate(scope, receive, send)
    body = b"".join(
        message.get("body", b"") for message in sent if message["type"] == "http.response.body"
    )
    return sent[0]["status"], orjson.loads(body)


async def _app(scope, receive, send) -> None:
    raise AssertionError("the route must not be reached")


def test_headers_past_the_limit_are_refused_with_431():
    gate = RequestGate(_app, RequestLimits(max_header_bytes=1024))
    headers = [(b"content-type", b"application/json"), (b"x-big", b"x" * 2000)]
    status, answer = asyncio.run(_answer(gate, headers, [b"{}"]))
    assert status == 431 and answer["error"] == "HeadersTooLarge"
    assert answer["detail"] == "the headers may take at most 1,024 bytes (these: 2,033)"


def test_a_body_that_does_not_come_whole_in_time_is_answered_408():
    gate = RequestGate(_app, RequestLimits(read_seconds=0.5))
    headers = [(b"content-type", b"application/json"), (b"content-length", b"100")]
    started = time.monotonic()
    status, answer = asyncio.run(_answer(gate, headers, [b"{"]))
    assert status == 408 and answer["error"] == "RequestTimeout"
    assert answer["detail"] == "the body did not come whole within 0.5 s (1 bytes came)"
    assert time.monotonic() - started < 30  # the gate's own limit, not the client's 3,600 s
