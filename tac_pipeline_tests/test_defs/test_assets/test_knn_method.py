"""``knn_graphs``'s ``knn_method`` config: passed to the search, recorded in the output metadata."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from dagster import build_asset_context

from tac_pipeline.defs.assets.training import KnnConfig, knn_graphs, shared_neighbour_fraction
from tac_pipeline.defs.resources.compute import ComputeDeviceResource
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.tac import vectors


def tables(n: int, dim: int = 16) -> tuple[pa.Table, pa.Table]:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(n, dim)).astype(np.float32)
    t = v + 0.3 * rng.normal(size=(n, dim)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    ids = pa.array([f"{i:05d}.png" for i in range(n)])
    images = pa.table({"image_id": ids, "split": pa.array(["all"] * n), "embedding": list(v)})
    return images, pa.table({"image_id": ids, "counterpart": list(t)})


def run(tmp_path, config: KnnConfig, n: int = 400):
    (tmp_path / "drops" / "toy").mkdir(parents=True)
    images, parts = tables(n)
    context = build_asset_context(partition_key="toy")
    table = knn_graphs(
        context,
        config,
        images,
        parts,
        TacDataResource(data_dir=str(tmp_path)),
        ComputeDeviceResource(device="cpu"),
    )
    return table, context.get_output_metadata("result")


@pytest.mark.parametrize(
    ("method", "search"), [("auto", "exact"), ("exact", "exact"), ("approximate", "approximate")]
)
def test_method_reaches_the_search_and_the_metadata(tmp_path, method, search):
    table, md = run(tmp_path, KnnConfig(n_neighbors=10, knn_method=method))
    assert table.num_rows == 400
    assert md["knn_method"] == method and md["knn_search"] == search and md["n_neighbors"] == 10


def test_auto_goes_approximate_above_the_threshold(tmp_path, monkeypatch):
    monkeypatch.setattr(vectors, "APPROXIMATE_KNN_ABOVE", 399)
    _, md = run(tmp_path, KnnConfig(n_neighbors=10))
    assert md["knn_method"] == "auto" and md["knn_search"] == "approximate"


def test_shared_neighbour_fraction_in_blocks():
    rng = np.random.default_rng(1)
    a, b = rng.integers(0, 30, (1000, 7)), rng.integers(0, 30, (1000, 7))
    expected = (a[:, :, None] == b[:, None, :]).any(axis=2).sum(axis=1).mean() / 7
    assert shared_neighbour_fraction(a, b, rows_per_block=64) == pytest.approx(expected)
