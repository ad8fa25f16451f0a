"""``adaptloop ingest``: a dataset pushed through the real loop, as if a service had served it.

Each row becomes a decision: a ``PredictionEvent`` with the row's features (``model_version``
``ingest``: the loop learns from it but never scores it as a version's production) and, after a
delay drawn from a stated distribution, an ``OutcomeEvent`` with the row's label. Then it waits
until every decision has ended in the join (joined, defaulted, expired or rejected), the model has
published a version that learned them, and the archive holds them, and takes a snapshot: what an
analyst needs to evaluate a model on real data.

Ordered mode makes the loop learn the rows in the file's order, so its progressive metrics equal
River's run in process over the file: every decision id is chosen to fall on one partition of the
inputs (the join reads a partition in order) and every outcome comes the same delay after its
prediction.
"""

from __future__ import annotations

import heapq
import itertools
import random
import re
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from adaptloop.schemas.codec import decode
from adaptloop.schemas.errors import ConfigError, DecodeError, InvalidInput, TimedOut
from adaptloop.schemas.inference import OutcomeEvent, PredictionEvent, TrainingExample
from adaptloop.schemas.system import ModelVersion
from adaptloop.schemas.topics import MODEL_UPDATES, PREDICTIONS, TRAINING_EXAMPLES, partition_for
from adaptloop.settings import Settings
from adaptloop.snapshots.archive import count_archived
from adaptloop.snapshots.snapshot import create_snapshot, snapshot_name
from adaptloop.streams.producer import EventProducer
from adaptloop.streams.versions import read_all

INGEST_VERSION = "ingest"
"""The ``model_version`` of ingested decisions: no version of the loop served them."""

ENDED = ("joined", "defaulted", "expired", "rejected")  # a decision ends once with one of these

SENDING, LEARNING, ARCHIVING, SNAPSHOT = (
    "sending decisions and outcomes",
    "decisions ended in the join and learned",
    "training examples archived",
    "taking a snapshot",
)
"""The steps of an ingest, as :data:`Progress` is told them."""


@dataclass(frozen=True)
class Delay:
    """How long after its prediction a decision's outcome is sent: ``fixed:S``, ``exp:MEAN`` or
    ``uniform:LOW,HIGH`` (seconds).

    >>> Delay.parse("uniform:0,2").kind, Delay.parse("0").draw(random.Random(1))
    ('uniform', 0.0)
    """

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Delay:
        match = re.fullmatch(r"(?:(fixed|exp|uniform):)?([0-9.]+)(?:,([0-9.]+))?", text.strip())
        if match is None or (match[1] == "uniform") != (match[3] is not None):
            raise ConfigError(
                f"delay {text!r}: write fixed:SECONDS, exp:MEAN_SECONDS or uniform:LOW,HIGH"
            )
        return cls(match[1] or "fixed", float(match[2]), float(match[3] or 0))

    def draw(self, rng: random.Random) -> float:
        if self.kind == "exp":
            return rng.expovariate(1 / self.a) if self.a > 0 else 0.0
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return self.a


def dataset_rows(source: str, label: str | None = None) -> Iterator[tuple[dict[str, Any], Any]]:
    """(features, label) of each row of ``source``: ``river:<Dataset>`` (e.g. ``river:Phishing``),
    or a CSV or Parquet file whose ``label`` column holds the labels (every other column is a
    feature)."""
    if source.startswith("river:"):
        from river import datasets

        dataset = getattr(datasets, source.removeprefix("river:"), None)
        if not isinstance(dataset, type):
            known = ", ".join(name for name in dir(datasets) if name[:1].isupper())
            raise ConfigError(f"{source}: no such River dataset (River has: {known})")
        yield from dataset()
        return
    path = Path(source)
    if not path.is_file():
        raise ConfigError(
            f"{source}: no such file (give a CSV or Parquet file, or river:<Dataset>)"
        )
    if path.suffix == ".parquet":
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    else:
        import pyarrow.csv as csv

        # An empty cell is a missing feature, in text columns too.
        table = csv.read_csv(path, convert_options=csv.ConvertOptions(strings_can_be_null=True))
    if label is None or label not in table.column_names:
        raise ConfigError(
            f"{source}: name the label column with --label (the columns: "
            f"{', '.join(table.column_names)})"
        )
    labels = table.column(label).to_pylist()
    features = table.drop_columns([label])
    yield from zip(features.to_pylist(), labels, strict=True)


