"""Child processes of the fault tests (``python -m tac_pipeline_tests.test_reliability.procs <command> ...``).

- ``big-write PATH ROWS``: write a large table to PATH with ``write_parquet_atomically`` (the parent kills it
  mid-write);
- ``writer PATH ID ROWS SECONDS``: print ``ready``, read a wall-clock start time from stdin, then from that time
  write complete versions tagged ID to PATH for SECONDS, printing each write's ``[start, end]`` as JSON (two
  run at once);
- ``materialize DATA_ROOT DAGSTER_HOME KEY``: materialize ``image_embeddings`` for KEY in that instance (the
  parent kills it as the IO manager starts writing).
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import pyarrow as pa


def version_table(writer: int, seq: int, rows: int) -> pa.Table:
    """One complete version: every row carries the writer and sequence number; ``x`` is 0..rows-1."""
    return pa.table(
        {
            "writer": pa.array(np.full(rows, writer, dtype=np.int64)),
            "seq": pa.array(np.full(rows, seq, dtype=np.int64)),
            "x": pa.array(np.arange(rows, dtype=np.int64)),
        }
    )


def big_write(path: str, rows: int) -> None:
    from tac_pipeline.common.atomic import write_parquet_atomically

    rng = np.random.default_rng(0)
    table = pa.table({"i": np.arange(rows, dtype=np.int64), "x": rng.random(rows)})  # incompressible
    print("writing", flush=True)
    write_parquet_atomically(table, path)
    print("done", flush=True)


def writer(path: str, writer_id: int, rows: int, seconds: float) -> None:
    from tac_pipeline.common.atomic import write_parquet_atomically

    print("ready", flush=True)
    start = float(sys.stdin.readline())
    while time.time() < start:
        time.sleep(0.001)
    seq = 0
    while time.time() < start + seconds:
        table = version_table(writer_id, seq, rows)
        began = time.time()
        write_parquet_atomically(table, path)
        print(json.dumps([began, time.time()]), flush=True)
        seq += 1


def materialize(data_root: str, home: str, key: str) -> None:
    from pathlib import Path

    from dagster import DagsterInstance
    from dagster._core.instance.ref import InstanceRef

    from tac_pipeline_tests.test_reliability.helpers import run_assets

    with DagsterInstance.from_ref(InstanceRef.from_dir(home)) as instance:
        result = run_assets(Path(data_root), instance, key, ["image_embeddings"])
    print("finished", result.success, flush=True)


if __name__ == "__main__":
    command, *args = sys.argv[1:]
    if command == "big-write":
        big_write(args[0], int(args[1]))
    elif command == "writer":
        writer(args[0], int(args[1]), int(args[2]), float(args[3]))
    elif command == "materialize":
        materialize(*args)
    else:
        raise SystemExit(f"unknown command {command!r}")
