"""A store that mixes two states of a drop is refused by the next step that reads it, loudly, naming the fix.

The mixed store is built as interleaved runs leave it: the whole graph for the first state of the drop, then
the upstream half again after the drop changed (as a second run would), then the downstream part alone on
what is stored (as the first run's late steps would).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import instance_for_test

from tac_pipeline.defs.assets.lineage import MixedInputsError, check_inputs, lineage, stamp
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_reliability.helpers import (
    NOUN_ASSET,
    new_data_root,
    run_assets,
    snapshot,
    step_failures,
    stored,
)

UPSTREAM = ["image_embeddings", "semantic_centers", "text_space", "counterparts", "knn_graphs"]
DOWNSTREAM = ["trained_heads", "cluster_labels", "metrics"]


@pytest.fixture
def pets(tmp_path):
    root = new_data_root(tmp_path)
    drop = root / "drops" / "pets"
    write_toy_drop(drop, train=4, test=2)
    (drop / "dataset.toml").write_text("[tac]\nepochs = 2\n")
    with instance_for_test() as instance:
        assert run_assets(root, instance, None, [NOUN_ASSET]).success
        assert run_assets(root, instance, "pets").success
        yield root, instance, drop


def _stored_lineage(root, asset):
    return lineage(pq.read_table(stored(root, asset, "pets")))


def test_every_stored_table_records_the_state_it_was_built_from(pets):
    root, _, _ = pets
    images = _stored_lineage(root, "image_embeddings")
    assert images["from"] == {} and len(images["token"]) == 32
    for asset in ["semantic_centers", "text_space", "counterparts", "knn_graphs", *DOWNSTREAM]:
        assert _stored_lineage(root, asset)["from"]["image_embeddings"] == images["token"], asset
    assert (
        _stored_lineage(root, "metrics")["from"]["trained_heads"]
        == _stored_lineage(root, "trained_heads")["token"]
    )


def test_downstream_part_alone_on_a_mixed_store_fails_loudly_and_writes_nothing(pets):
    root, instance, drop = pets
    write_toy_drop(drop / "more", train=2, test=0, seed=7)  # the drop changes: 6 more images
    for image in (drop / "more").rglob("*.png"):
        image.rename(drop / "train" / image.parent.name / f"more_{image.name}")
    assert run_assets(root, instance, "pets", UPSTREAM).success  # the second run's upstream half
    kept = snapshot(root, instance, {a: "pets" for a in ["trained_heads", "cluster_labels", "metrics"]})

    result = run_assets(root, instance, "pets", ["cluster_labels", "metrics"])  # the first run's late steps

    # Selecting no fitted asset makes this an assign: the stored model labels today's images, which is only
    # possible when today's counterparts come from the model's own text space. They do not.
    assert not result.success
    message = step_failures(result)["cluster_labels"]
    assert "MixedInputsError" in message
    assert "trained_heads was built from semantic_centers" in message
    assert "re-materialize everything downstream of semantic_centers for 'pets'" in message
    assert "make cluster DATASET=pets" in message
    assert snapshot(root, instance, {a: "pets" for a in DOWNSTREAM}) == kept  # nothing lost, nothing mixed in

    assert run_assets(root, instance, "pets", DOWNSTREAM).success  # the named fix repairs the store
    images = _stored_lineage(root, "image_embeddings")["token"]
    assert all(_stored_lineage(root, a)["from"]["image_embeddings"] == images for a in DOWNSTREAM)
    assert pq.read_table(stored(root, "cluster_labels", "pets")).num_rows == 24


def test_unchanged_embeddings_keep_their_token_so_nothing_looks_stale(pets):
    root, instance, _ = pets
    before = _stored_lineage(root, "image_embeddings")["token"]
    assert run_assets(root, instance, "pets", ["image_embeddings"]).success  # every row reused
    assert _stored_lineage(root, "image_embeddings")["token"] == before
    assert run_assets(root, instance, "pets", ["cluster_labels", "metrics"]).success


def test_check_inputs_names_the_stale_input_and_skips_tables_without_lineage():
    base = stamp(pa.table({"x": [1, 2]}), {})
    other = stamp(pa.table({"x": [1, 2, 3]}), {})
    built_on_base = stamp(pa.table({"y": [0]}), {"image_embeddings": lineage(base)["token"]})
    assert check_inputs("c", "k", {"image_embeddings": base, "b": built_on_base}) == {
        "b": lineage(built_on_base)["token"],
        "image_embeddings": lineage(base)["token"],
    }
    with pytest.raises(MixedInputsError, match="re-materialize b and everything downstream of it for 'k'"):
        check_inputs("c", "k", {"image_embeddings": other, "b": built_on_base})
    assert check_inputs("c", "k", {"image_embeddings": pa.table({"x": [1]}), "b": built_on_base}) == {
        "b": lineage(built_on_base)["token"],
        "image_embeddings": lineage(base)["token"],
    }
