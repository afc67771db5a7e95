"""A small job run by ``test_executors.py`` through the project's executor: what its step processes see.

Three ``tac/gpu`` steps (no dependencies between them, so the executor may run them at once) each take a
device from :class:`ComputeDeviceResource` with two pretend GPUs, whose file locks are real while CUDA is
never touched, and hold it for a moment; one step decodes a few PNGs through the image reader's worker
processes. Every step writes what it saw to ``$TAC_PROBE_OUT/<step>.json``. The executor's mode comes from the
run config; ``$TAC_PROBE_GPUS`` is its GPU count (the ``tac/gpu`` concurrency limit).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from dagster import Definitions, job, op

from tac_pipeline.defs.executors.local import gpu_aware_executor
from tac_pipeline.defs.resources.compute import GPU_TAG, ComputeDeviceResource

PRETEND_GPUS = 2
HOLD_SECONDS = 1.5


def _record(name: str, **fields) -> None:
    out = Path(os.environ["TAC_PROBE_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(fields))


def _process_facts() -> dict:
    torch = sys.modules.get("torch")
    return {
        "pid": os.getpid(),
        "ppid": os.getppid(),
        # True when this process was forked from one that had initialised CUDA: torch would refuse the GPU.
        "bad_fork": bool(torch is not None and torch.cuda._is_in_bad_fork()),
        "cuda_initialized": bool(torch is not None and torch.cuda.is_initialized()),
    }


def _gpu_step(name: str):
    @op(name=name, tags={GPU_TAG: "true"})
    def gpu_step(context) -> None:
        from tac_pipeline.defs.resources import compute

        facts = _process_facts()  # before anything below could initialise CUDA
        compute.visible_gpu_count = lambda: PRETEND_GPUS  # acquire() then locks cuda:0 / cuda:1 files
        resource = ComputeDeviceResource(device="auto", lock_dir=os.environ["TAC_PROBE_LOCKS"])
        with resource.acquire(context.log) as device:
            start = time.time()
            time.sleep(HOLD_SECONDS)
            end = time.time()
        _record(name, device=device, start=start, end=end, **facts)

    return gpu_step


@op
def read_images_step() -> None:
    import numpy as np
    from PIL import Image

    from tac_pipeline.encoders.images import PreprocessSpec, read_images

    facts = _process_facts()
    folder = Path(os.environ["TAC_PROBE_OUT"]) / "images"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(24):
        path = folder / f"{i:02d}.png"
        Image.fromarray(np.full((16, 16, 3), i * 10, dtype=np.uint8)).save(path)
        paths.append(path)
    reader = read_images(paths, PreprocessSpec(8, (0.5,) * 3, (0.5,) * 3), num_workers=2, batch_size=4)
    rows = sum(len(batch.indices) for batch in reader)
    _record(
        "read_images_step",
        rows=rows,
        ok=reader.n_ok,
        skipped=len(reader.skipped),
        workers=reader.num_workers,
        **facts,
    )


GPU_STEPS = ("gpu_a", "gpu_b", "gpu_c")


@job(executor_def=gpu_aware_executor(n_gpus=int(os.environ.get("TAC_PROBE_GPUS", str(PRETEND_GPUS)))))
def probe():
    for name in GPU_STEPS:
        _gpu_step(name)()
    read_images_step()


defs = Definitions(jobs=[probe])
