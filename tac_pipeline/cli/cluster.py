"""``make cluster``: one drop clustered through Dagster, then its metrics.

:func:`cluster` takes the dataset's turn (one run per dataset at a time, :mod:`tac_pipeline.runs.turn`), runs the
shared noun embeddings first when the drop needs them, then materializes the dataset's assets in a child
process recorded in ``$DAGSTER_HOME`` (so every run shows in the UI's run history) and stops that child when
it is stopped (:mod:`tac_pipeline.runs.child`). It returns the metrics table, read from where the run stored it.

That child is started first, before this module imports Dagster (the imports below are light; Dagster's come
inside the functions): it loads the definitions while the command takes its turn and decides what to run,
then gets its arguments (:mod:`tac_pipeline.cli.launch`). The two start-ups overlap instead of adding up.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tac_pipeline.cli.progress import RunFollower, failure_detail
from tac_pipeline.config import TacConfig
from tac_pipeline.runs.child import ChildProcess, Stopped, long_lived_objects
from tac_pipeline.store.layout import command_log, drop_path


class ClusterError(RuntimeError):
    """A step failed; the message is the failing step's own."""


def _instance():
    with long_lived_objects():  # importing Dagster and its storage
        from tac_pipeline.runs.home import open_instance

        return open_instance()  # $DAGSTER_HOME (default ./.dagster_home) with the project's dagster.yaml


#: The tag by which a command finds the run its child process created.
COMMAND_TAG = "tac/command"


def _failure_message(instance, run_id: str | None) -> str:
    """The error of the failing step(s) of the run ``run_id``."""
    from dagster import DagsterEventType

    messages = []
    for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_FAILURE) if run_id else []:
        event = record.dagster_event
        detail = failure_detail(event, record.message) if event else record.message
        messages.append(f"step {event.step_key if event else '?'} failed: {detail}")
    return "\n".join(messages) or "the run failed (see the Dagster UI or the log above)"


def _run_tagged(instance, token: str) -> str | None:
    from dagster import RunsFilter

    runs = instance.get_runs(filters=RunsFilter(tags={COMMAND_TAG: token}), limit=1)
    return runs[0].run_id if runs else None


@dataclass
class RunProcess:
    """The run's process of one :func:`materialize`: the child, the token its run is tagged with, and the
    file that gets what it prints (None: the terminal)."""

    child: ChildProcess
    token: str
    log: Path | None
    used: bool = field(default=False)

    def __enter__(self) -> RunProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        self.child.__exit__(*exc_info)  # ends a process that was never given its arguments


def _launch_command() -> list[str]:
    return [sys.executable, "-m", "tac_pipeline.cli.launch"]


def start_run_process(env: dict[str, str], dagster_home: Path, *, verbose: bool = False) -> RunProcess:
    """Start a run's process now, to be given its assets later by :func:`materialize` (it loads the
    definitions meanwhile). Use it as a context manager: it ends with the ``with`` block if never used."""
    from tac_pipeline.cli.launch import REQUEST_ON_STDIN

    token = uuid.uuid4().hex
    log = None if verbose else command_log(dagster_home, token)
    child = ChildProcess([*_launch_command(), REQUEST_ON_STDIN], env, output=log, requests=True)
    return RunProcess(child, token, log)


