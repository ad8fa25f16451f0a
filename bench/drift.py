"""Drift monitoring, measured: ``python -m bench.drift`` (about 30 s, no broker needed).

Prints the detection delay and false-alarm rate of the concept-drift detectors on River's
Sine stream (SINE1, reversed at a known point), the data-drift checks' false alarms and
detections, and how fast the demo's model recovers after the drift with the challenger
policy on and off. ``tests/unit/learners/test_drift.py`` asserts the same numbers.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from adaptloop.learners.drift_eval import (
    concept_drift_calibration,
    data_drift_calibration,
    recovery,
)


def main() -> None:
    console = Console()
    concept = Table(
        "detector",
        "runs",
        "detected",
        "delay mean",
        "delay max",
        "false alarms / 10k (stationary)",
        title="concept drift on the shadow error: Sine, reversed at example 3000 (5 seeds x 6000)",
    )
    for detector in ("ADWIN", "PageHinkley", "KSWIN", "DDM", "HDDMA"):
        r = concept_drift_calibration(detector)
        concept.add_row(
            detector,
            str(r.runs),
            str(r.detected),
            f"{r.delay_mean:.1f}",
            str(r.delay_max),
            f"{r.false_alarms_per_10k:.2f}",
        )
    console.print(concept)
    d = data_drift_calibration()
    data = Table(
        "checks (stationary)",
        "false alarms",
        "x0 shifted by 0.5: caught",
        title="data drift (PSI / Jensen-Shannon)",
    )
    data.add_row(str(d.checks), str(d.false_alarms), f"{d.shift_detected}/{d.runs}")
    console.print(data)
    policies = Table(
        "policy",
        "accuracy, 2000 examples after the drift",
        "examples to recover (rolling 200 >= 0.9)",
        "promotions",
        title="the demo's stream (Sine, reversed at 6000): recovery after the drift",
    )
    for policy in ("alert", "challenger"):
        r = recovery(policy)
        policies.add_row(policy, f"{r.accuracy_after:.3f}", str(r.to_recover), str(r.promotions))
    console.print(policies)


if __name__ == "__main__":
    main()