@dataclass
class IngestResult:
    decisions: int
    statuses: Counter[str] = field(default_factory=Counter)
    version: ModelVersion | None = None  # the first version that learned every joined decision
    archived: int = 0  # training examples of this run in the archive
    snapshot: Path | None = None
    seconds: float = 0.0  # from the first decision sent to the end (snapshot included)
    sent_seconds: float = 0.0  # until every decision and outcome was sent
    # until every decision had ended in the join and a version had learned them
    learned_seconds: float = 0.0
    # until the archive held them (it writes every archive_flush_seconds)
    archived_seconds: float = 0.0


Progress = Callable[[str, int, int | None], None]
"""Told ``(step, done, total)``: at each step's start (``done`` 0), and as it goes (``total`` None:
not known)."""


def _quiet(step: str, done: int, total: int | None) -> None:
    pass


class _Outputs:
    """This run's training examples and the model's versions, read from where the topics ended at
    its start."""

    def __init__(self, settings: Settings, run: str, model: str) -> None:
        self.run, self.model = f"{run}-", model
        self.prefix = settings.topic_prefix
        connection = settings.connection()
        self.topics = {
            topic.full_name(self.prefix): topic for topic in (TRAINING_EXAMPLES, MODEL_UPDATES)
        }
        self.readers = [connection.reader(name, start="end") for name in self.topics]
        for reader in self.readers:
            reader.assign()
        self.statuses: Counter[str] = Counter()
        self.versions: list[ModelVersion] = []

    def poll(self) -> None:
        messages = [message for reader in self.readers for message in reader.poll(0.1, 5000)]
        for message in messages:
            name = message.topic()
            if name is None:
                continue
            try:
                event = decode(self.topics[name], message.value())
            except DecodeError:
                continue  # not this run's business; the worker dead-letters its own inputs
            if isinstance(event, TrainingExample) and event.decision_id.startswith(self.run):
                self.statuses[event.status] += 1
            elif isinstance(event, ModelVersion) and event.model == self.model:
                self.versions.append(event)

    @property
    def ended(self) -> int:
        """This run's decisions that have ended in the join."""
        return sum(self.statuses[status] for status in ENDED)

    @property
    def learned(self) -> int:
        """This run's decisions the join passed on to the learner (joined, or with a default
        label)."""
        return self.statuses["joined"] + self.statuses["defaulted"]

    def version_with(self, examples: int) -> ModelVersion | None:
        """The first version read that had learned ``examples`` examples."""
        return next((v for v in self.versions if v.examples_seen >= examples), None)

    def close(self) -> None:
        for reader in self.readers:
            reader.close()


