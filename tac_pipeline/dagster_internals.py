"""Every private Dagster name the project uses, in one place.

Dagster does not promise these across releases. ``tac_pipeline_tests/test_dagster_internals.py`` imports this
module and checks the shape the code relies on, so that a Dagster upgrade that moves or changes one of them
fails there, by name, rather than deep inside a Dask run. Only the Dask executor
(:mod:`tac_pipeline.defs.executors.dask_cluster`), the run launcher's health check (:mod:`tac_pipeline.runs.dead`)
the check of ``TAC_RECLUSTER_CRON`` (:mod:`tac_pipeline.config`) and the run's process of the command line
(:mod:`tac_pipeline.cli.launch`) import this module, and only when they run.
"""

from __future__ import annotations

from dagster._core.definitions.reconstruct import ReconstructableRepository
from dagster._core.errors import raise_execution_interrupts
from dagster._core.execution.plan.outputs import StepOutputHandle
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.runs import SqliteRunStorage
from dagster._utils import iterate_with_context
from dagster._utils.schedules import is_valid_cron_string

__all__ = [
    "CheckRunHealthResult",
    "KnownExecutionState",
    "ReconstructableRepository",
    "SqliteRunStorage",
    "StepOutputHandle",
    "WorkerStatus",
    "iterate_with_context",
    "is_valid_cron_string",
    "raise_execution_interrupts",
]
