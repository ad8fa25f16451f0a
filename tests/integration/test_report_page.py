"""The HTML report in a real browser (Debian's headless chromium): it renders every chart, draws
gaps as gaps, and its numbers are the learner's way of counting (true equals 1)."""

from __future__ import annotations

import html
import json
import re
import subprocess
from datetime import UTC, datetime, timedelta

import matplotlib.image
import numpy as np

from adaptloop.samples import sample_events
from adaptloop.schemas import (
    AgentFeedbackEvent,
    DeadLetter,
    DriftAlert,
    ModelVersion,
    TrainingExample,
    encode,
)
from adaptloop.schemas.topics import (
    AGENT_FEEDBACK,
    DEAD_LETTERS,
    DRIFT_ALERTS,
    MODEL_UPDATES,
    TRAINING_EXAMPLES,
)
from adaptloop.snapshots.archive import ParquetArchive
from adaptloop.snapshots.columns import RawRecord
from adaptloop.snapshots.report import report_data, write_html_report
from adaptloop.snapshots.snapshot import create_snapshot

START = datetime(2026, 11, 30, 9, 0, tzinfo=UTC)

# Measures what the browser drew: for each chart, the number of its series elements and their total
# drawn width.
PROBE = """<script>
document.title = JSON.stringify([...document.querySelectorAll("svg.chart")].map(chart => {
  const series = [...chart.querySelectorAll(".series")];
  return [series.length, Math.round(series.reduce((w, s) => w + s.getBBox().width, 0))];
}));
</script>"""


def _snapshot(tmp_path):
    version = next(iter(sample_events(ModelVersion, 2))).model_copy(
        update={
            "model": "churn",
            "timestamp": START,
            "examples_seen": 200,
            "metrics": {"shadow.Accuracy": 0.61},
        }
    )
    rollback = version.model_copy(
        update={
            "reason": "rollback",
            "timestamp": START + timedelta(minutes=9),
            "examples_seen": 400,
            "metrics": {"shadow.Accuracy": 0.58},
        }
    )
    examples, expected = [], {}
    # Two bursts of traffic with ten idle minutes between them: the report must not draw across the
    # gap.
    for i in range(400):
        at = START + timedelta(seconds=i if i < 200 else 600 + i)
        prediction, label = [(True, 1), (False, True), (1, True), (0, False)][i % 4]
        examples.append(
            TrainingExample(
                model="churn",
                decision_id=f"d{i}",
                model_version=version.version,
                features={"x": 1.0},
                prediction=prediction,
                label=label,
                predicted_at=at,
                timestamp=at,
            )
        )
        expected[i] = prediction == label
    alert = next(iter(sample_events(DriftAlert, 1))).model_copy(
        update={"model": "churn", "timestamp": START + timedelta(minutes=12)}
    )
    feedback = [
        e.model_copy(update={"timestamp": START + timedelta(seconds=i)})
        for i, e in enumerate(sample_events(AgentFeedbackEvent, 100))
    ]
    archive = ParquetArchive(tmp_path / "archive")
    for topic, name, events in (
        (TRAINING_EXAMPLES, "training-examples", examples),
        (MODEL_UPDATES, "model-updates", [version, rollback]),
        (DRIFT_ALERTS, "drift-alerts", [alert]),
        (AGENT_FEEDBACK, "agent-feedback", feedback),
        (DEAD_LETTERS, "dead-letters", list(sample_events(DeadLetter, 5))),
    ):
        archive.write(
            topic, name, 0, [RawRecord(0, i, 0, None, encode(e)) for i, e in enumerate(events)]
        )
    return create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb").path, expected


