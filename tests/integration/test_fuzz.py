"""Hypothesis against a real worker: contract-valid extreme events and hostile bytes on every input
topic.

Hypothesis draws batches of records (decisions with extreme features and times, agent feedback and
preferences with Unicode names at their length limits, forged model commands and clock ticks, and
bytes that are no event at all); they go to a running worker's topics with the position Kafka gave
each. Then every record is accounted for exactly: no role stopped, each hostile record is one dead
letter, each decision is a training example or a dead letter (never two joined examples), the
learner learned each joined example once, each piece of feedback is counted in a store or
quarantined once, and each role's memory stays bounded. Seeded (derandomized) and bounded in CI;
``ADAPTLOOP_FUZZ_EXAMPLES`` runs longer.
"""

from __future__ import annotations

import os
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from confluent_kafka import Producer
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from adaptloop.learners.preferences import Publications
from adaptloop.learners.spec import LearnerSpec
from adaptloop.schemas import (
    AgentFeedbackEvent,
    ClockTick,
    DeadLetter,
    ModelCommand,
    ModelVersion,
    OutcomeEvent,
    PredictionEvent,
    PreferenceEvent,
    PreferenceSnapshot,
    TrainingExample,
)
from adaptloop.schemas.base import Event
from adaptloop.schemas.codec import encode
from adaptloop.schemas.topics import (
    AGENT_FEEDBACK,
    DEAD_LETTERS,
    JOIN_CLOCK,
    MODEL_COMMANDS,
    MODEL_UPDATES,
    OUTCOMES,
    PREDICTIONS,
    PREFERENCE_STORE,
    PREFERENCES,
    TRAINING_EXAMPLES,
    Topic,
    topic_for,
)
from adaptloop.streams.join_agent import INPUTS as JOIN_INPUTS
from adaptloop.streams.producer import DEFAULT_PRODUCER_CONFIG
from adaptloop.streams.versions import read_all

from .loop_helpers import loop_settings, no_role_stopped, running_worker, wait_until_read

pytestmark = pytest.mark.kafka

EXAMPLES = int(os.environ.get("ADAPTLOOP_FUZZ_EXAMPLES", "40"))
MODEL = "fuzz"
INPUTS = (
    PREDICTIONS,
    OUTCOMES,
    AGENT_FEEDBACK,
    PREFERENCES,
    MODEL_COMMANDS,
    JOIN_CLOCK,
    TRAINING_EXAMPLES,
)
NOW = datetime.now(UTC)
MAX_RSS = 1_500 * 1024 * 1024

# -- what Hypothesis draws
# ---------------------------------------------------------------------------

names = st.text(
    st.characters(codec="utf-8", exclude_categories=("Cc", "Cs")), min_size=1, max_size=256
)
numbers = st.one_of(
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(2**63), 2**63 - 1),
    st.sampled_from([0.0, -0.0, 5e-324, 1.7976931348623157e308, -1.7976931348623157e308]),
)
# Recent, far in the past, or further ahead than the worker takes (those must be dead letters).
times = st.one_of(
    st.timedeltas(timedelta(seconds=-600), timedelta(0)).map(lambda d: NOW + d),
    st.datetimes(datetime(1970, 1, 2), datetime(2000, 1, 1), timezones=st.just(UTC)),
    st.datetimes(datetime(2100, 1, 1), datetime(2199, 12, 31), timezones=st.just(UTC)),
)


def future(moment: datetime) -> bool:
    return moment > NOW + timedelta(days=1)


@st.composite
def decisions(draw) -> tuple[str, list[Event]]:
    at = draw(times)
    prediction = PredictionEvent(
        decision_id="?",
        model=MODEL,
        model_version="v0",
        features=draw(st.dictionaries(names, numbers, max_size=8)),
        timestamp=at,
    )
    outcome = OutcomeEvent(
        decision_id="?", label=draw(st.booleans()), source=draw(names), timestamp=at
    )
    return "decision", [prediction, outcome]


