"""The ``compute_device`` resource and the GPU steps' tags: which device each step runs on.

GPU pinning: the executor limits steps tagged ``tac/gpu`` to the number of visible GPUs; inside a step
:meth:`ComputeDeviceResource.acquire` takes an exclusive file lock on one GPU, so concurrent steps (and
concurrent runs sharing ``lock_dir``) each get their own device. Without CUDA the same code runs on CPU.
"""

from __future__ import annotations

import contextlib
import fcntl
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

GPU_TAG = "tac/gpu"


#: dagster-dask's own tag for the Dask resources a step needs (``dagster_dask.executor``'s key).
DASK_RESOURCE_REQUIREMENTS_TAG = "dagster-dask/resource_requirements"


def gpu_step_tags(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The tags of a step that uses the accelerator.

    ``tac/gpu`` (the local executor's one-step-per-GPU limit and the UI's marker), plus dagster-dask's
    resource-requirements tag asking for one Dask ``GPU`` resource when ``TAC_DASK_GPU_RESOURCE`` is set, so
    that the Dask executor sends the step only to workers started with ``--resources GPU=1``. Read when the
    asset modules are imported: the code location, the daemon and every worker share the environment.
    """
    from tac_pipeline.config import deployment_from_env

    tags = {GPU_TAG: "true"}
    if deployment_from_env(env).dask_gpu_resource:
        tags[DASK_RESOURCE_REQUIREMENTS_TAG] = '{"GPU": 1}'
    return tags


def visible_gpu_count() -> int:
    """Number of CUDA devices this process may use (0 without CUDA)."""
    try:
        import torch

        return torch.cuda.device_count() if torch.cuda.is_available() else 0
    except Exception:  # a broken CUDA install means CPU, not a crash at load time
        return 0


class ComputeDeviceResource(ConfigurableResource):
    """Which device TAC's tensors live on."""

    device: str = Field(
        default="auto",
        description="'auto' (a free visible GPU, else CPU), 'cpu', 'cuda' (a free GPU) or 'cuda:N' (that GPU).",
    )
    lock_dir: str | None = Field(
        default=None, description="Folder for the per-GPU lock files (default: the system temp folder)."
    )

    @contextlib.contextmanager
    def acquire(self, log=None) -> Iterator[str]:
        """Yield a device string (``cpu`` or ``cuda:N``), holding that GPU exclusively while inside."""
        wanted = self.device.strip().lower()
        n_gpus = visible_gpu_count()
        if wanted == "cpu" or (wanted == "auto" and n_gpus == 0):
            yield "cpu"
            return
        if n_gpus == 0:
            raise RuntimeError(
                f"device {self.device!r} was requested but no CUDA device is visible; "
                "set the compute_device resource's device to 'auto' or 'cpu'"
            )
        candidates = [int(wanted.split(":", 1)[1])] if ":" in wanted else list(range(n_gpus))
        lock_dir = Path(self.lock_dir or tempfile.gettempdir())
        lock_dir.mkdir(parents=True, exist_ok=True)
        handles = {i: open(lock_dir / f"tac-gpu-{i}.lock", "a+") for i in candidates}  # noqa: SIM115
        try:
            waited = 0.0
            while True:
                for index, handle in handles.items():
                    try:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    except BlockingIOError:
                        continue
                    if log is not None:
                        log.info(f"Running on cuda:{index} (locked after {waited:.1f} s).")
                    try:
                        yield f"cuda:{index}"
                    finally:
                        fcntl.flock(handle, fcntl.LOCK_UN)
                    return
                time.sleep(0.5)
                waited += 0.5
        finally:
            for handle in handles.values():
                handle.close()
