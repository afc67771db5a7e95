"""Every private Dagster name the project uses, in one place.

Dagster does not promise these across releases. ``tac_pipeline_tests/test_dagster_internals.py`` imports this
module and checks the shape the code relies on, so that a Dagster upgrade that moves or changes one of them
fails there, by name, rather than deep inside a Dask run. Only the Dask executor (:mod:`tac_pipeline.executors`)
and the run launcher's health check (:mod:`tac_pipeline.runs`) import this module, and only when they run.
"""

from __future__ import annotations

from dagster._core.errors import raise_execution_interrupts
from dagster._core.execution.plan.outputs import StepOutputHandle
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.storage.runs import SqliteRunStorage
from dagster._utils import iterate_with_context

__all__ = [
    "CheckRunHealthResult",
    "KnownExecutionState",
    "SqliteRunStorage",
    "StepOutputHandle",
    "WorkerStatus",
    "iterate_with_context",
    "raise_execution_interrupts",
]
