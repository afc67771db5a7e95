"""Dagster's per-step overhead: a warm run of a small drop's assets, step by step.

Builds a temporary data root (a drop of the real 8x8 digits upscaled to PNG, the WordNet vocabulary cache,
noun embeddings materialized once with the offline ``tac-tiny`` encoder) and a temporary ``DAGSTER_HOME``,
then times a run of the partitioned assets of one partition through the CLI's own materialize
(:func:`benchmarks.dagster_runs.materialize_timed`: a child process, as ``make cluster`` runs it). Every
repetition clusters a fresh
partition holding the same images, so every run does the same work (nothing is reused). For each run it
prints the wall time, the run's own duration (RUN_START to RUN_SUCCESS), the number of steps and of step
processes, and per step the start overhead (the executor launching its process, STEP_WORKER_STARTING, to
the step starting, STEP_START) and its time (STEP_START to STEP_SUCCESS), read from the instance's event log.

    python -m benchmarks.bench_dagster_overhead                                   # this tree as it is
    python -m benchmarks.bench_dagster_overhead --executor spawn forkserver in_process --repeat 5
    mkdir /tmp/before && git archive HEAD | tar -x -C /tmp/before                 # an older tree ...
    python -m benchmarks.bench_dagster_overhead --baseline /tmp/before --executor forkserver in_process

``--executor`` values go to the run config (``execution: {config: {mode: ...}}``, see
``tac_pipeline.defs.executors.local.EXECUTOR_MODES``) of every ``--tree``; a ``--baseline`` tree runs with
its own executor's defaults (for trees whose executor has no ``mode``). A run of another tree starts in that
tree, with it first on ``PYTHONPATH``, so that its child process imports that tree's package.
Variants run interleaved (repetition 1 of each, then 2, ...) so that a load change hits them all alike;
medians are reported. Not a test.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks import REPO
from benchmarks.dagster_runs import child_environment, latest_run_id, materialize_timed, open_home
from benchmarks.inputs import link_tree, wordnet_vocabulary


@dataclass
class Variant:
    tree: Path
    executor: str | None

    @property
    def label(self) -> str:
        tree = "this tree" if self.tree == REPO else str(self.tree)
        return f"{tree}, mode {self.executor}" if self.executor else tree


@dataclass
class RunStats:
    wall: float
    run_seconds: float
    steps: int
    processes: int
    start_overhead: dict[str, float] = field(default_factory=dict)  # step -> worker start to STEP_START
    step_seconds: dict[str, float] = field(default_factory=dict)  # step -> STEP_START to its end


def prepare(work: Path, images: int) -> tuple[Path, Path]:
    """A data root (source images, WordNet cache) and a DAGSTER_HOME under ``work``."""
    from tac_pipeline.drops.demo import write_digits_drop
    from tac_pipeline.encoders.wordnet import CACHE_FILE
    from tac_pipeline.store.layout import cache_dir, drops_dir

    root, home = work / "data", work / "dagster_home"
    drops_dir(root).mkdir(parents=True)
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    write_digits_drop(work / "source", limit=images)
    cache = cache_dir(root) / CACHE_FILE
    cache.parent.mkdir(parents=True)
    shipped = cache_dir() / CACHE_FILE  # the configured data root's (./data by default)
    if shipped.is_file():
        shutil.copyfile(shipped, cache)
    else:
        wordnet_vocabulary(root)  # parses the system WordNet into the cache
    return root, home


def environment(root: Path, home: Path, variant: Variant) -> dict[str, str]:
    """The run's child environment: the offline encoder on the CPU, the tree's package first on
    ``PYTHONPATH`` (before the editable install of this checkout)."""
    settings = {
        "DAGSTER_HOME": str(home),
        "TAC_DATA_DIR": str(root),
        "TAC_CLIP_MODEL": "tac-tiny",
        "TAC_CLIP_PRETRAINED": "none",
        "TAC_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    return child_environment(settings, tree=variant.tree)


def run_stats(instance, wall: float) -> RunStats:
    """Steps, processes and timings of the instance's latest run, from its event log."""
    from dagster import DagsterEventType

    run_id = latest_run_id(instance)
    first: dict[DagsterEventType, dict[str, float]] = {}
    run_start = run_end = None
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None:
            continue
        kind = event.event_type
        if kind == DagsterEventType.RUN_START:
            run_start = record.timestamp
        elif kind in (DagsterEventType.RUN_SUCCESS, DagsterEventType.RUN_FAILURE):
            run_end = record.timestamp
        elif event.step_key:
            first.setdefault(kind, {}).setdefault(event.step_key, record.timestamp)
    workers = first.get(DagsterEventType.STEP_WORKER_STARTING, {})
    starts = first.get(DagsterEventType.STEP_START, {})
    ends = {**first.get(DagsterEventType.STEP_FAILURE, {}), **first.get(DagsterEventType.STEP_SUCCESS, {})}
    return RunStats(
        wall=wall,
        run_seconds=(run_end or 0.0) - (run_start or 0.0),
        steps=len(starts),
        processes=len(workers),
        start_overhead={k: starts[k] - t for k, t in workers.items() if k in starts},
        step_seconds={k: ends[k] - t for k, t in starts.items() if k in ends},
    )


