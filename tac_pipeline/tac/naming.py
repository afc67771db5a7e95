"""Readable cluster names from the WordNet nouns retrieved for their members (no Dagster, numpy only)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np

#: The name of a cluster no image was assigned to.
EMPTY_NAME = "(empty)"
#: The name of a cluster whose members retrieved no noun at all.
UNNAMED = "(unnamed)"


def cluster_noun_counts(
    clusters: Sequence[int] | np.ndarray, top_nouns: Sequence[str | None], n_clusters: int
) -> list[list[tuple[str, int]]]:
    """For each cluster ``0..n_clusters-1``, its members' ``top_noun`` values with their counts.

    Ordered by count (descending), ties by noun (ascending), so the result is deterministic. Missing nouns
    (``None``) are ignored.
    """
    clusters = np.asarray(clusters, dtype=np.int64)
    if len(clusters) != len(top_nouns):
        raise ValueError(f"{len(clusters)} cluster ids but {len(top_nouns)} nouns: pass one noun per image")
    if len(clusters) and (clusters.min() < 0 or clusters.max() >= n_clusters):
        raise ValueError(f"cluster ids must lie in [0, {n_clusters}), got {clusters.min()}..{clusters.max()}")
    counters: list[Counter] = [Counter() for _ in range(n_clusters)]
    for cluster, noun in zip(clusters.tolist(), top_nouns, strict=True):
        if noun is not None:
            counters[cluster][noun] += 1
    return [sorted(c.items(), key=lambda item: (-item[1], item[0])) for c in counters]


def cluster_word_scores(
    clusters: Sequence[int] | np.ndarray, top_nouns: Sequence[str | None], n_clusters: int
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Class-based TF-IDF (BERTopic's c-TF-IDF) of every noun for every cluster.

    A cluster is one document made of its members' ``top_noun``. For cluster c and noun w,
    ``tf(c, w) = count(c, w) / nouns(c)`` and ``idf(w) = log(1 + A / f(w))``, with ``f(w)`` the count of w over
    all clusters and ``A`` the mean number of nouns per cluster that has any: a noun scores high where it is
    frequent in the cluster and rare in the others.

    Returns:
        the vocabulary (sorted nouns), ``counts`` and ``scores``, both (n_clusters, len(vocabulary)).
    """
    per_cluster = cluster_noun_counts(clusters, top_nouns, n_clusters)
    vocabulary = sorted({noun for cluster in per_cluster for noun, _ in cluster})
    column = {noun: j for j, noun in enumerate(vocabulary)}
    counts = np.zeros((n_clusters, len(vocabulary)), dtype=np.float64)
    for k, cluster in enumerate(per_cluster):
        for noun, count in cluster:
            counts[k, column[noun]] = count
    if not vocabulary:
        return vocabulary, counts, counts.copy()
    totals = counts.sum(axis=1, keepdims=True)
    tf = np.divide(counts, totals, out=np.zeros_like(counts), where=totals > 0)
    average = counts.sum() / max(int((totals > 0).sum()), 1)
    return vocabulary, counts, tf * np.log1p(average / counts.sum(axis=0))


def cluster_names(
    clusters: Sequence[int] | np.ndarray,
    top_nouns: Sequence[str | None],
    n_clusters: int,
    *,
    top: int = 3,
    separator: str = " / ",
) -> list[str]:
    """A distinct name per cluster: the ``top`` nouns that describe it best against the other clusters.

    Each cluster's nouns are its members' ``top_noun``, ranked by c-TF-IDF (:func:`cluster_word_scores`), so a
    noun every cluster shares ranks below the nouns of that cluster alone. The first noun of every name differs
    from cluster to cluster: the first nouns are assigned jointly (Hungarian algorithm on the scores, among the
    nouns each cluster's members retrieved), so two clusters whose most frequent noun is the same each lead with
    a noun of their own. A cluster left without a noun of its own (more clusters than nouns) gets its best noun
    and its id, ``"dog (cluster 4)"``. Ties are broken by count, then alphabetically.

    Args:
        clusters: (N,) cluster id of every image, in ``[0, n_clusters)``.
        top_nouns: (N,) the noun each image retrieved most strongly (``counterparts.top_noun``).
        n_clusters: K; clusters without members are named :data:`EMPTY_NAME`, clusters whose members have no
            noun :data:`UNNAMED`.
        top: how many nouns make a name.

    Returns:
        ``names[k]``, e.g. ``"corgi / shiba / puppy"``.
    """
    from scipy.optimize import linear_sum_assignment  # lazily: scipy.optimize takes ~0.5 s to import

    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    sizes = np.bincount(np.asarray(clusters, dtype=np.int64), minlength=n_clusters)
    vocabulary, counts, scores = cluster_word_scores(clusters, top_nouns, n_clusters)
    # Each cluster's nouns, best first: score, then count, then the noun itself.
    ranked = [
        sorted(
            np.flatnonzero(counts[k]).tolist(),
            key=lambda j, k=k: (-scores[k, j], -counts[k, j], vocabulary[j]),
        )
        for k in range(n_clusters)
    ]
    named = [k for k in range(n_clusters) if ranked[k]]
    lead: dict[int, int] = {}
    if named:
        # Maximise the total score of distinct first nouns; a noun a cluster never retrieved cannot lead it.
        gain = np.where(counts[named] > 0, scores[named] + 1.0, -1e9)
        rows, cols = linear_sum_assignment(gain, maximize=True)
        lead = {named[r]: int(c) for r, c in zip(rows, cols, strict=True) if counts[named[r], c] > 0}
    names = []
    for k in range(n_clusters):
        if not ranked[k]:
            names.append(UNNAMED if sizes[k] else EMPTY_NAME)
            continue
        first = lead.get(k, ranked[k][0])
        words = [first] + [j for j in ranked[k] if j != first][: top - 1]
        name = separator.join(vocabulary[j] for j in words)
        names.append(name if k in lead else f"{name} (cluster {k})")
    return names
