"""Semantic centre count, noun selection (text space), counterpart retrieval, baseline."""

import numpy as np
import pytest
import torch

from tac_pipeline.tac import (
    TextSpace,
    assign_to_centers,
    classify_nouns,
    concat_modalities,
    no_train_baseline,
    retrieve_counterparts,
    select_text_space,
    semantic_center_count,
)

from .conftest import blobs, unit_rows

PAPER_DATASETS = [  # (name, N_tr, K, k_c) from docs/METHOD.md §3
    ("CIFAR-10", 50_000, 10, 167),
    ("CIFAR-20", 50_000, 20, 167),
    ("STL-10", 5_000, 10, 17),
    ("ImageNet-10", 13_000, 10, 43),
    ("ImageNet-Dogs", 19_500, 15, 65),
    ("DTD", 3_760, 47, 141),
    ("UCF-101", 9_537, 101, 303),
    ("ImageNet-1K", 1_281_167, 1000, 4271),
]


@pytest.mark.parametrize(("name", "n_images", "n_clusters", "expected"), PAPER_DATASETS)
def test_semantic_center_count_paper_datasets(name, n_images, n_clusters, expected):
    assert semantic_center_count(n_images, n_clusters) == expected, name


def test_semantic_center_count_edges():
    assert semantic_center_count(5, 2) == 5  # 3K = 6 capped at N
    assert semantic_center_count(600, 2) == 2  # N / K = 300: not small, round(600 / 300)
    assert semantic_center_count(599, 2) == 6  # N / K < 300: 3K
    assert semantic_center_count(750, 1) == 3  # 2.5 rounds half up
    with pytest.raises(ValueError):
        semantic_center_count(0, 3)


def _brute_force_selection(nouns, centers, gamma):
    sim = nouns @ centers.T
    prob = np.exp(sim) / np.exp(sim).sum(axis=1, keepdims=True)
    assigned, conf = prob.argmax(axis=1), prob.max(axis=1)
    chosen = []
    for c in range(centers.shape[0]):
        members = np.flatnonzero(assigned == c)
        chosen.extend(members[np.argsort(-conf[members], kind="stable")][:gamma].tolist())
    return chosen, assigned, conf


class TestSelectTextSpace:
    def test_at_most_gamma_per_centre_ordered_by_confidence(self, rng):
        nouns = unit_rows(rng.standard_normal((500, 12)))
        centers = unit_rows(rng.standard_normal((7, 12)))
        space = select_text_space(nouns, centers, gamma=5)
        assert isinstance(space, TextSpace)
        assert space.noun_indices.dtype == np.int64 and space.center.dtype == np.int64
        assert space.confidence.dtype == np.float32
        assert len(space) <= 5 * 7
        counts = np.bincount(space.center, minlength=7)
        assert counts.max() <= 5
        assert (np.diff(space.center) >= 0).all()  # grouped by centre
        for c in range(7):
            conf = space.confidence[space.center == c]
            assert (np.diff(conf) <= 0).all()  # descending confidence within a centre
        chosen, assigned, conf = _brute_force_selection(
            nouns.astype(np.float64), centers.astype(np.float64), 5
        )
        assert set(space.noun_indices) == set(chosen)
        np.testing.assert_array_equal(space.center, assigned[space.noun_indices])
        np.testing.assert_allclose(space.confidence, conf[space.noun_indices], rtol=1e-5)

    def test_chunking_does_not_change_the_result(self, rng):
        nouns = unit_rows(rng.standard_normal((257, 6)))
        centers = unit_rows(rng.standard_normal((9, 6)))
        a = select_text_space(nouns, centers, gamma=3, chunk_size=10)
        b = select_text_space(torch.from_numpy(nouns), torch.from_numpy(centers), gamma=3, chunk_size=4096)
        np.testing.assert_array_equal(a.noun_indices, b.noun_indices)

    def test_centre_without_nouns_contributes_none(self):
        # All nouns live near +e1 / +e2; the third centre (-e1 - e2) wins no noun.
        nouns = unit_rows(np.array([[1, 0.1, 0], [1, 0.2, 0], [0.1, 1, 0], [0.2, 1, 0.1]], dtype=np.float32))
        centers = unit_rows(np.array([[1, 0, 0], [0, 1, 0], [-1, -1, 0]], dtype=np.float32))
        space = select_text_space(nouns, centers, gamma=5)
        assert set(space.center) == {0, 1}
        np.testing.assert_array_equal(space.centers_without_nouns, [2])
        assert len(space) == 4
        np.testing.assert_array_equal(space.noun_indices, [0, 1, 2, 3])  # higher sim -> higher confidence

    def test_softmax_is_over_centres(self):
        center, conf = classify_nouns(np.eye(2, dtype=np.float32), np.eye(2, dtype=np.float32))
        # sim (1, 0) -> softmax over the two centres = e / (e + 1) = 0.731059.
        np.testing.assert_array_equal(center, [0, 1])
        np.testing.assert_allclose(conf, [0.731059, 0.731059], atol=1e-6)

    def test_width_mismatch(self, rng):
        with pytest.raises(ValueError, match="width"):
            select_text_space(unit_rows(rng.standard_normal((5, 4))), unit_rows(rng.standard_normal((2, 3))))


