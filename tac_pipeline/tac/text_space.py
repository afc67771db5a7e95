"""Spec §3-§5: semantic centre count, text space (noun selection), counterpart retrieval, and the
training-free baseline built on them."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from tac_pipeline.common.devices import ArrayLike, DeviceLike, as_tensor, resolve_device

from .params import DEFAULTS
from .validation import validate_embeddings
from .vectors import Backend, _rows_per_block, spherical_kmeans

# Images per semantic centre (spec §3): k_c = round(N / 300).
IMAGES_PER_CENTER = 300


def semantic_center_count(n_images: int, n_clusters: int) -> int:
    """Number of semantic centres k_c for N fitting images and K target clusters (spec §3).

    k_c = round(N / 300), or 3·K when the average class is small (N / K < 300); never more
    than N. Rounds halves up, with integer arithmetic so the eight paper datasets give exactly
    167, 167, 17, 43, 65, 141, 303 and 4271.
    """
    if n_images < 1 or n_clusters < 1:
        raise ValueError(f"n_images and n_clusters must be >= 1, got {n_images} and {n_clusters}")
    if n_images < IMAGES_PER_CENTER * n_clusters:  # N / K < 300, compared without division
        count = 3 * n_clusters
    else:
        count = (n_images + IMAGES_PER_CENTER // 2) // IMAGES_PER_CENTER
    return int(max(1, min(count, n_images)))


@dataclass(frozen=True)
class TextSpace:
    """The selected nouns (spec §4), M <= gamma * n_centers rows, grouped by semantic centre.

    Attributes:
        noun_indices: (M,) int64, row numbers into the full noun embedding matrix.
        center: (M,) int64, the semantic centre each noun was classified into.
        confidence: (M,) float32, the noun's maximum softmax probability over centres.
        n_centers: number of semantic centres k_c (centres without nouns are simply absent).
        gamma: nouns kept per centre at most.
    Rows are ordered by centre, then by decreasing confidence (ties by noun index).
    """

    noun_indices: np.ndarray
    center: np.ndarray
    confidence: np.ndarray
    n_centers: int
    gamma: int

    def __len__(self) -> int:
        return int(self.noun_indices.shape[0])

    @property
    def centers_without_nouns(self) -> np.ndarray:
        """(c,) int64 ids of the centres that received no noun at all."""
        return np.setdiff1d(np.arange(self.n_centers, dtype=np.int64), self.center)


def classify_nouns(
    noun_embeddings: ArrayLike,
    centers: ArrayLike,
    *,
    device: DeviceLike = None,
    chunk_size: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Assign every noun to a semantic centre (spec §4).

    P = softmax over the k_c centres of sim(t_i, s_l) at temperature 1; each noun goes to its
    argmax and its confidence is that maximum probability.

    Args:
        noun_embeddings: (M_all, d).  centers: (k_c, d).
        chunk_size: nouns per block, so 82,115 nouns x 4,271 centres never sit in memory at once;
            None sizes blocks to about 256 MiB of similarities.

    Returns:
        center (M_all,) int64 and confidence (M_all,) float32 numpy arrays.
    """
    dev = resolve_device(device)
    nouns = as_tensor(validate_embeddings(as_tensor(noun_embeddings, dev), "noun embeddings"), dev)
    cents = as_tensor(validate_embeddings(as_tensor(centers, dev), "semantic centres"), dev)
    if nouns.shape[1] != cents.shape[1]:
        raise ValueError(f"noun width {nouns.shape[1]} differs from centre width {cents.shape[1]}")
    center = torch.empty(nouns.shape[0], dtype=torch.int64, device=dev)
    confidence = torch.empty(nouns.shape[0], dtype=torch.float32, device=dev)
    rows = _rows_per_block(cents.shape[0], chunk_size)
    for start in range(0, nouns.shape[0], rows):
        stop = min(start + rows, nouns.shape[0])
        prob = torch.softmax(nouns[start:stop] @ cents.T, dim=1)  # across centres, per noun
        confidence[start:stop], center[start:stop] = prob.max(dim=1)
    return center.cpu().numpy(), confidence.cpu().numpy()


def select_text_space(
    noun_embeddings: ArrayLike,
    centers: ArrayLike,
    gamma: int = DEFAULTS.gamma,
    *,
    device: DeviceLike = None,
    chunk_size: int | None = None,
) -> TextSpace:
    """Build the text space: per semantic centre, its ``gamma`` most confident nouns (spec §4).

    Args:
        noun_embeddings: (M_all, d) WordNet noun embeddings.
        centers: (k_c, d) semantic centres from :func:`spherical_kmeans`.
        gamma: nouns kept per centre (spec: 5).

    Returns:
        TextSpace with M <= gamma * k_c nouns ordered by centre, then decreasing confidence.
    """
    if gamma < 1:
        raise ValueError(f"gamma must be >= 1, got {gamma}")
    center, confidence = classify_nouns(noun_embeddings, centers, device=device, chunk_size=chunk_size)
    noun_ids = np.arange(center.shape[0], dtype=np.int64)
    # Sort by centre, then confidence descending, then noun id (a deterministic tie-break);
    # lexsort's last key is the primary one.
    order = np.lexsort((noun_ids, -confidence.astype(np.float64), center))
    sorted_center = center[order]
    # Rank of each noun inside its centre's group = position minus the group's first position.
    group_start = np.searchsorted(sorted_center, sorted_center, side="left")
    rank = np.arange(order.shape[0]) - group_start
    keep = order[rank < gamma]
    return TextSpace(
        noun_indices=keep.astype(np.int64),
        center=center[keep].astype(np.int64),
        confidence=confidence[keep].astype(np.float32),
        n_centers=int(centers.shape[0]),
        gamma=int(gamma),
    )