def ingest(
    settings: Settings,
    source: str,
    model: str,
    *,
    label: str | None = None,
    rate: float | None = None,
    delay: Delay = Delay("fixed", 0.0),
    ordered: bool = False,
    limit: int | None = None,
    seed: int = 0,
    snapshot: bool = True,
    timeout: float = 600.0,
    progress: Progress = _quiet,
) -> IngestResult:
    """Push ``source`` through the loop as decisions of ``model`` and wait until all are accounted
    for.

    The result times each stage apart: sending, the loop's learning, and the archive's writing
    (which waits for its next flush, up to ``archive_flush_seconds``), so a slow archive is not
    taken for a slow loop.
    """
    _check(settings, model, delay, ordered)
    run = f"ingest-{uuid.uuid4().hex[:8]}"
    partitions = _input_partitions(settings) if ordered else None
    outputs = _Outputs(settings, run, model)
    before = _learned_before(settings, model)
    started = time.monotonic()
    deadline, result = _Deadline(started + timeout, timeout), IngestResult(decisions=0)
    try:
        decisions = _decisions(dataset_rows(source, label), source, run, model, limit, partitions)
        rng = random.Random(seed)
        result.decisions = _send(settings, decisions, rate, delay, rng, outputs, progress, limit)
        result.sent_seconds = time.monotonic() - started
        _wait_for_joins(outputs, result.decisions, deadline, progress)
        result.version = _wait_for_learning(outputs, before, result.decisions, deadline, progress)
        result.statuses = outputs.statuses
        result.learned_seconds = time.monotonic() - started
        total = outputs.statuses.total()
        result.archived = _wait_for_archive(
            settings, run, result.version, total, deadline, progress
        )
        result.archived_seconds = time.monotonic() - started
        outputs.poll()  # late outcomes that came meanwhile
        result.statuses = outputs.statuses
        if snapshot:
            result.snapshot = _snapshot(settings, progress)
    finally:
        outputs.close()
    result.seconds = time.monotonic() - started
    return result


def _check(settings: Settings, model: str, delay: Delay, ordered: bool) -> None:
    if model not in settings.specs:
        raise ConfigError(
            f"no learner spec for model {model!r} in the settings: the worker would not learn it"
        )
    if ordered and delay.kind != "fixed":
        raise ConfigError("--ordered needs a fixed delay: random delays reorder the outcomes")


def _input_partitions(settings: Settings) -> int:
    """How many partitions ``predictions`` has (ordered mode puts every decision on the first)."""
    topic = PREDICTIONS.full_name(settings.topic_prefix)
    with settings.connection().reader(topic) as reader:
        return len(
            reader.wait_for_partitions(30, f"no topic {topic}: start a worker (adaptloop worker)")
        )


def _learned_before(settings: Settings, model: str) -> int:
    """How many examples ``model`` had learned before this run (its versions' highest count)."""
    versions = read_all(settings.connection(), MODEL_UPDATES, settings.topic_prefix)
    return max(
        (v.examples_seen for v in versions if isinstance(v, ModelVersion) and v.model == model),
        default=0,
    )


def _decisions(
    rows: Iterable[tuple[dict[str, Any], Any]],
    source: str,
    run: str,
    model: str,
    limit: int | None,
    partitions: int | None,
) -> Iterator[tuple[PredictionEvent, OutcomeEvent]]:
    """The prediction and the outcome of each row, up to ``limit``; a row the contracts refuse says
    where it is."""
    for i, (features, y) in enumerate(itertools.islice(rows, limit)):
        decision = _decision_id(run, i, partitions)
        try:
            prediction = PredictionEvent(
                decision_id=decision, model=model, model_version=INGEST_VERSION, features=features
            )
            outcome = OutcomeEvent(decision_id=decision, label=y, source="adaptloop-ingest")
        except ValueError as error:
            raise InvalidInput(f"{source}, row {i + 1}: {error}") from None
        yield prediction, outcome


def _send(
    settings: Settings,
    decisions: Iterator[tuple[PredictionEvent, OutcomeEvent]],
    rate: float | None,
    delay: Delay,
    rng: random.Random,
    outputs: _Outputs,
    progress: Progress,
    limit: int | None,
) -> int:
    """Send each prediction (``rate`` a second at most) and its outcome ``delay`` later; return how
    many."""
    progress(SENDING, 0, limit)
    started, sent = time.monotonic(), 0
    due: list[tuple[float, int, OutcomeEvent]] = []  # outcomes by when they are due
    with EventProducer.from_settings(settings) as producer:
        for i, (prediction, outcome) in enumerate(decisions):
            if rate:
                time.sleep(max(0.0, started + i / rate - time.monotonic()))
            producer.send(prediction)
            heapq.heappush(due, (time.monotonic() + delay.draw(rng), i, outcome))
            _send_due(producer, due, time.monotonic())
            sent += 1
            if i % 1000 == 999:
                outputs.poll()  # keeps its consumers in touch with the broker
                progress(SENDING, sent, limit)
        while due:
            time.sleep(max(0.0, min(0.2, due[0][0] - time.monotonic())))
            _send_due(producer, due, time.monotonic())
    return sent