@st.composite
def feedback(draw) -> tuple[str, list[Event]]:
    kind = draw(st.sampled_from(["thumbs", "rating", "score", "step", "comment", "route"]))
    value = {
        "thumbs": st.sampled_from([True, False, 1.0, -1.0]),
        "rating": st.floats(allow_nan=False, allow_infinity=False),
        "score": st.floats(allow_nan=False, allow_infinity=False),
        "route": st.floats(min_value=1e-9, max_value=1.0),
    }.get(kind, st.none())
    event = AgentFeedbackEvent(
        trace_id=draw(names),
        run_id=draw(names),
        session_id=draw(names),
        agent=draw(st.one_of(names, st.just("support"))),
        variant=draw(st.one_of(names, st.sampled_from(["a", "b"]))),
        step=draw(st.integers(0, 2**63 - 1)),
        kind=kind,
        value=draw(value),
        comment=draw(st.text(max_size=10_000, min_size=1)) if kind == "comment" else None,
        action=draw(names) if kind == "step" else None,
        cost=draw(st.floats(0, 1e12)),
        tokens=draw(st.integers(0, 2**63 - 1)),
        latency_ms=draw(st.floats(0, 1e12)),
        tenant=draw(st.one_of(st.none(), names)),
        user_id=draw(st.one_of(st.none(), names)),
        timestamp=draw(times),
    )
    return "feedback", [event]


@st.composite
def preferences(draw) -> tuple[str, list[Event]]:
    chosen = draw(names)
    rejected = draw(names.filter(lambda name: name != chosen))
    context = draw(st.dictionaries(names, st.text(max_size=100), max_size=4))
    event = PreferenceEvent(
        context=context,
        chosen=chosen,
        rejected=rejected,
        annotator=draw(names),
        timestamp=draw(times),
    )
    return "feedback", [event]


@st.composite
def commands(draw) -> tuple[str, list[Event]]:
    version = draw(st.text("0123456789abcdef", min_size=16, max_size=16))
    command = ModelCommand(
        model=MODEL, action="rollback", to_version=version, actor=draw(names), reason=draw(names)
    )
    return "command", [command]


@st.composite
def ticks(draw) -> tuple[str, list[Event]]:
    moment = draw(
        st.one_of(
            st.timedeltas(timedelta(seconds=-60), timedelta(0)).map(lambda d: NOW + d),
            st.datetimes(datetime(2100, 1, 1), datetime(2199, 12, 31), timezones=st.just(UTC)),
        )
    )
    return "tick", [ClockTick(source=draw(names)[:512], timestamp=moment)]


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=50),
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=20), inner, max_size=5)
    ),
    max_leaves=30,
)
hostile_bytes = st.one_of(
    st.binary(min_size=1, max_size=5_000),
    json_values.map(orjson.dumps),
    st.dictionaries(
        st.sampled_from(["decision_id", "model", "label", "kind", "agent", "features"]), json_values
    ).map(orjson.dumps),
    st.integers(1, 20_000).map(lambda depth: b"[" * depth),
)


@st.composite
def hostile(draw) -> tuple[str, list[tuple[Topic, bytes]]]:
    return "hostile", [(draw(st.sampled_from(INPUTS)), draw(hostile_bytes))]


records = st.one_of(decisions(), feedback(), preferences(), commands(), ticks(), hostile())

# -- sending, with the position of every record
# ------------------------------------------------------------


@dataclass
class Sent:
    """Every record sent, by its position in Kafka: (topic, partition, offset) -> (what, its id)."""

    producer: Producer
    prefix: str
    at: dict[tuple[str, int, int], tuple[str, str, Event | None]] = field(default_factory=dict)
    decisions: int = 0

    def send(
        self, what: str, topic: Topic, key: bytes, value: bytes, ident: str, event: Event | None
    ) -> None:
        def delivered(error, message) -> None:
            assert error is None, error
            self.at[(message.topic(), message.partition(), message.offset())] = (what, ident, event)

        while True:
            try:
                self.producer.produce(
                    topic.full_name(self.prefix), value, key, on_delivery=delivered
                )
                break
            except BufferError:
                self.producer.poll(0.1)
        self.producer.poll(0)

    def batch(self, drawn: list[tuple[str, list]]) -> None:
        for what, items in drawn:
            if what == "hostile":
                for topic, value in items:
                    self.send(what, topic, b"hostile", value, "", None)
                continue
            if what == "decision":
                self.decisions += 1
                ident = f"d{self.decisions}"
                items = [item.model_copy(update={"decision_id": ident}) for item in items]
            else:
                ident = ""
            for event in items:
                topic = topic_for(event)
                self.send(what, topic, topic.key_of(event), encode(event), ident, event)


