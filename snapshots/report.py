"""A snapshot for people who would rather look than read: PNG plots, or one self-contained HTML
page.

Both draw the same numbers (:func:`report_data`):

- per model, the production accuracy of the decisions its published versions served, over time, in
  equal time buckets (a bucket without decisions is a gap, never a line drawn across it; labels and
  predictions compare as the learner compares them), the shadow accuracy at each version, version
  changes (rollbacks and promotions marked) and drift alerts;
- per agent variant, its share of the agents' steps over time, and its preference posterior;
- the dead letters by cause.

The HTML page holds its charts as inline SVG and needs nothing from the network: it can be mailed or
kept with an audit.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, tzinfo
from pathlib import Path
from typing import Any

import duckdb

from adaptloop.snapshots.audit import NAMED_QUERIES, json_equal

MARKED = {"rollback": "#d62728", "promotion": "#2ca02c"}  # version reasons drawn in colour


VERSION_COLUMNS = (
    "version",
    "parent",
    "reason",
    "examples_seen",
    "shadow",
    "production",
    "timestamp",
)


@dataclass
class ModelSeries:
    model: str
    # (bucket middle, accuracy; None: no decision served)
    buckets: list[tuple[datetime, float | None]]
    # VERSION_COLUMNS: shadow and production accuracy None where nothing scored
    versions: list[dict[str, Any]]
    alerts: list[tuple[datetime, str]]


@dataclass
class ReportData:
    models: list[ModelSeries] = field(default_factory=list)
    # variant -> shares
    traffic: dict[str, list[tuple[datetime, float | None]]] = field(default_factory=dict)
    posteriors: list[tuple[Any, ...]] = field(default_factory=list)  # preference_variants rows
    dead_letters: list[dict[str, Any]] = field(default_factory=list)


def _bucketed(
    db: duckdb.DuckDBPyConnection, rows_sql: str, params: dict[str, Any], buckets: int
) -> list[tuple]:
    """``rows_sql`` (columns ``moment`` and ``value``) averaged in ``buckets`` equal time buckets,
    every bucket listed (``None`` where none fell)."""
    return db.execute(
        f"""
        WITH points AS ({rows_sql}),
        bounds AS (SELECT min(epoch(moment)) AS lo, max(epoch(moment)) + 1e-6 AS hi FROM points),
        grid AS (SELECT range AS bucket FROM range($buckets)),
        filled AS (
            SELECT least(floor((epoch(moment) - lo) / (hi - lo) * $buckets), $buckets - 1)::BIGINT AS bucket,
                   avg(value) AS value
            FROM points, bounds GROUP BY ALL
        )
        SELECT to_timestamp(lo + (hi - lo) * (grid.bucket + 0.5) / $buckets) AS moment, filled.value
        FROM grid CROSS JOIN bounds LEFT JOIN filled USING (bucket)
        WHERE lo IS NOT NULL ORDER BY grid.bucket
        """,
        {**params, "buckets": buckets},
    ).fetchall()


def report_data(snapshot: Path, buckets: int = 60) -> ReportData:
    """What the report draws, read from ``snapshot``."""
    data = ReportData()
    with duckdb.connect(str(snapshot), read_only=True) as db:
        models = [
            m
            for (m,) in db.execute("SELECT DISTINCT model FROM model_updates ORDER BY 1").fetchall()
        ]
        for model in models:
            served = _bucketed(
                db,
                f"""
                SELECT predicted_at AS moment, ({json_equal("t.prediction", "t.label")})::INT AS value
                FROM (SELECT * FROM training_examples WHERE model = $model AND status = 'joined' AND NOT fallback
                      QUALIFY row_number() OVER (PARTITION BY decision_id ORDER BY _offset DESC) = 1) t
                WHERE t.model_version IN (SELECT version FROM model_updates WHERE model = $model)
                """,
                {"model": model},
                buckets,
            )
            # A metric over no example has no value: null in a record, and 0.0 in one written before
            # nulls were.
            versions = [
                dict(zip(VERSION_COLUMNS, row, strict=True))
                for row in db.execute(
                    """SELECT version, parent, reason, examples_seen,
                              CASE WHEN examples_seen > 0
                                   THEN TRY_CAST(metrics->>'$."shadow.Accuracy"' AS DOUBLE) END,
                              TRY_CAST(metrics->>'$."production.Accuracy"' AS DOUBLE), timestamp
                       FROM model_updates WHERE model = $model ORDER BY _offset""",
                    {"model": model},
                ).fetchall()
            ]
            alerts = db.execute(
                "SELECT timestamp, signal FROM drift_alerts WHERE model = $model ORDER BY "
                "timestamp",
                {"model": model},
            ).fetchall()
            data.models.append(ModelSeries(model, served, versions, alerts))
        variants = [
            v
            for (v,) in db.execute(
                "SELECT DISTINCT variant FROM agent_feedback ORDER BY 1"
            ).fetchall()
        ]
        for variant in variants:
            data.traffic[variant] = _bucketed(
                db,
                "SELECT timestamp AS moment, (variant = $variant)::INT AS value FROM "
                "agent_feedback",
                {"variant": variant},
                buckets,
            )
        tables = {name for (name,) in db.execute("SELECT view_name FROM duckdb_views()").fetchall()}
        if "preference_variants" in tables:
            data.posteriors = db.execute(
                "SELECT agent, segment, variant, ups, downs, thumbs_posterior_mean FROM "
                "preference_variants"
            ).fetchall()
        letters = db.execute(NAMED_QUERIES["dead_letters"].sql)
        names = [column[0] for column in letters.description]
        data.dead_letters = [dict(zip(names, row, strict=True)) for row in letters.fetchall()]
    return data


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _nan(value: float | None) -> float:
    return math.nan if value is None else value  # matplotlib leaves a gap at NaN


def write_report(snapshot: Path, out: Path, buckets: int = 60) -> list[Path]:
    """Write the PNG plots of ``snapshot`` into ``out``; return the files written."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    data = report_data(snapshot, buckets)
    written = []
    for series in data.models:
        figure, axis = plt.subplots(figsize=(11, 4.5))
        # only what has data is drawn, and listed
        if any(value is not None for _, value in series.buckets):
            axis.plot(
                [t for t, _ in series.buckets],
                [_nan(a) for _, a in series.buckets],
                label="production accuracy (served by a version)",
                color="tab:blue",
            )
        shadow = [(v["timestamp"], v["shadow"]) for v in series.versions if v["shadow"] is not None]
        if shadow:
            axis.plot(
                [t for t, _ in shadow],
                [a for _, a in shadow],
                "o-",
                markersize=3,
                color="tab:orange",
                label="shadow accuracy at each version (cumulative)",
            )
        for version in series.versions:
            reason = version["reason"]
            axis.axvline(
                version["timestamp"],
                color=MARKED.get(reason, "lightgrey"),
                linewidth=1.5 if reason in MARKED else 0.6,
                zorder=0,
            )
        if any(v["reason"] not in MARKED for v in series.versions):
            axis.plot([], [], color="lightgrey", label="new version")
        for reason, colour in MARKED.items():
            if any(v["reason"] == reason for v in series.versions):
                axis.plot([], [], color=colour, label=reason)
        if series.alerts:
            axis.scatter(
                [t for t, _ in series.alerts],
                [1.03] * len(series.alerts),
                marker="v",
                color="tab:purple",
                label="drift alert",
                zorder=3,
            )
        axis.set_ylim(-0.02, 1.08)
        axis.set_title(f"{series.model}: accuracy over time ({len(series.versions)} versions)")
        axis.set_ylabel("accuracy")
        axis.set_xlabel("time (UTC)")
        if axis.get_legend_handles_labels()[0]:
            axis.legend(loc="lower left", fontsize=8)
        figure.autofmt_xdate()
        path = out / f"{series.model}-metrics.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    if data.traffic:
        figure, axis = plt.subplots(figsize=(11, 4))
        for variant, shares in data.traffic.items():
            axis.plot([t for t, _ in shares], [_nan(s) for _, s in shares], label=variant)
        axis.set_ylim(0, 1)
        axis.set_title("share of the agents' steps per variant (gaps: no traffic)")
        axis.legend(loc="upper left", fontsize=8)
        path = out / "traffic-share.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written


