"""Runs of one dataset never interleave, a stopped command stops its run, and a dead run is marked failed.

- **One run per dataset at a time.** ``tac_pipeline/dagster.yaml`` (copied into ``$DAGSTER_HOME`` by
  :func:`dagster_home`) gives Dagster's run queue a limit of one run per value of the ``dagster/partition``
  tag: the daemon launches a queued run of a dataset (from the UI, the drops sensor, the schedule, a backfill)
  only while no run of that dataset is starting, running or being cancelled. ``make cluster`` executes its run
  in its own ``dagster asset materialize`` process, outside the queue, so it takes its turn itself
  (:func:`partition_turn`): a per-dataset lock file under ``$DAGSTER_HOME/locks/`` orders the commands, and
  while holding it the command waits until the instance shows no run of the dataset in progress (nor, while
  the daemon is alive, queued). The queue counts the command's run in turn (it carries the same tag), so
  nothing of that dataset is launched while it runs.
- **Dead runs.** A run's process records its pid in the run's event log when it starts. A run still shown as
  started (or cancelling) whose process is gone is reported failed (:func:`mark_dead_runs_failed`), at every
  ``make cluster`` / ``make ui`` start and, while the daemon runs, by Dagster's run monitoring through
  :class:`LocalRunLauncher`. The pid is compared with the process's start time, so a reused pid is not
  mistaken for the run. Only an instance kept in SQLite (the default, on this machine's disk) is checked: with
  a shared PostgreSQL instance other machines' pids mean nothing here (Dagster's run monitoring timeouts
  still apply).
- **Stopping.** :func:`run_child` runs ``dagster asset materialize`` in a process group of its own and forwards
  SIGINT / SIGTERM to it as an interrupt (Dagster then stops the steps and records the run as failed); after
  :data:`STOP_GRACE_SECONDS` (or at a second signal) it kills the whole group, and it returns only when every
  process of the group is gone. The child also gets SIGTERM from the kernel if the command itself is killed
  outright (``PR_SET_PDEATHSIG``, Linux).
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from dagster import DagsterEventType, DagsterInstance, DagsterRun, DagsterRunStatus, RunsFilter
from dagster import DefaultRunLauncher as _DefaultRunLauncher

from tac_pipeline.atomic import atomic_write
from tac_pipeline.partitions import validate_dataset_key

#: The tag Dagster gives every run of one partition; the run queue's per-dataset limit is on it.
PARTITION_TAG = "dagster/partition"
#: The statuses the run queue counts as holding a slot (Dagster's ``ACTIVE_RUN_STATUSES``).
ACTIVE_STATUSES = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)
#: The instance settings shipped with the project (run queue limit, run monitoring, this launcher).
INSTANCE_CONFIG = Path(__file__).with_name("dagster.yaml")
#: How long a stopped ``make cluster`` lets its run stop cleanly before killing its processes.
STOP_GRACE_SECONDS = 20.0
#: A daemon whose run-queue heartbeat is older than this is taken as not running.
DAEMON_HEARTBEAT_SECONDS = 60.0

Say = Callable[[str], None]


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------------------------------------
# the instance's home
# --------------------------------------------------------------------------------------------------------


def dagster_home() -> Path:
    """``$DAGSTER_HOME`` (default ``./.dagster_home``, then exported), created, holding a ``dagster.yaml``:
    the shipped :data:`INSTANCE_CONFIG` when it had none (one already there is never replaced)."""
    home = Path(os.environ.get("DAGSTER_HOME") or ".dagster_home").expanduser().absolute()
    home.mkdir(parents=True, exist_ok=True)
    os.environ["DAGSTER_HOME"] = str(home)
    target = home / "dagster.yaml"
    if not target.exists():
        shipped = INSTANCE_CONFIG.read_bytes()
        atomic_write(target, lambda handle: handle.write(shipped))
    return home


def open_instance() -> DagsterInstance:
    """The instance at :func:`dagster_home`, its storage created while holding ``locks/instance.lock``.

    Two commands started at once on a fresh home would otherwise both create the SQLite tables, and each
    stamps its own schema revision: the instance then refuses to open ("more than one head present")
    until its ``history``, ``schedules`` and ``storage`` folders are deleted.
    """
    locks = dagster_home() / "locks"
    locks.mkdir(exist_ok=True)
    with open(locks / "instance.lock", "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes (or the process ends)
        return DagsterInstance.get()


def missing_partition_limit(instance: DagsterInstance) -> str | None:
    """Why the instance's run queue does not keep runs of one dataset apart, or None when it does."""
    queue = instance.get_concurrency_config().run_queue_config
    for limit in (queue.tag_concurrency_limits if queue else None) or []:
        per_value = limit.get("value") == {"applyLimitPerUniqueValue": True}
        if limit.get("key") == PARTITION_TAG and per_value and limit.get("limit") == 1:
            return None
    return (
        f"{Path(instance.root_directory) / 'dagster.yaml'} sets no run limit of 1 per dataset, so runs of one "
        "dataset started from the UI, the sensor or the schedule may interleave: copy the 'concurrency' "
        f"section of {INSTANCE_CONFIG} into it"
    )