def retrieve_counterparts(
    image_embeddings: ArrayLike,
    text_embeddings: ArrayLike,
    temperature: float = DEFAULTS.retrieval_temperature,
    *,
    device: DeviceLike = None,
    block_size: int | None = None,
    return_top: int = 0,
) -> np.ndarray | tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Soft-retrieve each image's text counterpart from the text space (spec §5).

    weights = softmax_j(sim(v_i, t_j) / temperature) over the M selected nouns;
    counterpart_i = normalise(sum_j weights_j t_j).

    Args:
        image_embeddings: (N, d).  text_embeddings: (M, d), the text space's nouns.
        temperature: retrieval temperature (spec: 0.005, nearly hard).
        block_size: images per block; None sizes blocks to about 256 MiB of weights.
        return_top: also return each image's ``return_top`` most weighted nouns (at most M), for display: why
            an image is where it is.

    Returns:
        counterparts (N, d) float32 numpy, L2-normalised; with ``return_top`` also
        top_nouns (N, return_top) int64 (rows into ``text_embeddings``) and top_weights (N, return_top)
        float32, by decreasing weight.
    """
    if not math.isfinite(temperature) or temperature <= 0:
        raise ValueError(f"retrieval temperature must be finite and > 0, got {temperature}")
    dev = resolve_device(device)
    images = as_tensor(validate_embeddings(as_tensor(image_embeddings, dev), "image embeddings"), dev)
    texts = as_tensor(validate_embeddings(as_tensor(text_embeddings, dev), "text space embeddings"), dev)
    if images.shape[1] != texts.shape[1]:
        raise ValueError(f"image width {images.shape[1]} differs from text width {texts.shape[1]}")
    n = images.shape[0]
    out = torch.empty_like(images)
    shown = min(int(return_top), texts.shape[0])
    top_noun = torch.empty((n, shown), dtype=torch.int64, device=dev)
    top_weight = torch.empty((n, shown), dtype=torch.float32, device=dev)
    rows = _rows_per_block(texts.shape[0], block_size)
    for start in range(0, n, rows):
        stop = min(start + rows, n)
        weights = torch.softmax(images[start:stop] @ texts.T / temperature, dim=1)
        out[start:stop] = torch.nn.functional.normalize(weights @ texts, dim=1)
        if shown:
            top_weight[start:stop], top_noun[start:stop] = weights.topk(shown, dim=1)
    counterparts = out.cpu().numpy()
    if not np.isfinite(counterparts).all():
        raise ValueError(
            f"retrieval temperature {temperature:g} is too small for float32: the retrieval softmax overflowed "
            f"and the counterparts are not finite; raise retrieval_temperature (default {DEFAULTS.retrieval_temperature:g})"
        )
    if return_top:
        return counterparts, top_noun.cpu().numpy(), top_weight.cpu().numpy()
    return counterparts


def concat_modalities(image_embeddings: ArrayLike, counterparts: ArrayLike) -> np.ndarray:
    """[v_i, counterpart_i]: (N, d) and (N, d) -> (N, 2d) float32 numpy.

    Each half is L2-normalised first, as the original does, so image and text weigh equally;
    the rows have norm sqrt(2), which spherical k-means and cosine assignment ignore.
    """
    v = validate_embeddings(as_tensor(image_embeddings, "cpu"), "image embeddings")
    t = validate_embeddings(as_tensor(counterparts, "cpu"), "counterparts")
    if v.shape != t.shape:
        raise ValueError(
            f"image embeddings {tuple(v.shape)} and counterparts {tuple(t.shape)} differ in shape"
        )
    return torch.cat([v, t], dim=1).numpy()


def no_train_baseline(
    image_embeddings: ArrayLike,
    counterparts: ArrayLike,
    n_clusters: int,
    *,
    seed: int = DEFAULTS.seed,
    n_iter: int = DEFAULTS.kmeans_iter,
    n_restarts: int = DEFAULTS.baseline_restarts,
    device: DeviceLike = None,
    backend: Backend = "auto",
    return_centers: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Training-free TAC ("TAC no train", spec §5): spherical k-means on [v_i, counterpart_i].

    Args:
        image_embeddings: (N, d).  counterparts: (N, d) from :func:`retrieve_counterparts`.
        n_clusters: K.
        return_centers: also return the (K, 2d) centres, e.g. to label other rows with
            ``assign_to_centers(concat_modalities(v, t), centers)``.

    Returns:
        labels (N,) int64 numpy; with ``return_centers`` the tuple (labels, centres (K, 2d) float32).
    """
    centers, labels = spherical_kmeans(
        concat_modalities(image_embeddings, counterparts),
        n_clusters,
        n_iter=n_iter,
        n_restarts=n_restarts,
        seed=seed,
        device=device,
        backend=backend,
    )
    return (labels, centers) if return_centers else labels
