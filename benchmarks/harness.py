"""What the sections of :mod:`benchmarks.run` share: scales, targets, result rows and :class:`Bench`.

Heavy imports (torch, the package's engine) live inside the functions.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from benchmarks.inputs import WORDNET_NOUNS, noun_vocabulary, synthetic_embeddings, write_cifar_drop

N_CLASSES = 10
WIDTH = 512  # width of the synthetic vectors (ViT-B-32's)


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


#: The GPU targets for one H100/H200 at full scale.
TARGETS = {
    "png": Target("≥ 12,000/s", 12_000, True),
    "nouns": Target("≤ 10 s", 10.0, False),
    "heads": Target("≤ 1 s", 1.0, False),
    "graph_cold": Target("≤ 40 s", 40.0, False),
    "graph_warm": Target("≤ 15 s", 15.0, False),
}
#: Plain code (no pipeline) measured on an H200 with 16 cores, for orientation: not targets.
FLOORS = {"model_only": "fp16 on an H200: ~32,000/s", "decode_only": "16 processes: ~15,500/s"}


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


def fmt_bytes(peak: int | None) -> str:
    return "n/a" if peak is None else f"{peak / 2**20:,.0f} MiB"


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
