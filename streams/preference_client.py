"""The agent side of a preference store: follow its shards, route by Thompson sampling, log each
choice.

``PreferenceClient(agent, variants)`` reads the compacted ``preference-store`` topic
in the background, merges the newest complete publication of each of the agent's
shards (they are counts, so the merge is exact) and swaps the merged store in
atomically. ``choose_variant(context)``
draws a variant by Thompson sampling over the thumbs posteriors of the context's
segment and logs the choice with its probability as an ``AgentFeedbackEvent`` of
kind ``route`` (the propensity an off-policy evaluation needs).
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from types import TracebackType
from typing import Any

from confluent_kafka import Message

from adaptloop.learners.preferences import PreferenceStore, Publications, segment_of
from adaptloop.schemas.agents import AgentFeedbackEvent, PreferenceSnapshot
from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import ConfigError, DecodeError
from adaptloop.schemas.topics import PREFERENCE_STORE
from adaptloop.streams.admin import wait_for_broker
from adaptloop.streams.connection import ClientSettings, ConnectionLike, KafkaConnection
from adaptloop.streams.follower import Follower
from adaptloop.streams.producer import EventProducer

log = logging.getLogger(__name__)


class PreferenceClient:
    """Typical use (needs a broker and a worker)::

    with PreferenceClient("support", ["prompt-a", "prompt-b"], bootstrap="localhost:9092") as
    router:
        variant, probability = router.choose_variant({"tenant": "acme"}, session_id="s1")

    ``exploration`` spreads that share of the traffic evenly over the variants, whatever the
    feedback says, so that off-policy estimates of other policies (``adaptloop evaluate routing``)
    have decisions to rest on.
    """

    def __init__(
        self,
        agent: str,
        variants: list[str],
        *,
        bootstrap: ConnectionLike,
        prefix: str = "",
        segment_keys: list[str] | None = None,
        seed: int | None = None,
        producer: EventProducer | None = None,
        exploration: float = 0.0,
    ) -> None:
        if not 0.0 <= exploration < 1.0:
            raise ConfigError(
                f"exploration {exploration} must be in [0, 1): the share of traffic spread evenly"
            )
        self.agent, self.variants = agent, list(variants)
        self.exploration = exploration
        self.segment_keys = list(segment_keys or [])
        self.rng = random.Random(seed)
        self.producer = (
            producer if producer is not None else EventProducer(bootstrap, topic_prefix=prefix)
        )
        self._owns_producer = producer is None
        self.store = PreferenceStore()
        self.updates = 0  # feedback counted in the store being served
        self._publications = Publications()
        self.problem: ConfigError | None = None  # set if the store is split by other segment keys
        topic = PREFERENCE_STORE.full_name(prefix)
        wait_for_broker(bootstrap)
        with KafkaConnection.of(bootstrap).reader(topic) as reader:
            partitions = reader.wait_for_partitions(
                30, f"no topic {topic}: start a worker ('adaptloop worker')"
            )
        self._follower = Follower(bootstrap, topic, name=f"router-{agent}", on_records=self._read)
        self._follower.follow(partitions)

    @classmethod
    def from_settings(
        cls, agent: str, variants: list[str], settings: ClientSettings | None = None, **options: Any
    ) -> PreferenceClient:
        """A router for ``agent`` in the loop that ``settings`` (default: read from the environment)
        describe."""
        settings = settings if settings is not None else ClientSettings()
        return cls(
            agent,
            variants,
            bootstrap=settings.connection(),
            prefix=settings.topic_prefix,
            **options,
        )

    def _read(self, messages: list[Message]) -> None:
        """Take in a batch of the store's records (in the follower's thread): the agent's
        publications, merged."""
        changed = False
        for message in messages:
            if message.value() is None:
                continue  # a part deleted since: compaction drops it
            try:
                snapshot: PreferenceSnapshot = decode(PREFERENCE_STORE, message.value())  # type: ignore[assignment]
            except DecodeError as error:
                log.error(
                    "unreadable preference snapshot at offset %d: %s", message.offset(), error
                )
                continue
            if snapshot.agent != self.agent:
                continue
            if snapshot.segment_keys is not None and snapshot.segment_keys != self.segment_keys:
                self.problem = ConfigError(
                    f"the preference store of {self.agent!r} is split by segment_keys "
                    f"{snapshot.segment_keys}, "
                    f"this client by {self.segment_keys}: give it the worker's segment_keys"
                )
                log.error("%s", self.problem)
                continue
            changed |= self._publications.add(snapshot)
        if changed:
            merged = PreferenceStore()
            parts = self._publications.of(self.agent)
            for part in parts:
                merged.merge(self.agent, part.segments)
            merged.fit()
            self.store, self.updates = merged, sum(part.updates for part in parts if part.part == 0)

    def choose_variant(
        self,
        context: dict[str, str],
        *,
        session_id: str,
        trace_id: str | None = None,
        tenant: str | None = None,
    ) -> tuple[str, float]:
        """Thompson-sample a variant for ``context``; log the route with its probability; return
        both.

        Raises :class:`~adaptloop.schemas.errors.ConfigError` if the worker splits the store by
        other ``segment_keys`` than this client (it would route every context with the wrong
        segment's feedback).
        """
        if self.problem is not None:
            raise self.problem
        store = self.store  # one read: a swap meanwhile does not mix two stores
        segment = segment_of(
            {"tenant": tenant or "*", "agent": self.agent, **context}, self.segment_keys
        )
        variant, probability = store.choose_variant(
            segment, self.agent, self.variants, self.rng, exploration=self.exploration
        )
        self.producer.send(
            AgentFeedbackEvent(
                trace_id=trace_id or uuid.uuid4().hex,
                run_id=session_id,
                session_id=session_id,
                agent=self.agent,
                variant=variant,
                step=0,
                kind="route",
                value=probability,
                action="route",
                tenant=tenant,
            )
        )
        return variant, probability

    def wait_for_updates(self, count: int, timeout: float = 30.0) -> bool:
        """Block until the served store counts ``count`` pieces of feedback (for tests and
        demos)."""
        deadline = time.monotonic() + timeout
        while self.updates < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return self.updates >= count

    def close(self) -> None:
        self._follower.close()
        if self._owns_producer:
            self.producer.flush()

    def __enter__(self) -> PreferenceClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
