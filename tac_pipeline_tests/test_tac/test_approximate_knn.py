"""Approximate kNN (faiss IVF index): recall against exact, self-exclusion, determinism, method choice."""

import numpy as np
import pytest

from tac_pipeline.tac import knn_inner_product, vectors
from tac_pipeline.tac.vectors import APPROXIMATE_KNN_ABOVE, ivf_list_count, pick_knn_method

from .conftest import unit_rows


def clustered(n: int, dim: int, n_blobs: int, seed: int) -> np.ndarray:
    """Overlapping clusters on the sphere: a query's 50 neighbours spread over several IVF cells."""
    rng = np.random.default_rng(seed)
    centres = unit_rows(rng.standard_normal((n_blobs, dim)))
    labels = rng.integers(0, n_blobs, n)
    return unit_rows(centres[labels] + 0.175 * rng.standard_normal((n, dim)))


def recall(found: np.ndarray, exact: np.ndarray) -> float:
    """Mean fraction of each row's exact neighbours that the approximate search returned."""
    return float(np.mean([np.intersect1d(a, b).size / b.size for a, b in zip(found, exact, strict=True)]))


@pytest.fixture(scope="module")
def cloud() -> tuple[np.ndarray, np.ndarray]:
    x = clustered(20_000, 64, 40, seed=0)
    return x, knn_inner_product(x, 50, method="exact")


def test_recall_against_exact(cloud):
    x, exact = cloud
    found = knn_inner_product(x, 50, method="approximate")
    assert found.shape == (20_000, 50) and found.dtype == np.int64
    # Measured 0.993 with the default nprobe (64 of 512 cells); 0.84 with nprobe = 8.
    assert recall(found, exact) >= 0.95
    assert recall(knn_inner_product(x, 50, method="approximate", nprobe=8), exact) < recall(found, exact)
    assert not (found == np.arange(len(x))[:, None]).any()
    assert all(len(set(row)) == 50 for row in found[::97])
    # Neighbours by decreasing similarity, as the exact path returns them.
    sims = np.einsum("nd,nkd->nk", x[:500], x[found[:500]])
    assert (np.diff(sims, axis=1) <= 1e-6).all()


def test_deterministic_for_a_seed(cloud):
    x, _ = cloud
    a = knn_inner_product(x[:6000], 20, method="approximate", nprobe=4, seed=3)
    b = knn_inner_product(x[:6000], 20, method="approximate", nprobe=4, seed=3)
    np.testing.assert_array_equal(a, b)


def test_duplicates_share_a_cell_and_self_is_dropped():
    # 500 distinct rows, each present 4 times: with a single probe each row must still find its
    # 3 copies (identical vectors land in the same cell, the query's first probe) but not itself.
    rng = np.random.default_rng(1)
    base = unit_rows(rng.standard_normal((500, 16)))
    x = np.tile(base, (4, 1))
    found = knn_inner_product(x, 5, method="approximate", nprobe=1)
    rows = np.arange(len(x))
    assert not (found == rows[:, None]).any()
    copies = {(i, j) for i in rows for j in rows[i % 500 :: 500] if j != i}
    assert all((i, j) in {(i, int(n)) for n in found[i, :3]} for i, j in copies)


def test_too_few_vectors_in_the_scanned_cells_falls_back_to_exact():
    x = unit_rows(np.random.default_rng(2).standard_normal((2000, 8)))
    assert ivf_list_count(2000) == 51  # ~39 rows per cell, fewer than the 101 results asked for
    found = knn_inner_product(x, 100, method="approximate", nprobe=1)
    exact = knn_inner_product(x, 100, method="exact")
    np.testing.assert_array_equal(np.sort(found, axis=1), np.sort(exact, axis=1))


def test_without_self_exclusion_each_row_finds_itself_first(cloud):
    x, _ = cloud
    found = knn_inner_product(x[:3000], 5, method="approximate", exclude_self=False)
    np.testing.assert_array_equal(found[:, 0], np.arange(3000))


def test_list_count():
    assert ivf_list_count(1_281_167) == 4528  # ImageNet-1K: 4 sqrt(N)
    assert ivf_list_count(20_000) == 512  # capped at N / 39
    assert ivf_list_count(10) == 1


class TestMethodChoice:
    def test_auto_is_exact_below_the_threshold(self):
        assert pick_knn_method(APPROXIMATE_KNN_ABOVE, device="cpu") == "exact"
        assert pick_knn_method(APPROXIMATE_KNN_ABOVE + 1, device="cpu") == "approximate"
        assert pick_knn_method(APPROXIMATE_KNN_ABOVE + 1, "exact", device="cpu") == "exact"
        # The torch backend (no faiss, or a GPU without faiss-gpu) is exact whatever N.
        assert pick_knn_method(10**7, device="cpu", backend="torch") == "exact"

    def test_auto_switches_above_a_patched_threshold(self, cloud, monkeypatch):
        x, exact = cloud
        x, exact = x[:3000], knn_inner_product(x[:3000], 10, method="exact")
        auto_below = knn_inner_product(x, 10, nprobe=1)
        np.testing.assert_array_equal(auto_below, exact)
        monkeypatch.setattr(vectors, "APPROXIMATE_KNN_ABOVE", 2999)
        assert pick_knn_method(3000, device="cpu") == "approximate"
        auto_above = knn_inner_product(x, 10, nprobe=1)
        np.testing.assert_array_equal(auto_above, knn_inner_product(x, 10, method="approximate", nprobe=1))
        assert recall(auto_above, exact) < 1.0  # one probe of 76 cells: really the approximate search

    def test_refusals(self, monkeypatch):
        x = unit_rows(np.random.default_rng(3).standard_normal((50, 4)))
        with pytest.raises(ValueError, match="method must be"):
            knn_inner_product(x, 3, method="fast")
        with pytest.raises(ValueError, match="torch backend is exact only"):
            knn_inner_product(x, 3, method="approximate", backend="torch")
        with pytest.raises(ValueError, match="nprobe must be"):
            knn_inner_product(x, 3, method="approximate", nprobe=0)
        monkeypatch.setattr(vectors, "faiss", None)
        with pytest.raises(ValueError, match="pip install faiss-cpu"):
            knn_inner_product(x, 3, method="approximate")
        # Without faiss, auto stays exact (torch) even above the threshold.
        monkeypatch.setattr(vectors, "APPROXIMATE_KNN_ABOVE", 10)
        assert pick_knn_method(50, device="cpu") == "exact"
        assert knn_inner_product(x, 3).shape == (50, 3)