class TestRetrieval:
    def test_matches_formula_and_is_normalised(self, rng):
        images = unit_rows(rng.standard_normal((50, 8)))
        texts = unit_rows(rng.standard_normal((6, 8)))
        out, top, weight = retrieve_counterparts(images, texts, temperature=0.05, block_size=16, return_top=3)
        logits = images.astype(np.float64) @ texts.T / 0.05
        w = np.exp(logits - logits.max(axis=1, keepdims=True))
        w /= w.sum(axis=1, keepdims=True)
        expected = w @ texts
        expected /= np.linalg.norm(expected, axis=1, keepdims=True)
        np.testing.assert_allclose(out, expected, atol=1e-5)
        order = np.argsort(-w, axis=1, kind="stable")[:, :3]
        np.testing.assert_array_equal(top, order)
        np.testing.assert_allclose(weight, np.take_along_axis(w, order, axis=1), rtol=1e-5, atol=1e-7)
        assert top.shape == weight.shape == (50, 3)
        assert out.dtype == np.float32

    def test_default_temperature_is_nearly_hard(self, rng):
        texts = unit_rows(rng.standard_normal((5, 16)))
        images = unit_rows(texts[[0, 1, 2, 3, 4, 0]] + 0.01 * rng.standard_normal((6, 16)))
        out = retrieve_counterparts(images, texts)
        np.testing.assert_allclose(out, texts[[0, 1, 2, 3, 4, 0]], atol=1e-4)


def test_no_train_baseline_uses_both_halves():
    # Images form 2 groups; counterparts split each group in two: [v, t] has 4 clusters.
    v, yv = blobs(n_per=40, n_blobs=2, dim=6, spread=0.02, seed=0)
    t, yt = blobs(n_per=20, n_blobs=4, dim=6, spread=0.02, seed=1)
    labels = no_train_baseline(v, t, 4, n_iter=30, n_restarts=5)
    assert labels.dtype == np.int64 and labels.shape == (80,)
    assert len(set(zip(labels.tolist(), yt.tolist(), strict=True))) == 4
    with pytest.raises(ValueError, match="differ in shape"):
        no_train_baseline(v, t[:10], 4)


def test_baseline_centres_extend_to_other_rows():
    v, _ = blobs(n_per=30, n_blobs=3, dim=6, spread=0.02, seed=2)
    t, _ = blobs(n_per=30, n_blobs=3, dim=6, spread=0.02, seed=3)
    both = concat_modalities(v * 3.0, t)  # each half renormalised: scale does not matter
    assert both.shape == (90, 12) and both.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(both[:, :6], axis=1), 1.0, atol=1e-6)
    labels, centers = no_train_baseline(v, t, 3, n_iter=20, n_restarts=3, return_centers=True)
    assert centers.shape == (3, 12)
    # The returned centres reproduce the labels when assigning the same rows again.
    np.testing.assert_array_equal(assign_to_centers(both, centers), labels)
    with pytest.raises(ValueError, match="wide"):
        assign_to_centers(v, centers)


def test_a_retrieval_temperature_that_overflows_is_refused_naming_the_setting():
    rng = np.random.default_rng(0)
    images, nouns = unit_rows(rng.standard_normal((20, 8))), unit_rows(rng.standard_normal((6, 8)))
    with pytest.raises(ValueError, match="counterparts are not finite; raise retrieval_temperature"):
        retrieve_counterparts(images, nouns, 1e-300)
    with pytest.raises(ValueError, match="finite and > 0"):
        retrieve_counterparts(images, nouns, float("inf"))