# -- the HTML page
# ---------------------------------------------------------------------------------------------

WIDTH, HEIGHT = 900, 340
# room for the y axis' title and ticks, the x ticks, the legend
LEFT, RIGHT, TOP, BOTTOM = 64, 24, 40, 104
LEGEND_ROW = 18
PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22"]
MARKS = {  # kind of mark -> (colour, legend, whether it is drawn strongly)
    "version": ("#bbbbbb", "new version", False),
    "rollback": (MARKED["rollback"], "rollback", True),
    "promotion": (MARKED["promotion"], "promotion", True),
    "alert": ("#9467bd", "drift alert", True),
}
Y_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)
X_TICKS = 6


def _svg_chart(
    lines: dict[str, list[tuple[datetime, float | None]]],
    marks: list[tuple[datetime, str, str]],
    title: str,
    y_title: str = "accuracy",
) -> str:
    """An SVG line chart on 0..1 with labelled axes, each line split into segments at its gaps, and
    vertical marks (``(time, kind, label)``, kinds from :data:`MARKS`); the legend lists only what
    is drawn."""
    drawn = {
        name: points
        for name, points in lines.items()
        if any(value is not None for _, value in points)
    }
    times = [t for points in drawn.values() for t, value in points if value is not None] + [
        t for t, _, _ in marks
    ]
    if not times:
        return f'<p class="empty">{html.escape(title)}: nothing to draw yet.</p>'
    lo, hi = min(times).timestamp(), max(times).timestamp()
    span = (hi - lo) or 1.0
    bottom = HEIGHT - BOTTOM

    def x(at: datetime | float) -> float:
        seconds = at if isinstance(at, float) else at.timestamp()
        return LEFT + (seconds - lo) / span * (WIDTH - LEFT - RIGHT)

    def y(value: float) -> float:
        return bottom - value * (bottom - TOP)

    parts = [
        (
            f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{html.escape(title)}">'
        ),
        f'<text x="{LEFT}" y="18" class="title">{html.escape(title)}</text>',
        *_axes(x, y, lo, hi, bottom, y_title, min(times).tzinfo),
    ]
    kinds_drawn = []
    # the strong ones on top
    for at, kind, label in sorted(marks, key=lambda mark: list(MARKS).index(mark[1])):
        colour, _, strong = MARKS[kind]
        kinds_drawn += [kind] if kind not in kinds_drawn else []
        parts.append(
            f'<line x1="{x(at):.1f}" y1="{y(1):.1f}" x2="{x(at):.1f}" y2="{bottom:.1f}" '
            f'stroke="{colour}" '
            'class="mark '
            f'mark-{kind}{" strong" if strong else ""}"><title>{html.escape(label)}</title></line>'
        )
        if strong and kind != "alert":  # a rollback or promotion says so where it happened
            parts.append(
                f'<text x="{x(at) + 3:.1f}" y="{y(1) - 4:.1f}" class="mark-label" '
                f'style="fill: {colour}">'
                f"{html.escape(MARKS[kind][1])}</text>"
            )
        if kind == "alert":
            parts.append(
                f'<path class="mark-{kind}" d="M{x(at) - 5:.1f},{y(1) - 9:.1f} h10 l-5,8 z" '
                f'fill="{colour}">'
                f"<title>{html.escape(label)}</title></path>"
            )
    legend: list[tuple[str, str, str]] = []  # (colour, name, swatch kind)
    for index, (name, points) in enumerate(lines.items()):
        if name not in drawn:
            continue  # nothing to draw: not in the legend either
        colour = PALETTE[index % len(PALETTE)]
        legend.append((colour, name, "line"))
        for run in _runs(points):  # a gap ends a run: no line is drawn across it
            coordinates = [f"{x(at):.1f},{y(value):.1f}" for at, value in run]
            if len(coordinates) > 1:
                parts.append(
                    f'<polyline class="series" data-series="{html.escape(name)}" '
                    f'points="{" ".join(coordinates)}" '
                    f'stroke="{colour}"/>'
                )
            else:
                cx, cy = coordinates[0].split(",")
                parts.append(
                    f'<circle class="series" data-series="{html.escape(name)}" cx="{cx}" '
                    f'cy="{cy}" r="3" '
                    f'fill="{colour}"/>'
                )
    legend += [(MARKS[kind][0], MARKS[kind][1], kind) for kind in MARKS if kind in kinds_drawn]
    parts += _legend(legend, bottom + 58)
    parts.append("</svg>")
    return "\n".join(parts)


