"""One benchmark command for the whole pipeline: times, throughputs and peak GPU memory.

    python -m benchmarks.run                                   # GPU: random-init ViT-B-32, full scale
    python -m benchmarks.run --device cpu --scale small        # CPU smoke run (tac-tiny), a few minutes
    python -m benchmarks.run --only images nouns --out results.json

Run it from the checkout's root (the package need not be installed). Sections (``--only`` picks some;
default all):

images     32x32 PNGs (CIFAR-sized) and 224-px JPEGs through the real ``encode_drop``: decoding in worker
           processes, overlapped with the model; plus decode-only and model-only rates.
nouns      the 7-template noun ensemble (``encode_nouns``) over the 119,034 distinct words of the noun
           vocabulary (full): WordNet when its vocabulary loads offline (the data root's cache, or a WordNet
           database), else synthetic nouns of realistic length.
kmeans     semantic centres: ``spherical_kmeans`` of N embeddings into N/300 centres (300 iterations,
           best of 10), N = 50,000 at full scale.
knn        ``knn_inner_product`` with k = 50 for both modalities (images and counterparts).
heads      ``train_heads``, N = 50,000, K = 10, 20 epochs (full); on CUDA also with ``cuda_graph=True``.
graph      the whole graph for a generated CIFAR-sized drop (60,000 images at full scale: 50,000 train,
           10,000 test, 10 classes): cold (nouns, then the drop) and warm (a second drop, nouns already
           materialized). With dagster importable, the real asset graph and its checks materialized
           in-process; without it, the encoders, then ``TAC.fit`` and its predictions (said so in the
           table). Also the start of a fresh Python that imports torch and open_clip.
graph-cli  the same through the CLI's own materialize, as ``make cluster`` runs it (one process per step:
           process start, imports and model load per step included).

kmeans, knn and heads run on synthetic 512-wide unit vectors (ViT-B-32's width), whatever the model.
Targets are for one H100/H200 at full scale; "met" is judged only there. Generating the test data is never
timed. Not a test. The sections live in :mod:`benchmarks.stages` and :mod:`benchmarks.graph`.

Heavy imports live inside functions: the image-decoding workers (forkserver/spawn) re-import this module.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

from benchmarks import REPO
from benchmarks.dagster_runs import dagster_available
from benchmarks.graph import bench_graph, bench_graph_cli
from benchmarks.harness import SCALES, Bench, Row, fmt_bytes
from benchmarks.stages import bench_heads, bench_images, bench_kmeans, bench_knn, bench_nouns

SECTIONS = ("images", "nouns", "kmeans", "knn", "heads", "graph", "graph-cli")

RUNNERS: dict[str, Callable[[Bench], list[Row]]] = {
    "images": bench_images,
    "nouns": bench_nouns,
    "kmeans": bench_kmeans,
    "knn": bench_knn,
    "heads": bench_heads,
    "graph": bench_graph,
    "graph-cli": bench_graph_cli,
}


def run_section(b: Bench, name: str) -> list[Row]:
    """One section; a failure becomes a row of the table and the other sections still run."""
    try:
        return RUNNERS[name](b)
    except Exception as exc:
        traceback.print_exc()
        return [Row(name, "failed", f"{type(exc).__name__}: {str(exc).splitlines()[0][:150]}")]


# ---------------------------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------------------------


def git_commit() -> str:
    def git(*cmd: str) -> str:
        try:
            done = subprocess.run(["git", *cmd], cwd=REPO, capture_output=True, text=True, check=True)
        except (OSError, subprocess.CalledProcessError):
            return ""
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "unknown (no git)"
    return commit + (" + uncommitted changes" if git("status", "--porcelain", "--untracked-files=no") else "")


def environment(b: Bench) -> dict:
    torch = b.torch
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count()
    return {
        "device": torch.cuda.get_device_name(b.device) if b.cuda else f"CPU ({platform.machine()})",
        "cpu_cores": cores,
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "model": f"{b.model} ({b.pretrained or 'random init'})",
        "precision": b._encoder.precision if b._encoder is not None else "n/a",
        "batch_size": b.args.batch_size,
        "scale": b.args.scale,
        "backend": b.backend_name(),
        "dagster": dagster_available(),
        "commit": git_commit(),
    }


def markdown(rows: list[Row], env: dict) -> str:
    lines = [
        f"Device: {env['device']}, {env['cpu_cores']} CPU cores, torch {env['torch']} ({env['torch_threads']} "
        f"threads); model {env['model']}, {env['precision']}, batch {env['batch_size']}; scale "
        f"{env['scale']}; k-means/kNN backend {env['backend']}; commit {env['commit']}.",
        "",
        "| section | measurement | result | target (H100/H200, full scale) | met | peak GPU memory | notes |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        cells = [r.section, r.what, r.result, r.target, r.met, fmt_bytes(r.peak_gpu_bytes), r.notes]
        lines.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    graph = [r for r in rows if r.steps]
    if graph:
        lines += ["", "Whole graph, seconds per step (`+x start`: launching the step's own process):", ""]
        lines.append("| step | " + " | ".join(r.column for r in graph) + " |")
        lines.append("| --- |" + " --- |" * len(graph))
        for name in dict.fromkeys(name for r in graph for name in r.steps):
            lines.append(f"| {name} | " + " | ".join(r.steps.get(name, "") for r in graph) + " |")
        lines.append("| **total (wall)** | " + " | ".join(r.result for r in graph) + " |")
    return "\n".join(lines)


def parse_sections(values: list[str] | None) -> list[str]:
    if not values:
        return list(SECTIONS)
    picked = {s.strip() for v in values for s in v.split(",") if s.strip()}
    unknown = sorted(picked - set(SECTIONS))
    if unknown:
        raise SystemExit(f"unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    return [s for s in SECTIONS if s in picked]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--scale", default="full", choices=sorted(SCALES))
    parser.add_argument(
        "--model", default=None, help="open_clip model (default: ViT-B-32 on CUDA, else tac-tiny)"
    )
    parser.add_argument("--pretrained", default="none", help="pretrained tag, or none for random init")
    parser.add_argument(
        "--batch-size", type=int, default=256, help="images per forward pass (encoder default)"
    )
    parser.add_argument("--workers", type=int, default=None, help="decoding processes (default: cores - 1)")
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "faiss", "torch"], help="k-means and kNN"
    )
    parser.add_argument("--only", nargs="+", default=None, metavar="SECTION", help=" ".join(SECTIONS))
    parser.add_argument("--out", default=None, help="also write the environment and the rows as JSON")
    args = parser.parse_args(argv)
    sections = parse_sections(args.only)

    with tempfile.TemporaryDirectory(prefix="tac_bench_") as tmp:
        bench = Bench(args, Path(tmp))
        print(
            f"device {bench.device}, model {bench.model}, scale {args.scale}; sections: {' '.join(sections)}"
        )
        rows: list[Row] = []
        for name in sections:
            print(f"\n== {name}", flush=True)
            start = time.perf_counter()
            new = run_section(bench, name)
            for row in new:
                print(f"   {row.what}: {row.result}  {row.notes}", flush=True)
            print(f"   ({time.perf_counter() - start:.0f} s with set-up)", flush=True)
            rows += new
        env = environment(bench)
    print("\n" + markdown(rows, env))
    if args.out:
        Path(args.out).write_text(
            json.dumps({"environment": env, "rows": [asdict(r) for r in rows]}, indent=1)
        )


if __name__ == "__main__":
    main()
