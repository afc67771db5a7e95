"""Stable cluster ids across re-clusterings: match new clusters to old ones on the images they share."""

from __future__ import annotations

import numpy as np


def match_cluster_ids(new_labels: np.ndarray, old_labels: np.ndarray, n_clusters: int) -> np.ndarray:
    """Map each new cluster id to the previous id it shares the most images with (Hungarian algorithm).

    Args:
        new_labels: (S,) int cluster ids of the shared images in the new clustering, in [0, n_clusters).
        old_labels: (S,) int ids of the same images in the previous clustering (any non-negative ints).
        n_clusters: K of the new clustering.

    Returns:
        (K,) int64 ``mapping`` with ``mapping[new_id] = stable_id``, always a permutation of ``0..K-1``.
        New clusters that match nothing (K grew, or no shared images) take the smallest ids left free.
    """
    from scipy.optimize import linear_sum_assignment  # lazily: scipy.optimize takes ~0.5 s to import

    new_labels = np.asarray(new_labels, dtype=np.int64)
    old_labels = np.asarray(old_labels, dtype=np.int64)
    if new_labels.shape != old_labels.shape:
        raise ValueError(f"new and old labels differ in shape: {new_labels.shape} vs {old_labels.shape}")
    mapping = np.full(n_clusters, -1, dtype=np.int64)
    # Only ids that still exist (K may have shrunk) can be inherited, so ids stay within 0..K-1.
    inheritable = old_labels < n_clusters
    if inheritable.any():
        shared = np.zeros((n_clusters, n_clusters), dtype=np.int64)
        np.add.at(shared, (new_labels[inheritable], old_labels[inheritable]), 1)
        rows, cols = linear_sum_assignment(shared, maximize=True)
        keep = shared[rows, cols] > 0  # a pairing with nothing in common is no reason to inherit an id
        mapping[rows[keep]] = cols[keep]
    free = iter(sorted(set(range(n_clusters)) - set(mapping[mapping >= 0].tolist())))
    for new_id in np.flatnonzero(mapping < 0):
        mapping[new_id] = next(free)
    return mapping


def relabel_stably(
    new_ids: np.ndarray, new_labels: np.ndarray, old_ids: np.ndarray, old_labels: np.ndarray, n_clusters: int
) -> tuple[np.ndarray, np.ndarray, int]:
    """Renumber ``new_labels`` so that clusters keep the ids they had in the previous clustering.

    Args:
        new_ids, new_labels: (N,) image ids and cluster ids of the new clustering.
        old_ids, old_labels: (P,) image ids and cluster ids of the previous one.
        n_clusters: K of the new clustering.

    Returns:
        (relabelled (N,) int64, mapping (K,) int64, changed) where ``changed`` counts the shared images whose
        stable cluster id differs from their previous one.
    """
    new_ids = np.asarray(new_ids, dtype=object)
    old_ids = np.asarray(old_ids, dtype=object)
    new_labels = np.asarray(new_labels, dtype=np.int64)
    old_labels = np.asarray(old_labels, dtype=np.int64)
    _, new_pos, old_pos = np.intersect1d(new_ids.astype(str), old_ids.astype(str), return_indices=True)
    mapping = match_cluster_ids(new_labels[new_pos], old_labels[old_pos], n_clusters)
    relabelled = mapping[new_labels]
    changed = int((relabelled[new_pos] != old_labels[old_pos]).sum())
    return relabelled, mapping, changed


def cluster_turnover(
    new_ids: np.ndarray,
    stable_labels: np.ndarray,
    old_ids: np.ndarray,
    old_labels: np.ndarray,
    n_clusters: int,
    previous_n_clusters: int,
) -> dict[str, int]:
    """How a stably renumbered clustering (from :func:`relabel_stably`) relates to the previous one.

    A new cluster is *matched* when it kept a previous id and shares images with that previous cluster;
    the other new clusters are *new*, and the previous clusters no new cluster matched are *gone* (so
    ``matched + new`` is the new K, ``n_clusters``, and ``matched + gone`` the previous one). Empty clusters
    count: K is what was asked for, not what the heads happened to fill.

    Returns:
        ``{"previous_n_clusters", "matched", "new", "gone"}``.
    """
    new_ids = np.asarray(new_ids, dtype=object).astype(str)
    old_ids = np.asarray(old_ids, dtype=object).astype(str)
    stable_labels = np.asarray(stable_labels, dtype=np.int64)
    old_labels = np.asarray(old_labels, dtype=np.int64)
    _, new_pos, old_pos = np.intersect1d(new_ids, old_ids, return_indices=True)
    kept = np.unique(stable_labels[new_pos][stable_labels[new_pos] == old_labels[old_pos]])
    return {
        "previous_n_clusters": int(previous_n_clusters),
        "matched": int(kept.size),
        "new": int(n_clusters - kept.size),
        "gone": int(previous_n_clusters - kept.size),
    }