@dataclass(frozen=True)
class _Deadline:
    """When an ingest gives up (``at``, monotonic), ``seconds`` after it started."""

    at: float
    seconds: float

    def passed(self) -> bool:
        return time.monotonic() > self.at


def _wait_for_joins(
    outputs: _Outputs, decisions: int, deadline: _Deadline, progress: Progress
) -> None:
    """Until every decision has ended in the join (joined, defaulted, expired or rejected)."""
    progress(LEARNING, 0, decisions)
    while (ended := outputs.ended) < decisions:
        _check_deadline(outputs, decisions, deadline)
        outputs.poll()
        progress(LEARNING, ended, decisions)


def _wait_for_learning(
    outputs: _Outputs, before: int, decisions: int, deadline: _Deadline, progress: Progress
) -> ModelVersion:
    """The first version of the model that learned every decision the join passed on (joined or
    defaulted)."""
    while (version := outputs.version_with(before + outputs.learned)) is None:
        _check_deadline(outputs, decisions, deadline)
        outputs.poll()
        progress(LEARNING, outputs.ended, decisions)
    return version


def _check_deadline(outputs: _Outputs, decisions: int, deadline: _Deadline) -> None:
    if deadline.passed():
        raise TimedOut(
            f"after {deadline.seconds:.0f}s, {dict(outputs.statuses)} of {decisions} "
            "decisions; is a worker "
            f"running with a spec for {outputs.model!r} (adaptloop worker)?"
        )


def _wait_for_archive(
    settings: Settings,
    run: str,
    version: ModelVersion,
    total: int,
    deadline: _Deadline,
    progress: Progress,
) -> int:
    """Until the archive holds this run's ``total`` training examples and ``version``'s record;
    return how many of the examples it holds."""
    progress(ARCHIVING, 0, total)
    while (archived := _archived(settings, run)) < total or not _version_archived(
        settings, version
    ):
        progress(ARCHIVING, archived, total)
        if deadline.passed():
            raise TimedOut(
                f"the archive holds {archived} of this run's {total} training examples"
                f"{'' if _version_archived(settings, version) else f' and not version {version.version}'}"
            )
        time.sleep(0.5)
    progress(ARCHIVING, archived, total)
    return archived


def _snapshot(settings: Settings, progress: Progress) -> Path:
    progress(SNAPSHOT, 0, None)
    return create_snapshot(
        settings.archive_location,
        settings.models_location,
        settings.snapshots_dir / snapshot_name(datetime.now(UTC)),
        prefix=settings.topic_prefix,
    ).path


def _decision_id(run: str, i: int, partitions: int | None) -> str:
    """``<run>-<row>``; in ordered mode with a suffix that puts it on partition 0 (murmur2, as the
    join reads)."""
    decision = f"{run}-{i}"
    if partitions is None:
        return decision
    k = 0
    while partition_for(f"{decision}-{k}".encode(), partitions) != 0:
        k += 1
    return f"{decision}-{k}"


def _send_due(
    producer: EventProducer, due: list[tuple[float, int, OutcomeEvent]], now: float
) -> None:
    while due and due[0][0] <= now:
        _, _, outcome = heapq.heappop(due)
        producer.send(outcome)


def _archived(settings: Settings, run: str) -> int:
    name = TRAINING_EXAMPLES.full_name(settings.topic_prefix)
    return count_archived(
        settings.archive_location, name, "starts_with(decision_id, ?)", [f"{run}-"]
    )


def _version_archived(settings: Settings, version: ModelVersion) -> bool:
    """Whether the archive holds ``version``'s record (a snapshot without it would not show what was
    learned)."""
    name = MODEL_UPDATES.full_name(settings.topic_prefix)
    return (
        count_archived(
            settings.archive_location,
            name,
            "model = ? AND version = ?",
            [version.model, version.version],
        )
        > 0
    )
