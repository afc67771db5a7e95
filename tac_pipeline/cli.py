"""Command line behind ``make demo``, ``make cluster`` and ``make reproduce``.

``cluster`` materializes the asset graph through Dagster's own CLI (``dagster asset materialize``), so every
run is recorded in ``$DAGSTER_HOME`` and shows in the UI's run history, then prints the metrics table. It
takes the dataset's turn first (one run per dataset at a time) and stops its child when it is stopped
(:mod:`tac_pipeline.runs`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from tac_pipeline.demo_data import write_digits_drop
from tac_pipeline.drops import InvalidDatasetKeyError, drop_path
from tac_pipeline.jobs import DATASET_ASSETS, NOUN_ASSET
from tac_pipeline.partitions import datasets_partitions
from tac_pipeline.runs import Stopped, open_instance, run_child
from tac_pipeline.tables import read_parquet


class ClusterError(RuntimeError):
    """A step failed; the message is the failing step's own."""


def _encoder_env(model: str | None, pretrained: str | None) -> dict[str, str]:
    env = dict(os.environ)
    if model:
        env["TAC_CLIP_MODEL"] = model
    if pretrained:
        env["TAC_CLIP_PRETRAINED"] = pretrained
    return env


def _instance():
    return open_instance()  # $DAGSTER_HOME (default ./.dagster_home) with the project's dagster.yaml


def _failure_message(instance, run_ids_before: set[str]) -> str:
    """The error of the failing step(s) of the runs this command started."""
    from dagster import DagsterEventType, DagsterRunStatus

    messages = []
    for run in instance.get_runs(limit=5):
        if run.run_id in run_ids_before or run.status != DagsterRunStatus.FAILURE:
            continue
        for record in instance.all_logs(run.run_id, of_type=DagsterEventType.STEP_FAILURE):
            event = record.dagster_event
            error = event.step_failure_data.error if event and event.step_failure_data else None
            detail = error.message.strip() if error else record.message
            if error and error.cause:  # Dagster wraps the user's exception; its text is the useful part
                detail = error.cause.message.strip()
            messages.append(f"step {event.step_key if event else '?'} failed: {detail}")
    return "\n".join(messages) or "the run failed (see the Dagster UI or the log above)"


def _materialize(
    selection: list[str], partition: str | None, env: dict[str, str], instance, run_config: dict | None = None
) -> None:
    before = {run.run_id for run in instance.get_runs(limit=5)}
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "tac_pipeline.definitions"]
    command += ["--select", ",".join(selection)]
    if run_config:
        command += ["--config-json", json.dumps(run_config)]
    if partition is not None:
        command += ["--partition", partition]
    started = time.time()
    try:
        returncode = run_child(command, env)  # a list, never a shell: keys stay plain arguments
    except Stopped as stopped:
        from tac_pipeline.runs import stop_leftover_run

        stopped.outcome = stop_leftover_run(instance, stopped, partition, started)
        raise
    if returncode != 0:
        raise ClusterError(_failure_message(instance, before))


def _needs_noun_run(instance, env: dict[str, str], dataset: str, drop: Path) -> bool:
    """True when the drop takes the shared noun embeddings and those are missing or made by another encoder."""
    from tac_pipeline.encoders.wordnet import vocabulary_from_env
    from tac_pipeline.jobs import noun_code_version
    from tac_pipeline.nouns import waiting_for_shared_nouns
    from tac_pipeline.resources.compute import encoder_from_env

    version = noun_code_version(encoder_from_env(env).identity(), vocabulary_from_env(env))
    return bool(waiting_for_shared_nouns(instance, version, {dataset: drop}))


def _stored_metrics(instance, dataset: str):
    """The dataset's metrics table, read from where its materialization recorded it."""
    from tac_pipeline.resources.io_manager import read_stored_table

    return read_stored_table(instance, "metrics", dataset)


