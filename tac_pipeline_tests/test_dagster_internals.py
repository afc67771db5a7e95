"""The private Dagster names the Dask executor relies on still exist, with the shape it uses.

A failure here after a Dagster upgrade names what moved; fix :mod:`tac_pipeline.dagster_internals` (and the
executor) before raising the version bound in pyproject.toml.
"""

import inspect

import dagster


def test_every_private_name_imports():
    from tac_pipeline import dagster_internals

    for name in dagster_internals.__all__:
        assert getattr(dagster_internals, name) is not None, name


def test_shapes_the_executor_relies_on():
    from tac_pipeline.dagster_internals import (
        KnownExecutionState,
        StepOutputHandle,
        iterate_with_context,
        raise_execution_interrupts,
    )

    handle = StepOutputHandle("step", "result", None)
    assert (handle.step_key, handle.output_name, handle.mapping_key) == ("step", "result", None)
    state = KnownExecutionState()
    assert "ready_outputs" in state._fields
    assert set(state._replace(ready_outputs={handle}).ready_outputs) == {handle}
    assert callable(iterate_with_context) and callable(raise_execution_interrupts)
    assert list(inspect.signature(iterate_with_context).parameters)[:2] == ["context_fn", "iterator"]


def test_no_other_module_imports_private_dagster_names():
    from pathlib import Path

    import tac_pipeline

    root = Path(tac_pipeline.__file__).parent
    offenders = [
        str(path.relative_to(root))
        for path in root.rglob("*.py")
        if path.name != "dagster_internals.py" and "dagster._" in path.read_text(encoding="utf-8")
    ]
    assert offenders == [], (
        f"private Dagster imports outside dagster_internals.py (dagster {dagster.__version__})"
    )


def test_shapes_the_run_launcher_relies_on():
    from tac_pipeline.dagster_internals import CheckRunHealthResult, SqliteRunStorage, WorkerStatus

    result = CheckRunHealthResult(WorkerStatus.FAILED, "gone")
    assert (result.status, result.msg) == (WorkerStatus.FAILED, "gone")
    assert {WorkerStatus.RUNNING, WorkerStatus.FAILED} <= set(WorkerStatus)
    assert isinstance(SqliteRunStorage, type)
