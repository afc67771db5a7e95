"""Every private Dagster name the project uses, in one place.

Dagster does not promise these across releases. ``tac_pipeline_tests/test_dagster_internals.py`` imports this
module and checks the shape the code relies on, so that a Dagster upgrade that moves or changes one of them
fails there, by name, rather than deep inside a Dask run. Only the Dask executor (:mod:`tac_pipeline.executors`)
imports this module, and only when it runs.
"""

from __future__ import annotations

from dagster._core.errors import raise_execution_interrupts
from dagster._core.execution.plan.outputs import StepOutputHandle
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._utils import iterate_with_context

__all__ = [
    "KnownExecutionState",
    "StepOutputHandle",
    "iterate_with_context",
    "raise_execution_interrupts",
]
