"""Do finished commands exit with their own status? Many short ``make cluster`` runs at once, under load.

Each run clusters a small drop that brings its own embeddings and nouns (no encoder, no WordNet) through the
real command line (``python -m tac_pipeline.cli cluster``), in its own data root and Dagster home; ``--parallel``
of them run at once beside ``--burners`` busy processes. It prints how many runs exited with each status and
the tail of the output of any run that did not exit 0 ("terminate called without an active exception", exit
134 or -6, is what it looks for)::

    python -m benchmarks.bench_exit --runs 100 --parallel 3 --burners 1
"""

from __future__ import annotations

import argparse
import collections
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path


def _burn(stop: float) -> None:
    while time.time() < stop:
        sum(i * i for i in range(10_000))


def _drop(root: Path, per_class: int = 20, width: int = 32) -> None:
    """Three labelled blobs as ``embeddings.parquet`` and a noun near each (plus noise) as ``nouns.parquet``."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    drop = root / "drops" / "small"
    drop.mkdir(parents=True)
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, width))
    rows = [directions[c] + 0.3 * rng.normal(size=width) for c in range(3) for _ in range(per_class)]
    ids = [f"c{c}-{i}" for c in range(3) for i in range(per_class)]
    labels = [f"class{c}" for c in range(3) for _ in range(per_class)]
    pq.write_table(
        pa.table({"image_id": ids, "embedding": [r.tolist() for r in rows], "label": labels}),
        drop / "embeddings.parquet",
    )
    nouns = np.concatenate(
        [directions + 0.1 * rng.normal(size=directions.shape), rng.normal(size=(20, width))]
    )
    names = [f"noun{i}" for i in range(len(nouns))]
    pq.write_table(pa.table({"noun": names, "embedding": nouns.tolist()}), drop / "nouns.parquet")


def _run(index: int, work: Path, executor: str) -> tuple[int, str]:
    root = work / f"run{index}"
    _drop(root / "data")
    env = {
        **os.environ,
        "TAC_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "home"),
        "TAC_EXECUTOR": executor,
        "HF_HUB_OFFLINE": "1",
    }
    done = subprocess.run(
        [sys.executable, "-m", "tac_pipeline.cli", "cluster", "small"],
        env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    return done.returncode, (done.stdout + done.stderr)[-1500:]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_exit", description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--parallel", type=int, default=3)
    parser.add_argument("--burners", type=int, default=1, help="busy processes beside the runs (load)")
    parser.add_argument("--executor", default="multiprocess", choices=("multiprocess", "in_process"))
    args = parser.parse_args(argv)
    started = time.time()
    burners = [
        multiprocessing.Process(target=_burn, args=(started + 24 * 3600,), daemon=True)
        for _ in range(args.burners)
    ]
    for burner in burners:
        burner.start()
    codes: collections.Counter[int] = collections.Counter()
    failures: list[tuple[int, int, str]] = []
    try:
        with tempfile.TemporaryDirectory() as tmp, ThreadPoolExecutor(args.parallel) as pool:
            for index, (code, tail) in enumerate(
                pool.map(lambda i: _run(i, Path(tmp), args.executor), range(args.runs))
            ):
                codes[code] += 1
                if code != 0:
                    failures.append((index, code, tail))
    finally:
        for burner in burners:
            burner.terminate()
    load = os.getloadavg()
    print(
        f"{args.runs} runs ({args.parallel} at once, {args.burners} busy process(es), {args.executor} executor) "
        f"in {time.time() - started:.0f} s, load average {load[0]:.1f}/{load[1]:.1f}: "
        + ", ".join(f"exit {code}: {count}" for code, count in sorted(codes.items()))
    )
    for index, code, tail in failures:
        print(f"\n--- run {index} exited {code}:\n{tail}")


if __name__ == "__main__":
    main()