def materialize(
    selection: list[str],
    partition: str | None,
    env: dict[str, str],
    instance,
    run_config: dict | None = None,
    *,
    verbose: bool = False,
    tags: dict[str, str] | None = None,
    prepared: RunProcess | None = None,
) -> None:
    """Materialize the assets ``selection`` (for ``partition``) in a child process (:mod:`tac_pipeline.cli.launch`)
    recorded in ``instance``, printing one line per finished step (all of Dagster's events with ``verbose``);
    :class:`ClusterError` with the failing step's message first when it fails.

    ``prepared``: a run's process from :func:`start_run_process` with the same ``env`` and ``verbose``,
    given these arguments instead of starting one (once: a used one starts a new process)."""
    fresh = prepared is None or prepared.used
    token = uuid.uuid4().hex if fresh else prepared.token
    arguments = ["--select", ",".join(selection), "--tag", f"{COMMAND_TAG}={token}"]
    for name, value in (tags or {}).items():
        arguments += ["--tag", f"{name}={value}"]
    if run_config:
        arguments += ["--config-json", json.dumps(run_config)]
    if partition is not None:
        arguments += ["--partition", partition]
    if verbose:
        arguments.append("--verbose")
    follower = RunFollower(instance, lambda: _run_tagged(instance, token))
    started = time.time()
    try:  # a list, never a shell: keys stay plain arguments
        if fresh:
            log = None if verbose else command_log(instance.root_directory, token)
            run = RunProcess(ChildProcess([*_launch_command(), *arguments], env, output=log), token, log)
        else:
            run = prepared
            run.child.send(json.dumps(arguments))
        run.used = True
        with run.child:
            returncode = run.child.wait(tick=follower.poll)
    except Stopped as stopped:
        from tac_pipeline.runs.dead import stop_leftover_run

        stopped.outcome = stop_leftover_run(instance, stopped, partition, started)
        raise
    finally:
        follower.close()
    if returncode != 0:
        message = "\n".join(follower.failures) or _failure_message(instance, follower.run_id)
        if run.log is not None and not follower.failures:
            message += "\n" + _tail(run.log)
        raise ClusterError(message)
    if run.log is not None:
        run.log.unlink(missing_ok=True)


