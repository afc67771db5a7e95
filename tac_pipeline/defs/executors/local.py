"""The local executor: steps in processes forked from a warm server (or spawned, or in the run's process), with at
most one ``tac/gpu`` step per visible GPU."""

from __future__ import annotations

from dagster import Enum, EnumValue, Field, multi_or_in_process_executor

from tac_pipeline.defs.resources.compute import GPU_TAG, visible_gpu_count

#: How the steps of a run execute (run config ``execution: {config: {mode: ...}}``):
#: ``forkserver`` (default): a process per step, forked from a server that imported :data:`FORKSERVER_PRELOAD`
#: once per run; ``spawn``: a process per step, each a fresh Python (Dagster's default; every step pays the
#: imports and the definitions load again); ``in_process``: every step in the run's own process, one after
#: another (no process start at all, no isolation: a crashing step ends the run).
EXECUTOR_MODES = ("forkserver", "spawn", "in_process")


#: Imported once per run by the forkserver that every step process is forked from. None of them may touch
#: CUDA at import: a process forked after CUDA is initialised cannot use the GPU ("Cannot re-initialize
#: CUDA in forked subprocess"). Importing torch is fine; asking it for devices is not, so the executor
#: counts GPUs when a run starts, never at import (tac_pipeline_tests/test_defs/test_executors.py checks all of this).
#: ``torch._dynamo``: ``torch.optim.Adam`` imports it at its first construction (about 1 s on 2 cores, some 900
#: modules), which would otherwise fall inside every ``trained_heads`` step.
FORKSERVER_PRELOAD = ("dagster", "torch", "torch._dynamo", "tac_pipeline.definitions")


def _executor_config(mode: str, n_gpus: int | None) -> dict:
    """``multi_or_in_process_executor`` config for a mode; counts the GPUs now unless ``n_gpus`` is given."""
    if mode not in EXECUTOR_MODES:
        raise ValueError(f"executor mode must be one of {', '.join(EXECUTOR_MODES)}, not {mode!r}")
    if mode == "in_process":
        return {"in_process": {}}
    n_gpus = visible_gpu_count() if n_gpus is None else n_gpus
    config: dict = {"tag_concurrency_limits": [{"key": GPU_TAG, "value": "true", "limit": max(1, n_gpus)}]}
    if mode == "forkserver":
        config["start_method"] = {"forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}}
    return {"multiprocess": config}


def gpu_aware_executor(n_gpus: int | None = None, mode: str | None = None):
    """Steps in separate processes; at most one ``tac/gpu`` step per visible GPU (one at a time on CPU).

    ``mode`` (one of :data:`EXECUTOR_MODES`, default ``forkserver``) is the default of the run config's
    ``execution: {config: {mode: ...}}``. The GPUs are counted when a run starts (in the run's process and
    in its step processes), not when the definitions load, so that importing them never initialises CUDA:
    the forkserver imports them.
    """
    if mode is not None and mode not in EXECUTOR_MODES:
        raise ValueError(f"executor mode must be one of {', '.join(EXECUTOR_MODES)}, not {mode!r}")
    default = mode or EXECUTOR_MODES[0]

    def config_fn(config: dict) -> dict:
        return _executor_config(config.get("mode") or default, n_gpus)

    return multi_or_in_process_executor.configured(
        config_fn,
        name="gpu_aware_executor",
        config_schema={
            "mode": Field(
                Enum("TacExecutorMode", [EnumValue(m) for m in EXECUTOR_MODES]),
                is_required=False,
                description=f"How steps run: {', '.join(EXECUTOR_MODES)} (default {default}).",
            )
        },
        description="Steps in processes forked from a warm server (or spawned, or in process); at most one "
        "tac/gpu step per visible GPU.",
    )


def assign_run_config(executor: str) -> dict | None:
    """The run config of an assign run (:mod:`tac_pipeline.defs.assets.run_kind`) under the deployment's
    ``executor`` (``TAC_EXECUTOR``): its few short steps run in the run's own process, which saves a process
    start per step (the forkserver's preload alone takes seconds) where the work is a second or two. None under
    Dask, whose executor takes no such setting."""
    return None if executor == "dask" else {"execution": {"config": {"mode": "in_process"}}}
