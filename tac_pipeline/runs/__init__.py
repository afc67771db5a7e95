"""Run control: the instance's home, a dataset's turn, dead runs, and the command's child process.

- :mod:`~tac_pipeline.runs.home`: ``$DAGSTER_HOME`` with the project's ``dagster.yaml``, opened once;
- :mod:`~tac_pipeline.runs.turn`: one run per dataset at a time (``make cluster`` waits for its turn);
- :mod:`~tac_pipeline.runs.dead`: runs whose process is gone are reported failed (also by the daemon's run
  monitoring, through :class:`LocalRunLauncher`, which ``dagster.yaml`` names as ``tac_pipeline.runs``);
- :mod:`~tac_pipeline.runs.child`: the run's process, which stops when the command is stopped.

:class:`LocalRunLauncher` loads on first use (PEP 562): :mod:`~tac_pipeline.runs.child` imports no Dagster, so
that a command can start its run's process before it imports Dagster itself.
"""

__all__ = ["LocalRunLauncher"]


def __getattr__(name: str):
    if name != "LocalRunLauncher":
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from tac_pipeline.runs.dead import LocalRunLauncher

    return LocalRunLauncher