# -- the test
# ----------------------------------------------------------------------------------------


def test_nothing_hypothesis_sends_stops_the_worker_and_every_record_is_accounted_for(
    kafka_bootstrap, tmp_path
):
    spec = LearnerSpec(
        name=MODEL, recipe="logistic", min_examples=1, checkpoint_every=100, checkpoint_seconds=1
    )
    settings = loop_settings(kafka_bootstrap, tmp_path / "home", [spec], partitions=2)
    prefix = settings.topic_prefix
    producer = Producer(
        {
            **{
                k: v
                for k, v in DEFAULT_PRODUCER_CONFIG.items()
                if k != "delivery.report.only.error"
            },
            "bootstrap.servers": kafka_bootstrap,
        }
    )
    sent = Sent(producer, prefix)

    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(records, min_size=1, max_size=15))
    def send(drawn):
        sent.batch(drawn)

    with running_worker(settings, tmp_path / "worker.log") as worker:
        send()
        assert producer.flush(60) == 0
        outputs = _settle(settings, sent, worker)
        rss = _role_memory(worker.process.pid)
    letters, examples, versions, snapshots = outputs
    assert no_role_stopped(tmp_path / "worker.log")
    assert rss and all(size < MAX_RSS for size in rss.values()), rss
    kinds = Counter(what for what, _, _ in sent.at.values())
    # the run drew each kind of record
    assert kinds["hostile"] and kinds["decision"] and kinds["feedback"]

    by_position = Counter((d.source_topic, d.partition, d.offset) for d in letters)
    assert max(by_position.values(), default=0) == 1, "a record dead-lettered twice"
    lettered = set(by_position)
    for position, (what, _, event) in sent.at.items():
        # no event, or a rollback to a version the model never had
        if what in ("hostile", "command"):
            assert position in lettered, (what, position)
        elif what == "tick":  # ahead of the worker's clock: refused; the others move the clock
            assert (position in lettered) == future(event.timestamp), event
        elif future(event.timestamp):  # refused before it reaches a clock, a session or a quota
            assert position in lettered, event

    # Decisions: each a training example or a dead letter; joined at most once; each joined one
    # learned once (or a dead letter of the learner's, if the model failed on it).
    decided = {e.decision_id for e in examples}
    decided |= {
        ident for p, (what, ident, _) in sent.at.items() if what == "decision" and p in lettered
    }
    assert decided == {f"d{n}" for n in range(1, sent.decisions + 1)}
    joined = Counter(e.decision_id for e in examples if e.status == "joined")
    assert max(joined.values(), default=0) == 1
    assert _learned(versions) == len(joined) - _learner_letters(settings, sent, letters)

    # Feedback: each thumbs, rating, score and preference counted in a store or quarantined, once.
    counted, refused = _feedback(sent, lettered)
    assert _store_updates(snapshots) + refused == counted
    print(
        f"fuzz: {dict(kinds)}; {len(letters)} dead letters, {len(joined)} joined, "
        f"{_learned(versions)} learned, "
        f"{counted} feedback ({refused} quarantined); role memory MB "
        f"{ ({k: v >> 20 for k, v in rss.items()}) }"
    )


COUNTED = {"thumbs", "rating", "score"}


def _learned(versions: list[ModelVersion]) -> int:
    return max((v.examples_seen for v in versions), default=0)


