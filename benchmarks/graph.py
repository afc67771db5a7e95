"""The whole-graph sections of :mod:`benchmarks.run`: ``graph`` and ``graph-cli``.

Both time a generated CIFAR-sized drop cold (the noun embeddings, then the drop) and warm (a second drop,
noun embeddings already materialized), step by step. ``graph`` materializes the real assets and checks in
this process (without Dagster: the encoders, then ``TAC.fit`` and its predictions) and times the start of a
fresh Python importing torch and open_clip; ``graph-cli`` runs them as ``make cluster`` does
(:func:`benchmarks.dagster_runs.materialize_timed`). Asset names come from :mod:`tac_pipeline.defs.names`.
"""

from __future__ import annotations

import ast
import contextlib
import importlib.util
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace

from benchmarks import REPO
from benchmarks.dagster_runs import (
    child_environment,
    dagster_available,
    latest_run_id,
    materialize_timed,
    open_home,
    step_times,
)
from benchmarks.harness import N_CLASSES, Bench, Row
from benchmarks.inputs import link_tree, write_vocabulary_cache


def asset_names():
    """:mod:`tac_pipeline.defs.names`; where Dagster, which that module imports, is absent, a namespace of
    its literal constants (``ASSET_NAMES``, ``NOUN_ASSET``, ``IMAGE_ASSET``, ...) read from its source."""
    try:
        from tac_pipeline.defs import names
    except ImportError:
        source = Path(importlib.util.find_spec("tac_pipeline").origin).parent / "defs" / "names.py"
        constants = {}
        for node in ast.parse(source.read_text(encoding="utf-8")).body:
            if (
                isinstance(node, ast.Assign)
                and len(node.targets) == 1
                and isinstance(node.targets[0], ast.Name)
            ):
                with contextlib.suppress(ValueError, TypeError, SyntaxError):
                    constants[node.targets[0].id] = ast.literal_eval(node.value)
        return SimpleNamespace(**constants)
    return names


def prepare_data_root(b: Bench, root: Path) -> tuple[str, str]:
    """A data root with two partitions of the same generated images (cold, warm) and a WordNet cache."""
    from tac_pipeline.store.layout import drop_path

    source = b.drop(b.scale.drop_train, b.scale.drop_test)
    keys = ("bench_cold", "bench_warm")
    for key in keys:
        link_tree(source, drop_path(key, root))
    write_vocabulary_cache(b.vocabulary()[0], root)
    return keys


def graph_noun_note(b: Bench) -> str:
    frame, source = b.vocabulary()
    return f"{b.scale.graph_nouns or len(frame):,} {source} nouns"


@dataclass
class GraphRun:
    """Seconds and per-step times of one scenario; ``nouns_seconds`` is the noun run's part of a cold one."""

    seconds: float
    steps: dict[str, str]
    peak_gpu_bytes: int | None
    nouns_seconds: float | None = None


def graph_rows(b: Bench, section: str, mode: str, cold: GraphRun, warm: GraphRun, notes: str) -> list[Row]:
    """Two rows: cold (nouns, then the drop) and warm (a second drop, nouns already materialized)."""
    n = b.scale.drop_train + b.scale.drop_test
    rows = []
    for label, run in (("cold", cold), ("warm", warm)):
        target, met = b.judge(f"graph_{label}", run.seconds)
        what = "noun embeddings, then the drop" if label == "cold" else "new drop, nouns already materialized"
        detail = notes
        if run.nouns_seconds is not None:
            detail += f"; nouns {run.nouns_seconds:.1f} s + drop {run.seconds - run.nouns_seconds:.1f} s"
        rows.append(
            Row(
                section,
                f"{n:,}-image drop, {label}: {what} ({mode})",
                f"{run.seconds:.1f} s",
                seconds=run.seconds,
                target=target,
                met=met,
                peak_gpu_bytes=run.peak_gpu_bytes,
                notes=detail,
                steps=run.steps,
                column=f"{mode}, {label}",
            )
        )
    return rows


def bench_graph(b: Bench) -> list[Row]:
    rows = [process_start(b)]
    return rows + (graph_in_process(b) if dagster_available() else graph_on_engine(b))


def process_start(b: Bench) -> Row:
    """A fresh Python importing torch, open_clip and the package: what each step process pays first."""
    code = "import torch, open_clip, tac_pipeline.encoders.clip, tac_pipeline.tac"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    return Row(
        "graph",
        "process start: `python -c 'import torch, open_clip, tac_pipeline.encoders.clip'`",
        f"{seconds:.2f} s",
        seconds=seconds,
        notes="paid by every step process of the multiprocess executor",
    )


