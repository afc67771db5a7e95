"""One benchmark command for the whole pipeline: times, throughputs and peak GPU memory (issue 9).

    python benchmarks/run.py                                   # GPU: random-init ViT-B-32, full scale
    python benchmarks/run.py --device cpu --scale small        # CPU smoke run (tac-tiny), a few minutes
    python benchmarks/run.py --only images nouns --out results.json

Sections (``--only`` picks some; default all):

images     32x32 PNGs (CIFAR-sized) and 224-px JPEGs through the real ``encode_drop``: decoding in worker
           processes, overlapped with the model; plus decode-only and model-only rates.
nouns      the 7-template noun ensemble (``encode_nouns``) over the 119,034 distinct words of the noun vocabulary (full): WordNet when its
           vocabulary loads offline (``data/cache/wordnet_nouns.parquet``), else synthetic nouns of
           realistic length.
kmeans     semantic centres: ``spherical_kmeans`` of N embeddings into N/300 centres (300 iterations,
           best of 10), N = 50,000 at full scale.
knn        ``knn_inner_product`` with k = 50 for both modalities (images and counterparts).
heads      ``train_heads``, N = 50,000, K = 10, 20 epochs (full); on CUDA also with ``cuda_graph=True``.
graph      the whole graph for a generated CIFAR-sized drop (60,000 images at full scale: 50,000 train,
           10,000 test, 10 classes): cold (nouns, then the drop) and warm (a second drop, nouns already
           materialized). With dagster importable, the real asset graph and its checks materialized
           in-process; without it, the encoders, then ``TAC.fit`` and its predictions (said so in the
           table). Also the start of a fresh Python that imports torch and open_clip.
graph-cli  the same through ``dagster asset materialize`` subprocesses, as ``make cluster`` runs it (one
           process per step: process start, imports and model load per step included).

kmeans, knn and heads run on synthetic 512-wide unit vectors (ViT-B-32's width), whatever the model.
Targets are issue 9's for one H100/H200 at full scale; "met" is judged only there. Generating the test
data is never timed. Not a test.

Heavy imports live inside functions: the image-decoding workers (forkserver/spawn) re-import this script.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for _folder in (REPO, REPO / "benchmarks"):  # a plain checkout (GPU machine): the package is not installed
    if str(_folder) not in sys.path:
        sys.path.insert(0, str(_folder))

from bench_encoders import synthetic_nouns, write_images  # noqa: E402  (light: no torch at import)

SECTIONS = ("images", "nouns", "kmeans", "knn", "heads", "graph", "graph-cli")
WORDNET_NOUNS = 119_034  # distinct words of the default vocabulary (146,347 WordNet 3.0 lemmas)
N_CLASSES = 10
WIDTH = 512  # width of the synthetic vectors (ViT-B-32's)
NOUN_ASSET = "wordnet_noun_embeddings"


@dataclass(frozen=True)
class Scale:
    png: int  # 32x32 PNGs in the images section
    jpeg: int  # 224x224 JPEGs in the images section
    nouns: int  # nouns in the nouns section
    vectors: int  # N of the kmeans / knn / heads sections
    drop_train: int  # the graph's drop
    drop_test: int
    graph_nouns: int | None  # nouns the graph embeds (None: the whole vocabulary)


SCALES = {
    "small": Scale(
        png=3_000, jpeg=500, nouns=10_000, vectors=10_000, drop_train=300, drop_test=100, graph_nouns=2_000
    ),
    "full": Scale(
        png=60_000,
        jpeg=10_000,
        nouns=WORDNET_NOUNS,
        vectors=50_000,
        drop_train=50_000,
        drop_test=10_000,
        graph_nouns=None,
    ),
}


@dataclass(frozen=True)
class Target:
    text: str
    value: float
    higher_is_better: bool

    def met(self, measured: float) -> bool:
        return measured >= self.value if self.higher_is_better else measured <= self.value


TARGETS = {
    "png": Target("≥ 12,000/s", 12_000, True),
    "nouns": Target("≤ 10 s", 10.0, False),
    "heads": Target("≤ 1 s", 1.0, False),
    "graph_cold": Target("≤ 40 s", 40.0, False),
    "graph_warm": Target("≤ 15 s", 15.0, False),
}
# The measurements of plain code on an H200 (16 cores), for orientation: not targets.
FLOORS = {"model_only": "plain fp16 on an H200: ~32,000/s", "decode_only": "plain, 16 processes: ~15,500/s"}


@dataclass
class Row:
    section: str
    what: str
    result: str
    seconds: float | None = None
    rate: float | None = None
    target: str = ""
    met: str = ""
    peak_gpu_bytes: int | None = None
    notes: str = ""
    steps: dict[str, str] = field(default_factory=dict)  # graph rows: step -> seconds (text)
    column: str = ""  # graph rows: their column in the per-step table


# ---------------------------------------------------------------------------------------------------------
# what the sections share
# ---------------------------------------------------------------------------------------------------------


class Bench:
    """Arguments, device, scratch folder, timing, and the inputs the sections build lazily (once)."""

    def __init__(self, args: argparse.Namespace, work: Path):
        import torch

        from tac_pipeline.tac import resolve_device

        self.args = args
        self.work = work
        self.torch = torch
        self.device = resolve_device(args.device)
        self.cuda = self.device.type == "cuda"
        self.scale = SCALES[args.scale]
        self.model = args.model or ("ViT-B-32" if self.cuda else "tac-tiny")
        self.pretrained = None if args.pretrained.lower() in ("", "none") else args.pretrained
        self._encoder = None
        self._drops: dict[tuple[int, int], Path] = {}
        self._vectors = None
        self._knn = None
        self._vocabulary = None

    # -- timing ---------------------------------------------------------------------------------------------
    def sync(self) -> None:
        if self.cuda:
            self.torch.cuda.synchronize(self.device)

    def measure(self, fn: Callable[[], object], reset_peak: bool = True) -> tuple[object, float, int | None]:
        """(fn's result, seconds, peak GPU bytes allocated, None on CPU); the peak is reset first unless told."""
        if self.cuda and reset_peak:
            self.sync()
            self.torch.cuda.reset_peak_memory_stats(self.device)
        start = time.perf_counter()
        out = fn()
        self.sync()
        seconds = time.perf_counter() - start
        peak = self.torch.cuda.max_memory_allocated(self.device) if self.cuda else None
        return out, seconds, peak

    def judge(self, key: str, measured: float) -> tuple[str, str]:
        """(target, met): met is judged on CUDA at full scale only, "—" elsewhere."""
        target = TARGETS[key]
        if not (self.cuda and self.args.scale == "full"):
            return target.text, "—"
        return target.text, "yes" if target.met(measured) else "no"

    # -- inputs ---------------------------------------------------------------------------------------------
    def encoder(self):
        if self._encoder is None:
            self._encoder = self.build_encoder()
        return self._encoder

    def build_encoder(self):
        from tac_pipeline.encoders import ClipEncoder

        return ClipEncoder.from_pretrained(
            self.model, self.pretrained, device=self.device, batch_size=self.args.batch_size
        )

    def drop(self, n_train: int, n_test: int) -> Path:
        """A CIFAR-like drop of distinct 32x32 PNGs: ``train/<class>/`` and ``test/<class>/``."""
        key = (n_train, n_test)
        if key not in self._drops:
            folder = self.work / f"drop_{n_train}_{n_test}"
            write_cifar_drop(folder, n_train, n_test, N_CLASSES)
            self._drops[key] = folder
        return self._drops[key]

    def vectors(self):
        """(v, t, y): synthetic image embeddings, counterparts and classes."""
        if self._vectors is None:
            self._vectors = synthetic_embeddings(self.scale.vectors, WIDTH, N_CLASSES)
        return self._vectors

    def knn_tables(self, k: int = 50):
        if self._knn is None:
            from tac_pipeline.tac import knn_inner_product

            v, t, _ = self.vectors()
            self._knn = tuple(
                knn_inner_product(x, k, device=self.device, backend=self.args.backend) for x in (v, t)
            )
        return self._knn

    def vocabulary(self):
        """(DataFrame noun/synset/gloss, source): WordNet when it loads offline, else synthetic."""
        if self._vocabulary is None:
            self._vocabulary = noun_vocabulary()
        return self._vocabulary

    def backend_name(self) -> str:
        """The k-means/kNN backend "auto" picks here (the engine's rule)."""
        if self.args.backend != "auto":
            return self.args.backend
        from tac_pipeline.tac import faiss_has_gpu
        from tac_pipeline.tac import vectors as tac_vectors

        if tac_vectors.faiss is None:
            return "torch"
        return "faiss" if (not self.cuda or faiss_has_gpu()) else "torch"


def write_cifar_drop(folder: Path, n_train: int, n_test: int, n_classes: int, seed: int = 0) -> None:
    """Distinct photo-like 32x32 PNGs: a smooth colour field per class, varied per image, plus grain.

    Chunks of 1,024 images are written by a thread pool (numpy and Pillow's PNG encoder release the GIL).
    """
    import numpy as np

    bases = np.random.default_rng(seed).uniform(40, 215, size=(n_classes, 4, 4, 3))
    chunks = []
    for split_no, (split, count) in enumerate((("train", n_train), ("test", n_test))):
        for c in range(n_classes):
            (folder / split / f"class{c}").mkdir(parents=True, exist_ok=True)
        chunks += [
            (folder / split, start, min(count, start + 1024), (seed, split_no, start))
            for start in range(0, count, 1024)
        ]
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(lambda chunk: _write_png_chunk(bases, *chunk), chunks))


