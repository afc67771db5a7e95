"""The command's run in a child process that stops with it.

:func:`run_child` runs the run's process in a process group of its own and forwards SIGINT / SIGTERM to it
as an interrupt (Dagster then stops the steps and records the run as failed); after
:data:`STOP_GRACE_SECONDS` (or at a second signal) it kills the whole group, and it returns only when every
process of the group is gone. The child also gets SIGTERM from the kernel if the command itself is killed
outright (``PR_SET_PDEATHSIG``, Linux).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus, RunsFilter

from tac_pipeline.runs.dead import run_process
from tac_pipeline.runs.home import ACTIVE_STATUSES, PARTITION_TAG

#: How long a stopped ``make cluster`` lets its run stop cleanly before killing its processes.
STOP_GRACE_SECONDS = 20.0


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


def die_with_parent() -> None:
    """Get SIGTERM when this process's parent dies, however it dies (SIGKILL included; Linux, elsewhere
    nothing): ``make cluster``'s recipe ``exec``s the command, so stopping ``make`` stops the command, which
    stops its run. A parent that died while this was being set up means: stop now."""
    if _PRCTL is None:
        return
    parent = os.getppid()
    _PRCTL(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def stop_group_when_orphaned(parent: int) -> None:
    """In the run's own process (the group leader): on SIGTERM while ``parent`` (the command) is gone, kill the
    whole process group at once (the steps, their forkserver and the image readers), so that nothing writes
    after the command died; the run, left as started, is reported failed by the next command or by run
    monitoring (its process is gone, :mod:`tac_pipeline.runs.dead`). With the parent alive, SIGTERM stops the
    run as SIGINT does (Dagster records it failed)."""

    def on_term(signum, frame) -> None:
        if os.getppid() != parent:
            _kill_group(os.getpgrp(), signal.SIGKILL)
        signal.default_int_handler(signum, frame)

    signal.signal(signal.SIGTERM, on_term)


def exit_now(code: int) -> None:
    """Flush the standard streams and end the process without the interpreter's teardown.

    A finished process that tears down native thread pools at interpreter exit (Arrow's, OpenMP's, torch's,
    gRPC's) can abort after its work is done ("terminate called without an active exception", exit 134):
    nothing is left to do once the output is flushed, so the commands leave through ``os._exit``.
    """
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)


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


def run_child(
    command: list[str],
    env: dict[str, str],
    *,
    grace_seconds: float = STOP_GRACE_SECONDS,
    tick: Callable[[], None] | None = None,
    output: Path | None = None,
) -> int:
    """Run ``command`` (a list, never a shell) in its own process group; its exit code. ``tick`` is called
    while it runs (about every 0.2 s) and once after it ended: the caller shows the run's progress there.
    ``output``: a file that gets the child's stdout and stderr (None: this process's own).

    SIGINT or SIGTERM to this process interrupts the group (SIGINT, which Dagster turns into a clean stop of
    the run), kills it after ``grace_seconds`` or at a second signal, waits until no process of the group is
    left and raises :class:`Stopped`. The previous signal handlers are restored on return.
    """
    parent = os.getpid()
    sink = open(output, "ab") if output is not None else None  # noqa: SIM115 - closed below
    try:
        process = subprocess.Popen(
            command,
            env=env,
            process_group=0,
            preexec_fn=lambda: _child_setup(parent),
            stdout=sink,
            stderr=subprocess.STDOUT if sink is not None else None,
        )
    finally:
        if sink is not None:
            sink.close()  # the child holds its own descriptor
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
            if tick is not None and not received:
                tick()
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
        if tick is not None:
            tick()
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
