"""Spec §8: clustering metrics in percent (NMI, ACC after Hungarian matching, ARI)."""

from __future__ import annotations

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


def clustering_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of images whose cluster maps to their class under the best one-to-one matching
    (Hungarian algorithm). With more clusters than classes the unmatched clusters count as wrong.
    Label values are arbitrary (strings, negative numbers, gaps)."""
    from scipy.optimize import linear_sum_assignment  # lazily: scipy.optimize takes ~0.5 s to import

    table = contingency(y_true, y_pred)
    rows, cols = linear_sum_assignment(table, maximize=True)
    return float(table[rows, cols].sum() / table.sum())


def cluster_metrics(y_true: ArrayLike, y_pred: ArrayLike) -> dict[str, float]:
    """NMI (scikit-learn, arithmetic normalisation), ACC (Hungarian) and ARI, all in percent.

    Args:
        y_true: (N,) ground-truth labels, any hashable values.
        y_pred: (N,) cluster labels.

    Returns:
        {"nmi": float, "acc": float, "ari": float}, each in [0, 100] (ARI can be negative).
    """
    # Imported here: scikit-learn costs ~1 s to import, paid by every Dagster step process otherwise.
    from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

    t = to_numpy(y_true).reshape(-1)
    p = to_numpy(y_pred).reshape(-1)
    if t.shape[0] != p.shape[0]:
        raise ValueError(f"y_true has {t.shape[0]} labels but y_pred has {p.shape[0]}")
    if t.shape[0] == 0:
        raise ValueError("cannot score an empty labelling")
    return {
        "nmi": 100.0 * float(normalized_mutual_info_score(t, p, average_method="arithmetic")),
        "acc": 100.0 * clustering_accuracy(t, p),
        "ari": 100.0 * float(adjusted_rand_score(t, p)),
    }
