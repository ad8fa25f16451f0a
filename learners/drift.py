"""Drift monitoring for one model: concept drift on its error streams, data drift on its inputs.

Concept drift: a River detector (ADWIN by default; any class of ``river.drift`` or
``river.drift.binary`` by name) watches the shadow error (the learner's own
prediction, made before it learns) and the production error (the prediction that
was served). Data drift: every ``check_every`` examples, each feature's recent
window is compared with a reference window, by the population stability index
(PSI, numeric features, on the reference's deciles) or the Jensen-Shannon
distance (categories, booleans, and the served prediction); and the share of
decisions that got an outcome is compared with the reference's (feedback stopped
arriving). A firing check re-bases the reference on the recent window, so one
shift gives one alert.

>>> from adaptloop.learners.spec import DriftSpec
>>> monitor = ConceptDriftMonitor(DriftSpec(detector="ADWIN"))
>>> alerts = [monitor.update("shadow_error", float(i >= 1000)) for i in range(2000)]
>>> fired = [i for i, alert in enumerate(alerts) if alert]
>>> fired[0] >= 1000, fired[0] - 1000 < 100
(True, True)
>>> alert = alerts[fired[0]]
>>> alert["metric_before"] < 0.05, alert["metric_after"] > 0.3
(True, True)
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import operator
from collections import Counter, deque
from collections.abc import Callable, Collection, Mapping
from typing import Any

import numpy as np
from river import base

from adaptloop.learners.spec import DriftSpec
from adaptloop.schemas.errors import ConfigError

log = logging.getLogger(__name__)


def build_detector(name: str, params: dict[str, Any] | None = None) -> base.DriftDetector:
    """A River drift detector by class name: ``ADWIN``, ``PageHinkley``, ``KSWIN``, ``DDM``,
    ``HDDMA``...

    >>> type(build_detector("DDM")).__module__
    'river.drift.binary.ddm'
    """
    for module in ("river.drift", "river.drift.binary"):
        detector = getattr(importlib.import_module(module), name, None)
        if isinstance(detector, type):
            built: base.DriftDetector = detector(**(params or {}))
            return built
    raise ConfigError(f"{name!r} is not a drift detector of river.drift or river.drift.binary")


def detector_names() -> list[str]:
    """The detector classes :func:`build_detector` takes, by name.

    >>> "ADWIN" in detector_names(), "DDM" in detector_names()
    (True, True)
    """
    found: set[str] = set()
    for module in ("river.drift", "river.drift.binary"):
        for name, value in vars(importlib.import_module(module)).items():
            if isinstance(value, type) and issubclass(
                value, base.DriftDetector | base.BinaryDriftDetector
            ):
                found.add(name)
    return sorted(found)


class ConceptDriftMonitor:
    """One detector per error stream; an alert carries the mean error since the previous alert
    (``metric_before``) and over the last ``window / 10`` examples (``metric_after``)."""

    def __init__(self, spec: DriftSpec) -> None:
        self.spec = spec
        self.detectors: dict[str, base.DriftDetector] = {}
        self.since_reset: dict[str, list[float]] = {}  # signal -> [sum, count] since the last alert
        self.recent: dict[str, deque[float]] = {}
        self.seen: dict[str, int] = {}

    def update(self, signal: str, error: float) -> dict[str, Any] | None:
        """Feed one error (0/1 for classes, absolute error for regression); the alert's fields if it
        fired."""
        detector = self.detectors.get(signal)
        if detector is None:
            detector = self.detectors[signal] = build_detector(
                self.spec.detector, self.spec.detector_params
            )
            self.since_reset[signal] = [0.0, 0]
            self.recent[signal] = deque(maxlen=max(10, self.spec.window // 10))
            self.seen[signal] = 0
        detector.update(error)
        self.recent[signal].append(error)
        self.seen[signal] += 1
        total = self.since_reset[signal]
        if not detector.drift_detected:
            total[0] += error
            total[1] += 1
            return None
        before = total[0] / total[1] if total[1] else 0.0  # the errors before this one
        recent = self.recent[signal]
        after = sum(recent) / len(recent)
        self.since_reset[signal] = [0.0, 0]
        return {
            "detector": self.spec.detector,
            "signal": signal,
            "direction": "rose" if after > before else "fell",
            "window": self.spec.window,
            "metric_before": float(before),
            "metric_after": float(after),
            "statistic": float(after - before),
        }


def psi(reference: list[float], recent: list[float], bins: int = 10) -> float:
    """Population stability index of ``recent`` against ``reference``, on the reference's quantile
    bins.

    >>> round(psi([float(i) for i in range(1000)], [float(i) for i in range(1000)]), 6)
    0.0
    >>> psi([float(i) for i in range(1000)], [float(i) + 500 for i in range(1000)]) > 1
    True
    """
    return _Bins(reference, bins).psi(recent)


class _Bins:
    """A reference sample's quantile bins and its shares in them, computed once per reference."""

    def __init__(self, reference: list[float], bins: int = 10) -> None:
        ordered = sorted(reference)
        self.edges = sorted(
            {ordered[min(len(ordered) - 1, (len(ordered) * k) // bins)] for k in range(1, bins)}
        )
        self.expected = self.shares(reference)

    def shares(self, values: Collection[float]) -> list[float]:
        # The bins of bisect_right, counted by numpy (a check bins every feature's whole window).
        # (Feature integers are 64-bit by contract, so every value converts to a float; fromiter
        # converts them as asarray does, in half its time.)
        array = np.fromiter(values, dtype=float, count=len(values))
        bins = np.searchsorted(np.asarray(self.edges, dtype=float), array, side="right")
        counts = np.bincount(bins, minlength=len(self.edges) + 1).tolist()
        # smoothed: no log(0)
        return [(c + 0.5) / (len(values) + 0.5 * len(counts)) for c in counts]

    def psi(self, recent: Collection[float]) -> float:
        actual = self.shares(recent)
        return sum((a - e) * math.log(a / e) for a, e in zip(actual, self.expected))


TOP_CATEGORIES = 20
_OTHER = object()  # the categories beyond the reference's most common, counted together


def js_distance(
    reference: list[object], recent: list[object], top: int | None = TOP_CATEGORIES
) -> float:
    """Jensen-Shannon distance (base 2, in [0, 1]) between two samples of categories.

    Categories beyond the reference's ``top`` most common (those seen more than once) are counted
    together as one: an id-like feature (nearly every value new) compares as stationary (compared
    value by value, it would alert at every check); a new category that takes over shows as that one
    bucket growing.

    >>> js_distance(["a", "b"] * 50, ["a", "b"] * 50), js_distance(["a"] * 10, ["b"] * 10)
    (0.0, 1.0)
    >>> js_distance([f"user{i}" for i in range(1000)], [f"user{i}" for i in range(1000, 1500)])
    0.0
    """
    p, q = Counter(reference), Counter(recent)
    if top is not None and len(p) > top:
        # a value seen once is no category
        kept = {key for key, count in p.most_common(top) if count > 1}
        p, q = _fold(p, kept), _fold(q, kept)
    divergence = 0.0
    for key in p.keys() | q.keys():
        pk, qk = p[key] / len(reference), q[key] / len(recent)
        mk = (pk + qk) / 2
        divergence += 0.5 * (pk * math.log2(pk / mk) if pk else 0.0) + 0.5 * (
            qk * math.log2(qk / mk) if qk else 0.0
        )
    return math.sqrt(max(divergence, 0.0))


def _fold(counts: Counter[object], kept: set[object]) -> Counter[object]:
    folded: Counter[object] = Counter({key: count for key, count in counts.items() if key in kept})
    other = sum(count for key, count in counts.items() if key not in kept)
    if other:
        folded[_OTHER] = other
    return folded


def _columns(
    rows: list[Mapping[str, object]], keep: Callable[[str], bool]
) -> dict[str, tuple[object, ...]]:
    """Rows of values by name as columns, for the names ``keep`` accepts, in first-seen order (a
    missing value is ``None``).

    >>> _columns([{"a": 1, "b": 2}, {"b": 3, "c": 4}], lambda name: name != "c")
    {'a': (1, None), 'b': (2, 3)}
    """
    if not rows:
        return {}
    first = list(rows[0])
    if all(length == len(first) for length in map(len, rows)):
        names = [name for name in first if keep(name)]
        try:  # the usual case, every row with the same names: transposed in C
            if len(names) == 1:
                return {names[0]: tuple(row[names[0]] for row in rows)}
            if names:
                return dict(zip(names, zip(*map(operator.itemgetter(*names), rows))))
        except KeyError:
            pass
    names = [name for name in dict.fromkeys(name for row in rows for name in row) if keep(name)]
    return {name: tuple(row.get(name) for row in rows) for name in names}


_is_value = functools.partial(operator.is_not, None)  # filter(_is_value, ...) drops None, in C
_REALS = frozenset({int, float})


def _all_numbers(values: list[object]) -> bool:
    """Whether every value is an int or a float, not a bool (exact types are checked in C).

    >>> _all_numbers([1, 2.5]), _all_numbers([1, True]), _all_numbers([1, "a"])
    (True, False, False)
    """
    if _REALS.issuperset(map(type, values)):
        return True
    return all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)


LABEL_RATE = "@label_rate"  # 1.0 when the decision got an outcome, 0.0 when it expired
PREDICTION = "@prediction"  # the served prediction


class DataDriftMonitor:
    """Reference window vs recent window, per feature, the served prediction, and the label rate.

    Decisions are kept as rows and spread into per-name windows only when a check is due
    (or the reference is complete): the same windows as appending each value at once, for a
    list append per decision. The first ``max_features`` feature names seen are watched; a
    warning names the first one turned away.
    """

    def __init__(self, spec: DriftSpec, model: str = "") -> None:
        self.spec = spec
        self.model = model
        self.reference: dict[str, list[object]] = {}
        self.recent: dict[str, deque[object]] = {}
        self.count = 0
        self.watched: set[str] = {PREDICTION, LABEL_RATE}  # and up to max_features feature names
        self.turned_away = 0  # names not watched, counted at each spread
        self._rows: list[Mapping[str, object]] = []  # decisions not yet spread into the windows
        self._bins: dict[str, _Bins] = {}  # PSI bins of each numeric reference

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        if "watched" not in state:  # a checkpoint from before the cap: it watches what it had
            self.watched = {PREDICTION, LABEL_RATE, *self.reference, *self.recent}
            self.turned_away, self.model = 0, ""

    def _watches(self, name: str) -> bool:
        if name in self.watched:
            return True
        if len(self.watched) - 2 < self.spec.max_features:
            self.watched.add(name)
            return True
        if not self.turned_away:
            log.warning(
                "model %r: data drift watches its first %d features; %r and any later new "
                "feature are not "
                "watched (drift.max_features)",
                self.model,
                self.spec.max_features,
                name,
            )
        self.turned_away += 1
        return False

    def update(self, values: Mapping[str, object]) -> list[dict[str, Any]]:
        """Feed one decision's values (features, :data:`PREDICTION`, :data:`LABEL_RATE`); the
        alerts' fields if a check fired."""
        self.count += 1
        self._rows.append(values)
        reference_size = self.spec.reference_size
        if self.count <= reference_size:  # the first decisions make the reference
            if self.count == reference_size:
                self._spread(self.reference, list)
            return []
        if self.count % self.spec.check_every:
            return []
        self._spread(self.recent, lambda: deque(maxlen=self.spec.window))
        return [alert for name in list(self.recent) if (alert := self._check(name))]

    def _spread(self, windows: dict[str, Any], new: Callable[[], Any]) -> None:
        rows, self._rows = self._rows, []
        for name, column in _columns(rows, self._watches).items():
            window = windows.get(name)
            if window is None:
                window = windows[name] = new()
            window.extend(filter(_is_value, column))

    def _check(self, name: str) -> dict[str, Any] | None:
        if len(self.recent[name]) < self.spec.window:
            return None
        recent = list(self.recent[name])
        reference = self.reference.get(name)
        # a feature that appeared after the reference: its first window becomes its reference
        if not reference:
            self.reference[name], self.recent[name] = recent, deque(maxlen=self.spec.window)
            return None
        if name == LABEL_RATE:
            before = sum(map(float, reference)) / len(reference)  # type: ignore[arg-type]  # label rates: floats
            after = sum(map(float, recent)) / len(recent)  # type: ignore[arg-type]
            statistic, threshold = after / before if before else 1.0, 1 - self.spec.label_rate_drop
            fired = before > 0 and statistic < threshold
            detector = "label_rate_ratio"
        elif _all_numbers(reference[:50] + recent[:50]):
            bins = self._bins.get(name)
            if bins is None:
                bins = self._bins[name] = _Bins(reference)  # type: ignore[arg-type]  # numbers, checked above
            statistic, threshold, detector = bins.psi(recent), self.spec.psi_threshold, "PSI"  # type: ignore[arg-type]
            fired = statistic > threshold
        else:
            statistic, threshold, detector = (
                js_distance(reference, recent),
                self.spec.js_threshold,
                "JensenShannon",
            )
            fired = statistic > threshold
        if not fired:
            return None
        self.reference[name] = recent  # re-base: the new normal
        self._bins.pop(name, None)
        self.recent[name] = deque(maxlen=self.spec.window)
        signal = {LABEL_RATE: "label_rate", PREDICTION: "prediction"}.get(name, f"feature:{name}")
        return {
            "detector": detector,
            "signal": signal,
            # The label rate fell; a distribution moved (PSI and Jensen-Shannon have no direction).
            "direction": "fell" if name == LABEL_RATE else None,
            "statistic": float(statistic),
            "threshold": float(threshold),
            "window": self.spec.window,
        }
