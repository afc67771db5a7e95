"""Deployment settings: which engine runs the steps and how image embedding is split (environment variables).

The local default (``TAC_EXECUTOR`` unset, or ``multiprocess``) is the GPU-aware multiprocess executor
(steps forked from a warm server) with one embedding step per drop; ``TAC_EXECUTOR=in_process`` runs every
step of a run in the run's own process (small drops: no process start at all). A cluster deployment sets, for the code location, the webserver, the daemon and every worker alike:

- ``TAC_EXECUTOR=dask``: steps run on a Dask cluster (see :mod:`tac_pipeline.executors`);
- ``TAC_DASK_SCHEDULER=tcp://host:8786``: the cluster's scheduler (unset: a local cluster per run, of
  ``TAC_DASK_WORKERS`` worker processes, default 2);
- ``TAC_DASK_GPU_RESOURCE=1``: steps tagged ``tac/gpu`` ask Dask for one ``GPU`` resource, so they run only
  on workers started with ``--resources GPU=1`` (one such step per GPU at a time);
- ``TAC_EMBED_SHARDS=N``: ``image_embeddings`` becomes N embedding steps over contiguous slices of the
  drop, which different workers compute at once, and one step that concatenates them. The asset, its
  table and everything downstream are the same as with one step.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

EXECUTORS = ("multiprocess", "in_process", "dask")
#: More shards than this is a typo rather than a plan (each shard is a step in the run's plan).
MAX_EMBED_SHARDS = 1024


class DeploymentError(ValueError):
    """A deployment environment variable holds a value the pipeline cannot use."""


@dataclass(frozen=True)
class Deployment:
    executor: str = "multiprocess"
    dask_scheduler: str | None = None
    dask_workers: int = 2
    dask_gpu_resource: bool = False
    embed_shards: int = 1

    @property
    def sharded(self) -> bool:
        return self.embed_shards > 1


def _whole(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise DeploymentError(f"{name} must be a whole number from {low} to {high}, not {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = env.get(name, "").strip().lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise DeploymentError(f"{name} must be 1/true/yes or 0/false/no, not {raw!r}")


def dask_gpu_resource_from_env(env: Mapping[str, str] | None = None) -> bool:
    """``TAC_DASK_GPU_RESOURCE``: GPU steps ask Dask for one ``GPU`` resource."""
    return _flag(os.environ if env is None else env, "TAC_DASK_GPU_RESOURCE")


def deployment_from_env(env: Mapping[str, str] | None = None) -> Deployment:
    """The deployment described by ``TAC_EXECUTOR``, ``TAC_DASK_*`` and ``TAC_EMBED_SHARDS``."""
    env = os.environ if env is None else env
    executor = env.get("TAC_EXECUTOR", "").strip().lower() or "multiprocess"
    if executor not in EXECUTORS:
        raise DeploymentError(f"TAC_EXECUTOR must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    scheduler = env.get("TAC_DASK_SCHEDULER", "").strip() or None
    if scheduler is not None and executor != "dask":
        raise DeploymentError(
            "TAC_DASK_SCHEDULER is set but TAC_EXECUTOR is not 'dask': set TAC_EXECUTOR=dask"
        )
    return Deployment(
        executor=executor,
        dask_scheduler=scheduler,
        dask_workers=_whole(env, "TAC_DASK_WORKERS", 2, 1, 512),
        dask_gpu_resource=dask_gpu_resource_from_env(env),
        embed_shards=_whole(env, "TAC_EMBED_SHARDS", 1, 1, MAX_EMBED_SHARDS),
    )