def skipped_summary(instance, dataset: str, since: float | None = None) -> str | None:
    """The files the last embedding of ``dataset`` skipped, with reasons (the first :data:`SHOWN_SKIPPED`,
    then the count and where the full list is), read from the report its materialization recorded; None
    when none were skipped (or that materialization predates ``since``, a time stamp). A run that failed
    in ``image_embeddings`` itself lists what it skipped in its error."""
    from tac_pipeline.messages import SHOWN_SKIPPED, listed_lines
    from tac_pipeline.resources.io_manager import stored_path

    report = stored_path(instance, "image_embeddings", dataset, entry="skipped_report", since=since)
    if report is None or not report.exists():
        return None
    with report.open("rb") as handle:
        rows = read_parquet(handle).to_pylist()
    if not rows:
        return None
    lines = [f"{len(rows)} file(s) of '{dataset}' were skipped:"]
    lines += listed_lines([f"{row['file']}: {row['reason']}" for row in rows], SHOWN_SKIPPED, indent="  ")
    lines.append(f"Full list: {report} (pandas.read_parquet)")
    return "\n".join(lines)


def chosen_k_summary(instance, dataset: str, since: float | None = None) -> str | None:
    """The K that ``n_clusters = "auto"`` chose in the last run of ``dataset``, why and how to pin it, as the
    UI shows it on ``counterparts``; None when K was given (or that materialization predates ``since``)."""
    from tac_pipeline.jobs import COUNTERPARTS_ASSET
    from tac_pipeline.resources.io_manager import latest_metadata

    chosen = (latest_metadata(instance, COUNTERPARTS_ASSET, dataset, since=since) or {}).get(
        "n_clusters_chosen"
    )
    return chosen.value.replace("**", "") if chosen is not None else None


def cluster(
    dataset: str, *, model: str | None = None, pretrained: str | None = None, max_nouns: int | None = None
) -> str:
    """Cluster one drop end to end through Dagster; return the metrics as a markdown table."""
    drop = drop_path(dataset)
    if not drop.is_dir():
        raise ClusterError(f"no drop folder {drop}: put images in {drop}/<class>/ first")
    env = _encoder_env(model, pretrained)
    with _instance() as instance:  # disposed before the command exits
        return _cluster(instance, dataset, drop, env, max_nouns)


def _cluster(instance, dataset: str, drop: Path, env: dict[str, str], max_nouns: int | None) -> str:
    from tac_pipeline.runs import mark_dead_runs_failed, missing_partition_limit, partition_turn

    mark_dead_runs_failed(instance, say=lambda message: print(message, file=sys.stderr))
    problem = missing_partition_limit(instance)
    if problem:
        print(f"warning: {problem}", file=sys.stderr)
    if not instance.has_dynamic_partition(datasets_partitions.name, dataset):
        instance.add_dynamic_partitions(datasets_partitions.name, [dataset])
    from tac_pipeline.nouns import uses_shared_nouns

    try:
        with partition_turn(instance, dataset):  # one run of the dataset at a time, whoever started it
            # A drop with its own nouns.parquet never needs the shared noun embeddings (nor an encoder or
            # WordNet).
            if (max_nouns is not None and uses_shared_nouns(drop)) or _needs_noun_run(
                instance, env, dataset, drop
            ):
                config = {"ops": {NOUN_ASSET: {"config": {"max_nouns": max_nouns}}}} if max_nouns else None
                _materialize([NOUN_ASSET], None, env, instance, config)
            started = time.time()
            try:
                _materialize(list(DATASET_ASSETS), dataset, env, instance)
            finally:
                summary = skipped_summary(instance, dataset, since=started)
                if summary:
                    print(f"\n{summary}", file=sys.stderr)
    except Stopped as stopped:  # every process of the run is gone: nothing is written after this
        raise ClusterError(f"{stopped}; {stopped.outcome}") from None
    from tac_pipeline.messages import metrics_markdown

    table = metrics_markdown(_stored_metrics(instance, dataset))
    chosen = chosen_k_summary(instance, dataset, since=started)
    return f"{table}\n\n{chosen}" if chosen else table


def _check_encoder(model: str | None, pretrained: str | None) -> Exception | None:
    """Build the encoder once, so that missing weights are known before any run starts."""
    from tac_pipeline.encoders import EncoderUnavailableError
    from tac_pipeline.resources.compute import encoder_from_env

    try:
        encoder_from_env(_encoder_env(model, pretrained)).build("cpu")
    except EncoderUnavailableError as exc:
        return exc
    return None


