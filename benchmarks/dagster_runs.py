"""Runs of the asset graph as ``make cluster`` makes them, for the benchmarks that time Dagster.

:func:`materialize_timed` is the one way a benchmark runs assets in a child process: it calls the CLI's own
:func:`tac_pipeline.cli.cluster.materialize` (a run recorded in the instance) and times it.
:func:`child_environment` builds that child's environment through :class:`tac_pipeline.config.TacConfig`,
:func:`open_home` opens a benchmark's own ``DAGSTER_HOME``, and :func:`step_times` reads a run's steps back.
Asset names come from :mod:`tac_pipeline.defs.names`. Dagster is imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from benchmarks import REPO

#: The characters of the run's output kept in the error when it fails.
OUTPUT_TAIL = 4000


def dagster_available() -> bool:
    try:
        import dagster  # noqa: F401
    except ImportError:
        return False
    return True


def child_environment(settings: Mapping[str, str], tree: Path = REPO) -> dict[str, str]:
    """The environment of a run's child process: this process's with ``settings`` (``TAC_*``,
    ``DAGSTER_HOME``, ...) on top and ``tree`` first on ``PYTHONPATH`` (a checkout where the package is not
    installed), as :meth:`TacConfig.environment` writes it (a bad value raises ``ConfigError`` here)."""
    from tac_pipeline.config import TacConfig

    base = {**os.environ, **settings}
    base["PYTHONPATH"] = os.pathsep.join(p for p in (str(tree), os.environ.get("PYTHONPATH")) if p)
    return TacConfig.from_env(base).environment(base)


def open_home(home: Path):
    """The Dagster instance at ``home`` (created), made this process's ``DAGSTER_HOME`` first; the
    ``dagster.yaml`` a benchmark writes there configures it and the runs' child processes alike (an empty
    one, Dagster's defaults, where it wrote none)."""
    from dagster import DagsterInstance

    from tac_pipeline.config import use_dagster_home

    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()
    use_dagster_home(home)
    return DagsterInstance.get()


@contextlib.contextmanager
def _output_to(log: Path) -> Iterator[None]:
    """This process's standard output and error (file descriptors 1 and 2, which child processes inherit)
    written to ``log`` meanwhile."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log, "wb") as handle:
        os.dup2(handle.fileno(), 1)
        os.dup2(handle.fileno(), 2)
    try:
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, copy in zip((1, 2), saved, strict=True):
            os.dup2(copy, fd)
            os.close(copy)


def materialize_timed(
    selection: Sequence[str],
    *,
    instance,
    env: Mapping[str, str],
    partition: str | None = None,
    run_config: dict | None = None,
    cwd: Path | None = None,
) -> float:
    """Seconds of one run of ``selection`` (asset names) through the CLI's own materialize, in a child
    process with ``env`` (see :func:`child_environment`), recorded in ``instance``; ``cwd``: the working
    directory meanwhile (a ``--tree`` run's checkout).

    What the run prints here (its progress lines, any output of the child) goes to a temporary log, not to
    the benchmark's output; a failure raises ``ClusterError`` with the failing step's message and that log's
    tail."""
    from tac_pipeline.cli.cluster import ClusterError, materialize

    with tempfile.TemporaryDirectory(prefix="tac_bench_run_") as tmp:
        log = Path(tmp) / "run.log"
        try:
            with contextlib.chdir(cwd or Path.cwd()), _output_to(log):
                start = time.perf_counter()
                materialize(list(selection), partition, dict(env), instance, run_config)
                return time.perf_counter() - start
        except ClusterError as exc:
            printed = log.read_text(encoding="utf-8", errors="replace")[-OUTPUT_TAIL:].strip()
            if not printed:
                raise
            raise ClusterError(
                f"{exc}\n--- printed while it ran (last {OUTPUT_TAIL} characters) ---\n{printed}"
            ) from None


def step_times(instance, run_id: str) -> dict[str, str]:
    """Per step of a Dagster run: seconds from its start to its end, plus its process launch when it had one."""
    from dagster import DagsterEventType

    launched = {
        record.step_key: record.timestamp
        for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_WORKER_STARTING)
    }
    out = {}
    for stats in instance.get_run_step_stats(run_id):
        if stats.start_time is None or stats.end_time is None:
            continue
        text = f"{stats.end_time - stats.start_time:.2f}"
        if stats.step_key in launched:
            text += f" (+{stats.start_time - launched[stats.step_key]:.1f} start)"
        out[stats.step_key] = text
    return out


def latest_run_id(instance) -> str:
    return instance.get_runs(limit=1)[0].run_id
