"""PNG plots from a snapshot, for people who would rather look than read.

- ``<model>-metrics.png``: production accuracy of the served decisions over time, the
  shadow accuracy at each published version, version changes (rollbacks and
  promotions marked) and drift alerts;
- ``traffic-share.png``: the share of agent steps per variant over time (when the
  snapshot has agent feedback).
"""

from __future__ import annotations

from pathlib import Path

import duckdb


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def write_report(snapshot: Path, out: Path, buckets: int = 60) -> list[Path]:
    """Write the plots of ``snapshot`` into ``out``; return the files written."""
    plt = _plt()
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with duckdb.connect(str(snapshot), read_only=True) as db:
        models = [m for (m,) in db.execute("SELECT DISTINCT model FROM model_updates ORDER BY 1").fetchall()]
        for model in models:
            served = db.execute(
                """
                WITH decided AS (
                    SELECT * FROM training_examples WHERE model = $model AND status = 'joined'
                    QUALIFY row_number() OVER (PARTITION BY decision_id ORDER BY _offset DESC) = 1
                ), bounds AS (SELECT min(epoch(predicted_at)) AS lo, max(epoch(predicted_at)) AS hi FROM decided)
                SELECT to_timestamp(lo + (hi - lo + 1e-9) * (least(floor((epoch(predicted_at) - lo)
                            / (hi - lo + 1e-9) * $buckets), $buckets - 1) + 0.5) / $buckets) AS bucket_time,
                       avg((prediction = label)::INT) AS accuracy
                FROM decided, bounds GROUP BY ALL ORDER BY bucket_time
                """,
                {"model": model, "buckets": buckets},
            ).fetchall()
            versions = db.execute(
                """SELECT timestamp, reason, TRY_CAST(metrics->>'$."shadow.Accuracy"' AS DOUBLE)
                   FROM model_updates WHERE model = $model ORDER BY _offset""",
                {"model": model},
            ).fetchall()
            alerts = db.execute(
                "SELECT timestamp, signal FROM drift_alerts WHERE model = $model ORDER BY timestamp", {"model": model}
            ).fetchall()
            figure, axis = plt.subplots(figsize=(11, 4.5))
            if served:
                axis.plot(
                    [t for t, _ in served],
                    [a for _, a in served],
                    label="production accuracy (served)",
                    color="tab:blue",
                )
            shadow = [(t, a) for t, _, a in versions if a is not None]
            if shadow:
                axis.plot(
                    [t for t, _ in shadow],
                    [a for _, a in shadow],
                    "o-",
                    markersize=3,
                    color="tab:orange",
                    label="shadow accuracy at each version (cumulative)",
                )
            colours = {"rollback": "tab:red", "promotion": "tab:green"}
            for at, reason, _ in versions:
                axis.axvline(
                    at, color=colours.get(reason, "lightgrey"), linewidth=1.5 if reason in colours else 0.6, zorder=0
                )
            for reason, colour in colours.items():
                if any(r == reason for _, r, _ in versions):
                    axis.plot([], [], color=colour, label=reason)
            if alerts:
                axis.scatter(
                    [t for t, _ in alerts],
                    [1.03] * len(alerts),
                    marker="v",
                    color="tab:purple",
                    label="drift alert",
                    zorder=3,
                )
            axis.set_ylim(-0.02, 1.08)
            axis.set_title(f"{model}: accuracy over time ({len(versions)} versions, grey lines = new versions)")
            axis.set_ylabel("accuracy")
            if axis.get_legend_handles_labels()[0]:
                axis.legend(loc="lower left", fontsize=8)
            figure.autofmt_xdate()
            path = out / f"{model}-metrics.png"
            figure.savefig(path, dpi=110, bbox_inches="tight")
            plt.close(figure)
            written.append(path)
        shares = db.execute(
            """SELECT date_trunc('second', timestamp) AS bucket_time, variant, count(*) AS steps FROM agent_feedback
               GROUP BY ALL ORDER BY bucket_time"""
        ).fetchall()
    if shares:
        times = sorted({t for t, _, _ in shares})
        variants = sorted({v for _, v, _ in shares})
        totals = {t: sum(n for tt, _, n in shares if tt == t) for t in times}
        figure, axis = plt.subplots(figsize=(11, 4))
        axis.stackplot(
            times,
            [
                [next((n for tt, vv, n in shares if tt == t and vv == v), 0) / totals[t] for t in times]
                for v in variants
            ],
            labels=variants,
        )
        axis.set_title("traffic share per agent variant")
        axis.legend(loc="upper left", fontsize=8)
        path = out / "traffic-share.png"
        figure.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(figure)
        written.append(path)
    return written
