"""The whole graph on a real Dask cluster: a scheduler and two worker processes, image embedding in two shards.

Started here, stopped at the end (also on failure): ``dask scheduler`` and two ``dask worker`` processes
talking TCP on 127.0.0.1, the run launched by ``dagster asset materialize`` exactly as a deployment with
``TAC_EXECUTOR=dask`` does. Skipped when the ``distributed`` extra is missing, unless ``TAC_REQUIRE_DASK`` is set
(CI sets it).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from dagster import AssetKey, DagsterInstance

from tac_pipeline.defs.assets import DATASET_ASSETS
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import materialize_nouns, read_output

KEY = "toy"
WORKERS = 2
START_TIMEOUT = 60.0

if os.environ.get("TAC_REQUIRE_DASK"):
    import dagster_dask  # noqa: F401
    import distributed  # noqa: F401
else:
    pytest.importorskip("distributed")
    pytest.importorskip("dagster_dask")


def _dask_cli() -> list[str]:
    cli = Path(sys.executable).with_name("dask")
    return [str(cli)] if cli.exists() else [sys.executable, "-m", "dask"]


def _wait_for_workers(scheduler_file: Path, n: int, procs) -> tuple[str, set[str]]:
    from distributed import Client

    deadline = time.monotonic() + START_TIMEOUT
    while not scheduler_file.exists():
        if time.monotonic() > deadline or any(p.poll() is not None for p in procs):
            raise RuntimeError("the Dask scheduler did not start")
        time.sleep(0.2)
    address = json.loads(scheduler_file.read_text())["address"]
    with Client(address, timeout=START_TIMEOUT) as client:
        client.wait_for_workers(n, timeout=START_TIMEOUT)
        return address, set(client.scheduler_info(n_workers=-1)["workers"])


@pytest.fixture
def cluster_env(data_dir, tmp_path):
    """Environment of a Dask deployment: the data root, the tiny model, DAGSTER_HOME, two shards."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "TAC_DATA_DIR": str(data_dir),
        "TAC_CLIP_MODEL": "tac-tiny",
        "TAC_DEVICE": "cpu",
        "TAC_EMBED_SHARDS": "2",
        "DAGSTER_HOME": str(home),
        # Dask workers are daemonic by default, and daemonic processes cannot start the image decoders.
        "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
        "DASK_DISTRIBUTED__LOGGING__DISTRIBUTED": "warning",
    }
    env.pop("TAC_EXECUTOR", None)
    env.pop("TAC_DASK_SCHEDULER", None)
    return env


@pytest.fixture
def dask_cluster(cluster_env, tmp_path):
    """A scheduler and two single-threaded worker processes; yields (address, worker addresses, logs)."""
    scheduler_file = tmp_path / "scheduler.json"
    logs = tmp_path / "dask_logs"
    logs.mkdir()
    procs = []

    def start(name: str, args: list[str]) -> None:
        out = open(logs / f"{name}.log", "wb")  # noqa: SIM115 - closed with the process below
        procs.append(
            (
                subprocess.Popen(
                    [*_dask_cli(), *args],
                    env=cluster_env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=tmp_path,
                ),
                out,
            )
        )

    try:
        start(
            "scheduler",
            ["scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
             "--scheduler-file", str(scheduler_file)],
        )  # fmt: skip
        for i in range(WORKERS):
            start(
                f"worker{i}",
                ["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--nworkers", "1",
                 "--name", f"tac-worker-{i}", "--no-dashboard", "--host", "127.0.0.1",
                 "--local-directory", str(tmp_path / f"worker{i}")],
            )  # fmt: skip
        address, workers = _wait_for_workers(scheduler_file, WORKERS, [p for p, _ in procs])
        yield address, workers, logs
    finally:
        for proc, _ in reversed(procs):
            proc.terminate()
        for proc, out in procs:
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            out.close()


def _logs(folder: Path) -> str:
    return "\n".join(
        f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in sorted(folder.glob("*.log"))
    )


def test_graph_runs_on_two_dask_workers_with_two_shards(data_dir, cluster_env, dask_cluster):
    address, workers, logs = dask_cluster
    count = write_toy_drop(data_dir / "drops" / KEY, train=6, test=3)
    home = cluster_env["DAGSTER_HOME"]
    with DagsterInstance.from_config(home) as instance:
        materialize_nouns(data_dir, instance)
        instance.add_dynamic_partitions(datasets_partitions.name, [KEY])

    env = {**cluster_env, "TAC_EXECUTOR": "dask", "TAC_DASK_SCHEDULER": address}
    partitioned = list(DATASET_ASSETS)
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "tac_pipeline.definitions"]
    command += ["--select", ",".join(partitioned), "--partition", KEY]
    started = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=480, cwd=data_dir)
    seconds = time.perf_counter() - started
    assert done.returncode == 0, f"{done.stdout[-4000:]}\n{done.stderr[-6000:]}\n{_logs(logs)}"
    print(f"whole graph on 2 Dask workers, 2 shards, {count} images: {seconds:.1f} s")

    with DagsterInstance.from_config(home) as instance:
        for name in partitioned:
            event = instance.get_latest_materialization_event(AssetKey(name))
            assert event is not None and event.asset_materialization.partition == KEY, name
        metadata = instance.get_latest_materialization_event(
            AssetKey("image_embeddings")
        ).asset_materialization.metadata
        ran_on = metadata["shard_workers"].value
        # every step ran on the cluster's workers, and the two shards on two different workers
        assert len(ran_on) == 2 and set(ran_on) <= workers, (ran_on, workers)
        assert len(set(ran_on)) == 2, f"both shards ran on {ran_on[0]}"
        assert metadata["encoded"].value == count
        records = instance.fetch_materializations(AssetKey("image_embeddings"), limit=10).records
        assert len(records) == 1  # one materialization per run, not one per worker event echo

    assert read_output(data_dir, "image_embeddings", KEY).num_rows == count
    assert read_output(data_dir, "cluster_labels", KEY).num_rows == count
    assert not any((data_dir / "store" / "intermediate").glob("*/*"))