def _axes(
    x: Callable[[float], float],
    y: Callable[[float], float],
    lo: float,
    hi: float,
    bottom: float,
    y_title: str,
    zone: tzinfo | None,
) -> list[str]:
    """The axes of a chart: y ticks and grid lines at :data:`Y_TICKS`, :data:`X_TICKS` times along
    x, both titled."""
    parts = [
        f'<line x1="{LEFT}" y1="{bottom}" x2="{WIDTH - RIGHT}" y2="{bottom}" class="axis"/>',
        f'<line x1="{LEFT}" y1="{y(1):.1f}" x2="{LEFT}" y2="{bottom}" class="axis"/>',
        (
            f'<text class="axis-title" transform="translate(14 {(y(1) + bottom) / 2:.0f}) '
            'rotate(-90)" '
            f'text-anchor="middle">{html.escape(y_title)}</text>'
        ),
    ]
    for value in Y_TICKS:
        parts.append(
            f'<line x1="{LEFT}" y1="{y(value):.1f}" x2="{WIDTH - RIGHT}" '
            f'y2="{y(value):.1f}" class="grid"/>'
            f'<text x="{LEFT - 6}" y="{y(value) + 4:.1f}" class="tick" '
            f'text-anchor="end">{value:.2f}</text>'
        )
    multi_day = hi - lo > 86_400
    for i in range(X_TICKS):
        seconds = lo + (hi - lo) * i / (X_TICKS - 1)
        moment = datetime.fromtimestamp(seconds, zone)
        label = f"{moment:%m-%d %H:%M}" if multi_day else f"{moment:%H:%M:%S}"
        anchor = "start" if i == 0 else "end" if i == X_TICKS - 1 else "middle"
        parts.append(
            f'<line x1="{x(seconds):.1f}" y1="{bottom}" x2="{x(seconds):.1f}" '
            f'y2="{bottom + 4}" class="axis"/>'
            f'<text x="{x(seconds):.1f}" y="{bottom + 16}" class="tick" '
            f'text-anchor="{anchor}">{label}</text>'
        )
    start = datetime.fromtimestamp(lo, zone)
    parts.append(
        f'<text x="{(LEFT + WIDTH - RIGHT) / 2:.0f}" y="{bottom + 34}" class="axis-title" '
        'text-anchor="middle">'
        f"time ({html.escape(start.tzname() or 'local')}; from {start:%Y-%m-%d %H:%M:%S})</text>"
    )
    return parts


