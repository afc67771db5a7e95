"""Stable cluster ids: the Hungarian matching of a new clustering onto the previous one."""

from __future__ import annotations

import numpy as np
import pytest

from tac_pipeline.tac import cluster_turnover, match_cluster_ids, relabel_stably


def test_a_pure_renumbering_is_undone():
    old = np.array([0, 0, 1, 1, 2, 2])
    new = np.array([2, 2, 0, 0, 1, 1])  # same partition, other numbers
    ids = np.array([f"img{i}" for i in range(6)])
    relabelled, mapping, changed = relabel_stably(ids, new, ids, old, 3)
    assert relabelled.tolist() == old.tolist()
    assert mapping.tolist() == [1, 2, 0] and changed == 0


def test_matching_maximises_shared_images_and_counts_moves():
    # new cluster 0 holds 3 of old-1's images and 1 of old-0's: it inherits id 1 (3 shared beats 1).
    old = np.array([0, 0, 0, 1, 1, 1])
    new = np.array([1, 1, 0, 0, 0, 0])
    relabelled, mapping, changed = relabel_stably(np.arange(6), new, np.arange(6), old, 2)
    assert mapping.tolist() == [1, 0]
    assert relabelled.tolist() == [0, 0, 1, 1, 1, 1]
    assert changed == 1  # image 2 moved from cluster 0 to cluster 1


def test_added_images_and_new_clusters_take_free_ids():
    old_ids = np.array(["a", "b", "c", "d"])
    old = np.array([0, 0, 1, 1])
    new_ids = np.array(["d", "c", "b", "a", "e", "f"])  # other order, two images added
    new = np.array([0, 0, 2, 2, 1, 1])  # K grew to 3; new cluster 1 holds only the additions
    relabelled, mapping, changed = relabel_stably(new_ids, new, old_ids, old, 3)
    assert relabelled.tolist() == [1, 1, 0, 0, 2, 2]
    assert sorted(mapping.tolist()) == [0, 1, 2] and changed == 0


def test_ids_stay_in_range_when_k_shrinks():
    old = np.array([0, 1, 2, 2])
    mapping = match_cluster_ids(np.array([1, 0, 1, 1]), old, 2)
    assert sorted(mapping.tolist()) == [0, 1]  # old id 2 cannot survive with K = 2


def test_no_previous_images_in_common_gives_identity_numbering():
    mapping = match_cluster_ids(np.array([], dtype=np.int64), np.array([], dtype=np.int64), 3)
    assert mapping.tolist() == [0, 1, 2]


@pytest.mark.parametrize(
    ("new_ids", "new", "k", "expected"),
    [
        # Cluster 2 splits in two and a fourth cluster appears among added images: K goes from 3 to 5.
        (np.arange(12), [0, 0, 0, 1, 1, 1, 2, 2, 3, 4, 4, 4], 5, (3, 2, 0)),
        # K shrinks from 3 to 2: clusters 1 and 2 merge; one previous cluster is gone.
        (np.arange(9), [0, 0, 0, 1, 1, 1, 1, 1, 1], 2, (2, 0, 1)),
    ],
)
def test_turnover_counts_matched_new_and_gone_clusters(new_ids, new, k, expected):
    old_ids, old = np.arange(9), np.array([0, 0, 0, 1, 1, 1, 2, 2, 2])
    stable, _, _ = relabel_stably(new_ids, np.array(new), old_ids, old, k)
    matched, added, gone = expected
    assert cluster_turnover(new_ids, stable, old_ids, old, k, 3) == {
        "previous_n_clusters": 3,
        "matched": matched,
        "new": added,
        "gone": gone,
    }