def _learner_letters(settings, sent: Sent, letters: list[DeadLetter]) -> int:
    """Joined examples the learner dead-lettered (the model failed on them), not counting hostile
    bytes."""
    name = TRAINING_EXAMPLES.full_name(settings.topic_prefix)
    return sum(
        1
        for d in letters
        if d.source_topic == name and sent.at.get((name, d.partition, d.offset)) is None
    )


def _feedback(sent: Sent, lettered: set[tuple[str, int, int]]) -> tuple[int, int]:
    """(the pieces of feedback a store counts: thumbs, ratings, scores and preferences; those of
    them quarantined as dead letters)."""
    counted = refused = 0
    for position, (what, _, event) in sent.at.items():
        if what == "feedback" and not (
            isinstance(event, AgentFeedbackEvent) and event.kind not in COUNTED
        ):
            counted += 1
            refused += position in lettered
    return counted, refused


def _store_updates(snapshots: list[PreferenceSnapshot]) -> int:
    publications = Publications()
    for snapshot in snapshots:
        publications.add(snapshot)
    return sum(parts[0].updates for parts in publications.complete.values())


def _read(settings) -> tuple[list, list, list, list]:
    def events(topic: Topic, kind: type) -> list:
        return [
            e
            for e in read_all(settings.bootstrap_address, topic, settings.topic_prefix)
            if isinstance(e, kind)
        ]

    return (
        events(DEAD_LETTERS, DeadLetter),
        events(TRAINING_EXAMPLES, TrainingExample),
        events(MODEL_UPDATES, ModelVersion),
        events(PREFERENCE_STORE, PreferenceSnapshot),
    )


def _settle(settings, sent: Sent, worker, timeout: float = 300.0) -> tuple[list, list, list, list]:
    """Read the outputs until every record is accounted for (or the timeout), then once more."""
    deadline = time.monotonic() + timeout
    while True:
        letters, examples, versions, _ = _read(settings)
        lettered = {(d.source_topic, d.partition, d.offset) for d in letters}
        decided = {e.decision_id for e in examples} | {
            ident for p, (what, ident, _) in sent.at.items() if what == "decision" and p in lettered
        }
        joined = sum(1 for e in examples if e.status == "joined")
        if (
            all(
                p in lettered
                for p, (what, _, _) in sent.at.items()
                if what in ("hostile", "command")
            )
            and len(decided) == sent.decisions
            and _learned(versions) + _learner_letters(settings, sent, letters) >= joined
        ) or time.monotonic() > deadline:
            # Every role has read all there is (the join's own repartitioned records too, then what
            # it wrote for the learner): what they wrote is committed with what they read, so the
            # counts are final.
            wait_until_read(settings, "join", list(JOIN_INPUTS), worker)
            wait_until_read(settings, "learner", [TRAINING_EXAMPLES, MODEL_COMMANDS], worker)
            wait_until_read(settings, "agentops", [AGENT_FEEDBACK, PREFERENCES], worker)
            # A group's offsets commit with its transaction, but the transaction's markers reach the
            # output partitions a moment later: until then a committed reader stops short of the
            # last snapshots. Read until the feedback is accounted for (or the deadline: then the
            # test's assertion says what is missing).
            settle_by = time.monotonic() + 60
            while True:
                outputs = _read(settings)
                letters, snapshots = outputs[0], outputs[3]
                counted, refused = _feedback(
                    sent, {(d.source_topic, d.partition, d.offset) for d in letters}
                )
                if _store_updates(snapshots) + refused >= counted or time.monotonic() > settle_by:
                    return outputs
                time.sleep(0.5)
        worker.check_alive()
        time.sleep(1)


def _role_memory(worker_pid: int) -> dict[str, int]:
    """Resident memory in bytes of each role process of the worker (Linux)."""
    sizes = {}
    for child in Path(f"/proc/{worker_pid}/task/{worker_pid}/children").read_text().split():
        status = Path(f"/proc/{child}/status").read_text()
        name = next(line.split()[1] for line in status.splitlines() if line.startswith("Name:"))
        sizes[name] = 1024 * int(
            next(line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:"))
        )
    return sizes