def _write_png_chunk(bases, folder: Path, start: int, stop: int, seed: tuple[int, ...]) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = np.arange(start, stop) % len(bases)
    coarse = bases[labels] + rng.normal(0, 25, size=(len(labels), 4, 4, 3))
    fields = coarse.repeat(8, axis=1).repeat(8, axis=2)  # 4x4 -> 32x32 blocks
    fields = (fields + np.roll(fields, 4, axis=1) + np.roll(fields, 4, axis=2)) / 3  # soften the edges
    pixels = np.clip(fields + rng.normal(0, 6, size=fields.shape), 0, 255).astype(np.uint8)
    for i, label in enumerate(labels):
        buf = io.BytesIO()
        Image.fromarray(pixels[i]).save(buf, "PNG")
        (folder / f"class{label}" / f"{start + i:06d}.png").write_bytes(buf.getvalue())


def link_tree(source: Path, target: Path) -> None:
    """The same files under another folder, as hard links (copies where links fail)."""
    for path in source.rglob("*"):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copy2(path, dest)


def synthetic_embeddings(n: int, d: int, k: int, seed: int = 0):
    """Unit vectors in k classes of 30 sub-clusters each (CLIP-like structure), and noisier counterparts."""
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = rng.standard_normal((k, d)).astype(np.float32)
    subs = classes.repeat(30, axis=0) + 0.7 * rng.standard_normal((k * 30, d)).astype(np.float32)
    sub = rng.integers(0, k * 30, n)
    y = sub // 30
    v = subs[sub] + 0.9 * rng.standard_normal((n, d)).astype(np.float32)
    t = classes[y] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return v, t, y


