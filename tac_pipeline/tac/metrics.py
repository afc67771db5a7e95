"""Spec §8: clustering metrics in percent (NMI, ACC after Hungarian matching, ARI).

All three come from one contingency table of (cluster, class) counts. NMI and ARI are scikit-learn's
``normalized_mutual_info_score`` (arithmetic normalisation) and ``adjusted_rand_score``, restated on that table
with scikit-learn's own operations and special cases (the tests compare them on random labellings): importing
``sklearn.metrics`` costs more than a second, which every run that scores its labels would pay, and each of its
two scores would encode the labels again (``np.unique`` over string labels is most of the cost).
"""

from __future__ import annotations

import math

import numpy as np

from tac_pipeline.common.devices import ArrayLike, to_numpy


def _encode(labels: np.ndarray) -> tuple[np.ndarray, int]:
    values, codes = np.unique(labels, return_inverse=True)
    return codes.reshape(-1), values.shape[0]


def contingency(y_true: ArrayLike, y_pred: ArrayLike) -> np.ndarray:
    """(n_clusters, n_classes) int64 counts of images per (predicted cluster, true class)."""
    t, n_classes = _encode(to_numpy(y_true).reshape(-1))
    p, n_clusters = _encode(to_numpy(y_pred).reshape(-1))
    table = np.zeros((n_clusters, n_classes), dtype=np.int64)
    np.add.at(table, (p, t), 1)
    return table


def _accuracy(table: np.ndarray) -> float:
    from scipy.optimize import linear_sum_assignment  # lazily: scipy.optimize takes ~0.5 s to import

    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def clustering_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of images whose cluster maps to their class under the best one-to-one matching
    (Hungarian algorithm). With more clusters than classes the unmatched clusters count as wrong.
    Label values are arbitrary (strings, negative numbers, gaps)."""
    return _accuracy(contingency(y_true, y_pred))


def _entropy(counts: np.ndarray) -> float:
    counts = counts[counts > 0].astype(np.float64)
    total = np.sum(counts)
    return float(-np.sum((counts / total) * (np.log(counts) - math.log(total))))


def _nmi(table: np.ndarray) -> float:
    """``sklearn.metrics.normalized_mutual_info_score(average_method="arithmetic")`` of a contingency table
    (every row and column non-empty)."""
    n_clusters, n_classes = table.shape
    if n_clusters == n_classes == 1:
        return 1.0  # neither labelling splits the data: a perfect match
    rows, cols = np.nonzero(table)
    values = table[rows, cols]
    total = table.sum()
    pi, pj = table.sum(axis=1), table.sum(axis=0)
    if pi.size == 1 or pj.size == 1:
        mi = 0.0
    else:
        log_values = np.log(values)
        share = values / total
        outer = pi.take(rows).astype(np.int64) * pj.take(cols).astype(np.int64)
        log_outer = -np.log(outer) + math.log(pi.sum()) + math.log(pj.sum())
        terms = share * (log_values - math.log(total)) + share * log_outer
        terms = np.where(np.abs(terms) < np.finfo(terms.dtype).eps, 0.0, terms)
        mi = float(np.clip(terms.sum(), 0.0, None))
    if mi == 0:
        return 0.0
    return float(mi / np.mean([_entropy(pj), _entropy(pi)]))


def _ari(table: np.ndarray) -> float:
    """``sklearn.metrics.adjusted_rand_score`` of a contingency table (through its pair confusion matrix)."""
    n = np.int64(table.sum())
    n_c, n_k = table.sum(axis=0), table.sum(axis=1)  # per class, per cluster
    squares = int((table.astype(np.int64) ** 2).sum())
    tp = squares - int(n)
    fp = int((table.T @ n_k).sum()) - squares
    fn = int((table @ n_c).sum()) - squares
    tn = int(n) ** 2 - fp - fn - squares
    if fn == 0 and fp == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / ((tp + fn) * (fn + tn) + (tp + fp) * (fp + tn))


def cluster_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """NMI (arithmetic normalisation), ACC (Hungarian) and ARI, all in percent, as scikit-learn scores them.

    Args:
        y_true: (N,) ground-truth labels, any hashable values.
        y_pred: (N,) cluster labels.

    Returns:
        {"nmi": float, "acc": float, "ari": float}, each in [0, 100] (ARI can be negative).
    """
    t = to_numpy(y_true).reshape(-1)
    p = to_numpy(y_pred).reshape(-1)
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {t.shape[0]} labels but y_pred has {p.shape[0]}")
    if t.shape[0] == 0:
        raise ValueError("cannot score an empty labelling")
    table = contingency(t, p)
    return {"nmi": 100.0 * _nmi(table), "acc": 100.0 * _accuracy(table), "ari": 100.0 * _ari(table)}
