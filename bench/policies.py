"""The drift policies on streams nobody tuned for: ``python -m bench policies [--quick]`` (no
broker).

Runs :func:`adaptloop.learners.drift_eval.policy_suite` (every policy, River's SEA, Agrawal,
STAGGER, Mixed and Sine generators, abrupt and gradual drifts at two positions, two seeds, the
logistic and Hoeffding recipes) in one process per core, and prints per recipe and stream the
production accuracy after the drift, the examples to recover and the switches, then a summary
against ``alert`` (what the model does with no policy acting). About 10 minutes on 2 cores (10m26s
on a shared machine, load 5 to 8); ``--quick`` runs one position and one seed (a quarter);
``--policies alert,canary+challenger`` runs only those (``alert`` always: the summary is against
it); ``--canary-share 0.5`` gives ``canary+challenger`` another share than :data:`SUITE_CANARY`'s
0.1.
"""

from __future__ import annotations

import os
import statistics
import sys
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor

from rich.console import Console
from rich.table import Table

from adaptloop.learners.drift_eval import (
    POLICIES,
    SUITE_CANARY,
    PolicyRun,
    SuiteStream,
    policy_run,
    suite_streams,
)
from adaptloop.learners.spec import CanarySpec

RECIPES = ("logistic", "hoeffding")


def _run(job: tuple[SuiteStream, str, str, CanarySpec]) -> PolicyRun:
    stream, recipe, policy, canary = job
    return policy_run(stream, recipe, policy, canary=canary)


def run_suite(
    quick: bool = False,
    jobs: int | None = None,
    policies: tuple[str, ...] = POLICIES,
    canary: CanarySpec = SUITE_CANARY,
) -> list[PolicyRun]:
    streams = suite_streams(positions=(2000,), seeds=(1,)) if quick else suite_streams()
    work = [
        (stream, recipe, policy, canary)
        for stream in streams
        for recipe in RECIPES
        for policy in policies
    ]
    with ProcessPoolExecutor(max_workers=jobs or os.cpu_count() or 1) as pool:
        return list(pool.map(_run, work, chunksize=1))


def _kind(stream: SuiteStream) -> str:
    return "abrupt" if stream.width == 1 else f"gradual ({stream.width})"


def tables(runs: list[PolicyRun]) -> list[Table]:
    """Per recipe: one row per generator and kind of drift (means over positions and seeds), then
    the summary (the policies that ran, in :data:`POLICIES` order)."""
    ran = {run.policy for run in runs}
    policies = [policy for policy in POLICIES if policy in ran]
    by: dict[tuple[str, str, str, str], list[PolicyRun]] = defaultdict(list)
    for run in runs:
        by[(run.recipe, run.stream.name, _kind(run.stream), run.policy)].append(run)
    out = []
    for recipe in RECIPES:
        table = Table(
            "stream",
            "drift",
            *(f"{policy}: accuracy after / to recover / switches" for policy in policies),
            title=f"{recipe}: production accuracy over the 5,000 decisions after the drift "
            "(mean over positions 2000 and 5000, seeds 1 and 2)",
        )
        groups = sorted({(name, kind) for r, name, kind, _ in by if r == recipe})
        for name, kind in groups:
            cells = []
            for policy in policies:
                group = by[(recipe, name, kind, policy)]
                recovered = [r.to_recover for r in group if r.to_recover is not None]
                recover = (
                    f"{statistics.fmean(recovered):.0f}" if len(recovered) == len(group) else "-"
                )
                switches = sum(r.switches for r in group)
                cells.append(
                    f"{statistics.fmean(r.accuracy_after for r in group):.3f} / "
                    f"{recover} / {switches}"
                )
            table.add_row(name, kind, *cells)
        out.append(table)
    summary = Table(
        "recipe",
        "policy",
        "mean accuracy after",
        "mean vs alert",
        "worst stream vs alert",
        "best stream vs alert",
        "switches",
        title="against alert alone, stream by stream (each position, width and seed a stream)",
    )
    alert = {(r.recipe, r.stream): r.accuracy_after for r in runs if r.policy == "alert"}
    for recipe in RECIPES:
        for policy in policies:
            mine = [r for r in runs if r.recipe == recipe and r.policy == policy]
            diffs = [r.accuracy_after - alert[(recipe, r.stream)] for r in mine]
            summary.add_row(
                recipe,
                policy,
                f"{statistics.fmean(r.accuracy_after for r in mine):.4f}",
                f"{statistics.fmean(diffs):+.4f}",
                f"{min(diffs):+.4f}",
                f"{max(diffs):+.4f}",
                str(sum(r.switches for r in mine)),
            )
    out.append(summary)
    return out


def _policies(argv: list[str]) -> tuple[str, ...]:
    """The policies ``--policies a,b`` names (with ``alert``), or all of them."""
    if "--policies" not in argv:
        return POLICIES
    named = set(argv[argv.index("--policies") + 1].split(","))
    if unknown := named - set(POLICIES):
        raise SystemExit(
            f"unknown policies {sorted(unknown)}; the suite's are {', '.join(POLICIES)}"
        )
    return tuple(policy for policy in POLICIES if policy in named | {"alert"})


def main(argv: list[str]) -> None:
    console = Console(width=240)
    canary = SUITE_CANARY
    if "--canary-share" in argv:
        canary = CanarySpec(share=float(argv[argv.index("--canary-share") + 1]))
    for table in tables(
        run_suite(quick="--quick" in argv, policies=_policies(argv), canary=canary)
    ):
        console.print(table)


if __name__ == "__main__":
    main(sys.argv[1:])