def noun_vocabulary():
    import pandas as pd

    try:
        from tac_pipeline.encoders.wordnet import load_noun_vocabulary

        return load_noun_vocabulary(download=False), "WordNet"
    except Exception as exc:  # no cache and no nltk (the GPU machine): strings shaped like WordNet's lemmas
        print(
            f"(WordNet unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}; synthetic nouns)"
        )
        nouns = synthetic_nouns(WORDNET_NOUNS)
        synsets = [f"{noun.replace(' ', '_')}.n.01" for noun in nouns]
        return pd.DataFrame({"noun": nouns, "synset": synsets, "gloss": ""}), "synthetic"


def write_vocabulary_cache(frame, data_dir: Path) -> None:
    """Seed a data root's WordNet cache: the graph's noun step then reads it and needs no nltk."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tac_pipeline.encoders.wordnet import CACHE_FILE
    from tac_pipeline.store.layout import cache_dir

    path = cache_dir(data_dir) / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)


def fmt_bytes(peak: int | None) -> str:
    return "n/a" if peak is None else f"{peak / 2**20:,.0f} MiB"


# ---------------------------------------------------------------------------------------------------------
# sections
# ---------------------------------------------------------------------------------------------------------


def bench_images(b: Bench) -> list[Row]:
    import torch

    from tac_pipeline.encoders import ImageRecord, discover_images, encode_drop, read_images

    enc = b.encoder()
    size = enc.image_size
    enc.encode_images(torch.zeros((enc.batch_size, 3, size, size), dtype=torch.uint8))  # warm-up
    n_train = b.scale.png * 5 // 6
    png = discover_images(b.drop(n_train, b.scale.png - n_train)).records
    jpeg_paths = write_images(b.work / "jpeg224", b.scale.jpeg, (224, 224), "JPEG", distinct=256)
    jpeg = [ImageRecord(image_id=p.name, path=p) for p in jpeg_paths]
    rows = []

    def end_to_end(records, label: str, target_key: str | None = None) -> Row:
        out, seconds, peak = b.measure(lambda: encode_drop(enc, records, num_workers=b.args.workers))
        assert len(out.image_ids) == len(records) and not out.skipped, out.skipped[:3]
        rate = len(records) / seconds
        target, met = b.judge(target_key, rate) if target_key else ("", "")
        return Row(
            "images",
            f"{label}, end to end (`encode_drop`)",
            f"{rate:,.0f}/s",
            seconds=seconds,
            rate=rate,
            target=target,
            met=met,
            peak_gpu_bytes=peak,
            notes=f"{len(records):,} images in {seconds:.1f} s, decoding workers started included",
        )

    rows.append(end_to_end(png, "32×32 PNG", "png"))
    rows.append(end_to_end(jpeg, "224-px JPEG"))

    reader = read_images(
        png, enc.preprocess_spec or enc.preprocess, num_workers=b.args.workers, output="uint8"
    )
    n, seconds, _ = b.measure(lambda: sum(len(batch.indices) for batch in reader))
    rows.append(
        Row(
            "images",
            f"32×32 PNG, decode + resize only ({reader.num_workers} decoding process"
            + ("es)" if reader.num_workers != 1 else ")"),
            f"{n / seconds:,.0f}/s",
            seconds=seconds,
            rate=n / seconds,
            notes=f"{n:,} images to {size}-px uint8; issue's floor: {FLOORS['decode_only']}",
        )
    )
    pixels = torch.randint(0, 256, (min(len(png), 16 * enc.batch_size), 3, size, size), dtype=torch.uint8)
    if b.cuda:
        pixels = pixels.pin_memory()
    _, seconds, peak = b.measure(lambda: enc.encode_images(pixels))
    rows.append(
        Row(
            "images",
            f"image tower only ({size}-px uint8 batches from host memory)",
            f"{len(pixels) / seconds:,.0f}/s",
            seconds=seconds,
            rate=len(pixels) / seconds,
            peak_gpu_bytes=peak,
            notes=f"{len(pixels):,} images, batch {enc.batch_size}, {enc.precision}; issue's floor: "
            + FLOORS["model_only"],
        )
    )
    return rows


def bench_nouns(b: Bench) -> list[Row]:
    from tac_pipeline.encoders import NOUN_TEMPLATES

    enc = b.encoder()
    frame, source = b.vocabulary()
    nouns = list(dict.fromkeys(frame["noun"]))[: b.scale.nouns]  # each distinct word once, as the asset does
    if len(nouns) < b.scale.nouns:
        nouns += synthetic_nouns(b.scale.nouns - len(nouns), seed=1)
    enc.encode_nouns(nouns[:256])  # warm-up
    notes = [source]
    try:  # tokenising alone, through the encoder's private helper (left out if it moved)
        from tac_pipeline.encoders.clip.tokens import PromptTokens

        start = time.perf_counter()
        prompts = PromptTokens(enc.tokenizer, nouns, NOUN_TEMPLATES, enc.context_length)
        notes.append(
            f"tokenising alone {time.perf_counter() - start:.1f} s, {prompts.lengths.mean():.1f} tokens/prompt"
        )
    except Exception:
        pass
    emb, seconds, peak = b.measure(lambda: enc.encode_nouns(nouns))
    assert emb.shape == (len(nouns), enc.embedding_dim)
    n_prompts = len(nouns) * len(NOUN_TEMPLATES)
    notes.append(f"{n_prompts / seconds:,.0f} prompts/s")
    if len(nouns) != WORDNET_NOUNS:
        notes.append(f"{seconds * WORDNET_NOUNS / len(nouns):.1f} s extrapolated to {WORDNET_NOUNS:,}")
    target, met = b.judge("nouns", seconds)
    return [
        Row(
            "nouns",
            f"{len(nouns):,} nouns × {len(NOUN_TEMPLATES)} prompts (`encode_nouns`)",
            f"{seconds:.2f} s",
            seconds=seconds,
            target=target,
            met=met,
            peak_gpu_bytes=peak,
            notes="; ".join(notes),
        )
    ]


def bench_kmeans(b: Bench) -> list[Row]:
    from tac_pipeline.tac import DEFAULTS, semantic_center_count, spherical_kmeans

    v, _, _ = b.vectors()
    k_c = semantic_center_count(len(v), N_CLASSES)
    spherical_kmeans(v[:2_000], 10, n_iter=5, n_restarts=1, device=b.device, backend=b.args.backend)
    _, seconds, peak = b.measure(
        lambda: spherical_kmeans(
            v,
            k_c,
            n_iter=DEFAULTS.kmeans_iter,
            n_restarts=DEFAULTS.kmeans_restarts,
            seed=DEFAULTS.seed,
            device=b.device,
            backend=b.args.backend,
        )
    )
    return [
        Row(
            "kmeans",
            f"semantic centres: {len(v):,} × {WIDTH} → {k_c} centres (`spherical_kmeans`)",
            f"{seconds:.2f} s",
            seconds=seconds,
            peak_gpu_bytes=peak,
            notes=f"≤ {DEFAULTS.kmeans_iter} iterations, best of {DEFAULTS.kmeans_restarts}; "
            f"backend {b.backend_name()}",
        )
    ]


def bench_knn(b: Bench) -> list[Row]:
    from tac_pipeline.tac import knn_inner_product

    v, t, _ = b.vectors()
    knn_inner_product(v[:2_000], 50, device=b.device, backend=b.args.backend)  # warm-up
    rows, tables = [], []
    for name, x in (("images", v), ("counterparts", t)):
        table, seconds, peak = b.measure(
            lambda x=x: knn_inner_product(x, 50, device=b.device, backend=b.args.backend)
        )
        tables.append(table)
        rows.append(
            Row(
                "knn",
                f"k = 50 neighbours of {len(x):,} {name} (`knn_inner_product`)",
                f"{seconds:.2f} s",
                seconds=seconds,
                peak_gpu_bytes=peak,
                notes=f"exact; backend {b.backend_name()}",
            )
        )
    b._knn = tuple(tables)  # the heads section trains on them
    return rows


def bench_heads(b: Bench) -> list[Row]:
    from tac_pipeline.tac import HeadTrainingConfig, cluster_metrics, predict_proba, train_heads

    v, t, y = b.vectors()
    knn_v, knn_t = b.knn_tables()
    rows = []
    for cuda_graph in [False, True] if b.cuda else [False]:
        # Warm-up outside the timing (CUDA context, cuBLAS, the optimiser's first use, graph capture).
        warm = HeadTrainingConfig.for_clusters(N_CLASSES, epochs=1, cuda_graph=cuda_graph)
        m = min(len(v), 4 * warm.batch_size)
        train_heads(v[:m], t[:m], knn_v[:m] % m, knn_t[:m] % m, N_CLASSES, warm, device=b.device)
        cfg = HeadTrainingConfig.for_clusters(N_CLASSES, cuda_graph=cuda_graph)
        (head, _, _), seconds, peak = b.measure(
            lambda cfg=cfg: train_heads(v, t, knn_v, knn_t, N_CLASSES, cfg, seed=0, device=b.device)
        )
        acc = cluster_metrics(y, predict_proba(head, v).argmax(1))["acc"]
        target, met = b.judge("heads", seconds)
        mode = "one step captured as a CUDA graph" if cuda_graph else "eager"
        rows.append(
            Row(
                "heads",
                f"`train_heads` N = {len(v):,}, K = {N_CLASSES}, {cfg.epochs} epochs ({mode})",
                f"{seconds:.2f} s",
                seconds=seconds,
                target=target,
                met=met,
                peak_gpu_bytes=peak,
                notes=f"batch {cfg.batch_size}; ACC {acc:.1f} % on the synthetic classes",
            )
        )
    return rows


# -- the whole graph ----------------------------------------------------------------------------------------


def dagster_available() -> bool:
    try:
        import dagster  # noqa: F401
    except ImportError:
        return False
    return True


def prepare_data_root(b: Bench, root: Path) -> tuple[str, str]:
    """A data root with two partitions of the same generated images (cold, warm) and a WordNet cache."""
    source = b.drop(b.scale.drop_train, b.scale.drop_test)
    keys = ("bench_cold", "bench_warm")
    for key in keys:
        link_tree(source, root / "drops" / key)
    write_vocabulary_cache(b.vocabulary()[0], root)
    return keys


def graph_noun_note(b: Bench) -> str:
    frame, source = b.vocabulary()
    return f"{b.scale.graph_nouns or len(frame):,} {source} nouns"


@dataclass
class GraphRun:
    """Seconds and per-step times of one scenario; ``nouns_seconds`` is the noun run's part of a cold one."""

    seconds: float
    steps: dict[str, str]
    peak_gpu_bytes: int | None
    nouns_seconds: float | None = None


