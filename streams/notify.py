"""Alerts that reach people: guardrail alerts and model alerts (drift, health) posted to webhooks.

The worker's ``notify`` role (started when the ``webhooks`` setting lists any) reads
``guardrail-alerts`` and ``drift-alerts`` and posts each alert to every webhook that wants its
topic, as Slack-compatible JSON (``{"text": ...}``, which Slack, Mattermost and Teams' incoming
webhooks take) or as the alert's own JSON.

- **Retries**: a connection error, a timeout, a 429 or a 5xx is retried with exponential backoff
  (``retries`` times); a webhook that still fails is logged and counted
  (``adaptloop_webhook_deliveries_total`` with ``result="failed"``), and the stream goes on: one
  dead webhook does not hold back the others.
- **Deduplication**: the same alert (topic, rule or detector and signal, subject) is sent once per
  ``dedup_seconds``; repeats are counted (``result="duplicate"``).
- **Rate limiting**: at most ``max_per_minute`` posts per webhook; alerts beyond it are not lost:
  they are counted and summarised in one message when the webhook may be posted to again.

Offsets are committed after the posts of each batch: an alert is posted at least once (a restart may
post the alerts of the last batch again, unless deduplicated).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, OrderedDict
from collections.abc import Callable
from typing import Literal, Protocol

import httpx
import orjson
from pydantic import BaseModel, ConfigDict, Field

from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import encode
from adaptloop.schemas.system import DriftAlert, GuardrailAlert
from adaptloop.schemas.topics import DRIFT_ALERTS, GUARDRAIL_ALERTS, Topic
from adaptloop.streams.connection import ConnectionLike, KafkaConnection
from adaptloop.streams.consumer import EventConsumer
from adaptloop.streams.deadletter import DeadLetters
from adaptloop.streams.metrics import WEBHOOK_DELIVERIES
from adaptloop.streams.producer import EventProducer

log = logging.getLogger(__name__)

ALERT_TOPICS: dict[str, Topic] = {topic.name: topic for topic in (GUARDRAIL_ALERTS, DRIFT_ALERTS)}
RETRYABLE = {408, 425, 429, 500, 502, 503, 504}
AlertTopic = Literal["guardrail-alerts", "drift-alerts"]
ALERT_TOPIC_NAMES: tuple[AlertTopic, ...] = ("guardrail-alerts", "drift-alerts")


class Webhook(BaseModel):
    """One place alerts are posted to (setting ``webhooks``: a list of these)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    url: str = Field(pattern=r"^https?://", description="Where to POST (an incoming-webhook URL).")
    format: Literal["slack", "json"] = Field(
        "slack",
        description="slack: {'text': ...} (Slack, Mattermost, Teams); json: the alert's own JSON.",
    )
    topics: list[AlertTopic] = Field(
        default_factory=lambda: list(ALERT_TOPIC_NAMES), description="Which alerts it wants."
    )
    max_per_minute: int = Field(
        30, ge=1, description="Posts per minute at most; more are summarised."
    )
    dedup_seconds: float = Field(
        600.0, ge=0, description="The same alert is posted once in this long."
    )
    retries: int = Field(5, ge=0, description="Retries of a failed post, with exponential backoff.")
    backoff_seconds: float = Field(
        1.0, gt=0, description="The first retry's wait (doubling after each)."
    )
    timeout_seconds: float = Field(10.0, gt=0, description="Timeout of one post.")


def alert_key(topic: str, alert: Event) -> tuple[str, ...]:
    """What makes two alerts the same alert."""
    if isinstance(alert, GuardrailAlert):
        return (topic, alert.rule, alert.subject)
    assert isinstance(alert, DriftAlert)
    return (topic, alert.kind, alert.detector, alert.signal, alert.model)


def alert_text(alert: Event) -> str:
    """One line a person reads."""
    if isinstance(alert, GuardrailAlert):
        where = ", ".join(
            f"{k} {v}" for k, v in (("agent", alert.agent), ("tenant", alert.tenant)) if v
        )
        return (
            f":warning: guardrail {alert.rule} on {alert.subject}: {alert.observed:g} > "
            f"{alert.threshold:g}"
        ) + (f" ({where})" if where else "")
    assert isinstance(alert, DriftAlert)
    moved = f" {alert.direction}" if alert.direction else ""
    return (
        f":chart_with_downwards_trend: model {alert.model} {alert.kind}: {alert.signal}{moved} "
        f"({alert.detector}; version {alert.model_version or '-'})"
    )


