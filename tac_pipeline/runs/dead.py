"""Runs whose process is gone are reported failed.

A run's process records its pid in the run's event log when it starts. A run still shown as started (or
cancelling) whose process is gone is reported failed (:func:`mark_dead_runs_failed`), at every
``make cluster`` / ``make ui`` start and, while the daemon runs, by Dagster's run monitoring through
:class:`LocalRunLauncher`. The pid is compared with the process's start time, so a reused pid is not
mistaken for the run. Only an instance kept in SQLite (the default, on this machine's disk) is checked: with
a shared PostgreSQL instance other machines' pids mean nothing here (Dagster's run monitoring timeouts
still apply).
"""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import TYPE_CHECKING

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster import DefaultRunLauncher as _DefaultRunLauncher

from tac_pipeline.runs.home import ACTIVE_STATUSES, PARTITION_TAG, Say

if TYPE_CHECKING:
    from tac_pipeline.runs.child import Stopped


def run_process(instance: DagsterInstance, run_id: str) -> tuple[int, float] | None:
    """The pid of the run's own process and when it recorded it, from the run's first engine event that
    carries a pid outside any step; None when none is recorded (yet, or by this executor)."""
    for record in instance.all_logs(run_id, of_type=DagsterEventType.ENGINE_EVENT):
        event = record.dagster_event
        if event is None or event.step_key is not None or event.engine_event_data is None:
            continue
        pid = event.engine_event_data.metadata.get("pid")
        if pid is not None and str(pid.value).isdigit():
            return int(pid.value), record.timestamp
    return None


def _started_at(pid: int) -> tuple[float | None, str | None]:
    """When process ``pid`` started (seconds since the epoch) and its state letter, from /proc (Linux)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        boot = next(
            float(line.split()[1])
            for line in Path("/proc/stat").read_text().splitlines()
            if line.startswith("btime")
        )
    except (OSError, IndexError, StopIteration, ValueError):
        return None, None
    return boot + int(fields[19]) / os.sysconf("SC_CLK_TCK"), fields[0]


def process_alive(pid: int, recorded_at: float) -> bool:
    """True while ``pid`` is the process that recorded itself at ``recorded_at``: it exists, is no zombie,
    and did not start after that moment (which would make it another process that reuses the pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # it exists, under another user
    started, state = _started_at(pid)
    if state == "Z":
        return False
    return started is None or started <= recorded_at + 2.0  # /proc's boot time is whole seconds


def judges_processes(instance: DagsterInstance) -> bool:
    """True for an instance kept in SQLite: on one machine's disk, so its runs' pids are this machine's.
    (With PostgreSQL, commands on other machines share the instance; their pids mean nothing here.)"""
    from tac_pipeline.dagster_internals import SqliteRunStorage

    return isinstance(instance.run_storage, SqliteRunStorage)


def dead_run_message(run: DagsterRun, pid: int) -> str:
    dataset = run.tags.get(PARTITION_TAG)
    again = f" Run it again: make cluster DATASET={dataset}." if dataset else " Run it again."
    return (
        f"Run {run.run_id} was marked failed: its process (pid {pid}) is gone (killed, out of memory or the "
        f"machine restarted), so it can never finish.{again}"
    )


def mark_dead_runs_failed(
    instance: DagsterInstance, dataset: str | None = None, *, say: Say | None = None
) -> list[str]:
    """Report every started (or cancelling) run whose process is gone as failed (cancelled); their ids.

    ``dataset``: only that dataset's runs. Runs that record no pid are left to Dagster's run monitoring.
    """
    if not judges_processes(instance):
        return []
    tags = {PARTITION_TAG: dataset} if dataset else None
    runs = instance.get_runs(
        RunsFilter(statuses=[DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING], tags=tags)
    )
    marked = []
    for run in runs:
        found = run_process(instance, run.run_id)
        if found is None or process_alive(*found):
            continue
        current = instance.get_run_by_id(run.run_id)
        if current is None or current.status != run.status:  # it finished meanwhile
            continue
        message = dead_run_message(run, found[0])
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(current, message)
        else:
            instance.report_run_failed(current, message)
        marked.append(run.run_id)
        if say is not None:
            say(message)
    return marked


class LocalRunLauncher(_DefaultRunLauncher):
    """Dagster's default launcher, plus a run worker health check for the daemon's run monitoring: a run is
    healthy while its recorded process is alive (:func:`process_alive`); one that recorded none is taken
    as running (the monitoring's start timeout covers runs that never start)."""

    @property
    def supports_check_run_worker_health(self) -> bool:
        return True

    def check_run_worker_health(self, run: DagsterRun):
        from tac_pipeline.dagster_internals import CheckRunHealthResult, WorkerStatus

        if not judges_processes(self._instance):
            return CheckRunHealthResult(WorkerStatus.RUNNING, "the instance is shared: cannot tell")
        found = run_process(self._instance, run.run_id)
        if found is None:
            return CheckRunHealthResult(WorkerStatus.RUNNING, "no process recorded yet")
        if process_alive(*found):
            return CheckRunHealthResult(WorkerStatus.RUNNING, f"process {found[0]} is alive")
        return CheckRunHealthResult(WorkerStatus.FAILED, dead_run_message(run, found[0]))


def stop_leftover_run(instance: DagsterInstance, stopped: Stopped, dataset: str | None, since: float) -> str:
    """After waiting for the command's child raised :class:`~tac_pipeline.runs.child.Stopped`: report the
    child's run failed if it is still shown as in progress (its processes were killed before Dagster could
    record the end); what became of it.

    The child's run is the one that recorded the child's pid; one that recorded no pid counts when it was
    created after ``since`` by a command (not the daemon) for ``dataset`` (None: an unpartitioned run).
    """
    for record in instance.get_run_records(RunsFilter(created_after=_utc(since))):
        run = record.dagster_run
        recorded = run_process(instance, run.run_id)
        if recorded is not None and recorded[0] != stopped.pid:
            continue
        if recorded is None and (run.remote_job_origin is not None or run.tags.get(PARTITION_TAG) != dataset):
            continue
        if run.status in (*ACTIVE_STATUSES, DagsterRunStatus.NOT_STARTED):
            name = signal.Signals(stopped.signum).name
            instance.report_run_failed(
                run, f"Run {run.run_id} was stopped: the command running it got {name}."
            )
            return f"run {run.run_id} was stopped and marked failed"
        ended = {DagsterRunStatus.SUCCESS: "succeeded", DagsterRunStatus.CANCELED: "cancelled"}
        return f"run {run.run_id} stopped and is recorded as {ended.get(run.status, 'failed')}"
    return "no run had started"


def _utc(timestamp: float):
    from datetime import UTC, datetime

    return datetime.fromtimestamp(timestamp, UTC)
