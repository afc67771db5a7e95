"""How time and memory grow with N, per stage, projected to ImageNet-1K (N = 1,281,167).

Stages (``--stages`` picks some; default all):

embed       ``encode_drop`` of generated 32x32 PNGs with the offline ``tac-tiny`` model (decoding workers
            included): images/s. Linear in N by construction, so two sizes are enough.
kmeans      ``spherical_kmeans`` for the semantic centres: k_c = ``semantic_center_count(N, 10)`` = N/300
            (the rule ImageNet-1K follows too: 4,271 centres), d = 512, a few Lloyd iterations of one
            restart; the spec's 300 iterations x 10 restarts are projected from the time per iteration.
knn_exact   ``knn_inner_product(method="exact")``, k = 50, d = 512.
knn_approx  ``knn_inner_product(method="approximate")`` (faiss IVF), k = 50, d = 512, with recall@50
            against exact search for 1,000 sampled rows; at one N also for several ``nprobe`` and for
            counterpart-like vectors (sharp mixtures of few "noun" directions: many near-duplicates).
heads       ``train_heads`` for K = 1,000 (ImageNet-1K: batch 8,192, tau 5, 100 epochs): seconds per
            epoch (random kNN tables: their content does not change the cost).

Every point runs in a fresh subprocess, so its peak RSS (``getrusage``) is its own; the data it
generates first is reported separately (``data MiB``: RSS once the inputs exist). The machine's load
average is recorded with every point. The time of each stage is fitted as t = a * N^b on a log-log
scale (b: the growth exponent) and projected to 1.28 M; peak memory is fitted linearly.

    python -m benchmarks.bench_scaling                 # ~25 minutes on 2 cores
    python -m benchmarks.bench_scaling --quick         # ~1.5 minute smoke run (projections meaningless)
    python -m benchmarks.bench_scaling --stages knn_exact knn_approx --out scaling.json

Synthetic 512-wide vectors (ViT-B-32's width) that look like CLIP image embeddings: classes of ~1,280
images (ImageNet's class size) grouped in super-classes, spread in a 64-dimensional subspace around
their centre, plus a shared direction (random pairs have cosine ~0.4). Test data is never timed. Not a test.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks import REPO
from benchmarks.inputs import write_images

IMAGENET_N = 1_281_167
WIDTH = 512
NEIGHBOURS = 50
IMAGENET_K = 1000
SPEC_KMEANS_ITERATIONS = 300 * 10  # 300 Lloyd iterations x 10 restarts (faiss runs all of them)
RECALL_QUERIES = 1000
MEMORY_FIT_FROM = 30_000  # points from this N on enter the linear memory fit

# (stage, N, options) for each point, in run order. Sizes chosen so the whole plan takes ~25 minutes
# on the 2-core development machine; exact kNN stops at 100,000 (O(N^2): ~4x per doubling).
FULL_PLAN = [
    ("embed", 2_000, {}),
    ("embed", 8_000, {}),
    ("kmeans", 10_000, {"iters": 10}),
    ("kmeans", 30_000, {"iters": 10}),
    ("kmeans", 100_000, {"iters": 5}),
    ("kmeans", 300_000, {"iters": 3}),
    ("kmeans", 1_000_000, {"iters": 1}),
    ("knn_exact", 10_000, {}),
    ("knn_exact", 10_000, {}),
    ("knn_exact", 30_000, {}),
    ("knn_exact", 100_000, {}),
    ("knn_approx", 10_000, {}),
    ("knn_approx", 10_000, {}),
    ("knn_approx", 30_000, {}),
    ("knn_approx", 100_000, {}),
    ("knn_approx", 300_000, {}),
    ("knn_approx", 100_000, {"nprobe": 16}),
    ("knn_approx", 100_000, {"nprobe": 32}),
    ("knn_approx", 100_000, {"nprobe": 128}),
    ("knn_approx", 100_000, {"data": "counterparts"}),
    ("heads", 10_000, {"epochs": 2}),
    ("heads", 30_000, {"epochs": 1}),
    ("heads", 100_000, {"epochs": 1}),
]
QUICK_PLAN = [
    ("embed", 500, {}),
    ("embed", 1_000, {}),
    ("kmeans", 3_000, {"iters": 3}),
    ("kmeans", 10_000, {"iters": 3}),
    ("knn_exact", 3_000, {}),
    ("knn_exact", 10_000, {}),
    ("knn_approx", 3_000, {}),
    ("knn_approx", 10_000, {}),
    ("heads", 8_192, {"epochs": 1}),
    ("heads", 16_384, {"epochs": 1}),
]
STAGES = ("embed", "kmeans", "knn_exact", "knn_approx", "heads")
#: The module each point runs in, as ``python -m`` from the checkout's root (its worker mode, ``--point``).
POINT_MODULE = "benchmarks.bench_scaling"


# --------------------------------------------------------------------------------------------
# Synthetic data
# --------------------------------------------------------------------------------------------


def clip_like(n: int, d: int = WIDTH, seed: int = 0, spread: float = 1.4):
    """(n, d) float32 unit rows shaped like CLIP image embeddings, and their class labels.

    Classes of ~1,280 rows (at least 10 classes) whose centres sit around one super-class per 20;
    members spread in a shared 64-dimensional subspace (norm ~``spread``) plus 10 % isotropic noise;
    a common direction added to all. With spread 1.4, 84 % of a row's 50 exact neighbours share its class.
    """
    import numpy as np

    rng = np.random.default_rng(seed)
    n_classes = max(10, round(n / 1280))

    def unit(a):
        return a / np.linalg.norm(a, axis=1, keepdims=True)

    supers = unit(rng.standard_normal((max(2, n_classes // 20), d)).astype(np.float32))
    centres = unit(
        supers[rng.integers(0, len(supers), n_classes)]
        + 0.8 * unit(rng.standard_normal((n_classes, d)).astype(np.float32))
    )
    basis = np.linalg.qr(rng.standard_normal((d, 64)))[0].T.astype(np.float32)
    common = unit(rng.standard_normal((1, d)).astype(np.float32))
    labels = rng.integers(0, n_classes, n)
    out = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 65_536):  # in chunks: keeps the generator's own peak small
        stop = min(n, start + 65_536)
        m = stop - start
        block = (
            centres[labels[start:stop]] + spread / 8 * rng.standard_normal((m, 64)).astype(np.float32) @ basis
        )
        block += 0.1 * spread / math.sqrt(d) * rng.standard_normal((m, d)).astype(np.float32)
        out[start:stop] = unit(unit(block) + 0.8 * common)
    return out, labels


def counterpart_like(x, seed: int = 0):
    """Counterparts as TAC builds them (spec §5): softmax(sim / 0.005) mixtures of M = 5 k_c "nouns"."""
    import numpy as np
    import torch

    from tac_pipeline.tac import retrieve_counterparts, semantic_center_count

    rng = np.random.default_rng(seed + 1)
    m = 5 * semantic_center_count(len(x), 10)
    nouns = x[rng.choice(len(x), m, replace=False)] + 0.05 * rng.standard_normal((m, x.shape[1])).astype(
        np.float32
    )
    nouns /= np.linalg.norm(nouns, axis=1, keepdims=True)
    parts = retrieve_counterparts(torch.from_numpy(x), nouns, 0.005, device="cpu")
    return np.ascontiguousarray(parts, dtype=np.float32)


# --------------------------------------------------------------------------------------------
# One point, in its own process
# --------------------------------------------------------------------------------------------


def _rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")  # pragma: no cover


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def point_embed(n: int, opts: dict) -> dict:
    from tac_pipeline.encoders import ClipEncoder, ImageRecord, encode_drop

    with tempfile.TemporaryDirectory(prefix="bench_scaling_") as tmp:
        paths = write_images(Path(tmp), n, (32, 32), "PNG")
        records = [ImageRecord(image_id=p.name, path=p) for p in paths]
        encoder = ClipEncoder.from_pretrained("tac-tiny", "none", device="cpu", batch_size=256)
        encode_drop(encoder, records[:256], num_workers=0)  # warm-up: model, threads
        data = _rss_mib()
        start = time.perf_counter()
        out = encode_drop(encoder, records, num_workers=None)
        seconds = time.perf_counter() - start
    assert len(out.image_ids) == n and not out.skipped
    return {
        "seconds": seconds,
        "data_mib": data,
        "images_per_s": n / seconds,
        "note": f"tac-tiny ({encoder.embedding_dim}-d), decoding workers started included",
    }


def point_kmeans(n: int, opts: dict) -> dict:
    from tac_pipeline.tac import semantic_center_count, spherical_kmeans

    x, _ = clip_like(n)
    k = semantic_center_count(n, 10)
    iters = opts.get("iters", 5)
    data = _rss_mib()
    start = time.perf_counter()
    spherical_kmeans(x, k, n_iter=iters, n_restarts=1, seed=0)
    seconds = time.perf_counter() - start
    # iters faiss Lloyd iterations + one final assignment pass, each a (N x k_c x d) product.
    per_iteration = seconds / (iters + 1)
    return {
        "seconds": seconds,
        "data_mib": data,
        "k_c": k,
        "iterations": iters,
        "seconds_per_iteration": per_iteration,
        "spec_seconds": per_iteration * (SPEC_KMEANS_ITERATIONS + 1),
        "gflops": 2 * n * k * WIDTH / per_iteration / 1e9,
    }


def _exact_sample(x, rows, k):
    """Exact neighbours (and their similarities) of the sampled rows, self excluded by index."""
    import faiss
    import numpy as np

    sims, found = faiss.knn(x[rows], x, k + 1, metric=faiss.METRIC_INNER_PRODUCT)
    is_self = found == rows[:, None]
    order = np.argsort(is_self, axis=1, kind="stable")[:, :k]  # drop_self's rule, for sampled rows
    return np.take_along_axis(found, order, axis=1), np.take_along_axis(sims, order, axis=1)


def point_knn(n: int, opts: dict, method: str) -> dict:
    import numpy as np

    from tac_pipeline.tac import knn_inner_product
    from tac_pipeline.tac.vectors import APPROXIMATE_KNN_NPROBE, ivf_list_count

    x, labels = clip_like(n)
    data_kind = opts.get("data", "images")
    if data_kind == "counterparts":
        x = counterpart_like(x)
    data = _rss_mib()
    nprobe = opts.get("nprobe")
    start = time.perf_counter()
    found = knn_inner_product(x, NEIGHBOURS, method=method, nprobe=nprobe)
    seconds = time.perf_counter() - start
    peak = _peak_mib()
    rows = np.sort(np.random.default_rng(7).choice(n, min(n, RECALL_QUERIES), replace=False))
    exact, exact_sims = _exact_sample(x, rows, NEIGHBOURS)
    got = found[rows]
    got_sims = np.einsum("qd,qkd->qk", x[rows], x[got])
    hit = [np.intersect1d(a, b).size / NEIGHBOURS for a, b in zip(got, exact, strict=True)]
    out = {
        "seconds": seconds,
        "data_mib": data,
        "peak_mib": peak,
        "data": data_kind,
        "recall_at_50": float(np.mean(hit)),
        # Ties (duplicates) make index recall ambiguous: a hit at least as similar as the exact 50th counts.
        "recall_at_50_ties": float(np.mean(got_sims >= exact_sims[:, -1:] - 1e-6)),
        "mean_sim_ratio": float(got_sims.mean() / exact_sims.mean()),
        "class_purity": float((labels[got] == labels[rows, None]).mean()),
        "exact_class_purity": float((labels[exact] == labels[rows, None]).mean()),
    }
    if method == "approximate":
        nlist = ivf_list_count(n)
        out.update(nlist=nlist, nprobe=min(nlist, nprobe or APPROXIMATE_KNN_NPROBE))
    return out


def point_heads(n: int, opts: dict) -> dict:
    import numpy as np
    import torch

    from tac_pipeline.tac import HeadTrainingConfig, train_heads

    v, _ = clip_like(n)
    rng = np.random.default_rng(1)
    t = v + 0.05 * rng.standard_normal(v.shape).astype(np.float32)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    knn_v = rng.integers(0, n, (n, NEIGHBOURS))
    knn_t = rng.integers(0, n, (n, NEIGHBOURS))
    epochs = opts.get("epochs", 1)
    warm = HeadTrainingConfig.for_clusters(IMAGENET_K, epochs=1)
    small = min(n, warm.batch_size)  # one step: optimiser set-up and first-call costs off the clock
    train_heads(v[:small], t[:small], knn_v[:small] % small, knn_t[:small] % small, IMAGENET_K, warm)
    cfg = HeadTrainingConfig.for_clusters(IMAGENET_K, epochs=epochs)
    data = _rss_mib()
    start = time.perf_counter()
    _, _, history = train_heads(v, t, knn_v, knn_t, IMAGENET_K, cfg, seed=0, device="cpu")
    seconds = time.perf_counter() - start
    per_epoch = seconds / epochs
    return {
        "seconds": seconds,
        "data_mib": data,
        "epochs": epochs,
        "steps_per_epoch": history.steps_per_epoch,
        "batch_size": history.batch_size,
        "seconds_per_epoch": per_epoch,
        "spec_seconds": per_epoch * HeadTrainingConfig.for_clusters(IMAGENET_K).epochs,
        "torch_threads": torch.get_num_threads(),
    }


def run_point(stage: str, n: int, opts: dict) -> dict:
    if stage == "embed":
        out = point_embed(n, opts)
    elif stage == "kmeans":
        out = point_kmeans(n, opts)
    elif stage == "knn_exact":
        out = point_knn(n, opts, "exact")
    elif stage == "knn_approx":
        out = point_knn(n, opts, "approximate")
    elif stage == "heads":
        out = point_heads(n, opts)
    else:
        raise ValueError(f"unknown stage {stage!r}")
    out.setdefault("peak_mib", _peak_mib())
    return out


# --------------------------------------------------------------------------------------------
# Driver: subprocesses, fits, projections, table
# --------------------------------------------------------------------------------------------


def measure(stage: str, n: int, opts: dict, timeout: float) -> dict:
    load_before = os.getloadavg()[0]
    cmd = [sys.executable, "-m", POINT_MODULE, "--point", stage, "--n", str(n), "--opts", json.dumps(opts)]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=REPO)
    except subprocess.TimeoutExpired:
        return {"stage": stage, "n": n, "opts": opts, "error": f"over {timeout:.0f} s", "load": load_before}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode or not lines:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        return {"stage": stage, "n": n, "opts": opts, "error": " | ".join(tail), "load": load_before}
    result = json.loads(lines[-1][len("RESULT ") :])
    result.update(
        stage=stage,
        n=n,
        opts=opts,
        load=load_before,
        load_after=os.getloadavg()[0],
        process_seconds=time.perf_counter() - start,
    )
    return result


def fit_power(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    """Least-squares t = a * N^b on log-log axes (repeats at one N averaged first); (a, b) or None."""
    import numpy as np

    by_n: dict[int, list[float]] = {}
    for n, t in points:
        by_n.setdefault(n, []).append(t)
    if len(by_n) < 2:
        return None
    ns = np.array(sorted(by_n), dtype=float)
    ts = np.array([min(by_n[int(n)]) for n in ns])  # fastest repeat: least disturbed by other load
    b, log_a = np.polyfit(np.log(ns), np.log(ts), 1)
    return float(math.exp(log_a)), float(b)


def fit_linear(points: list[tuple[int, float]]) -> tuple[float, float] | None:
    import numpy as np

    if len({n for n, _ in points}) < 2:
        return None
    ns, ms = np.array([p[0] for p in points], float), np.array([p[1] for p in points], float)
    slope, intercept = np.polyfit(ns, ms, 1)
    return float(intercept), float(slope)


def human_seconds(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def label(row: dict) -> str:
    extra = []
    if row["stage"] == "knn_approx":
        extra.append(f"nprobe {row.get('nprobe', '?')}/{row.get('nlist', '?')}")
        if row.get("data") == "counterparts":
            extra.append("counterparts")
    if row["stage"] == "kmeans":
        extra.append(f"k_c {row.get('k_c')}, {row.get('iterations')} it")
    if row["stage"] == "heads":
        extra.append(f"{row.get('epochs')} ep x {row.get('steps_per_epoch')} steps")
    return row["stage"] + (f" ({', '.join(extra)})" if extra else "")


def report(rows: list[dict]) -> str:
    lines = [
        "| stage | N | seconds | rate / detail | peak RSS MiB | data MiB | load (1 min) |",
        "| --- | ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['stage']} | {r['n']:,} | failed | {r['error'][:80]} | | | {r['load']:.2f} |")
            continue
        if r["stage"] == "embed":
            detail = f"{r['images_per_s']:,.0f} images/s"
        elif r["stage"] == "kmeans":
            detail = f"{r['seconds_per_iteration']:.2f} s/iteration, {r['gflops']:.0f} GFLOP/s"
        elif r["stage"] == "heads":
            detail = f"{r['seconds_per_epoch']:.2f} s/epoch"
        else:
            detail = (
                f"recall@50 {r['recall_at_50']:.3f} (ties {r['recall_at_50_ties']:.3f}), "
                f"sim ratio {r['mean_sim_ratio']:.4f}, purity {r['class_purity']:.3f}/{r['exact_class_purity']:.3f}"
            )
        lines.append(
            f"| {label(r)} | {r['n']:,} | {r['seconds']:.2f} | {detail} | {r['peak_mib']:,.0f} "
            f"| {r['data_mib']:,.0f} | {r['load']:.2f}→{r['load_after']:.2f} |"
        )
    return "\n".join(lines)


def _flops(stage: str, n: int) -> float | None:
    """Floating-point operations of one unit of a stage at N (None: no FLOP model used)."""
    from tac_pipeline.tac import semantic_center_count

    if stage == "kmeans":  # one Lloyd iteration: the (N x k_c) similarity product
        return 2.0 * n * semantic_center_count(n, 10) * WIDTH
    if stage == "knn_exact":  # every pair, one modality
        return 2.0 * n * n * WIDTH
    return None


def projections(rows: list[dict]) -> tuple[str, dict]:
    """Growth exponent and the 1.28 M projection of each stage, from its largest measured sizes.

    The exponent b is a least-squares fit of log t on log N over the three largest sizes (small sizes
    are dominated by fixed costs: process warm-up, thread start, tiny matrix products). The projection
    itself uses the stage's cost model at the rate measured at its largest N: k-means and exact kNN by
    their FLOPs (N k_c d per iteration with k_c = N/300, and N^2 d), embedding and head training linear
    (images, steps), the IVF search by its fitted exponent (its cost model is N^1.5 by construction).
    """
    from tac_pipeline.tac import HeadTrainingConfig

    ok = [r for r in rows if "error" not in r]
    out = {}
    lines = [
        "| stage | exponent b (t ∝ N^b, 3 largest N) | projected time at 1.28 M, this CPU | "
        "projected peak RSS at 1.28 M | measured at N |",
        "| --- | ---: | --- | ---: | --- |",
    ]
    specs = {
        "embed": ("seconds", "all images, tac-tiny"),
        "kmeans": ("seconds_per_iteration", "per Lloyd iteration"),
        "knn_exact": ("seconds", "per modality"),
        "knn_approx": ("seconds", "per modality, default nprobe"),
        "heads": ("seconds_per_epoch", "per epoch (K = 1,000, batch 8,192)"),
    }
    spec_units = {
        "kmeans": SPEC_KMEANS_ITERATIONS + 1,
        "heads": HeadTrainingConfig.for_clusters(IMAGENET_K).epochs,
    }
    for stage, (key, what) in specs.items():
        pts = [
            r
            for r in ok
            if r["stage"] == stage and "nprobe" not in r["opts"] and r.get("data", "images") == "images"
        ]
        sizes = sorted({r["n"] for r in pts})
        fit = fit_power([(r["n"], r[key]) for r in pts if r["n"] in sizes[-3:]])
        if fit is None:
            continue
        a, b = fit
        largest = min((r for r in pts if r["n"] == sizes[-1]), key=lambda r: r[key])
        if stage == "embed":
            t = IMAGENET_N / largest["images_per_s"]
        elif stage == "heads":
            steps = IMAGENET_N // largest["batch_size"]
            t = largest[key] / largest["steps_per_epoch"] * steps
        elif _flops(stage, sizes[-1]) is not None:
            rate = _flops(stage, sizes[-1]) / largest[key]
            t = _flops(stage, IMAGENET_N) / rate
        else:
            t = largest[key] * (IMAGENET_N / sizes[-1]) ** b
        spec = t * spec_units[stage] if stage in spec_units else None
        # Memory: linear in N once the data dominates; small N is mostly interpreter and libraries.
        mem = fit_linear([(r["n"], r["peak_mib"]) for r in pts if r["n"] >= MEMORY_FIT_FROM])
        mem_mib = mem[0] + mem[1] * IMAGENET_N if mem and stage != "embed" else float("nan")
        out[stage] = {"exponent": b, "seconds": t, "spec_seconds": spec, "peak_mib": mem_mib}
        when = f"{human_seconds(t)} {what}"
        if spec is not None:
            when += f"; spec run ({spec_units[stage]:,}x): {human_seconds(spec)}"
        mem_text = "—" if math.isnan(mem_mib) else f"{mem_mib / 1024:.1f} GiB"
        lines.append(f"| {stage} | {b:.2f} | {when} | {mem_text} | {', '.join(f'{n:,}' for n in sizes)} |")
    return "\n".join(lines), out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="small sizes: a ~1.5 minute smoke run")
    parser.add_argument("--stages", nargs="+", choices=STAGES, default=list(STAGES))
    parser.add_argument("--timeout", type=float, default=900, help="seconds allowed per point")
    parser.add_argument("--out", default=None, help="also write rows and projections as JSON here")
    parser.add_argument("--from-json", default=None, help="re-print the tables of an earlier --out file")
    parser.add_argument("--point", choices=STAGES, help=argparse.SUPPRESS)  # worker mode
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--opts", default="{}", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.point:
        print("RESULT " + json.dumps(run_point(args.point, args.n, json.loads(args.opts))), flush=True)
        return

    if args.from_json:
        saved = json.loads(Path(args.from_json).read_text())
        print(json.dumps(saved["setup"]))
        print(report(saved["rows"]))
        print()
        print(projections(saved["rows"])[0])
        return

    import faiss
    import torch

    plan = [p for p in (QUICK_PLAN if args.quick else FULL_PLAN) if p[0] in args.stages]
    header = {
        "cpu_cores": len(os.sched_getaffinity(0)),
        "torch_threads": torch.get_num_threads(),
        "faiss_threads": faiss.omp_get_max_threads(),
        "torch": torch.__version__,
        "faiss": faiss.__version__,
        "load_at_start": os.getloadavg(),
    }
    print(json.dumps(header), flush=True)
    rows = []
    began = time.perf_counter()
    for stage, n, opts in plan:
        row = measure(stage, n, opts, args.timeout)
        rows.append(row)
        brief = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
        print(json.dumps(brief), flush=True)
    print(f"\nwall {human_seconds(time.perf_counter() - began)}\n")
    if args.quick:
        print("--quick: sizes far too small to project from (fixed costs dominate); a smoke run only\n")
    print(report(rows))
    table, proj = projections(rows)
    print()
    print(table)
    if args.out:
        Path(args.out).write_text(json.dumps({"setup": header, "rows": rows, "projections": proj}, indent=1))


if __name__ == "__main__":
    main()