def _legend(entries: list[tuple[str, str, str]], at_y: float) -> list[str]:
    """The legend, in rows from ``at_y``: a swatch (a line, or a vertical mark) and a name per
    entry."""
    parts, left = ['<g class="legend">'], float(LEFT)
    for colour, name, swatch in entries:
        width = 24 + 6.5 * len(name) + 18
        if left + width > WIDTH - RIGHT and left > LEFT:  # the next row
            left, at_y = float(LEFT), at_y + LEGEND_ROW
        if swatch == "line":
            parts.append(
                f'<line x1="{left}" y1="{at_y - 4}" x2="{left + 18}" y2="{at_y - 4}" '
                f'stroke="{colour}" '
                'stroke-width="2.5"/>'
            )
        else:
            parts.append(
                f'<line x1="{left + 9}" y1="{at_y - 12}" x2="{left + 9}" y2="{at_y + 3}" '
                f'stroke="{colour}" '
                'stroke-width="2"/>'
            )
        parts.append(
            f'<text x="{left + 24}" y="{at_y}" class="legend-text">{html.escape(name)}</text>'
        )
        left += width
    parts.append("</g>")
    return parts


def _runs(points: list[tuple[datetime, float | None]]) -> list[list[tuple[datetime, float]]]:
    """The stretches of ``points`` without a gap (a ``None`` value).

    >>> t = datetime(2026, 1, 1)
    >>> [len(run) for run in _runs([(t, 0.5), (t, 0.6), (t, None), (t, 0.7)])]
    [2, 1]
    """
    runs: list[list[tuple[datetime, float]]] = [[]]
    for at, value in points:
        if value is None:
            if runs[-1]:
                runs.append([])
        else:
            runs[-1].append((at, value))
    return [run for run in runs if run]


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(_cell(value))}</td>" for value in row) + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4f}"
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return str(value)


