"""A dataset's turn: one run of a dataset at a time, whoever started it.

``make cluster`` executes its run outside Dagster's run queue, so it takes its turn itself
(:func:`partition_turn`): a per-dataset lock file under ``$DAGSTER_HOME/locks/`` orders the commands, and
while holding it the command waits until the instance shows no run of the dataset in progress (nor, while
the daemon is alive, queued). The queue counts the command's run in turn (it carries the same tag), so
nothing of that dataset is launched while it runs.
"""

from __future__ import annotations

import fcntl
import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from dagster import DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter

from tac_pipeline.drops.keys import validate_dataset_key
from tac_pipeline.runs.child import Stopped
from tac_pipeline.runs.dead import mark_dead_runs_failed
from tac_pipeline.runs.home import ACTIVE_STATUSES, PARTITION_TAG, Say
from tac_pipeline.runs.home import say as default_say
from tac_pipeline.store.layout import locks_dir

#: A daemon whose run-queue heartbeat is older than this is taken as not running.
DAEMON_HEARTBEAT_SECONDS = 60.0


def runs_of_partition(
    instance: DagsterInstance, dataset: str, statuses: Sequence[DagsterRunStatus]
) -> list[DagsterRun]:
    return list(instance.get_runs(RunsFilter(statuses=list(statuses), tags={PARTITION_TAG: dataset})))


def queue_daemon_alive(instance: DagsterInstance) -> bool:
    """True when a daemon is dequeuing runs for this instance (its heartbeat is recent)."""
    beat = instance.get_daemon_heartbeats().get("QUEUED_RUN_COORDINATOR")
    return beat is not None and time.time() - beat.timestamp < DAEMON_HEARTBEAT_SECONDS


def _origin(run: DagsterRun) -> str:
    tags = run.tags
    for tag, what in (
        ("dagster/sensor_name", "sensor"),
        ("dagster/schedule_name", "schedule"),
        ("dagster/backfill", "backfill"),
    ):
        if tag in tags:
            return f"{what} {tags[tag]}"
    return "the UI or the API" if run.remote_job_origin is not None else "another command"


def wait_for_partition(
    instance: DagsterInstance, dataset: str, *, say: Say = default_say, poll_seconds: float = 2.0
) -> None:
    """Return once no run of ``dataset`` is in progress (nor queued, while the daemon runs).

    Runs whose process is gone are marked failed on the way (:func:`mark_dead_runs_failed`), so a killed run
    never blocks the dataset. Queued runs are left alone when no daemon runs: they are launched later, after
    this command's run (the queue counts it).
    """
    announced: set[str] = set()
    while True:
        mark_dead_runs_failed(instance, dataset, say=say)
        blocking = runs_of_partition(instance, dataset, ACTIVE_STATUSES)
        if queue_daemon_alive(instance):
            blocking += runs_of_partition(instance, dataset, [DagsterRunStatus.QUEUED])
        if not blocking:
            return
        for run in blocking:
            if run.run_id not in announced:
                announced.add(run.run_id)
                say(
                    f"run {run.run_id} of '{dataset}' (from {_origin(run)}) is {run.status.value.lower()}: "
                    "waiting for it to finish, so that two runs never mix their outputs in the store"
                )
        time.sleep(poll_seconds)


@contextmanager
def partition_turn(
    instance: DagsterInstance, dataset: str, *, say: Say = default_say, poll_seconds: float = 2.0
) -> Iterator[None]:
    """Hold ``dataset``'s turn: no other command holds it, and no other run of it is in progress.

    Another ``make cluster`` of the same dataset holding the lock is waited for (the kernel releases the lock
    when its process ends, however it ends); then :func:`wait_for_partition`.
    """
    with open(
        locks_dir(instance.root_directory) / f"{validate_dataset_key(dataset)}.lock", "a+", encoding="utf-8"
    ) as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            say(
                f"another command is clustering '{dataset}' (pid {holder}): waiting for it to finish, so that "
                "the two runs do not interleave (Ctrl-C to stop waiting)"
            )
            try:
                fcntl.flock(handle, fcntl.LOCK_EX)
            except KeyboardInterrupt:
                raise Stopped(signal.SIGINT) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            wait_for_partition(instance, dataset, say=say, poll_seconds=poll_seconds)
        except KeyboardInterrupt:
            raise Stopped(signal.SIGINT) from None
        yield