def graph_rows(b: Bench, section: str, mode: str, cold: GraphRun, warm: GraphRun, notes: str) -> list[Row]:
    """Two rows: cold (nouns, then the drop) and warm (a second drop, nouns already materialized)."""
    n = b.scale.drop_train + b.scale.drop_test
    rows = []
    for label, run in (("cold", cold), ("warm", warm)):
        target, met = b.judge(f"graph_{label}", run.seconds)
        what = "noun embeddings, then the drop" if label == "cold" else "new drop, nouns already materialized"
        detail = notes
        if run.nouns_seconds is not None:
            detail += f"; nouns {run.nouns_seconds:.1f} s + drop {run.seconds - run.nouns_seconds:.1f} s"
        rows.append(
            Row(
                section,
                f"{n:,}-image drop, {label}: {what} ({mode})",
                f"{run.seconds:.1f} s",
                seconds=run.seconds,
                target=target,
                met=met,
                peak_gpu_bytes=run.peak_gpu_bytes,
                notes=detail,
                steps=run.steps,
                column=f"{mode}, {label}",
            )
        )
    return rows


def step_times(instance, run_id: str) -> dict[str, str]:
    """Per step of a Dagster run: seconds from its start to its end, plus its process launch when it had one."""
    from dagster import DagsterEventType

    launched = {
        record.step_key: record.timestamp
        for record in instance.all_logs(run_id, of_type=DagsterEventType.STEP_WORKER_STARTING)
    }
    out = {}
    for stats in instance.get_run_step_stats(run_id):
        if stats.start_time is None or stats.end_time is None:
            continue
        text = f"{stats.end_time - stats.start_time:.2f}"
        if stats.step_key in launched:
            text += f" (+{stats.start_time - launched[stats.step_key]:.1f} start)"
        out[stats.step_key] = text
    return out


