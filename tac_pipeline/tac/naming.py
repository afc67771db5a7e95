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


def cluster_names(
    clusters: Sequence[int] | np.ndarray,
    top_nouns: Sequence[str | None],
    n_clusters: int,
    *,
    top: int = 3,
    separator: str = " / ",
) -> list[str]:
    """A name per cluster made of the ``top`` most frequent ``top_noun`` of its members.

    Args:
        clusters: (N,) cluster id of every image, in ``[0, n_clusters)``.
        top_nouns: (N,) the noun each image retrieved most strongly (``counterparts.top_noun``).
        n_clusters: K; clusters without members are named :data:`EMPTY_NAME`, clusters whose members have no
            noun :data:`UNNAMED`.
        top: how many nouns make a name.

    Returns:
        ``names[k]``, e.g. ``"dog / puppy / cat"``: most frequent first, ties broken alphabetically.
    """
    if top < 1:
        raise ValueError(f"top must be at least 1, got {top}")
    sizes = np.bincount(np.asarray(clusters, dtype=np.int64), minlength=n_clusters)
    return [
        separator.join(noun for noun, _ in counts[:top]) if counts else (UNNAMED if size else EMPTY_NAME)
        for counts, size in zip(cluster_noun_counts(clusters, top_nouns, n_clusters), sizes, strict=False)
    ]