def test_the_html_report_renders_its_charts_in_chromium_with_gaps_as_gaps(chromium, tmp_path):
    snapshot, expected = _snapshot(tmp_path)
    data = report_data(snapshot, buckets=40)
    (churn,) = data.models
    values = [v for _, v in churn.buckets]
    assert None in values[1:-1]  # the idle minutes are a gap
    assert sum(v is not None for v in values) >= 2
    # Every decision of the bursts counted as the learner counts (True == 1), bucket by bucket.
    assert (
        abs(
            np.nanmean([v for v in values if v is not None])
            - sum(expected.values()) / len(expected)
        )
        < 0.01
    )

    page = write_html_report(snapshot, tmp_path / "report.html")
    probed = tmp_path / "probed.html"
    probed.write_text(page.read_text().replace("</body>", PROBE + "</body>"))
    browser = [
        chromium,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-logging=stderr",
        "--v=0",
    ]
    dom = subprocess.run(
        [*browser, "--dump-dom", probed.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    assert "CONSOLE" not in dom.stderr or "ERROR:CONSOLE" not in dom.stderr, dom.stderr
    charts = re.search(r"<title>(\[.*\])</title>", dom.stdout)
    assert charts, dom.stdout[:2000]
    drawn = [tuple(chart) for chart in json.loads(charts[1])]
    assert len(drawn) == 2  # the model's accuracy, the agents' traffic
    accuracy, traffic = drawn
    # the two bursts as separate lines, and the shadow line
    assert accuracy[0] == 3 and accuracy[1] > 300
    assert traffic[0] >= 1 and traffic[1] > 300

    shot = tmp_path / "page.png"
    subprocess.run(
        [*browser, f"--screenshot={shot}", "--window-size=1000,1600", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    pixels = matplotlib.image.imread(shot)
    assert (
        pixels.shape[0] >= 1600 and len(np.unique(pixels.reshape(-1, pixels.shape[2]), axis=0)) > 50
    )
    assert "rollback" in page.read_text() and "drift alert" in page.read_text()


def _lineage_snapshot(tmp_path):
    """A model's life: an initial version that learned and served nothing (null metrics), four
    versions that learned, a rollback, a promotion and a drift alert; decisions served by the
    versions."""
    first = next(iter(sample_events(ModelVersion, 1))).model_copy(update={"model": "churn"})
    records = [
        first.model_copy(
            update={
                "version": "0" * 16,
                "reason": "initial",
                "examples_seen": 0,
                "timestamp": START,
                "metrics": {"shadow.Accuracy": None, "production.Accuracy": None},
            }
        )
    ]
    for i, shadow in enumerate((0.7, 0.8, 0.85, 0.9), start=1):
        records.append(
            first.model_copy(
                update={
                    "version": f"{i:016x}",
                    "reason": "checkpoint",
                    "examples_seen": 500 * i,
                    "timestamp": START + timedelta(minutes=4 * i),
                    "metrics": {
                        "shadow.Accuracy": shadow,
                        "production.Accuracy": None if i == 1 else shadow - 0.05,
                    },
                }
            )
        )
    for minutes, reason, version in ((18, "rollback", 2), (22, "promotion", 9)):
        records.append(
            first.model_copy(
                update={
                    "version": f"{version:016x}",
                    "reason": reason,
                    "examples_seen": 2000,
                    "timestamp": START + timedelta(minutes=minutes),
                    "metrics": {"shadow.Accuracy": 0.9, "production.Accuracy": 0.85},
                }
            )
        )
    examples = [
        TrainingExample(
            model="churn",
            decision_id=f"d{i}",
            model_version=f"{1 + i // 100:016x}",
            features={"x": 1.0},
            prediction=i % 5 != 0,
            label=True,
            predicted_at=START + timedelta(minutes=4, seconds=3 * i),
            timestamp=START + timedelta(minutes=4, seconds=3 * i),
        )
        for i in range(400)
    ]
    alert = next(iter(sample_events(DriftAlert, 1))).model_copy(
        update={
            "model": "churn",
            "signal": "error_rate",
            "timestamp": START + timedelta(minutes=17),
        }
    )
    fraud = [  # a model whose versions learned but never served a decision
        first.model_copy(
            update={
                "model": "fraud",
                "version": f"{i:016x}",
                "examples_seen": 100 * i,
                "timestamp": START + timedelta(minutes=5 * i),
                "metrics": {"shadow.Accuracy": 0.5 + i / 10, "production.Accuracy": None},
            }
        )
        for i in (1, 2)
    ]
    archive = ParquetArchive(tmp_path / "archive")
    for topic, name, events in (
        (TRAINING_EXAMPLES, "training-examples", examples),
        (MODEL_UPDATES, "model-updates", records + fraud),
        (DRIFT_ALERTS, "drift-alerts", [alert]),
    ):
        archive.write(
            topic, name, 0, [RawRecord(0, i, 0, None, encode(e)) for i, e in enumerate(events)]
        )
    return create_snapshot(tmp_path / "archive", None, tmp_path / "s.duckdb").path


# What the browser drew of each chart: its series' lowest point (SVG y grows downwards), its legend,
# its axes.
LINEAGE_PROBE = """<script>
document.title = JSON.stringify([...document.querySelectorAll("svg.chart")].map(chart => ({
  series: [...chart.querySelectorAll(".series")].map(s => s.dataset.series),
  lowest: Math.max(...[...chart.querySelectorAll(".series")].map(s => s.getBBox().y + s.getBBox().height)),
  legend: [...chart.querySelectorAll(".legend-text")].map(t => t.textContent),
  ticks: [...chart.querySelectorAll(".tick")].map(t => t.textContent),
  axes: [...chart.querySelectorAll(".axis-title")].map(t => t.textContent),
  marks: [...chart.querySelectorAll(".mark-label")].map(t => t.textContent),
})));
</script>"""


def test_the_report_draws_only_what_has_data_with_labelled_axes_and_marks(chromium, tmp_path):
    snapshot = _lineage_snapshot(tmp_path)
    (churn, fraud) = report_data(snapshot).models
    assert [(v["shadow"], v["production"]) for v in churn.versions[:3]] == [
        (None, None),
        (0.7, None),
        (0.8, 0.75),
    ]

    page = write_html_report(snapshot, tmp_path / "report.html")
    text = page.read_text()
    # no 0.0000 that no decision earned
    assert "<td>initial</td><td>0</td><td>-</td><td>-</td>" in text
    probed = tmp_path / "probed.html"
    probed.write_text(text.replace("</body>", LINEAGE_PROBE + "</body>"))
    browser = [chromium, "--headless", "--no-sandbox", "--disable-gpu"]
    dom = subprocess.run(
        [*browser, "--dump-dom", probed.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    charts = json.loads(html.unescape(re.search(r"<title>(\[.*\])</title>", dom.stdout)[1]))
    churn_chart, fraud_chart = charts
    assert churn_chart["legend"] == [
        "production accuracy (served by a version)",
        "shadow accuracy at each version (cumulative)",
        "new version",
        "rollback",
        "promotion",
        "drift alert",
    ]
    assert churn_chart["marks"] == ["rollback", "promotion"]
    assert churn_chart["ticks"][:5] == ["0.00", "0.25", "0.50", "0.75", "1.00"]
    # times along x
    assert len(churn_chart["ticks"]) == 5 + 6 and churn_chart["ticks"][5] == "09:00:00"
    assert churn_chart["axes"] == ["accuracy", "time (UTC; from 2026-11-30 09:00:00)"]
    # No line climbs from the initial version's missing accuracy: the lowest point drawn is an
    # accuracy some decisions or examples earned (0.6 at the least), far above 0.0 at y = 236.
    y_of = {0.0: 340 - 104, 0.6: 340 - 104 - 0.6 * (340 - 104 - 40)}
    assert churn_chart["lowest"] <= y_of[0.6] + 1 < y_of[0.0]
    # A model that served nothing: no production line, and none in its legend.
    assert set(fraud_chart["series"]) == {"shadow accuracy at each version (cumulative)"}
    assert fraud_chart["legend"] == ["shadow accuracy at each version (cumulative)", "new version"]
    assert [v["production"] for v in fraud.versions] == [None, None]