def bench_graph(b: Bench) -> list[Row]:
    rows = [process_start(b)]
    return rows + (graph_in_process(b) if dagster_available() else graph_on_engine(b))


def process_start(b: Bench) -> Row:
    """A fresh Python importing torch, open_clip and the package: what each step process pays first."""
    code = "import torch, open_clip, tac_pipeline.encoders.clip, tac_pipeline.tac"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], check=True, env=env, cwd=REPO)
    seconds = time.perf_counter() - start
    return Row(
        "graph",
        "process start: `python -c 'import torch, open_clip, tac_pipeline.encoders.clip'`",
        f"{seconds:.2f} s",
        seconds=seconds,
        notes="paid by every step process of the multiprocess executor",
    )


def graph_in_process(b: Bench) -> list[Row]:
    """The real asset graph and its checks, materialized in this process as the tests' helpers do."""
    from dagster import DagsterInstance, materialize

    from tac_pipeline.defs.assets import build_assets
    from tac_pipeline.defs.checks import build_asset_checks
    from tac_pipeline.defs.partitions import datasets_partitions
    from tac_pipeline.store.layout import store_dir
    from tac_pipeline.defs.resources.encoder import ClipEncoderResource
    from tac_pipeline.defs.resources.compute import ComputeDeviceResource
    from tac_pipeline.defs.resources.data import TacDataResource
    from tac_pipeline.defs.io_managers import ParquetIOManager

    root = b.work / "graph" / "data"
    cold_key, warm_key = prepare_data_root(b, root)
    encoder = ClipEncoderResource(
        model_name=b.model, pretrained=b.pretrained, batch_size=b.args.batch_size, num_workers=b.args.workers
    )
    resources = {
        "io_manager": ParquetIOManager(base_dir=str(store_dir(root))),
        "tac_data": TacDataResource(data_dir=str(root)),
        "clip_encoder": encoder,
        "compute_device": ComputeDeviceResource(device=str(b.device), lock_dir=str(b.work / "locks")),
    }
    home = b.work / "graph" / "dagster_home"
    home.mkdir(parents=True, exist_ok=True)
    instance = DagsterInstance.local_temp(tempdir=str(home))
    instance.add_dynamic_partitions(datasets_partitions.name, [cold_key, warm_key])
    assets = build_assets(encoder.identity())
    definitions = [*assets, *build_asset_checks(assets)]
    dataset_assets = [a.key for a in assets if a.partitions_def is not None]

    def run(selection, partition=None, run_config=None):
        result, seconds, peak = b.measure(
            lambda: materialize(
                definitions,
                selection=selection,
                partition_key=partition,
                resources=resources,
                instance=instance,
                run_config=run_config,
            )
        )
        assert result.success
        return seconds, step_times(instance, result.run_id), peak

    nouns_config = {"ops": {NOUN_ASSET: {"config": {"max_nouns": b.scale.graph_nouns}}}}
    s_nouns, steps_nouns, peak_nouns = run([NOUN_ASSET], run_config=nouns_config)
    s_cold, steps_cold, peak_cold = run(dataset_assets, cold_key)
    s_warm, steps_warm, peak_warm = run(dataset_assets, warm_key)
    cold_peak = max(peak_nouns, peak_cold) if b.cuda else None
    cold = GraphRun(s_nouns + s_cold, {**steps_nouns, **steps_cold}, cold_peak, s_nouns)
    warm = GraphRun(s_warm, steps_warm, peak_warm)
    notes = f"Dagster `materialize` in this process (no process start), {graph_noun_note(b)}"
    return graph_rows(b, "graph", "Dagster in-process", cold, warm, notes)