# --------------------------------------------------------------------------------------------------------
# one run per dataset
# --------------------------------------------------------------------------------------------------------


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
    instance: DagsterInstance, dataset: str, *, say: Say = _say, poll_seconds: float = 2.0
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
    instance: DagsterInstance, dataset: str, *, say: Say = _say, poll_seconds: float = 2.0
) -> Iterator[None]:
    """Hold ``dataset``'s turn: no other command holds it, and no other run of it is in progress.

    Another ``make cluster`` of the same dataset holding the lock is waited for (the kernel releases the lock
    when its process ends, however it ends); then :func:`wait_for_partition`.
    """
    locks = Path(instance.root_directory) / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    with open(locks / f"{validate_dataset_key(dataset)}.lock", "a+", encoding="utf-8") as handle:
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


# --------------------------------------------------------------------------------------------------------
# runs whose process is gone
# --------------------------------------------------------------------------------------------------------


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


# --------------------------------------------------------------------------------------------------------
# a child that stops with its parent
# --------------------------------------------------------------------------------------------------------


class Stopped(RuntimeError):
    """The command got SIGINT or SIGTERM; its child process group is gone."""

    def __init__(self, signum: int, pid: int = 0) -> None:
        self.signum, self.pid = signum, pid
        self.outcome = "no run had started"  # filled in by the caller (stop_leftover_run)
        super().__init__(f"stopped by {signal.Signals(signum).name}")


_PR_SET_PDEATHSIG = 1
try:  # looked up once here: between fork and exec the child may only call it, not load libraries
    _PRCTL = ctypes.CDLL(None, use_errno=True).prctl if sys.platform.startswith("linux") else None
except (OSError, AttributeError):
    _PRCTL = None


def _child_setup(parent: int) -> None:
    """In the child, before exec: get SIGTERM when the parent dies (Linux; elsewhere nothing), and do not
    start at all if it died already."""
    if _PRCTL is not None:
        _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:
            os._exit(1)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _kill_group(pgid: int, sig: int) -> None:
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def run_child(command: list[str], env: dict[str, str], *, grace_seconds: float = STOP_GRACE_SECONDS) -> int:
    """Run ``command`` (a list, never a shell) in its own process group; its exit code.

    SIGINT or SIGTERM to this process interrupts the group (SIGINT, which Dagster turns into a clean stop of
    the run), kills it after ``grace_seconds`` or at a second signal, waits until no process of the group is
    left and raises :class:`Stopped`. The previous signal handlers are restored on return.
    """
    parent = os.getpid()
    process = subprocess.Popen(command, env=env, process_group=0, preexec_fn=lambda: _child_setup(parent))
    received: list[int] = []

    def forward(signum, _frame) -> None:
        received.append(signum)
        _kill_group(process.pid, signal.SIGINT if len(received) == 1 else signal.SIGKILL)

    previous = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        deadline = None
        while True:
            try:
                code = process.wait(timeout=0.2)
                break
            except subprocess.TimeoutExpired:
                pass
            if received and deadline is None:
                deadline = time.monotonic() + grace_seconds
            if deadline is not None and time.monotonic() > deadline:
                _kill_group(process.pid, signal.SIGKILL)
        if received:
            # The run's own step processes share the group: none may outlive the command and write later.
            for _ in range(100):
                if not _group_alive(process.pid):
                    break
                _kill_group(process.pid, signal.SIGKILL)
                time.sleep(0.1)
            raise Stopped(received[0], process.pid)
        return code
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def stop_leftover_run(instance: DagsterInstance, stopped: Stopped, dataset: str | None, since: float) -> str:
    """After :func:`run_child` raised :class:`Stopped`: report the child's run failed if it is still shown as
    in progress (its processes were killed before Dagster could record the end); what became of it.

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


if __name__ == "__main__":  # `make ui`: prepare the instance and report dead runs before the UI starts
    with open_instance() as _instance:
        mark_dead_runs_failed(_instance, say=_say)
        problem = missing_partition_limit(_instance)
    if problem:
        _say(f"warning: {problem}")
