"""Near-duplicates: planted exact and near copies are grouped, distinct images are not."""

import numpy as np

from tac_pipeline.tac import find_duplicates, knn_inner_product

from .planted_data import unit


def _planted(seed: int = 0):
    rng = np.random.default_rng(seed)
    base = unit(rng.normal(size=(200, 64)))
    exact = base[[3, 3]]  # two exact copies of image 3
    near = unit(base[[10, 10, 50]] + 0.02 * rng.normal(size=(3, 64)))  # near copies of 10 (twice) and 50
    return np.concatenate([base, exact, near])  # rows 200, 201 copy 3; 202, 203 copy 10; 204 copies 50


def test_exact_and_near_copies_are_grouped_and_distinct_images_are_not():
    x = _planted()
    groups = find_duplicates(x, 0.95)
    assert groups[3] == groups[200] == groups[201] >= 0
    assert groups[10] == groups[202] == groups[203] >= 0
    assert groups[50] == groups[204] >= 0
    assert len({groups[3], groups[10], groups[50]}) == 3
    others = np.setdiff1d(np.arange(len(x)), [3, 200, 201, 10, 202, 203, 50, 204])
    assert (groups[others] == -1).all()
    # The three-member groups come first (by size, then first image), the pair last.
    assert groups[3] == 0 and groups[10] == 1 and groups[50] == 2


def test_a_knn_graph_already_computed_gives_the_same_groups():
    x = _planted(1)
    rows = np.arange(0, len(x), 2)  # the "fit": every other row, with its kNN graph among those rows
    local = knn_inner_product(x[rows], 5)
    graph = rows[local]  # positions into x
    with_graph = find_duplicates(x, 0.95, graph_rows=rows, graph=graph)
    assert (with_graph == find_duplicates(x, 0.95)).all()
    assert (find_duplicates(x, 0.9999) >= 0).sum() == 3  # only the exact copies of image 3 and it


def _every_pair_above(x, rows, neighbours, threshold):
    """Every (row, neighbour) of the lists at least ``threshold`` similar, read to the end of each list."""
    pairs = set()
    for i, listed in zip(rows, neighbours, strict=True):
        pairs |= {(int(i), int(j)) for j in listed if j >= 0 and j != i and x[i] @ x[j] >= threshold}
    return pairs


def test_reading_each_list_until_its_first_distant_neighbour_finds_every_close_pair():
    from tac_pipeline.tac.duplicates import similar_pairs

    rng = np.random.default_rng(3)
    base = unit(rng.normal(size=(300, 32)))
    # Clumps of 2 to 6 near copies, so that close neighbours fill several places of a list.
    copies = [unit(base[k] + 0.03 * rng.normal(size=(int(rng.integers(1, 6)), 32))) for k in range(0, 60, 3)]
    x = np.concatenate([base, *copies]).astype(np.float32)
    rows = np.arange(len(x))
    neighbours = knn_inner_product(x, 8, exclude_self=False)  # holds each row itself, usually first
    neighbours[::7, 1] = -1  # and places emptied (images gone since the fit) inside the lists
    for threshold in (0.9, 0.97, 0.995):
        i, j = similar_pairs(x, rows, neighbours, threshold)
        assert set(zip(i.tolist(), j.tolist(), strict=True)) == _every_pair_above(
            x, rows, neighbours, threshold
        )
        assert (i != j).all()
