"""New images in a clustered drop: an assign run against a fit of the same drop, through ``make cluster``'s
command line (``python -m tac_pipeline.cli cluster``), each in a fresh process as a user runs it.

Two parts, both printed from one run::

    python -m benchmarks.bench_assign                 # both parts
    python -m benchmarks.bench_assign --skip-digits   # the bring-your-own part only

1. **Bring your own embeddings, no encoder**: a planted drop of ``--images`` (60,000) 512-wide embeddings of
   20 classes with its own nouns is fitted; ``--new`` (600) images of the same classes are added; the command
   then assigns them (timed), and the same grown drop is refitted with ``--refit`` (timed). It prints both,
   their ratio, and each run's steps.
2. **The digits demo drop with the smoke model** (``tac-tiny``): fitted once and run once more unchanged (both
   warm-up), then one new image is added and the command assigns it (timed, warm): the seconds of the whole
   command and of each step.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO


def _planted(n: int, width: int = 512, classes: int = 20, seed: int = 0):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(classes, width))
    labels = rng.integers(0, classes, size=n)
    vectors = centres[labels] + 1.2 * rng.normal(size=(n, width))
    nouns = np.concatenate([centres + 0.3 * rng.normal(size=(classes, width)), rng.normal(size=(500, width))])
    return vectors.astype("float32"), labels, nouns.astype("float32")


def _write_byo(drop: Path, vectors, labels, start: int = 0) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    ids = [f"img{start + i:07d}" for i in range(len(vectors))]
    table = pa.table(
        {
            "image_id": ids,
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(vectors.reshape(-1)), vectors.shape[1]),
            "label": [f"class{c:02d}" for c in labels],
        }
    )
    pq.write_table(table, drop / "embeddings.parquet")


#: Wall-clock time (epoch seconds) when the last command started and ended, for :func:`_timeline`.
_LAST: dict[str, float] = {}


def _command(dataset: str, env: dict, *extra: str) -> tuple[float, str]:
    # What this benchmark just wrote (a drop's 124 MB of embeddings) is flushed first: the disk's write-back
    # of the benchmark's own files is not the command's time (drops land well before their run in practice).
    os.sync()
    _LAST["start"] = time.time()
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "tac_pipeline.cli", "cluster", dataset, *extra],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - start
    _LAST["end"] = time.time()
    if done.returncode != 0:
        raise SystemExit(f"make cluster {dataset} failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return seconds, done.stdout


def _decision(output: str) -> str:
    return next((line for line in output.splitlines() if line.startswith(("Assigned", "Refitted"))), "?")


def _steps(home: Path) -> str:
    from benchmarks.dagster_runs import latest_run_id, open_home, step_times

    instance = open_home(home)
    times = step_times(instance, latest_run_id(instance))
    return ", ".join(f"{step} {seconds}" for step, seconds in times.items())


def _timeline(home: Path) -> str:
    """Where the last command's seconds went: before its run started (the command's imports, the policy's
    decision, the run's process and its imports), the run itself (executor and steps), and after it."""
    from benchmarks.dagster_runs import latest_run_id, open_home

    instance = open_home(home)
    stats = instance.get_run_stats(latest_run_id(instance))
    before = stats.start_time - _LAST["start"]
    run = stats.end_time - stats.start_time
    after = _LAST["end"] - stats.end_time
    return (
        f"command start -> run start {before:.1f} s, run {run:.1f} s, run end -> command exit {after:.1f} s"
    )


def _env(root: Path, **extra: str) -> dict:
    env = {**os.environ, "TAC_DATA_DIR": str(root / "data"), "DAGSTER_HOME": str(root / "home"), **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)
    return env


def byo_part(n: int, new: int) -> None:
    import numpy as np

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        drop = root / "data" / "drops" / "planted"
        drop.mkdir(parents=True)
        vectors, labels, nouns = _planted(n + new)
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(
            pa.table({"noun": [f"noun{i}" for i in range(len(nouns))], "embedding": nouns.tolist()}),
            drop / "nouns.parquet",
        )
        (drop / "dataset.toml").write_text("n_clusters = 20\n")
        env = _env(root)
        _write_byo(drop, vectors[:n], labels[:n])
        first, _ = _command("planted", env)
        _write_byo(drop, vectors, labels)
        assign, out = _command("planted", env)
        assign_steps = _steps(root / "home") + "\n   " + _timeline(root / "home")
        refit, out_refit = _command("planted", env, "--refit")
        refit_steps = _steps(root / "home") + "\n   " + _timeline(root / "home")
        print(f"\n## {n:,} bring-your-own images (512-wide, K = 20), then {new} new ones")
        print(f"first fit ({n:,} images): {first:.1f} s")
        print(f"assign ({new} new of {n + new:,}): {assign:.1f} s   [{_decision(out)}]")
        print(f"   steps: {assign_steps}")
        print(f"fit of the same drop (REFIT=1): {refit:.1f} s   [{_decision(out_refit)}]")
        print(f"   steps: {refit_steps}")
        print(f"fit / assign: {refit / assign:.1f}x")
        del np


def digits_part() -> None:
    from PIL import Image

    from tac_pipeline.drops.demo import write_digits_drop

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        drop = root / "data" / "drops" / "digits"
        write_digits_drop(drop)
        env = _env(root, TAC_CLIP_MODEL="tac-tiny", TAC_CLIP_PRETRAINED="none")
        fit, out = _command("digits", env, "--max-nouns", "3000")
        again, out_again = _command("digits", env)
        source = next((drop / "3").glob("*.png"))
        image = Image.open(source).transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        image.save(drop / "3" / "new-0001.png")
        time.sleep(0.01)
        assign, out_assign = _command("digits", env)
        steps = _steps(root / "home") + "\n   " + _timeline(root / "home")
        print("\n## digits drop (1,797 images, tac-tiny), warm, plus 1 new image")
        print(f"fit: {fit:.1f} s [{_decision(out)}]; unchanged drop: {again:.1f} s [{_decision(out_again)}]")
        print(f"1 new image: {assign:.1f} s   [{_decision(out_assign)}]")
        print(f"   steps: {steps}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_assign")
    parser.add_argument("--images", type=int, default=60_000)
    parser.add_argument("--new", type=int, default=600)
    parser.add_argument("--skip-digits", action="store_true")
    parser.add_argument("--skip-byo", action="store_true")
    args = parser.parse_args(argv)
    if not args.skip_byo:
        byo_part(args.images, args.new)
    if not args.skip_digits:
        digits_part()


if __name__ == "__main__":
    main()