def _prepare_demo(model: str | None, pretrained: str | None):
    """The digits drop, the demo's encoder (the smoke model when the default weights cannot be had) and
    WordNet (installed where it can be); None after printing why the demo cannot run."""
    from tac_pipeline import provision
    from tac_pipeline.encoders.wordnet import WordNetUnavailableError

    target = drop_path("digits")
    count = write_digits_drop(target)
    print(f"Wrote {count} digit images (scikit-learn's bundled digits) to {target}.")
    try:
        chosen = provision.demo_encoder(model, pretrained, _check_encoder)
    except RuntimeError as exc:
        print(
            f"\n{exc}\n\nOffline, run the smoke model instead:\n    make demo MODEL=tac-tiny", file=sys.stderr
        )
        return None
    if chosen.fallback_notice:
        print(chosen.fallback_notice)
    try:
        provision.ensure_wordnet()
    except WordNetUnavailableError as exc:
        print(f"\n{exc}", file=sys.stderr)
        return None
    return chosen


def reproduce(
    name: str | None,
    *,
    source: str | None = None,
    model: str | None = None,
    pretrained: str | None = None,
    max_nouns: int | None = None,
) -> int:
    """Prepare a paper dataset as a drop, cluster it and print the measured figures beside the paper's."""
    from tac_pipeline.reproduce import (
        SourceError,
        comparison_markdown,
        dataset_listing,
        paper_dataset,
        prepare_drop,
    )

    if not name:
        print(dataset_listing())
        return 0
    try:
        dataset = paper_dataset(name)
        drop, written = prepare_drop(name, source)
    except SourceError as exc:
        print(f"\nmake reproduce: {exc}", file=sys.stderr)
        return 2
    what = "already prepared" if written is None else f"{written} images written"
    print(f"Drop {drop}: {what}; K = {dataset.n_clusters}, resize {dataset.resize}.")
    try:
        cluster(dataset.name, model=model, pretrained=pretrained, max_nouns=max_nouns)
    except ClusterError as exc:
        print(f"\nclustering failed:\n{exc}", file=sys.stderr)
        return 1
    with _instance() as instance:
        metrics = _stored_metrics(instance, dataset.name)
    smoke = (model or os.environ.get("TAC_CLIP_MODEL", "")) == "tac-tiny" or (
        pretrained or ""
    ).lower() == "none"
    banner = "\n*** random weights: these figures say nothing about TAC ***\n" if smoke else ""
    print(f"{banner}\n{comparison_markdown(dataset, metrics)}\n{banner}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tac_pipeline.cli")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("demo", "write the digits drop and cluster it"),
        ("cluster", "cluster one drop"),
        ("reproduce", "prepare one of the paper's datasets, cluster it and compare with the paper"),
    ):
        command = sub.add_parser(name, help=help_text)
        if name == "cluster":
            command.add_argument("dataset", help="folder name under data/drops/")
        if name == "reproduce":
            command.add_argument("dataset", nargs="?", default=None, help="a paper dataset (none: list them)")
            command.add_argument(
                "--source", default=None, help="a folder holding torchvision's files, or an ImageNet root"
            )
        command.add_argument(
            "--model", default=None, help="open_clip model name (default ViT-B-32; tac-tiny offline)"
        )
        command.add_argument("--pretrained", default=None, help="open_clip pretrained tag (default openai)")
        command.add_argument(
            "--max-nouns",
            type=int,
            default=None,
            help="embed only the first N WordNet nouns (smoke runs only)",
        )
    args = parser.parse_args(argv)
    if args.command == "reproduce":
        return reproduce(
            args.dataset,
            source=args.source,
            model=args.model,
            pretrained=args.pretrained,
            max_nouns=args.max_nouns,
        )
    try:
        chosen = None
        if args.command == "demo":
            chosen = _prepare_demo(args.model, args.pretrained)
            if chosen is None:
                return 1
            dataset, model, pretrained = "digits", chosen.model, chosen.pretrained
        else:
            dataset, model, pretrained = args.dataset, args.model, args.pretrained
        table = cluster(dataset, model=model, pretrained=pretrained, max_nouns=args.max_nouns)
    except (ClusterError, InvalidDatasetKeyError) as exc:
        print(f"\nclustering failed:\n{exc}", file=sys.stderr)
        return 1
    results = f"Metrics for '{dataset}' (percent):\n\n{table}\n"
    if chosen is not None and chosen.smoke:
        from tac_pipeline.provision import random_weights_banner

        results = f"{random_weights_banner()}\n{results}{random_weights_banner()}\n"
    print(f"\n{results}")
    print("Open the Dagster UI on this machine with:\n    make ui        # then http://127.0.0.1:3000")
    return 0


if __name__ == "__main__":
    sys.exit(main())