class Channel:
    """One webhook: deduplication, a token bucket and delivery with retries."""

    def __init__(
        self, webhook: Webhook, client: httpx.Client, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.webhook, self.client, self.clock = webhook, client, clock
        # alert key -> when it was posted
        self.sent: OrderedDict[tuple[str, ...], float] = OrderedDict()
        self.tokens, self.refilled = float(webhook.max_per_minute), clock()
        # alerts over the rate limit, by kind, for the next summary
        self.held: Counter[str] = Counter()

    def offer(self, topic: str, alert: Event) -> str:
        """Post ``alert`` if it is new and the rate allows; return what happened."""
        if topic not in self.webhook.topics:
            return "not_wanted"
        now = self.clock()
        key = alert_key(topic, alert)
        last = self.sent.get(key)
        if last is not None and now - last < self.webhook.dedup_seconds:
            WEBHOOK_DELIVERIES.labels("duplicate").inc()
            return "duplicate"
        self._refill(now)
        if self.held and self.tokens >= 2:  # the summary of what the limit held back goes first
            self._post(self._summary(), "summary")
        if self.tokens < 1:
            self.held[key[1]] += 1
            WEBHOOK_DELIVERIES.labels("rate_limited").inc()
            return "rate_limited"
        self.sent[key] = now
        self.sent.move_to_end(key)
        while len(self.sent) > 10_000:
            self.sent.popitem(last=False)
        return self._post(self._payload(topic, alert), "delivered")

    def flush_held(self) -> None:
        """Post the summary of held alerts once the rate allows (called between batches)."""
        self._refill(self.clock())
        if self.held and self.tokens >= 1:
            self._post(self._summary(), "summary")

    def _refill(self, now: float) -> None:
        rate = self.webhook.max_per_minute / 60.0
        self.tokens = min(
            float(self.webhook.max_per_minute), self.tokens + (now - self.refilled) * rate
        )
        self.refilled = now

    def _summary(self) -> dict:
        text = f"{sum(self.held.values())} more alerts held back by the rate limit: " + ", ".join(
            f"{kind} {count}" for kind, count in self.held.most_common()
        )
        self.held.clear()
        return {"text": text} if self.webhook.format == "slack" else {"summary": text}

    def _payload(self, topic: str, alert: Event) -> dict:
        if self.webhook.format == "slack":
            return {"text": alert_text(alert)}
        return {"topic": topic, "alert": orjson.loads(encode(alert))}

    def _post(self, payload: dict, success: str) -> str:
        self.tokens -= 1
        wait = self.webhook.backoff_seconds
        for attempt in range(self.webhook.retries + 1):
            try:
                response = self.client.post(
                    self.webhook.url, json=payload, timeout=self.webhook.timeout_seconds
                )
                if response.status_code < 300:
                    WEBHOOK_DELIVERIES.labels(success).inc()
                    return success
                if response.status_code not in RETRYABLE:
                    why = f"HTTP {response.status_code}"
                    break
                why = f"HTTP {response.status_code}"
            except httpx.HTTPError as error:
                why = f"{type(error).__name__}: {error}"
            if attempt < self.webhook.retries:
                WEBHOOK_DELIVERIES.labels("retried").inc()
                time.sleep(wait)
                wait *= 2
        log.error(
            "webhook %s: not delivered (%s); the alert stays on its topic",
            _safe(self.webhook.url),
            why,
        )
        WEBHOOK_DELIVERIES.labels("failed").inc()
        return "failed"


def _safe(url: str) -> str:
    """A webhook URL without its path (which often holds the secret token)."""
    return "/".join(url.split("/")[:3]) + "/…"


class NotifySettings(Protocol):
    """What the notify role reads of the worker's settings (:class:`adaptloop.settings.Settings` has
    it)."""

    group: str
    webhooks: list[Webhook]


class AlertNotifier:
    """The notify role: alerts from Kafka to webhooks."""

    @classmethod
    def from_settings(cls, settings: NotifySettings, connection: KafkaConnection) -> AlertNotifier:
        """The notifier of the worker ``settings`` describe, its topics prefixed as ``connection``
        says."""
        return cls(
            connection,
            settings.webhooks,
            prefix=connection.topic_prefix,
            group=f"{settings.group}-notify",
        )

    def __init__(
        self,
        connection: ConnectionLike,
        webhooks: list[Webhook],
        *,
        prefix: str = "",
        group: str = "adaptloop-notify",
    ):
        self.client = httpx.Client()
        self.channels = [Channel(webhook, self.client) for webhook in webhooks]
        producer = EventProducer(connection, topic_prefix=prefix)
        self.consumer = EventConsumer(
            connection,
            group,
            list(ALERT_TOPICS.values()),
            dead_letters=DeadLetters(producer, "notify"),
            prefix=prefix,
        )
        self.outcomes: Counter[str] = Counter()

    def step(self, timeout: float = 0.5) -> int:
        records = self.consumer.poll(500, timeout)
        for record in records:
            for channel in self.channels:
                self.outcomes[channel.offer(record.topic.name, record.event)] += 1
        for channel in self.channels:
            channel.flush_held()
        if records:
            self.consumer.commit()
        return len(records)

    def run(self, stop: threading.Event) -> None:
        try:
            while not stop.is_set():
                self.step()
        finally:
            self.consumer.close()
            self.client.close()