STYLE = """
body { font: 14px system-ui, sans-serif; margin: 2em auto; max-width: 960px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: .5em 0; font-size: 12px; }
td, th { border: 1px solid #ddd; padding: 3px 6px; text-align: left; }
svg.chart { width: 100%; height: auto; background: #fafafa; border: 1px solid #eee; }
.series { fill: none; stroke-width: 1.8; } circle.series { stroke: none; }
.axis { stroke: #999; } .grid { stroke: #e6e6e6; } .mark { stroke-width: 1; opacity: .7; stroke-dasharray: 3 3; }
.mark.strong { stroke-width: 2; opacity: .9; stroke-dasharray: none; }
.title { font-weight: 600; font-size: 13px; } .tick, .legend-text { font-size: 11px; fill: #555; }
.axis-title { font-size: 12px; fill: #333; } .mark-label { font-size: 10px; font-weight: 600; }
.empty, .note { color: #888; } .note { font-size: 12px; }
"""


def write_html_report(snapshot: Path, out: Path, buckets: int = 60) -> Path:
    """Write ``snapshot``'s report as one self-contained HTML page at ``out``; return it."""
    data = report_data(snapshot, buckets)
    body = [f"<h1>adaptloop report</h1><p>Snapshot <code>{html.escape(str(snapshot))}</code>.</p>"]
    for series in data.models:
        marks = [
            (
                v["timestamp"],
                v["reason"] if v["reason"] in MARKED else "version",
                f"{v['version']} ({v['reason']})",
            )
            for v in series.versions
        ]
        marks += [(at, "alert", f"drift alert: {signal}") for at, signal in series.alerts]
        shadow = [(v["timestamp"], v["shadow"]) for v in series.versions if v["shadow"] is not None]
        body.append(f"<h2>Model {html.escape(series.model)}</h2>")
        body.append(
            _svg_chart(
                {
                    "production accuracy (served by a version)": series.buckets,
                    "shadow accuracy at each version (cumulative)": shadow,
                },
                marks,
                f"{series.model}: accuracy over time",
            )
        )
        body.append(
            _table(
                [
                    "version",
                    "parent",
                    "reason",
                    "examples seen",
                    "shadow accuracy",
                    ("production accuracy"),
                    "published",
                ],
                [
                    [
                        v["version"],
                        v["parent"],
                        v["reason"],
                        v["examples_seen"],
                        v["shadow"],
                        v["production"],
                        v["timestamp"],
                    ]
                    for v in series.versions
                ],
            )
        )
        body.append('<p class="note">-: no decision scored (a metric over none has no value).</p>')
    if data.traffic:
        body.append("<h2>Agents</h2>")
        body.append(
            _svg_chart(
                data.traffic, [], "share of the agents' steps per variant (gaps: no traffic)"
            )
        )
    if data.posteriors:
        body.append(
            _table(
                ["agent", "segment", "variant", "ups", "downs", "thumbs-up posterior mean"],
                [list(r) for r in data.posteriors],
            )
        )
    body.append("<h2>Dead letters</h2>")
    body.append(
        _table(
            ["source", "consumer", "kind", "cause", "records"],
            [
                [d["source_topic"], d["consumer"], d["kind"], d["cause"], d["records"]]
                for d in data.dead_letters
            ],
        )
        if data.dead_letters
        else '<p class="empty">None.</p>'
    )
    page = (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>adaptloop '
        "report</title>"
        f"<style>{STYLE}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return out
