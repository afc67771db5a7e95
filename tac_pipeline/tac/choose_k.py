"""Choosing K when nobody knows it: one Ward tree on the text counterparts, cut at every K of a range,
each cut scored by its cosine silhouette on the counterparts; the best score wins.

Why the counterparts: classes that look alike in the images but have different nouns are apart in
counterpart space and together in image space, so a criterion on the images (or on images and counterparts
concatenated) finds the visual groups. See README "Choosing K" and benchmarks/bench_choose_k.py.

Cost: everything is computed on a seeded sample of at most ``AUTO_K_SAMPLES`` fitting images: one Ward tree
(O(n²) memory and time for n sampled rows), one n x n cosine distance matrix, and one silhouette per K
(O(n²) each). Nothing depends on N beyond drawing the sample, so the sweep costs the same on 60,000 images
as on 6,000.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Literal

import numpy as np

from tac_pipeline.common.devices import ArrayLike, to_numpy

from .params import AUTO_K_SAMPLES
from .text_space import concat_modalities
from .validation import validate_embeddings

Criterion = Literal["counterparts", "images", "concat"]
CRITERIA: tuple[str, ...] = ("counterparts", "images", "concat")


@dataclass(frozen=True)
class KSweep:
    """The scores of every K tried and the K chosen (the best score; the smallest K among ties)."""

    ks: np.ndarray  #: (R,) int64, the K tried, increasing
    scores: np.ndarray  #: (R,) float64 silhouette of each cut, in [-1, 1]
    chosen: int
    criterion: str
    n_samples: int  #: rows the criterion was computed on
    seconds: float

    def as_dict(self) -> dict[int, float]:
        return {int(k): float(s) for k, s in zip(self.ks, self.scores, strict=True)}


def sweep_features(
    images: ArrayLike, counterparts: ArrayLike, criterion: Criterion = "counterparts"
) -> np.ndarray:
    """The rows a criterion clusters: the counterparts, the images, or both concatenated."""
    if criterion == "counterparts":
        return to_numpy(validate_embeddings(counterparts, "counterparts"))
    if criterion == "images":
        return to_numpy(validate_embeddings(images, "image embeddings"))
    if criterion == "concat":
        return concat_modalities(images, counterparts) / np.sqrt(2.0, dtype=np.float32)
    raise ValueError(f"criterion must be one of {CRITERIA}, got {criterion!r}")


def silhouette_sweep(
    features: ArrayLike,
    k_range: tuple[int, int],
    *,
    seed: int = 0,
    max_samples: int = AUTO_K_SAMPLES,
    criterion: str = "counterparts",
) -> KSweep:
    """Cut one Ward tree of ``features`` at every K of ``k_range`` (inclusive); score each cut by silhouette.

    Args:
        features: (N, d) unit rows (counterparts, images, or the concatenation scaled to unit norm).
        k_range: (low, high), 2 <= low < high < number of sampled rows.
        seed: draws the sample when N > max_samples.
        max_samples: the tree and the silhouettes use at most this many rows.

    Returns:
        :class:`KSweep`.
    """
    from scipy.cluster.hierarchy import fcluster, linkage
    from sklearn.metrics import pairwise_distances, silhouette_score

    start = time.perf_counter()
    x = np.ascontiguousarray(to_numpy(features), dtype=np.float64)
    low, high = int(k_range[0]), int(k_range[1])
    if x.shape[0] > max_samples:
        rows = np.sort(np.random.default_rng(seed).choice(x.shape[0], size=max_samples, replace=False))
        x = x[rows]
    n = x.shape[0]
    if not 2 <= low < high < n:
        raise ValueError(f"the K range [{low}, {high}] needs 2 <= low < high < {n} (the rows scored)")
    # Ward on unit rows: Euclidean distances order pairs as cosine distances do.
    tree = linkage(x, method="ward")
    distances = pairwise_distances(x, metric="cosine")
    np.fill_diagonal(distances, 0.0)
    ks = np.arange(low, high + 1, dtype=np.int64)
    scores = np.full(ks.shape, -1.0)
    for i, k in enumerate(ks):
        labels = fcluster(tree, t=int(k), criterion="maxclust")
        if 2 <= np.unique(labels).size < n:  # identical rows can leave a cut with fewer clusters
            scores[i] = silhouette_score(distances, labels, metric="precomputed")
    chosen = int(ks[int(np.argmax(scores))])
    return KSweep(ks, scores, chosen, criterion, n, time.perf_counter() - start)


def choose_n_clusters(
    images: ArrayLike,
    counterparts: ArrayLike,
    k_range: tuple[int, int],
    *,
    criterion: Criterion = "counterparts",
    seed: int = 0,
    max_samples: int = AUTO_K_SAMPLES,
) -> KSweep:
    """Choose K in ``k_range`` for (N, d) images and their (N, d) text counterparts (see the module docstring)."""
    features = sweep_features(images, counterparts, criterion)
    return silhouette_sweep(features, k_range, seed=seed, max_samples=max_samples, criterion=criterion)
