"""Sharded image embedding on a Dask cluster: wall time of ``image_embeddings`` for 1, 2, … shards.

Starts a local Dask scheduler and ``--workers`` single-threaded worker processes (as
``tac_pipeline_tests/test_distributed`` does), writes a drop of ``--images`` CIFAR-sized PNGs, and
materializes only the image embeddings through the CLI's own materialize
(:func:`benchmarks.dagster_runs.materialize_timed`) with ``TAC_EXECUTOR=dask`` and ``TAC_EMBED_SHARDS`` set
to each value of ``--shards``; every run starts from an empty store (nothing to reuse). Prints wall time, speed-up over one shard, the images/s summed over shards and which worker ran
each shard.

    python -m benchmarks.bench_sharded --images 4000 --workers 2 --shards 1 2
    python -m benchmarks.bench_sharded --model ViT-B-32 --pretrained none --device cuda ...  # on GPU workers

Not a test: the numbers depend on cores, disks and the model.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.dagster_runs import child_environment, materialize_timed, open_home
from benchmarks.inputs import write_cifar_drop


def start_cluster(folder: Path, workers: int, env: dict[str, str]):
    scheduler_file = folder / "scheduler.json"
    dask = [str(Path(sys.executable).with_name("dask"))]
    quiet = subprocess.DEVNULL
    procs = [
        subprocess.Popen(
            [*dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--dashboard-address", ":0",
             "--scheduler-file", str(scheduler_file)],
            env=env, stdout=quiet, stderr=quiet,
        )
    ]  # fmt: skip
    for i in range(workers):
        procs.append(
            subprocess.Popen(
                [*dask, "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--nworkers", "1",
                 "--no-dashboard", "--host", "127.0.0.1", "--local-directory", str(folder / f"w{i}")],
                env=env, stdout=quiet, stderr=quiet,
            )
        )  # fmt: skip
    deadline = time.monotonic() + 60
    while not scheduler_file.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    from distributed import Client

    address = json.loads(scheduler_file.read_text())["address"]
    with Client(address, timeout=60) as client:
        client.wait_for_workers(workers, timeout=60)
    return address, procs


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=4000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--shards", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--model", default="tac-tiny")
    parser.add_argument("--pretrained", default="none")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()

    from tac_pipeline.cli.cluster import ClusterError
    from tac_pipeline.defs.names import IMAGE_ASSET, IMAGE_ASSET_KEY
    from tac_pipeline.defs.partitions import datasets_partitions
    from tac_pipeline.store.layout import drop_path, store_dir

    dataset = "bench"
    root = Path(tempfile.mkdtemp(prefix="tac-bench-sharded-"))
    try:
        data = root / "data"
        write_cifar_drop(drop_path(dataset, data), args.images, 0, 10)
        home = root / "dagster_home"
        home.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        settings = {
            "TAC_DATA_DIR": str(data),
            "TAC_CLIP_MODEL": args.model,
            "TAC_CLIP_PRETRAINED": args.pretrained,
            "TAC_DEVICE": args.device,
            "DAGSTER_HOME": str(home),
            "DASK_DISTRIBUTED__WORKER__DAEMON": "False",
        }
        with open_home(home) as instance:
            instance.add_dynamic_partitions(datasets_partitions.name, [dataset])
            print(
                f"{args.images} PNGs, {args.workers} Dask workers, model {args.model}, device {args.device}"
            )
            print(f"{'shards':>6} {'wall s':>8} {'speed-up':>8} {'img/s (sum)':>11}  workers")
            base = None
            for shards in args.shards:
                shutil.rmtree(store_dir(data), ignore_errors=True)
                worker_settings = {**settings, "TAC_EMBED_SHARDS": str(shards)}
                worker_env = child_environment(worker_settings)
                address, procs = start_cluster(root / f"cluster{shards}", args.workers, worker_env)
                try:
                    run_env = child_environment(
                        {**worker_settings, "TAC_EXECUTOR": "dask", "TAC_DASK_SCHEDULER": address}
                    )
                    wall = materialize_timed([IMAGE_ASSET], instance=instance, env=run_env, partition=dataset)
                except ClusterError as exc:
                    raise SystemExit(str(exc)) from None
                finally:
                    for proc in procs:
                        proc.terminate()
                    for proc in procs:
                        proc.wait(timeout=30)
                event = instance.get_latest_materialization_event(IMAGE_ASSET_KEY)
                metadata = event.asset_materialization.metadata
                workers = metadata["shard_workers"].value if "shard_workers" in metadata else ["(one step)"]
                base = base or wall
                print(
                    f"{shards:>6} {wall:>8.1f} {base / wall:>7.2f}x "
                    f"{metadata['images_per_second'].value:>11.0f}  "
                    f"{len(set(workers))} distinct: {', '.join(sorted(set(workers)))}"
                )
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
