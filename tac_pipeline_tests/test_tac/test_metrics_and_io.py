"""cluster_metrics, input validation and device handling."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from tac_pipeline.tac import as_tensor, cluster_metrics, resolve_device, validate_embeddings


class TestClusterMetrics:
    def test_permuted_labels_are_perfect(self):
        y = np.array([0, 0, 1, 1, 2, 2, 3])
        pred = np.array([2, 2, 0, 0, 3, 3, 1])
        assert cluster_metrics(y, pred) == pytest.approx({"nmi": 100.0, "acc": 100.0, "ari": 100.0})

    def test_arbitrary_label_values(self):
        y = np.array(["cat", "cat", "dog", "dog"])
        pred = np.array([-7, -7, 42, 42])
        assert cluster_metrics(y, pred)["acc"] == pytest.approx(100.0)

    def test_hand_worked_accuracy(self):
        # Contingency (cluster x class): cluster 1 = {class 0: 2}, cluster 0 = {class 0: 1, class 1: 3}.
        # Best one-to-one matching: 1 -> 0 (2 right) and 0 -> 1 (3 right): ACC = 5 / 6 = 83.33 %.
        y = np.array([0, 0, 0, 1, 1, 1])
        pred = np.array([1, 1, 0, 0, 0, 0])
        m = cluster_metrics(y, pred)
        assert m["acc"] == pytest.approx(500 / 6)
        assert m["nmi"] == pytest.approx(100 * normalized_mutual_info_score(y, pred))

    def test_more_clusters_than_classes(self):
        # Four singleton clusters, two classes: only two clusters can be matched -> 2 / 4 = 50 %.
        m = cluster_metrics([0, 0, 1, 1], torch.tensor([0, 1, 2, 3]))
        assert m["acc"] == pytest.approx(50.0)
        assert m["ari"] == pytest.approx(0.0)

    @pytest.mark.parametrize("seed", range(12))
    def test_nmi_and_ari_are_scikit_learns(self, seed):
        # Random labellings of every shape: few or many classes and clusters, string classes, one class, one
        # cluster, both single, identical labellings, and independent ones.
        rng = np.random.default_rng(seed)
        n = int(rng.integers(1, 3000))
        classes, clusters = int(rng.integers(1, 30)), int(rng.integers(1, 40))
        y = rng.integers(0, classes, n)
        pred = y.copy() if seed % 4 == 0 else rng.integers(0, clusters, n)
        if seed % 3 == 0:
            y = np.array([f"class{c}" for c in y], dtype=object)
        m = cluster_metrics(y, pred)
        assert m["nmi"] == pytest.approx(100 * normalized_mutual_info_score(y, pred), rel=1e-12, abs=1e-12)
        assert m["ari"] == pytest.approx(100 * adjusted_rand_score(y, pred), rel=1e-12, abs=1e-12)

    @pytest.mark.parametrize(
        ("y", "pred"),
        [
            ([0, 0, 0], [1, 1, 1]),
            ([0, 0, 0], [0, 1, 2]),
            ([0, 1, 2], [5, 5, 5]),
            ([3], [4]),
            ([0, 1], [1, 0]),
        ],
    )
    def test_degenerate_labellings_score_as_scikit_learn(self, y, pred):
        m = cluster_metrics(y, pred)
        assert m["nmi"] == pytest.approx(100 * normalized_mutual_info_score(y, pred))
        assert m["ari"] == pytest.approx(100 * adjusted_rand_score(y, pred))

    def test_length_mismatch(self):
        with pytest.raises(ValueError, match="labels"):
            cluster_metrics([0, 1], [0])


class TestValidation:
    def test_read_only_arrays_are_read_in_place_and_left_unchanged(self):
        import pyarrow as pa

        from tac_pipeline.tac.validation import row_norms

        x = np.array([[3.0, 4.0], [0.0, 2.0], [1.0, 0.0]], dtype=np.float32)
        arrow_backed = pa.array(x.reshape(-1)).to_numpy().reshape(3, 2)  # read-only, as the store gives
        assert not arrow_backed.flags.writeable
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # no "not writable" warning escapes
            out = validate_embeddings(arrow_backed, "x")
            norms = row_norms(arrow_backed)
        np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])
        assert out.flags.writeable and not np.shares_memory(out, arrow_backed)
        np.testing.assert_array_equal(arrow_backed, x)
        np.testing.assert_allclose(norms.norms, [5.0, 2.0, 1.0])

    def test_normalises_numpy_and_torch(self):
        x = np.array([[3.0, 4.0], [0.0, 2.0]])
        out = validate_embeddings(x, "x")
        assert isinstance(out, np.ndarray) and out.dtype == np.float32
        np.testing.assert_allclose(out, [[0.6, 0.8], [0.0, 1.0]])
        out_t = validate_embeddings(torch.tensor(x), "x")
        assert isinstance(out_t, torch.Tensor) and out_t.dtype == torch.float32
        assert x[0, 0] == 3.0  # input untouched

    def test_counts_non_finite_rows(self):
        x = np.ones((6, 3))
        x[1, 0] = np.nan
        x[4, 2] = np.inf
        with pytest.raises(ValueError, match=r"image embeddings: 2 of 6 rows contain non-finite .*rows 1, 4"):
            validate_embeddings(x, "image embeddings")

    def test_counts_zero_rows(self):
        x = np.ones((5, 3))
        x[[0, 2, 3]] = 0
        with pytest.raises(ValueError, match="3 of 5 rows have zero norm"):
            validate_embeddings(x, "nouns")

    def test_rank(self):
        with pytest.raises(ValueError, match="2-D"):
            validate_embeddings(np.ones(3))

    def test_row_rule_sorts_every_row_once(self):
        from tac_pipeline.tac.validation import UNIT_NORM_TOLERANCE, row_norms

        x = np.array(
            [
                [0.6, 0.8],  # unit
                [np.nan, 1.0],  # non-finite (its norm counts the finite value only)
                [0.0, 0.0],  # zero
                [0.0, 1.0 + 2 * UNIT_NORM_TOLERANCE],  # off unit
                [0.0, 1.0 + UNIT_NORM_TOLERANCE / 2],  # unit within the tolerance
            ]
        )
        for matrix in (x, torch.tensor(x)):
            rows = row_norms(matrix)
            assert rows.non_finite.tolist() == [False, True, False, False, False]
            assert rows.zero.tolist() == [False, False, True, False, False]
            assert rows.off_unit.tolist() == [False, False, True, True, False]
            assert rows.sound.tolist() == [True, False, False, False, True]
            assert rows.norms[1] == pytest.approx(1.0)
            assert rows.max_deviation == pytest.approx(1.0)  # the zero row
        assert row_norms(np.zeros((0, 4))).max_deviation == 0.0


class TestDevice:
    def test_auto(self):
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        assert resolve_device("auto").type == expected
        assert resolve_device(None).type == expected
        assert resolve_device("cpu") == torch.device("cpu")

    @pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
    def test_cuda_unavailable_is_an_error(self):
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")

    def test_as_tensor(self):
        t = as_tensor(np.arange(4, dtype=np.float64), "cpu")
        assert t.dtype == torch.float32 and t.device.type == "cpu"
        assert as_tensor(torch.arange(3), None, dtype=torch.int64).dtype == torch.int64


def test_read_only_arrays_are_accepted_without_warning():
    x = np.ones((3, 2), dtype=np.float32)
    x.setflags(write=False)  # e.g. numpy views of Arrow buffers
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert as_tensor(x).shape == (3, 2)
        np.testing.assert_allclose(validate_embeddings(x), np.full((3, 2), 2**-0.5), rtol=1e-6)