def load() -> str:
    return "load average " + ", ".join(f"{x:.2f}" for x in os.getloadavg())


def summary(variant: Variant, runs: list[RunStats]) -> str:
    med = statistics.median
    lines = [f"## {variant.label}"]
    lines.append(f"walls: {', '.join(f'{r.wall:.1f}' for r in runs)} s")
    overheads = [sum(r.start_overhead.values()) for r in runs]
    lines.append(
        f"median wall {med(r.wall for r in runs):.1f} s, run {med(r.run_seconds for r in runs):.1f} s, "
        f"CLI outside the run {med(r.wall - r.run_seconds for r in runs):.1f} s; "
        f"{runs[0].steps} steps in {runs[0].processes} step processes; "
        f"start overhead {med(overheads):.1f} s in all"
        + (
            f" (median per step {med(v for r in runs for v in r.start_overhead.values()):.2f} s)"
            if runs[0].processes
            else ""
        )
    )
    lines.append("| step | start overhead (s) | step (s) |")
    lines.append("| --- | --- | --- |")
    for step in sorted(runs[0].step_seconds, key=lambda s: min(r.step_seconds.get(s, 0) for r in runs)):
        over = [r.start_overhead[step] for r in runs if step in r.start_overhead]
        lines.append(
            f"| {step} | {f'{med(over):.2f}' if over else '–'} | "
            f"{med(r.step_seconds[step] for r in runs if step in r.step_seconds):.2f} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=400, help="images in the drop (default 400)")
    parser.add_argument(
        "--nouns", type=int, default=2000, help="noun embeddings to materialize (default 2000)"
    )
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per variant (default 3)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs per variant first (default 1)")
    parser.add_argument(
        "--tree", type=Path, action="append", help="source tree(s) to run (default: this checkout)"
    )
    parser.add_argument(
        "--baseline", type=Path, action="append", default=[], help="tree(s) run with no executor config"
    )
    parser.add_argument(
        "--executor", nargs="*", default=[None], help="executor mode(s): forkserver, spawn, in_process"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)

    from tac_pipeline.defs.names import DATASET_ASSETS, NOUN_ASSET
    from tac_pipeline.defs.partitions import datasets_partitions
    from tac_pipeline.store.layout import drop_path

    trees = [t.resolve() for t in (args.tree or [REPO])]
    variants = [Variant(t.resolve(), None) for t in args.baseline]
    variants += [Variant(t, e) for t in trees for e in (args.executor or [None])]
    work = Path(tempfile.mkdtemp(prefix="tac-dagster-overhead-"))
    try:
        root, home = prepare(work, args.images)
        print(f"{args.images} images, {args.nouns} nouns, tac-tiny on CPU, {os.cpu_count()} CPUs; {load()}")
        with open_home(home) as instance:
            env = environment(root, home, variants[0])
            seconds = materialize_timed(
                [NOUN_ASSET],
                instance=instance,
                env=env,
                run_config={"ops": {NOUN_ASSET: {"config": {"max_nouns": args.nouns}}}},
                cwd=variants[0].tree,
            )
            print(f"noun embeddings (untimed setup): {seconds:.1f} s")
            results: dict[int, list[RunStats]] = {i: [] for i in range(len(variants))}
            counter = 0
            for repetition in range(args.warmup + args.repeat):
                for i, variant in enumerate(variants):
                    key = f"bench{counter:03d}"
                    counter += 1
                    link_tree(work / "source", drop_path(key, root))
                    instance.add_dynamic_partitions(datasets_partitions.name, [key])
                    config = (
                        {"execution": {"config": {"mode": variant.executor}}} if variant.executor else None
                    )
                    env = environment(root, home, variant)
                    wall = materialize_timed(
                        DATASET_ASSETS,
                        instance=instance,
                        env=env,
                        partition=key,
                        run_config=config,
                        cwd=variant.tree,
                    )
                    stats = run_stats(instance, wall)
                    timed = repetition >= args.warmup
                    print(
                        f"{'run' if timed else 'warm-up'} {repetition + 1}, {variant.label}: {wall:.1f} s wall, "
                        f"{stats.steps} steps, {stats.processes} processes; {load()}",
                        flush=True,
                    )
                    if timed:
                        results[i].append(stats)
        print()
        for i, variant in enumerate(variants):
            print(summary(variant, results[i]))
            print()
        print(load())
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
