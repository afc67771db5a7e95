"""The executor: step processes forked from a warm server that never initialised CUDA, with the ``tac/gpu``
concurrency limit and the per-GPU file locks still holding and the image reader's worker processes working
inside a step; the in-process mode; the run-config switch.

The end-to-end tests run ``tac_pipeline_tests/test_defs/executor_probe.py`` through ``dagster job execute`` in a fresh
process, as a run worker is: a forkserver already running in the test process (the image reader starts one)
would serve the steps without the project's preload.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from dagster._config import process_config

from tac_pipeline.defs.executors.local import EXECUTOR_MODES, FORKSERVER_PRELOAD, gpu_aware_executor
from tac_pipeline.defs.resources.compute import GPU_TAG
from tac_pipeline_tests.test_defs.executor_probe import GPU_STEPS

REPO = Path(__file__).resolve().parents[2]
RUN_S = 300


def resolved_config(executor_def, config: dict) -> dict:
    """The inner ``multi_or_in_process_executor`` config the executor resolves a run's config to."""
    result = executor_def.config_schema.resolve_config({"config": config})
    assert result.success, result.errors
    return result.value["config"]


def test_modes_resolve_to_the_multiprocess_or_in_process_config():
    executor_def = gpu_aware_executor(n_gpus=3)
    assert executor_def.name == "gpu_aware_executor"
    default = resolved_config(executor_def, {})
    fork = resolved_config(executor_def, {"mode": "forkserver"})
    assert default == fork
    limits = [{"key": GPU_TAG, "value": "true", "limit": 3}]
    assert fork["multiprocess"]["tag_concurrency_limits"] == limits
    assert fork["multiprocess"]["start_method"] == {
        "forkserver": {"preload_modules": list(FORKSERVER_PRELOAD)}
    }
    spawn = resolved_config(executor_def, {"mode": "spawn"})["multiprocess"]
    assert spawn["tag_concurrency_limits"] == limits and "start_method" not in spawn
    assert "in_process" in resolved_config(executor_def, {"mode": "in_process"})
    # on CPU (no GPU) one tac/gpu step at a time
    assert (
        resolved_config(gpu_aware_executor(n_gpus=0), {})["multiprocess"]["tag_concurrency_limits"][0][
            "limit"
        ]
        == 1
    )
    # the default mode can be chosen in code too; a typo is refused there and in the run config
    assert "in_process" in resolved_config(gpu_aware_executor(n_gpus=1, mode="in_process"), {})
    with pytest.raises(ValueError, match="forkserver, spawn, in_process"):
        gpu_aware_executor(mode="fork")
    schema = executor_def.config_schema.as_field().config_type
    assert process_config(schema, {"mode": "spawn"}).success
    assert not process_config(schema, {"mode": "fork"}).success
    assert EXECUTOR_MODES[0] == "forkserver"


def test_the_project_job_uses_it():
    from tac_pipeline.definitions import defs

    job = defs.resolve_job_def("cluster_dataset")
    assert job.executor_def.name == "gpu_aware_executor"


_PRELOAD_PROBE = r"""
import json, os, sys
import torch

mode, modules = sys.argv[1], sys.argv[2:]
calls = []
if mode == "patched":
    # Every way in to the CUDA driver records its caller instead (a CPU build of torch never reaches it).
    for owner, name in [(torch.cuda, n) for n in ("is_available", "device_count", "init", "_lazy_init",
                        "current_device", "set_device", "get_device_name", "get_device_properties",
                        "mem_get_info", "synchronize")] + [(torch._C, "_cuda_getDeviceCount")]:
        if hasattr(owner, name):
            setattr(owner, name, lambda *a, _n=name, **k: calls.append(_n) or 0)
for module in modules:
    __import__(module)
pid = os.fork()
if pid == 0:  # what a step forked from this process would see
    os._exit(3 if torch.cuda._is_in_bad_fork() else 0)
_, status = os.waitpid(pid, 0)
print(json.dumps({"calls": calls, "child_bad_fork": os.waitstatus_to_exitcode(status) == 3,
                  "initialized": torch.cuda.is_initialized()}))
"""