def _tail(log: Path, lines: int = 20) -> str:
    """The last lines the run's process printed, and where all of them are."""
    try:
        text = log.read_text(errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join([f"The run's process printed (all of it: {log}):", *text[-lines:]])


def _needs_noun_run(instance, config: TacConfig, dataset: str, drop: Path) -> bool:
    """True when the drop takes the shared noun embeddings and those are missing or made by another encoder."""
    from tac_pipeline.defs.names import noun_code_version
    from tac_pipeline.drops.nouns import waiting_for_shared_nouns

    version = noun_code_version(config.encoder.choice().identity, config.noun_vocabulary)
    return bool(waiting_for_shared_nouns(instance, version, {dataset: drop}))


def _stored_metrics(instance, dataset: str):
    """The dataset's metrics table, read from where its materialization recorded it."""
    from tac_pipeline.defs.names import METRICS_ASSET
    from tac_pipeline.store.records import read_stored_table

    return read_stored_table(instance, METRICS_ASSET, dataset)


def skipped_summary(instance, dataset: str, since: float | None = None) -> str | None:
    """The files the last embedding of ``dataset`` skipped, with reasons (the first :data:`SHOWN_SKIPPED`,
    then the count and where the full list is), read from the report its materialization recorded; None
    when none were skipped (or that materialization predates ``since``, a time stamp). A run that failed
    in ``image_embeddings`` itself lists what it skipped in its error."""
    from tac_pipeline.common.messages import SHOWN_SKIPPED, listed_lines
    from tac_pipeline.common.tables import read_parquet
    from tac_pipeline.defs.names import IMAGE_ASSET
    from tac_pipeline.store.records import latest_materialization

    latest = latest_materialization(instance, IMAGE_ASSET, dataset, since=since)
    report = latest.existing_path("skipped_report") if latest is not None else None
    if report is None:
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
    from tac_pipeline.defs.names import COUNTERPARTS_ASSET
    from tac_pipeline.store.records import latest_materialization

    latest = latest_materialization(instance, COUNTERPARTS_ASSET, dataset, since=since)
    chosen = latest.value("n_clusters_chosen") if latest is not None else None
    return chosen.replace("**", "") if chosen is not None else None


def cluster(dataset: str, config: TacConfig, *, max_nouns: int | None = None, refit: bool = False) -> str:
    """Cluster one drop through Dagster with ``config``: a fit, or an assign of its new images to the fitted
    clusters, as the refit policy decides (``refit`` forces a fit); return the metrics as a markdown table."""
    drop = drop_path(dataset, config.data_dir)
    if not drop.is_dir():
        raise ClusterError(f"no drop folder {drop}: put images in {drop}/<class>/ first")
    env = config.environment()
    # The run's process first: it loads the definitions while this process opens the instance and decides.
    prepared = start_run_process(env, config.dagster_home, verbose=config.verbose)
    with prepared, _instance() as instance:  # both ended before the command exits
        return _cluster(instance, dataset, drop, config, max_nouns, refit, env, prepared)


def _decision(instance, dataset: str, drop: Path, config: TacConfig, refit: bool):
    """The refit policy's choice for this run (:mod:`tac_pipeline.drops.refit`)."""
    from tac_pipeline.defs.names import embedding_code_version
    from tac_pipeline.drops.refit import plan_dataset_run
    from tac_pipeline.store.layout import data_root

    root = data_root(config.data_dir)
    return plan_dataset_run(
        instance,
        dataset,
        drop,
        image_code_version=embedding_code_version(config.encoder.choice().identity),
        data_dir=config.data_dir,
        roots=[root, *config.image_roots],
        force=refit,
    )


def _cluster(
    instance,
    dataset: str,
    drop: Path,
    config: TacConfig,
    max_nouns: int | None,
    refit: bool,
    env: dict[str, str],
    prepared: RunProcess,
) -> str:
    from tac_pipeline.defs.executors.local import assign_run_config
    from tac_pipeline.defs.names import (
        ASSIGN_ASSETS,
        DATASET_ASSETS,
        FIT,
        NOUN_ASSET,
        REFIT_REASON_TAG,
        RUN_KIND_TAG,
    )
    from tac_pipeline.defs.partitions import datasets_partitions
    from tac_pipeline.drops.nouns import uses_shared_nouns
    from tac_pipeline.runs.dead import mark_dead_runs_failed
    from tac_pipeline.runs.home import missing_partition_limit
    from tac_pipeline.runs.turn import partition_turn

    mark_dead_runs_failed(instance, say=lambda message: print(message, file=sys.stderr))
    problem = missing_partition_limit(instance)
    if problem:
        print(f"warning: {problem}", file=sys.stderr)
    if not instance.has_dynamic_partition(datasets_partitions.name, dataset):
        instance.add_dynamic_partitions(datasets_partitions.name, [dataset])
    try:
        with partition_turn(instance, dataset):  # one run of the dataset at a time, whoever started it
            # A drop with its own nouns.parquet never needs the shared noun embeddings (nor an encoder or
            # WordNet).
            if (max_nouns is not None and uses_shared_nouns(drop)) or _needs_noun_run(
                instance, config, dataset, drop
            ):
                nouns = {"ops": {NOUN_ASSET: {"config": {"max_nouns": max_nouns}}}} if max_nouns else None
                materialize(
                    [NOUN_ASSET], None, env, instance, nouns, verbose=config.verbose, prepared=prepared
                )
            decision = _decision(instance, dataset, drop, config, refit)
            print(decision.reason[:1].upper() + decision.reason[1:])
            fit = decision.kind == FIT
            selection = DATASET_ASSETS if fit else ASSIGN_ASSETS
            tags = {RUN_KIND_TAG: decision.kind, REFIT_REASON_TAG: decision.reason}
            run_config = None if fit else assign_run_config(config.deployment.executor)
            started = time.time()
            try:
                materialize(
                    list(selection),
                    dataset,
                    env,
                    instance,
                    run_config,
                    verbose=config.verbose,
                    tags=tags,
                    prepared=prepared,
                )
            finally:
                summary = skipped_summary(instance, dataset, since=started)
                if summary:
                    print(f"\n{summary}", file=sys.stderr)
    except Stopped as stopped:  # every process of the run is gone: nothing is written after this
        raise ClusterError(f"{stopped}; {stopped.outcome}") from None
    from tac_pipeline.common.messages import metrics_markdown

    table = metrics_markdown(_stored_metrics(instance, dataset))
    chosen = chosen_k_summary(instance, dataset, since=started)
    return f"{table}\n\n{chosen}" if chosen else table
