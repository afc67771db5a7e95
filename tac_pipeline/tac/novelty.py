"""Novelty: an image that fits no fitted cluster (docs/METHOD.md §10).

Two signals say how well an image fits the clustering, and both are measured on the fitted images first:

* **confidence** -- the image head's largest cluster probability, max_k f(v)_k;
* **noun similarity** -- the image's best cosine similarity to the nouns of the text space, max_j sim(v, t_j).

An image is novel when either falls below the ``quantile`` (default 1 %) of what the fitted images show. The
fitted images therefore flag at most about 2 x ``quantile`` of themselves; an image of a class the fit never saw
lies far from every noun chosen for the fitted images (or between the heads' clusters) and falls below them.
The two thresholds are data, recorded with the fit (``NoveltyRule.as_dict``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch

from tac_pipeline.common.devices import ArrayLike, DeviceLike, as_tensor, resolve_device

from .validation import validate_embeddings
from .vectors import _rows_per_block

#: Share of the fitted images below each threshold (each signal's 1 % quantile).
NOVELTY_QUANTILE = 0.01


def best_similarity(
    x: ArrayLike, targets: ArrayLike, *, device: DeviceLike = None, block_size: int | None = None
) -> np.ndarray:
    """(N,) float32: each row's largest cosine similarity to the rows of ``targets`` (M, d)."""
    dev = resolve_device(device)
    xt = as_tensor(validate_embeddings(as_tensor(x, dev), "embeddings"), dev)
    tt = as_tensor(validate_embeddings(as_tensor(targets, dev), "targets"), dev)
    if xt.shape[1] != tt.shape[1]:
        raise ValueError(f"embeddings are {xt.shape[1]} wide but the targets are {tt.shape[1]} wide")
    out = torch.empty(xt.shape[0], dtype=torch.float32, device=dev)
    rows = _rows_per_block(tt.shape[0], block_size)
    for start in range(0, xt.shape[0], rows):
        out[start : start + rows] = (xt[start : start + rows] @ tt.T).max(dim=1).values
    return out.cpu().numpy()


@dataclass(frozen=True)
class NoveltyRule:
    """Thresholds below which an image is novel, taken from the fitted images' own distribution.

    Attributes:
        confidence: an image-head confidence below this is novel.
        noun_similarity: a best similarity to the text space's nouns below this is novel.
        quantile: the share of fitted images below each threshold.
    """

    confidence: float
    noun_similarity: float
    quantile: float = NOVELTY_QUANTILE

    @classmethod
    def fit(
        cls, confidence: ArrayLike, noun_similarity: ArrayLike, quantile: float = NOVELTY_QUANTILE
    ) -> NoveltyRule:
        """The rule of a fit: each threshold is the ``quantile`` of the fitted images' values (N,) and (N,)."""
        if not 0.0 <= quantile < 0.5:
            raise ValueError(f"quantile must be in [0, 0.5), got {quantile}")
        conf = np.asarray(confidence, dtype=np.float64)
        sim = np.asarray(noun_similarity, dtype=np.float64)
        if conf.shape != sim.shape or conf.ndim != 1 or conf.size == 0:
            raise ValueError(f"need two (N,) arrays of the fitted images, got {conf.shape} and {sim.shape}")
        return cls(
            confidence=float(np.quantile(conf, quantile)),
            noun_similarity=float(np.quantile(sim, quantile)),
            quantile=float(quantile),
        )

    def flag(self, confidence: ArrayLike, noun_similarity: ArrayLike) -> np.ndarray:
        """(N,) bool: True where an image falls below either threshold."""
        conf = np.asarray(confidence, dtype=np.float64)
        sim = np.asarray(noun_similarity, dtype=np.float64)
        return (conf < self.confidence) | (sim < self.noun_similarity)

    def as_dict(self) -> dict[str, float]:
        return asdict(self)
