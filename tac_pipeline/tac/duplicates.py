"""Near-duplicate images from neighbour lists: pairs at least ``threshold`` similar, joined into groups.

The pipeline reuses the image kNN graph the fit already computed (``knn_graphs``), so finding duplicates costs
no second search over the fitted images; images outside that graph (another split, images assigned after the
fit) are searched against all images (:func:`neighbour_pairs`).
"""

from __future__ import annotations

import numpy as np

from tac_pipeline.common.devices import ArrayLike, to_numpy

from .validation import validate_embeddings
from .vectors import faiss

#: Neighbours searched for each image outside the fit's kNN graph.
SEARCHED_NEIGHBOURS = 10


def similar_pairs(x: np.ndarray, rows: np.ndarray, neighbours: np.ndarray, threshold: float):
    """The pairs (row, neighbour) of ``neighbours`` (positions into x, -1 for none) whose cosine similarity
    is at least ``threshold``: (i, j) int64 arrays with i != j.

    Each row's neighbours come by decreasing similarity, as every kNN search returns them
    (:func:`~tac_pipeline.tac.vectors.knn_inner_product`, faiss): a row's list is read only until its first
    neighbour below ``threshold``, so a graph of N rows costs about N products, not N x k.
    """
    x = np.asarray(x)
    rows = np.asarray(rows, dtype=np.int64)
    neighbours = np.asarray(neighbours, dtype=np.int64).reshape(len(rows), -1)
    found_i, found_j = [], []
    active = np.arange(len(rows))  # positions into rows whose list may still hold a close neighbour
    for column in range(neighbours.shape[1]):
        if not len(active):
            break
        i, j = rows[active], neighbours[active, column]
        present = j >= 0  # an empty place (-1: none, or an image gone since) is read past
        close = np.zeros(len(active), dtype=bool)
        close[present] = np.einsum("nd,nd->n", x[i[present]], x[j[present]]) >= threshold
        own = j == i  # a list that holds its own row is read past it too
        found_i.append(i[close & ~own])
        found_j.append(j[close & ~own])
        active = active[close | own | ~present]
    if not found_i:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(found_i), np.concatenate(found_j)


def neighbour_pairs(x: np.ndarray, rows: np.ndarray, threshold: float, k: int = SEARCHED_NEIGHBOURS):
    """Pairs at least ``threshold`` similar between ``rows`` of x and every row of x, by an exact search of
    each of those rows' ``k`` nearest rows."""
    rows = np.asarray(rows, dtype=np.int64)
    if not len(rows) or len(x) < 2:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    k = min(k + 1, len(x))
    queries = np.ascontiguousarray(x[rows], dtype=np.float32)
    if faiss is not None:
        _, found = faiss.knn(
            queries, np.ascontiguousarray(x, dtype=np.float32), k, metric=faiss.METRIC_INNER_PRODUCT
        )
    else:  # pragma: no cover - machines without faiss
        found = np.argsort(-(queries @ x.T), axis=1)[:, :k]
    return similar_pairs(x, rows, found, threshold)


def duplicate_groups(n: int, i: ArrayLike, j: ArrayLike) -> np.ndarray:
    """Connected groups of the pairs (i, j) among n images: (n,) int64, -1 for an image in no pair, else its
    group's id, numbered by decreasing size (ties by the group's first image)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    i, j = np.asarray(i, dtype=np.int64), np.asarray(j, dtype=np.int64)
    groups = np.full(n, -1, dtype=np.int64)
    if not len(i):
        return groups
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(n, n))
    _, component = connected_components(graph, directed=False)
    sizes = np.bincount(component)
    paired = np.zeros(n, dtype=bool)
    paired[i] = paired[j] = True
    found = np.unique(component[paired])
    first = np.array([np.flatnonzero(component == c)[0] for c in found])
    order = found[np.lexsort((first, -sizes[found]))]
    renumber = {int(c): g for g, c in enumerate(order)}
    groups[paired] = [renumber[int(c)] for c in component[paired]]
    return groups


def find_duplicates(
    embeddings: ArrayLike,
    threshold: float,
    *,
    graph_rows: np.ndarray | None = None,
    graph: np.ndarray | None = None,
) -> np.ndarray:
    """Near-duplicate groups of every row of ``embeddings`` (N, d): (N,) int64 group ids, -1 for none.

    Args:
        threshold: cosine similarity from which two images are near-duplicates.
        graph_rows, graph: a kNN graph already computed: ``graph[r]`` holds the neighbours (positions into
            embeddings, -1 for none) of row ``graph_rows[r]``. The other rows are searched
            (:func:`neighbour_pairs`).
    """
    x = to_numpy(validate_embeddings(embeddings, "embeddings"))
    n = len(x)
    covered = np.zeros(n, dtype=bool)
    pairs_i, pairs_j = [], []
    if graph is not None and graph_rows is not None and len(graph_rows):
        i, j = similar_pairs(x, graph_rows, graph, threshold)
        pairs_i.append(i)
        pairs_j.append(j)
        covered[np.asarray(graph_rows, dtype=np.int64)] = True
    i, j = neighbour_pairs(x, np.flatnonzero(~covered), threshold)
    pairs_i.append(i)
    pairs_j.append(j)
    return duplicate_groups(n, np.concatenate(pairs_i), np.concatenate(pairs_j))
