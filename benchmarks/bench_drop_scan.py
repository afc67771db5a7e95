"""What the drops sensor's per-tick check costs: a full walk versus the folder-mtime check.

Generates a drop of empty files (``--files`` in ``--folders`` class folders, like ImageNet's
``train/<wnid>/``), then times :func:`drop_manifest` (a stat per file: the schedule and a changed drop) and
:func:`watched_drop_manifest` on an unchanged, settled drop (a stat per folder: the sensor's usual tick).
The page cache is warm (the files were just written); a network filesystem pays more per stat.

    python -m benchmarks.bench_drop_scan --files 100000 --folders 1000
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

from tac_pipeline.drops.manifest import drop_manifest, watched_drop_manifest


def generate(root: Path, n_files: int, n_folders: int) -> None:
    past = time.time() - 3600
    per_folder = -(-n_files // n_folders)
    for i in range(n_files):
        folder = root / "train" / f"class_{i // per_folder:05d}"
        if i % per_folder == 0:
            folder.mkdir(parents=True)
        path = folder / f"img_{i:07d}.jpg"
        path.touch()
        os.utime(path, (past, past))
    for folder, _, _ in os.walk(root):
        os.utime(folder, (past, past))


def best_of(repeat: int, call) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=100_000)
    parser.add_argument("--folders", type=int, default=1_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        drop, state = Path(tmp) / "drop", Path(tmp) / "state.json"
        start = time.perf_counter()
        generate(drop, args.files, args.folders)
        print(
            f"generated {args.files:,} files in {args.folders:,} folders in {time.perf_counter() - start:.1f} s"
        )
        full = best_of(args.repeat, lambda: drop_manifest(drop))
        assert watched_drop_manifest(drop, state, 60.0).walked
        assert not watched_drop_manifest(drop, state, 60.0).walked
        watched = best_of(args.repeat, lambda: watched_drop_manifest(drop, state, 60.0))
        scale = 1_000_000 / args.files
        print("| check | files | seconds | per 1 M files (extrapolated) |")
        print("| --- | --- | --- | --- |")
        print(f"| full walk (`drop_manifest`) | {args.files:,} | {full:.3f} | {full * scale:.1f} s |")
        print(
            f"| unchanged drop (`watched_drop_manifest`) | {args.files:,} | {watched:.4f} | "
            f"{watched * scale:.2f} s ({args.folders * scale:,.0f} folders) |"
        )
        print(f"state file: {state.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
