"""The command's run in a child process that stops with it.

:class:`ChildProcess` runs the run's process in a process group of its own; while the command waits for it,
SIGINT / SIGTERM to the command are forwarded to it as an interrupt (Dagster then stops the steps and records
the run as failed); after :data:`STOP_GRACE_SECONDS` (or at a second signal) the whole group is killed, and
the wait returns only when every process of the group is gone. The child also gets SIGTERM from the kernel if
the command itself is killed outright (``PR_SET_PDEATHSIG``, Linux).

A child can be started before the command knows what it will run (``requests=True``): it prepares (imports
the definitions) while the command decides, then reads its arguments from its standard input
(:meth:`ChildProcess.send`); a child never sent anything ends when the command leaves the ``with`` block.
This module imports no Dagster, so that a command starts its child first and imports the rest meanwhile.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

#: How long a stopped ``make cluster`` lets its run stop cleanly before killing its processes.
STOP_GRACE_SECONDS = 20.0


@contextlib.contextmanager
def long_lived_objects():
    """Around a block that makes objects living as long as the process (importing Dagster, torch and the
    definitions: hundreds of thousands of them): the garbage collector is paused during it, and those
    objects are then moved out of its reach (``gc.freeze``), so that it does not walk them again and again
    for nothing (about a second of an assign run otherwise)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


class Stopped(RuntimeError):
    """The command got SIGINT or SIGTERM; its child process group is gone."""

    def __init__(self, signum: int, pid: int = 0) -> None:
        self.signum, self.pid = signum, pid
        self.outcome = "no run had started"  # filled in by the caller (runs.dead.stop_leftover_run)
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


class ChildProcess:
    """``command`` (a list, never a shell) in a process group of its own, started at once.

    ``output``: a file that gets the child's stdout and stderr (None: this process's own). ``requests``: the
    child reads one line from a pipe on its standard input (:meth:`send`); without, it inherits this
    process's. As a context manager, a child that was never waited for is ended on leaving (its pipe closed,
    then its group killed if it lingers), so an error or an interrupt while the command decides leaves no
    process behind.
    """

    def __init__(
        self, command: list[str], env: dict[str, str], *, output: Path | None = None, requests: bool = False
    ) -> None:
        parent = os.getpid()
        sink = open(output, "ab") if output is not None else None  # noqa: SIM115 - closed below
        try:
            self.process = subprocess.Popen(
                command,
                env=env,
                process_group=0,
                preexec_fn=lambda: _child_setup(parent),
                stdin=subprocess.PIPE if requests else None,
                stdout=sink,
                stderr=subprocess.STDOUT if sink is not None else None,
            )
        finally:
            if sink is not None:
                sink.close()  # the child holds its own descriptor
        self.waited = False

    @property
    def pid(self) -> int:
        return self.process.pid

    def send(self, line: str) -> None:
        """Write the child's one request line and close its standard input."""
        if self.process.stdin is None:
            raise RuntimeError("this child reads no requests (start it with requests=True)")
        try:
            self.process.stdin.write(line.encode() + b"\n")
        except BrokenPipeError:  # it died while preparing: wait() reports its exit code
            pass
        finally:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass

    def wait(
        self, *, grace_seconds: float = STOP_GRACE_SECONDS, tick: Callable[[], None] | None = None
    ) -> int:
        """Its exit code. ``tick`` is called while it runs (about every 0.2 s) and once after it ended: the
        caller shows the run's progress there.

        SIGINT or SIGTERM to this process interrupts the group (SIGINT, which Dagster turns into a clean stop
        of the run), kills it after ``grace_seconds`` or at a second signal, waits until no process of the
        group is left and raises :class:`Stopped`. The previous signal handlers are restored on return.
        """
        self.waited = True
        process = self.process
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
                _kill_until_gone(process.pid)
                raise Stopped(received[0], process.pid)
            if tick is not None:
                tick()
            return code
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def discard(self) -> None:
        """End a child that was never waited for: close its standard input (a child waiting for its request
        then leaves by itself), and kill its group if it is still there a moment later."""
        if self.process.stdin is not None and not self.process.stdin.closed:
            try:
                self.process.stdin.close()
            except BrokenPipeError:
                pass
        try:
            self.process.wait(timeout=2.0)
        except subprocess.TimeoutExpired:
            pass
        _kill_until_gone(self.process.pid)
        self.process.wait()

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc_info) -> None:
        if not self.waited:
            self.discard()


def _kill_until_gone(pgid: int) -> None:
    for _ in range(100):
        if not _group_alive(pgid):
            break
        _kill_group(pgid, signal.SIGKILL)
        time.sleep(0.1)


def run_child(
    command: list[str],
    env: dict[str, str],
    *,
    grace_seconds: float = STOP_GRACE_SECONDS,
    tick: Callable[[], None] | None = None,
    output: Path | None = None,
) -> int:
    """Run ``command`` as a :class:`ChildProcess` and wait for it (:meth:`ChildProcess.wait`): its exit code."""
    with ChildProcess(command, env, output=output) as child:
        return child.wait(grace_seconds=grace_seconds, tick=tick)