def graph_on_engine(b: Bench) -> list[Row]:
    """Without dagster: the encoders, then ``TAC.fit`` and its predictions (no Parquet IO)."""
    import numpy as np

    from tac_pipeline import tac
    from tac_pipeline.encoders import ClipEncoder, discover_images, encode_drop

    frame = b.vocabulary()[0]
    if b.scale.graph_nouns is not None:
        frame = frame.iloc[: b.scale.graph_nouns]
    source = b.drop(b.scale.drop_train, b.scale.drop_test)
    dev, backend, k = b.device, b.args.backend, N_CLASSES  # TAC's defaults: the graph's for a plain drop

    def encoder():  # every step that needs the model builds it, as each asset does
        return ClipEncoder.from_pretrained(b.model, b.pretrained, device=dev, batch_size=b.args.batch_size)

    def timed(steps: dict[str, str], name: str, fn: Callable[[], object]):
        out, seconds, _ = b.measure(fn, reset_peak=False)  # the scenario's peak spans its steps
        steps[name] = f"{seconds:.2f}"
        return out

    def noun_embeddings():  # each distinct text once, as the asset does
        texts, inverse = np.unique(frame["noun"].to_numpy(dtype=object), return_inverse=True)
        return encoder().encode_nouns(list(texts))[inverse]

    def cluster_drop(nouns, steps: dict[str, str]) -> None:
        listing = discover_images(source)
        encoded = timed(
            steps, "image_embeddings", lambda: encode_drop(encoder(), listing, num_workers=b.args.workers)
        )
        images, labels = encoded.embeddings, np.array(encoded.labels, dtype=object)
        split = np.array(encoded.splits, dtype=object)
        fit, report = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")

        def fit_tac():  # centres, text space, counterparts, kNN graphs and heads: the estimator's fit
            with warnings.catch_warnings():  # a batch shrunk to a small drop, as the asset does
                warnings.simplefilter("ignore", UserWarning)
                return tac.TAC(k, device=dev, backend=backend).fit(images[fit], nouns)

        model = timed(steps, "TAC.fit (semantic_centers … trained_heads)", fit_tac)

        def predict():  # what cluster_labels holds: both heads, their mean and the baselines
            heads = [model.predict(images), model.predict_text(images), model.predict_mean(images)]
            _, kmeans = tac.spherical_kmeans(images[report], k, seed=model.seed, device=dev, backend=backend)
            return [kmeans, model.fit_predict_baseline(images[report]), *(y[report] for y in heads)]

        predictions = timed(steps, "cluster_labels", predict)
        timed(steps, "metrics", lambda: [tac.cluster_metrics(labels[report], y) for y in predictions])

    cold_steps: dict[str, str] = {}

    def cold_run():
        nouns = timed(cold_steps, NOUN_ASSET, noun_embeddings)
        cluster_drop(nouns, cold_steps)
        return nouns

    nouns, s_cold, peak_cold = b.measure(cold_run)
    warm_steps: dict[str, str] = {}
    _, s_warm, peak_warm = b.measure(lambda: cluster_drop(nouns, warm_steps))
    cold = GraphRun(s_cold, cold_steps, peak_cold, float(cold_steps[NOUN_ASSET]))
    warm = GraphRun(s_warm, warm_steps, peak_warm)
    notes = (
        "dagster is not importable: the encoders, then TAC.fit and its predictions (no Dagster, "
        f"no Parquet), {graph_noun_note(b)}"
    )
    return graph_rows(b, "graph", "engine, no Dagster", cold, warm, notes)