def graph_in_process(b: Bench) -> list[Row]:
    """The real asset graph and its checks, materialized in this process as the tests' helpers do."""
    from dagster import DagsterInstance, materialize

    from tac_pipeline.defs.assets import build_assets
    from tac_pipeline.defs.checks import build_asset_checks
    from tac_pipeline.defs.io_managers import ParquetIOManager
    from tac_pipeline.defs.names import NOUN_ASSET
    from tac_pipeline.defs.partitions import datasets_partitions
    from tac_pipeline.defs.resources.compute import ComputeDeviceResource
    from tac_pipeline.defs.resources.data import TacDataResource
    from tac_pipeline.defs.resources.encoder import ClipEncoderResource
    from tac_pipeline.store.layout import store_dir

    root = b.work / "graph" / "data"
    cold_key, warm_key = prepare_data_root(b, root)
    encoder = ClipEncoderResource(
        model_name=b.model, pretrained=b.pretrained, batch_size=b.args.batch_size, num_workers=b.args.workers
    )
    resources = {
        "io_manager": ParquetIOManager(base_dir=str(store_dir(root))),
        "tac_data": TacDataResource(data_dir=str(root)),
        "clip_encoder": encoder,
        "compute_device": ComputeDeviceResource(device=str(b.device), lock_dir=str(b.work / "locks")),
    }
    home = b.work / "graph" / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    instance = DagsterInstance.local_temp(tempdir=str(home))
    instance.add_dynamic_partitions(datasets_partitions.name, [cold_key, warm_key])
    assets = build_assets(encoder.identity())
    definitions = [*assets, *build_asset_checks(assets)]
    dataset_assets = [a.key for a in assets if a.partitions_def is not None]

    def run(selection, partition=None, run_config=None):
        result, seconds, peak = b.measure(
            lambda: materialize(
                definitions,
                selection=selection,
                partition_key=partition,
                resources=resources,
                instance=instance,
                run_config=run_config,
            )
        )
        assert result.success
        return seconds, step_times(instance, result.run_id), peak

    nouns_config = {"ops": {NOUN_ASSET: {"config": {"max_nouns": b.scale.graph_nouns}}}}
    s_nouns, steps_nouns, peak_nouns = run([NOUN_ASSET], run_config=nouns_config)
    s_cold, steps_cold, peak_cold = run(dataset_assets, cold_key)
    s_warm, steps_warm, peak_warm = run(dataset_assets, warm_key)
    cold_peak = max(peak_nouns, peak_cold) if b.cuda else None
    cold = GraphRun(s_nouns + s_cold, {**steps_nouns, **steps_cold}, cold_peak, s_nouns)
    warm = GraphRun(s_warm, steps_warm, peak_warm)
    notes = f"Dagster `materialize` in this process (no process start), {graph_noun_note(b)}"
    return graph_rows(b, "graph", "Dagster in-process", cold, warm, notes)