@pytest.mark.parametrize(
    ("mode", "deployment"),
    [("patched", {}), ("real", {}), ("patched", {"TAC_EMBED_SHARDS": "2"})],
    ids=["patched", "real", "patched-sharded"],
)
def test_preloaded_modules_never_touch_cuda(tmp_path, mode, deployment):
    """What the forkserver imports may not ask torch for devices: its forks could not use the GPU after.

    ``patched``: no CUDA entry point is called at import (meaningful with any torch build). ``real``: a
    fork of the importing process is not a "bad fork" for torch (meaningful with a CUDA build). Sharded
    embedding (``TAC_EMBED_SHARDS``) imports more modules with the definitions.
    """
    env = {**os.environ, "TAC_DATA_DIR": str(tmp_path / "data"), "HF_HUB_OFFLINE": "1", **deployment}
    for name in ("TAC_EXECUTOR", "TAC_DASK_SCHEDULER", *([] if deployment else ["TAC_EMBED_SHARDS"])):
        env.pop(name, None)
    done = subprocess.run(
        [sys.executable, "-c", _PRELOAD_PROBE, mode, *FORKSERVER_PRELOAD],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=RUN_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert facts == {"calls": [], "child_bad_fork": False, "initialized": False}


def run_probe(tmp_path: Path, mode: str, gpus: int) -> tuple[int, dict[str, dict]]:
    """Run the probe job in a fresh ``dagster job execute``; return its pid and each step's record."""
    home, out = tmp_path / "dagster_home", tmp_path / "out"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    config = tmp_path / "run_config.yaml"
    config.write_text(json.dumps({"execution": {"config": {"mode": mode}}}))  # JSON is YAML
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TAC_DATA_DIR": str(tmp_path / "data"),
        "TAC_CLIP_MODEL": "tac-tiny",
        "TAC_CLIP_PRETRAINED": "none",
        "HF_HUB_OFFLINE": "1",
        "TAC_PROBE_OUT": str(out),
        "TAC_PROBE_LOCKS": str(tmp_path / "locks"),
        "TAC_PROBE_GPUS": str(gpus),
    }
    for name in ("TAC_EXECUTOR", "TAC_DASK_SCHEDULER", "TAC_EMBED_SHARDS"):  # the local deployment
        env.pop(name, None)
    dagster = Path(sys.executable).with_name("dagster")
    command = [
        str(dagster),
        "job",
        "execute",
        "-m",
        "tac_pipeline_tests.test_defs.executor_probe",
        "-j",
        "probe",
    ]
    process = subprocess.Popen(
        [*command, "-c", str(config)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    try:
        log, _ = process.communicate(timeout=RUN_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, log[-6000:]
    records = {path.stem: json.loads(path.read_text()) for path in out.glob("*.json")}
    assert set(records) == {*GPU_STEPS, "read_images_step"}, log[-6000:]
    return process.pid, records


def max_overlap(intervals: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in intervals] + [(end, -1) for _, end in intervals])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    return peak


def test_forkserver_steps_keep_gpu_limits_locks_and_image_workers(tmp_path):
    run_pid, records = run_probe(tmp_path, "forkserver", gpus=2)
    parents = {r["ppid"] for r in records.values()}
    # every step is a process of its own, forked by one server (not by the run's process, as spawn does)
    assert len({r["pid"] for r in records.values()}) == len(records)
    assert len(parents) == 1 and run_pid not in parents
    # ... which never initialised CUDA: the steps could use the GPU
    assert not any(r["bad_fork"] or r["cuda_initialized"] for r in records.values())
    # tac/gpu steps: at most two at once (two GPUs), and two at once never hold the same device
    gpu = [records[name] for name in GPU_STEPS]
    assert max_overlap([(r["start"], r["end"]) for r in gpu]) <= 2
    assert {r["device"] for r in gpu} <= {"cuda:0", "cuda:1"}
    for i, a in enumerate(gpu):
        for b in gpu[i + 1 :]:
            if a["start"] < b["end"] and b["start"] < a["end"]:
                assert a["device"] != b["device"], (a, b)
    # the image reader's own worker processes work inside a forked step
    images = records["read_images_step"]
    assert images["workers"] == 2 and images["rows"] == images["ok"] == 24 and images["skipped"] == 0


def test_in_process_mode_runs_every_step_in_the_run_process(tmp_path):
    run_pid, records = run_probe(tmp_path, "in_process", gpus=2)
    assert {r["pid"] for r in records.values()} == {run_pid}
    gpu = [records[name] for name in GPU_STEPS]
    assert max_overlap([(r["start"], r["end"]) for r in gpu]) == 1
    images = records["read_images_step"]
    assert images["rows"] == images["ok"] == 24 and images["skipped"] == 0


def test_after_the_forkserver_preload_a_head_fit_imports_nothing():
    """What the steps' forkserver imports once per run leaves nothing for Adam (the heads' optimiser) to
    import lazily inside the timed fit."""
    code = (
        "import importlib, json, sys, time\n"
        f"for name in {list(FORKSERVER_PRELOAD)!r}: importlib.import_module(name)\n"
        "import torch\n"
        "before = set(sys.modules)\n"
        "start = time.perf_counter()\n"
        "torch.optim.Adam(torch.nn.Linear(8, 4).parameters(), lr=1e-3)\n"
        "print(json.dumps([sorted(set(sys.modules) - before), time.perf_counter() - start]))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=RUN_S
    )
    assert done.returncode == 0, done.stderr[-3000:]
    new, seconds = json.loads(done.stdout.strip().splitlines()[-1])
    assert new == [] and seconds < 0.5