def cli_materialize(env: dict[str, str], cwd: Path, selection, partition=None, config=None) -> float:
    """Seconds of one ``dagster asset materialize`` subprocess (raises with its output when it fails)."""
    command = [sys.executable, "-m", "dagster", "asset", "materialize", "-m", "tac_pipeline.definitions"]
    command += ["--select", ",".join(selection)]
    if partition:
        command += ["--partition", partition]
    if config:
        command += ["--config-json", json.dumps(config)]
    start = time.perf_counter()
    done = subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stdout[-2000:]}\n{done.stderr[-4000:]}")
    return seconds


def bench_graph_cli(b: Bench) -> list[Row]:
    """``dagster asset materialize`` subprocesses; the default executor runs one process per step (forked)."""
    if not dagster_available():
        return [Row("graph-cli", "Dagster CLI", "skipped: dagster is not importable")]
    from dagster import DagsterInstance

    from tac_pipeline.defs.assets import ASSET_NAMES
    from tac_pipeline.defs.partitions import datasets_partitions

    root, home = b.work / "graph_cli" / "data", b.work / "graph_cli" / "dagster_home"
    cold_key, warm_key = prepare_data_root(b, root)
    home.mkdir(parents=True, exist_ok=True)
    instance = DagsterInstance.local_temp(tempdir=str(home))  # the same storage DAGSTER_HOME=home gives
    instance.add_dynamic_partitions(datasets_partitions.name, [cold_key, warm_key])
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TAC_DATA_DIR": str(root),
        "TAC_CLIP_MODEL": b.model,
        "TAC_CLIP_PRETRAINED": b.pretrained or "none",
        "TAC_DEVICE": str(b.device),
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }

    def run(selection: list[str], partition: str | None = None, config: dict | None = None):
        seconds = cli_materialize(env, REPO, selection, partition, config)
        return seconds, step_times(instance, instance.get_runs(limit=1)[0].run_id)

    nouns_config = None
    if b.scale.graph_nouns is not None:
        nouns_config = {"ops": {NOUN_ASSET: {"config": {"max_nouns": b.scale.graph_nouns}}}}
    s_nouns, steps_nouns = run([NOUN_ASSET], config=nouns_config)
    dataset_assets = [name for name in ASSET_NAMES if name != NOUN_ASSET]
    s_cold, steps_cold = run(dataset_assets, cold_key)
    s_warm, steps_warm = run(dataset_assets, warm_key)
    cold = GraphRun(s_nouns + s_cold, {**steps_nouns, **steps_cold}, None, s_nouns)
    warm = GraphRun(s_warm, steps_warm, None)
    notes = (
        f"`dagster asset materialize`, one process per step (forkserver), {graph_noun_note(b)}; GPU memory is "
        "used in the step processes (not measured)"
    )
    return graph_rows(b, "graph-cli", "Dagster CLI", cold, warm, notes)


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
