"""A machine without faiss (the GPU boxes, where faiss-gpu does not fit) still runs TAC via torch."""

from __future__ import annotations

import numpy as np
import pytest

from tac_pipeline.tac import knn_inner_product, spherical_kmeans, vectors


def test_auto_backend_falls_back_to_torch_without_faiss(monkeypatch):
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(3, 8))
    x = np.repeat(centres, 20, axis=0) + 0.05 * rng.normal(size=(60, 8))
    with_faiss = knn_inner_product(x, 5, device="cpu")
    monkeypatch.setattr(vectors, "faiss", None)
    _, labels = spherical_kmeans(x, 3, n_iter=20, n_restarts=2, device="cpu")
    assert sorted(np.bincount(labels).tolist()) == [20, 20, 20]
    without = knn_inner_product(x, 5, device="cpu")
    assert (np.sort(without, axis=1) == np.sort(with_faiss, axis=1)).all()
    with pytest.raises(ValueError, match="pip install faiss-cpu"):
        knn_inner_product(x, 5, device="cpu", backend="faiss")
