"""``python -m bench``: how fast the loop runs, as ratios against baselines measured in the same
run.

Needs a broker (``adaptloop kafka up``, or ``ADAPTLOOP_BOOTSTRAP``) and the ``bench`` extra (faust
for the naive peer, Bytewax; Quix Streams gets a venv of its own on first use). Prints a table and
writes ``bench/results.json``; ``python -m bench peers`` runs the peers' rows alone, ``python -m
bench learner`` the learner agent's rows against River and the Quix Streams learner app, ``python -m
bench policies`` the drift policies' suite (:mod:`bench.policies`, no broker), and ``python -m bench
clients`` what 100 ModelClients cost in one process (:mod:`bench.clients`). Each row divides a
measurement by a baseline taken now on this machine, so a noisy shared machine moves both alike:

- the peers users would pick instead (:mod:`bench.peers`): the loop (join + learner) on a backlog of
  decisions against a Bytewax dataflow and a Quix Streams app, and the learner alone against a
  Quix Streams learner app, all with the same River recipe;
- River in process (predict_proba_one + learn_one): the physical limit of each learner;
- the OnlineLearner in process, and the learner agent reading training examples from Kafka;
- reading alone (consume + validate, nothing learned): with River's time on the same core, the
  ceiling of any learner that reads its examples from Kafka;
- the same with mini-batches (learn_many), against River's learn_one and learn_many;
- the learner agent as it runs after a while: default versions, its duplicate window full;
- the naive peer: the learning job as one faust agent, one event at a time (JSON + learn_one);
- the whole loop from produced predictions and outcomes: a worker with every role, then the join and
  the learner alone (the archive on another machine), with the CPU each process spent per decision:
  their sum bounds the decisions per second this machine's cores allow; and the join's Kafka work
  alone (:mod:`bench.join_floor`: its reads, writes and transactions, no logic), the floor under its
  column;
- two models learned by one learner process and by two;
- outcome sent -> version serving it, and version published -> served, at half the loop's top rate;
- ``adaptloop serve``: predictions per second over HTTP, and p50/p99 latency at half that rate;
- the producer SDK against raw confluent-kafka produce, the archive's Parquet writes (outcomes,
  training examples), a 10-million-row audit.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import orjson
from rich.console import Console
from rich.table import Table

from adaptloop.learners.recent import RECENT_IDS
from adaptloop.learners.spec import DriftSpec, LearnerSpec
from adaptloop.roles import tune_gc
from adaptloop.schemas.topics import OUTCOMES, TRAINING_EXAMPLES
from adaptloop.settings import Settings
from adaptloop.streams import delete_topics
from adaptloop.worker import HASH_SEED
from bench.io import archive_rate, audit_query, producer_rates
from bench.join_floor import join_kafka_floor
from bench.learning import (
    WATCH_AND_ALERT,
    Data,
    agent_rate,
    learner_rate,
    produce_examples,
    read_rate,
    river_many_rate,
    river_rate,
    stream,
)
from bench.loop import learner_scaleout, loop_run, median, percentile
from bench.naive import naive_rate
from bench.peers import PeerRun, adaptloop_loop, bytewax_loop, quix_loop, quix_run
from bench.serve import serve_run

N = int(os.environ.get("BENCH_EXAMPLES", "20000"))
MINI_BATCH = 500
# the steady-state row learns this many examples after the duplicate window is full
STEADY_EXTRA = 50_000
LOOP_SCALE = 3  # the full-speed loop runs take this many times N decisions
# bench.cpu names
CPU_KEYS = ("bench (producer, model client)", "broker", "join", "learn", "archive", "agents")
CPU_COLUMNS = ("producer", "broker", "join", "learner", "archive", "agentops")
# the learning-stage rates are medians of this many rounds: the machine is shared and noisy
REPEATS = 3


def medians_of_rounds(*measures: Callable[[], float], rounds: int = REPEATS) -> list[float]:
    """Each measure's median over ``rounds`` rounds of all of them, one after the other: a slow
    spell of the machine falls on a rate and its baseline alike, not on one of them only."""
    taken = [[measure() for measure in measures] for _ in range(rounds)]
    return [statistics.median(column) for column in zip(*taken)]


def peers(
    settings: Settings,
    data: Data,
    table: Table,
    row: Callable[..., None],
    results: dict[str, object],
) -> None:
    """adaptloop against Bytewax and Quix Streams with River (:mod:`bench.peers`): the loop on a
    backlog of decisions, then the learner alone on a topic of training examples; medians of rounds
    of all."""
    decisions = stream(LOOP_SCALE * N, seed=3)
    found: dict[str, object] = {}
    for recipe in ("logistic", "hoeffding"):
        runs: dict[str, list[PeerRun]] = {"adaptloop": [], "bytewax": [], "quix": []}
        rivers = []
        for _ in range(REPEATS):
            rivers.append(river_rate(recipe, data))
            runs["adaptloop"].append(adaptloop_loop(settings, recipe, decisions))
            runs["bytewax"].append(bytewax_loop(settings, recipe, decisions))
            runs["quix"].append(quix_loop(settings, recipe, decisions))
        rates = {
            name: statistics.median(run.rate for run in rounds) for name, rounds in runs.items()
        }
        steady = {
            name: statistics.median(run.steady_rate for run in rounds)
            for name, rounds in runs.items()
        }
        river = statistics.median(rivers)
        found[f"{recipe}_loop"] = {
            "decisions": len(decisions),
            "river_per_s": river,
            **{f"{name}_per_s": rate for name, rate in rates.items()},
            **{f"{name}_steady_per_s": rate for name, rate in steady.items()},
            "accuracy": {name: [run.accuracy for run in rounds] for name, rounds in runs.items()},
            "startup_s": {name: [run.startup_s for run in rounds] for name, rounds in runs.items()},
            "adaptloop_assignment_to_first_example_s": [
                run.after_assignment_s for run in runs["adaptloop"]
            ],
        }
        for peer, label in (("bytewax", "Bytewax dataflow"), ("quix", "Quix Streams app")):
            row(
                f"{recipe}: loop (join + learner), backlog / {label}",
                rates["adaptloop"],
                rates[peer],
                steady=(steady["adaptloop"], steady[peer]),
            )
        row(
            f"{recipe}: loop (join + learner), backlog / River",
            rates["adaptloop"],
            river,
            steady=(steady["adaptloop"], river),
        )
        if recipe == "logistic":
            startups = {
                name: statistics.median(run.startup_s for run in rounds)
                for name, rounds in runs.items()
            }
            table.add_row(
                "start-up to the first example: adaptloop (joined) / Bytewax / Quix (learned)",
                " / ".join(f"{startups[name]:.1f}" for name in ("adaptloop", "bytewax", "quix"))
                + " s",
                "",
                "",
            )
    learner_peers(settings, data, row, found)
    results["peers"] = found


def learner_peers(
    settings: Settings, data: Data, row: Callable[..., None], found: dict[str, object]
) -> None:
    """The learner alone from a topic of training examples: the learner agent against River in
    process and the Quix Streams learner app; medians of interleaved rounds."""
    bootstrap = settings.bootstrap_address
    prefix = produce_examples(bootstrap, data)
    topic = TRAINING_EXAMPLES.full_name(prefix)
    for recipe in ("logistic", "hoeffding"):
        spec = LearnerSpec(
            name="b",
            recipe=recipe,
            metrics=["Accuracy"],
            drift=WATCH_AND_ALERT,
            checkpoint_every=5000,
            checkpoint_seconds=None,
        )
        # What the drift monitors cost: the same agent watching neither errors nor data.
        unwatched = spec.model_copy(update={"drift": DriftSpec(concept=False, data=False)})
        river, agent, bare, quix = medians_of_rounds(
            lambda recipe=recipe: river_rate(recipe, data),
            # Timed as the Quix app times itself: from its tenth example to the last (steady work).
            lambda spec=spec: agent_rate(bootstrap, prefix, spec, N, after=N // 10),
            lambda spec=unwatched: agent_rate(bootstrap, prefix, spec, N, after=N // 10),
            lambda recipe=recipe: quix_run(bootstrap, "learn", topic, recipe, N).steady_rate,
        )
        found[f"{recipe}_learner"] = {
            "river_per_s": river,
            "learner_agent_per_s": agent,
            "learner_agent_no_drift_monitors_per_s": bare,
            "quix_learner_per_s": quix,
        }
        row(f"{recipe}: learner agent / Quix Streams learner app", agent, quix)
        row(f"{recipe}: learner agent, drift monitors off / Quix Streams learner app", bare, quix)
        row(f"{recipe}: learner agent / River", agent, river)
    delete_topics(bootstrap, prefix)


def main(sections: tuple[str, ...] = ("all",)) -> None:
    os.environ.setdefault("PYTHONHASHSEED", HASH_SEED)
    console = Console(width=max(130, Console().width))
    settings = Settings()
    bootstrap = settings.bootstrap_address
    data = stream(N)
    # The learning stage runs in this process: collect garbage as the worker's roles do (with
    # Python's defaults, decoding cost 8-11 µs an example instead of 4). River's baselines run under
    # the same settings; the naive peer runs in a process of its own with Python's, and the roles'
    # settings did not change its rate (5,000-5,800/s either way, measured).
    tune_gc()
    results: dict[str, object] = {"examples": N, "at": datetime.now(UTC).isoformat()}
    table = Table(
        "measurement",
        "rate",
        "baseline",
        "ratio",
        "steady rate",
        "steady ratio",
        title=f"adaptloop bench ({N:,} examples, Hyperplane)",
    )

    def row(
        name: str,
        rate: float,
        baseline: float | None,
        unit: str = "/s",
        steady: tuple[float, float] | None = None,
    ) -> None:
        """A rate against its baseline; ``steady``: the same two from a tenth of the work done (the
        loop rows' rates run from the start)."""
        table.add_row(
            name,
            f"{rate:,.0f}{unit}",
            f"{baseline:,.0f}{unit}" if baseline else "",
            f"{rate / baseline:.2f}" if baseline else "",
            f"{steady[0]:,.0f}{unit}" if steady else "",
            f"{steady[0] / steady[1]:.2f}" if steady else "",
        )

    out = Path(__file__).with_name("results.json")
    # the learner agent's rows alone: the other results of the last run stay
    if sections == ("learner",):
        found: dict[str, object] = {}
        with console.status("the learner agent against River and the Quix Streams learner app"):
            learner_peers(settings, data, row, found)
        console.print(table)
        previous = orjson.loads(out.read_bytes()) if out.exists() else {}
        merged = {**previous, "peers": {**previous.get("peers", {}), **found}}
        out.write_bytes(orjson.dumps(merged, option=orjson.OPT_INDENT_2))
        console.print(f"results in {out}")
        return
    with console.status("the peers: adaptloop, Bytewax and Quix Streams on the same backlog"):
        peers(settings, data, table, row, results)
    if sections == ("peers",):  # only these rows: the other results of the last full run stay
        console.print(table)
        previous = orjson.loads(out.read_bytes()) if out.exists() else {}
        out.write_bytes(
            orjson.dumps({**previous, "peers": results["peers"]}, option=orjson.OPT_INDENT_2)
        )
        console.print(f"results in {out}")
        return

    with console.status(
        "the learning stage: River, OnlineLearner, learner agent, naive faust peer"
    ):
        prefix = produce_examples(bootstrap, data)
        topic = TRAINING_EXAMPLES.full_name(prefix)
        for recipe in ("logistic", "hoeffding"):
            spec = LearnerSpec(
                name="b",
                recipe=recipe,
                metrics=["Accuracy"],
                drift=WATCH_AND_ALERT,
                checkpoint_every=5000,
                checkpoint_seconds=None,
            )
            river, ours, agent = medians_of_rounds(
                lambda recipe=recipe: river_rate(recipe, data),
                lambda spec=spec: learner_rate(spec, data),
                lambda spec=spec: agent_rate(bootstrap, prefix, spec, N),
            )
            naive = naive_rate(bootstrap, topic, N, recipe)
            results[recipe] = {
                "river_per_s": river,
                "online_learner_per_s": ours,
                "learner_agent_per_s": agent,
                "naive_faust_per_s": naive,
            }
            row(f"{recipe}: OnlineLearner in process / River", ours, river)
            row(f"{recipe}: learner agent from Kafka / River", agent, river)
            row(f"{recipe}: learner agent / naive faust agent", agent, naive)
            if recipe == "logistic":
                # The floor under any learner that reads Kafka: consuming and validating alone.
                river, read, validated = medians_of_rounds(
                    lambda recipe=recipe: river_rate(recipe, data),
                    lambda: read_rate(bootstrap, prefix, N),
                    lambda: read_rate(bootstrap, prefix, N, trusted=False),
                )
                ceiling = 1 / (1 / read + 1 / river)
                results[recipe].update(
                    {
                        "read_per_s": read,
                        "read_validated_per_s": validated,
                        "river_read_round_per_s": river,
                        "ceiling_from_kafka_per_s": ceiling,
                    }
                )
                row(
                    "reading alone (consume + the learner's typed decode) / River logistic",
                    read,
                    river,
                )
                row(
                    "reading alone (consume + pydantic validation, before) / River logistic",
                    validated,
                    river,
                )
                row(
                    "River logistic + reading on one core / River (the ceiling from Kafka)",
                    ceiling,
                    river,
                )
        river = results["logistic"]["river_per_s"]  # type: ignore[index]
        batched = LearnerSpec(
            name="b",
            recipe="logistic",
            metrics=["Accuracy"],
            drift=WATCH_AND_ALERT,
            checkpoint_every=5000,
            checkpoint_seconds=None,
            mini_batch=MINI_BATCH,
        )
        many, agent = medians_of_rounds(
            lambda: river_many_rate("logistic", data, MINI_BATCH),
            lambda: agent_rate(bootstrap, prefix, batched, N - N % MINI_BATCH),
        )
        results["mini_batch"] = {
            "size": MINI_BATCH,
            "river_learn_many_per_s": many,
            "learner_agent_per_s": agent,
        }
        row(f"logistic, mini-batch {MINI_BATCH}: learner agent / River learn_one", agent, river)
        row(f"logistic, mini-batch {MINI_BATCH}: learner agent / River learn_many", agent, many)
        delete_topics(bootstrap, prefix)
        # A learner that has run a while, with the default versions (one every 1,000 examples): its
        # duplicate window is full, and every version checkpoints it.
        steady = stream(RECENT_IDS + STEADY_EXTRA, seed=4)
        steady_prefix = produce_examples(bootstrap, steady)
        defaults = LearnerSpec(
            name="b", recipe="logistic", metrics=["Accuracy"], drift=WATCH_AND_ALERT
        )
        river, agent = medians_of_rounds(
            lambda: river_rate("logistic", data),
            lambda: agent_rate(bootstrap, steady_prefix, defaults, len(steady), after=RECENT_IDS),
        )
        results["steady"] = {
            "examples": [RECENT_IDS, len(steady)],
            "checkpoint_every": defaults.checkpoint_every,
            "river_per_s": river,
            "learner_agent_per_s": agent,
        }
        row(
            f"logistic, defaults, examples {RECENT_IDS // 1000}k-{len(steady) // 1000}k: agent "
            "/ River",
            agent,
            river,
        )
        delete_topics(bootstrap, steady_prefix)

    cpu = Table(
        "CPU µs per decision",
        *CPU_COLUMNS,
        "total",
        "cores busy",
        "cores' ceiling",
        title="where the loop's CPU goes (user + system time of each process, /proc)",
    )
    with console.status(
        "the whole loop in a worker (join, learner, archive), then join and learner alone"
    ):
        # long enough that start and end are a small part
        decisions = stream(LOOP_SCALE * N, seed=3)
        # Untimed: a broker's JVM compiles its hot paths over its first minutes of load. Right after
        # a start, the broker spent 90 µs of CPU per decision, falling to 41 over six runs
        # (measured).
        loop_run(settings, "logistic", decisions, roles=("join", "learn"))
        loops = {}
        for recipe in ("logistic", "hoeffding"):
            # now: the machine drifts
            river = statistics.median(river_rate(recipe, data) for _ in range(REPEATS))
            results.setdefault("loop", {}).setdefault(recipe, {})["river_per_s"] = river  # type: ignore[union-attr]
            for roles, label in ((("all",), "whole worker"), (("join", "learn"), "join + learner")):
                run = loops[(recipe, roles)] = loop_run(settings, recipe, decisions, roles=roles)
                results.setdefault("loop", {}).setdefault(recipe, {})[label] = {  # type: ignore[union-attr]
                    "examples_per_s": run.rate,
                    "decisions": len(decisions),
                    "cpu_us_per_decision": run.cpu_us,
                    "cores_busy": run.cores_busy,
                }
                row(f"{recipe}: loop, {label} / River", run.rate, river)
                total = sum(run.cpu_us.values())
                cpu.add_row(
                    f"{recipe}, {label}",
                    *(f"{run.cpu_us[c]:.0f}" if c in run.cpu_us else "" for c in CPU_KEYS),
                    f"{total:.0f}",
                    f"{run.cores_busy:.2f}",
                    f"{(os.cpu_count() or 1) * 1e6 / total:,.0f}/s",
                )
            cpu.add_row(
                f"{recipe}, River alone",
                *([""] * len(CPU_KEYS)),
                f"{1e6 / river:.0f}",
                "1.00",
                f"{river:,.0f}/s",
            )  # one model learns on one core
        # The floor under the join column: its Kafka reads, writes and transactions, no decoding and
        # no logic.
        floor = statistics.median(
            join_kafka_floor(settings, decisions).cpu_us for _ in range(REPEATS)
        )
        results["join_kafka_floor_cpu_us_per_decision"] = floor
        cpu.add_row(
            "the join's Kafka work alone (no decoding, no logic)",
            *(f"{floor:.0f}" if key == "join" else "" for key in CPU_KEYS),
            "",
            "",
            "",
        )
        half = loop_run(
            settings, "logistic", data, per_second=loops[("logistic", ("all",))].rate / 2
        )
        lags = {"outcome_to_served": half.learn_lags, "published_to_served": half.refresh_lags}
        results["latency_at_half_load"] = {
            "per_second": loops[("logistic", ("all",))].rate / 2,
            "checkpoint_seconds": 0.5,
            **{f"{name}_p50_s": median(values) for name, values in lags.items()},
            **{f"{name}_p99_s": percentile(values, 0.99) for name, values in lags.items()},
        }
        for name, values in lags.items():
            if values:
                table.add_row(
                    f"{name.replace('_', ' ')} at half load, p50 / p99",
                    f"{median(values) * 1000:.0f} / {percentile(values, 0.99) * 1000:.0f} ms",
                    "",
                    "",
                )

    with console.status("two models: one learner process, then two"):
        longer = stream(2 * N, seed=2)  # per model: long enough that start and end are a small part
        one, two = medians_of_rounds(
            *(
                lambda workers=workers: learner_scaleout(settings, "logistic", longer, workers)
                for workers in (1, 2)
            )
        )
        results["scaleout"] = {"one_learner_per_s": one, "two_learners_per_s": two}
        row("2 models: two learner processes / one", two, one)

    with console.status("adaptloop serve: top rate and latencies at half of it"):
        served = serve_run(settings)
        results["serve"] = {
            "top_per_s": served.top_rate,
            "paced_per_s": served.paced_rate,
            "p50_ms": served.p50_ms,
            "p99_ms": served.p99_ms,
            "errors": served.errors,
        }
        row(
            "adaptloop serve: predictions/s over HTTP (8 keep-alive clients)", served.top_rate, None
        )
        table.add_row(
            f"adaptloop serve at half rate ({served.paced_rate:,.0f}/s): p50 / p99",
            f"{served.p50_ms:.1f} / {served.p99_ms:.1f} ms",
            "target p99 < 10 ms",
            f"{served.errors} errors",
        )

    with console.status("producer SDK against raw confluent-kafka"):
        sdk, raw = producer_rates(bootstrap)
        results["producer"] = {"sdk_per_s": sdk, "raw_per_s": raw}
        row("producer SDK / raw confluent-kafka produce", sdk, raw)

    with console.status("archive writes and a 10-million-row audit"):
        archive, examples = archive_rate(OUTCOMES), archive_rate(TRAINING_EXAMPLES)
        written, query = audit_query()
        results["archive"] = {
            "rows_per_s": archive,
            "training_examples_per_s": examples,
            "audit_10m_rows_s": query,
            "write_10m_rows_s": written,
        }
        row("archive: outcomes/s to Parquet (decode + typed columns)", archive, None)
        row("archive: training examples/s to Parquet (the learner's reader)", examples, None)
        table.add_row("audit GROUP BY over 10M archived rows", f"{query:.2f} s", "", "")
    console.print(table)
    console.print(cpu)
    out.write_bytes(orjson.dumps(results, option=orjson.OPT_INDENT_2))
    console.print(f"results in {out}")


def fuzz(examples: int) -> None:
    """``python -m bench fuzz [N]``: the fuzz test of the suite with ``N`` Hypothesis batches
    (default 2,000; the suite draws 40), against the test broker."""
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-s",
        "-p",
        "no:cacheprovider",
        "tests/integration/test_fuzz.py",
    ]
    env = {**os.environ, "ADAPTLOOP_FUZZ_EXAMPLES": str(examples)}
    raise SystemExit(subprocess.run(command, env=env, cwd=Path(__file__).parent.parent).returncode)


if __name__ == "__main__":
    if sys.argv[1:2] == ["fuzz"]:
        fuzz(int(sys.argv[2]) if len(sys.argv) > 2 else 2000)
    if sys.argv[1:2] == ["clients"]:  # many ModelClients in one process (:mod:`bench.clients`)
        from bench.clients import MODELS
        from bench.clients import main as clients

        clients(int(sys.argv[2]) if len(sys.argv) > 2 else MODELS)
        raise SystemExit(0)
    if sys.argv[1:2] == ["policies"]:  # the drift policies' suite: no broker, no peers
        from bench.policies import main as policies

        policies(sys.argv[2:])
        raise SystemExit(0)
    main(tuple(sys.argv[1:2]) or ("all",))