def graph_on_engine(b: Bench) -> list[Row]:
    """Without dagster: the encoders, then ``TAC.fit`` and its predictions (no Parquet IO)."""
    import numpy as np

    from tac_pipeline import tac
    from tac_pipeline.encoders import ClipEncoder, discover_images, encode_drop

    names = asset_names()
    *fitted, labels_step, metrics_step = (
        name for name in names.ASSET_NAMES if name not in (names.IMAGE_ASSET, names.NOUN_ASSET)
    )
    frame = b.vocabulary()[0]
    if b.scale.graph_nouns is not None:
        frame = frame.iloc[: b.scale.graph_nouns]
    source = b.drop(b.scale.drop_train, b.scale.drop_test)
    dev, backend, k = b.device, b.args.backend, N_CLASSES  # TAC's defaults: the graph's for a plain drop

    def encoder():  # every step that needs the model builds it, as each asset does
        return ClipEncoder.from_pretrained(b.model, b.pretrained, device=dev, batch_size=b.args.batch_size)

    def timed(steps: dict[str, str], name: str, fn: Callable[[], object]):
        out, seconds, _ = b.measure(fn, reset_peak=False)  # the scenario's peak spans its steps
        steps[name] = f"{seconds:.2f}"
        return out

    def noun_embeddings():  # each distinct text once, as the asset does
        texts, inverse = np.unique(frame["noun"].to_numpy(dtype=object), return_inverse=True)
        return encoder().encode_nouns(list(texts))[inverse]

    def cluster_drop(nouns, steps: dict[str, str]) -> None:
        listing = discover_images(source)
        encoded = timed(
            steps, names.IMAGE_ASSET, lambda: encode_drop(encoder(), listing, num_workers=b.args.workers)
        )
        images, labels = encoded.embeddings, np.array(encoded.labels, dtype=object)
        split = np.array(encoded.splits, dtype=object)
        fit, report = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")

        def fit_tac():  # centres, text space, counterparts, kNN graphs and heads: the estimator's fit
            with warnings.catch_warnings():  # a batch shrunk to a small drop, as the asset does
                warnings.simplefilter("ignore", UserWarning)
                return tac.TAC(k, device=dev, backend=backend).fit(images[fit], nouns)

        model = timed(steps, f"TAC.fit ({fitted[0]} … {fitted[-1]})", fit_tac)

        def predict():  # what the labels asset holds: both heads, their mean and the baselines
            heads = [model.predict(images), model.predict_text(images), model.predict_mean(images)]
            _, kmeans = tac.spherical_kmeans(images[report], k, seed=model.seed, device=dev, backend=backend)
            return [kmeans, model.fit_predict_baseline(images[report]), *(y[report] for y in heads)]

        predictions = timed(steps, labels_step, predict)
        timed(steps, metrics_step, lambda: [tac.cluster_metrics(labels[report], y) for y in predictions])

    cold_steps: dict[str, str] = {}

    def cold_run():
        nouns = timed(cold_steps, names.NOUN_ASSET, noun_embeddings)
        cluster_drop(nouns, cold_steps)
        return nouns

    nouns, s_cold, peak_cold = b.measure(cold_run)
    warm_steps: dict[str, str] = {}
    _, s_warm, peak_warm = b.measure(lambda: cluster_drop(nouns, warm_steps))
    cold = GraphRun(s_cold, cold_steps, peak_cold, float(cold_steps[names.NOUN_ASSET]))
    warm = GraphRun(s_warm, warm_steps, peak_warm)
    notes = (
        "dagster is not importable: the encoders, then TAC.fit and its predictions (no Dagster, "
        f"no Parquet), {graph_noun_note(b)}"
    )
    return graph_rows(b, "graph", "engine, no Dagster", cold, warm, notes)


def bench_graph_cli(b: Bench) -> list[Row]:
    """Runs through the CLI's own materialize, as ``make cluster`` makes them (the default executor: one
    forked process per step)."""
    if not dagster_available():
        return [Row("graph-cli", "Dagster CLI", "skipped: dagster is not importable")]
    from tac_pipeline.defs.names import DATASET_ASSETS, NOUN_ASSET
    from tac_pipeline.defs.partitions import datasets_partitions

    root, home = b.work / "graph_cli" / "data", b.work / "graph_cli" / "dagster_home"
    cold_key, warm_key = prepare_data_root(b, root)
    settings = {
        "DAGSTER_HOME": str(home),
        "TAC_DATA_DIR": str(root),
        "TAC_CLIP_MODEL": b.model,
        "TAC_CLIP_PRETRAINED": b.pretrained or "none",
        "TAC_DEVICE": str(b.device),
    }
    env = child_environment(settings)
    with open_home(home) as instance:
        instance.add_dynamic_partitions(datasets_partitions.name, [cold_key, warm_key])

        def run(selection, partition: str | None = None, config: dict | None = None):
            seconds = materialize_timed(
                selection, instance=instance, env=env, partition=partition, run_config=config, cwd=REPO
            )
            return seconds, step_times(instance, latest_run_id(instance))

        nouns_config = None
        if b.scale.graph_nouns is not None:
            nouns_config = {"ops": {NOUN_ASSET: {"config": {"max_nouns": b.scale.graph_nouns}}}}
        s_nouns, steps_nouns = run([NOUN_ASSET], config=nouns_config)
        s_cold, steps_cold = run(DATASET_ASSETS, cold_key)
        s_warm, steps_warm = run(DATASET_ASSETS, warm_key)
    cold = GraphRun(s_nouns + s_cold, {**steps_nouns, **steps_cold}, None, s_nouns)
    warm = GraphRun(s_warm, steps_warm, None)
    notes = (
        f"`make cluster`'s materialize, one process per step (forkserver), {graph_noun_note(b)}; GPU memory "
        "is used in the step processes (not measured)"
    )
    return graph_rows(b, "graph-cli", "Dagster CLI", cold, warm, notes)
