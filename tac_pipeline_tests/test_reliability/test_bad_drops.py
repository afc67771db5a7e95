"""Bad drops through the asset graph: empty, one class, identical images, too many clusters, a broken
``dataset.toml``, unsafe folder names and malformed bring-your-own embeddings.

Each failure must name its cause and the fix, and must not cost anything already stored.
"""

from __future__ import annotations

import os
import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import instance_for_test

from tac_pipeline.common.tables import column_matrix
from tac_pipeline.drops.keys import PARTITION_KEY_PATTERN, InvalidDatasetKeyError, validate_dataset_key
from tac_pipeline.drops.listing import discover_dataset_keys
from tac_pipeline.store.layout import skipped_files_report
from tac_pipeline_tests.test_encoders.oddfiles import noise
from tac_pipeline_tests.test_reliability.conftest import IDENTICAL
from tac_pipeline_tests.test_reliability.helpers import (
    new_data_root,
    run_assets,
    snapshot,
    step_failures,
    stored,
    write_byo,
)

FIRST_TWO = ["image_embeddings", "semantic_centers"]


def _image_drop(folder, classes=("a", "b"), per_class=3, seed=0):
    for c, label in enumerate(classes):
        (folder / label).mkdir(parents=True)
        for i in range(per_class):
            noise((12, 12), seed=seed + 10 * c + i).save(folder / label / f"{i}.png")


@pytest.fixture
def root(tmp_path):
    return new_data_root(tmp_path, vocabulary=False)


# ------------------------------------------------------------------------------------------------------------
# drops with too little in them
# ------------------------------------------------------------------------------------------------------------


def test_empty_drop_fails_clearly_and_loses_nothing(root):
    drop = root / "drops" / "pets"
    _image_drop(drop)
    (root / "drops" / "fresh").mkdir()
    with instance_for_test() as instance:
        assert run_assets(root, instance, "pets", ["image_embeddings"]).success
        before = snapshot(root, instance, {"image_embeddings": "pets"})
        for label in ("a", "b"):
            shutil.rmtree(drop / label)  # the drop is emptied
        failed = run_assets(root, instance, "pets", ["image_embeddings"])
        assert not failed.success
        message = step_failures(failed)["image_embeddings"]
        assert "has no readable images" in message and "embeddings.parquet" in message
        assert snapshot(root, instance, {"image_embeddings": "pets"}) == before

        never_filled = run_assets(root, instance, "fresh", ["image_embeddings"])
        assert "has no readable images" in step_failures(never_filled)["image_embeddings"]
        assert not stored(root, "image_embeddings", "fresh").exists()


def test_drop_with_one_class_asks_for_n_clusters(root):
    _image_drop(root / "drops" / "cats", classes=("cat",), per_class=5)
    with instance_for_test() as instance:
        failed = run_assets(root, instance, "cats", FIRST_TWO)
    message = step_failures(failed)["semantic_centers"]
    assert "set n_clusters" in message and "one label folder" in message and "dataset.toml" in message
    assert pq.read_table(stored(root, "image_embeddings", "cats")).num_rows == 5  # the embeddings are kept


def test_more_clusters_than_images_is_a_value_error_naming_the_fix(root):
    drop = root / "drops" / "tiny"
    _image_drop(drop, per_class=2)
    (drop / "dataset.toml").write_text("n_clusters = 10\n")
    with instance_for_test() as instance:
        failed = run_assets(root, instance, "tiny", FIRST_TWO)
    message = step_failures(failed)["semantic_centers"]
    assert message.count("ValueError") >= 1
    assert "asks for 10 clusters but has only 4 images" in message
    assert "lower n_clusters in dataset.toml or add images" in message


def test_identical_images_cluster_together_without_crashing(world):
    """Decided behaviour: the graph completes; identical inputs get identical outputs, so every image lands in
    the same cluster under every method and the scores are those of a constant prediction (NMI = ARI = 0)."""
    assert step_failures(world.identical_result) == {}
    labels = pq.read_table(stored(world.root, "cluster_labels", IDENTICAL))
    assert labels.num_rows == 12
    for column in ("cluster", "cluster_text", "cluster_mean", "cluster_no_train"):
        assert len(set(labels[column].to_pylist())) == 1, column
    knn = pq.read_table(stored(world.root, "knn_graphs", IDENTICAL))
    neighbours = column_matrix(knn, "neighbors_image", dtype=np.int64)
    assert neighbours.shape == (12, 11)  # all other duplicates, never the image itself
    assert not (neighbours == knn["fit_index"].to_numpy()[:, None]).any()
    metrics = pq.read_table(stored(world.root, "metrics", IDENTICAL)).to_pandas()
    assert np.isfinite(metrics[["nmi", "acc", "ari"]].to_numpy(dtype=float)).all()
    assert (metrics["nmi"].abs() < 1e-9).all() and (metrics["ari"].abs() < 1e-9).all()
    np.testing.assert_allclose(metrics["acc"], 100 / 3)


# ------------------------------------------------------------------------------------------------------------
# ambiguous layouts
# ------------------------------------------------------------------------------------------------------------


def _embedded(root, key: str):
    """Materialize ``image_embeddings`` of drop ``key``: the stored table and the recorded metadata."""
    with instance_for_test() as instance:
        result = run_assets(root, instance, key, ["image_embeddings"])
        assert result.success, step_failures(result)
        metadata = result.asset_materializations_for_node("image_embeddings")[0].metadata
    return pq.read_table(stored(root, "image_embeddings", key)), {k: v.value for k, v in metadata.items()}


def test_a_class_folder_named_train_is_a_class_and_the_reading_is_recorded(root):
    drop = root / "drops" / "cifarish"
    _image_drop(drop, classes=("dog", "cat", "train"), per_class=10)
    table, metadata = _embedded(root, "cifarish")
    assert table.num_rows == 30  # 10 before: dog/ and cat/ were skipped silently as "outside the splits"
    assert sorted(set(table["label"].to_pylist())) == ["cat", "dog", "train"]
    assert set(table["split"].to_pylist()) == {None}
    assert metadata["layout"] == "classes" and metadata["skipped"] == 0
    assert "'train' is a class" in metadata["layout_notes"]


def test_an_in_drop_folder_symlink_counts_each_image_once_under_its_own_label(root):
    drop = root / "drops" / "aliased"
    _image_drop(drop, classes=("dog", "cat"), per_class=3)
    os.symlink("../dog", drop / "cat" / "alias")  # the dog images again, under cat/
    table, metadata = _embedded(root, "aliased")
    assert table.num_rows == 6  # 9 before, 3 of them twice under two labels
    labels = dict(zip(table["image_id"].to_pylist(), table["label"].to_pylist(), strict=True))
    assert all(labels[f"dog/{i}.png"] == "dog" for i in range(3))
    assert not any(image_id.startswith("cat/alias/") for image_id in labels)
    assert metadata["skipped"] == 1 and "counted once" in metadata["skipped_files"]
    report = pq.read_table(skipped_files_report("aliased", root)).to_pylist()
    assert [row["file"] for row in report] == ["cat/alias"]  # the folder, reported once


# ------------------------------------------------------------------------------------------------------------
# dataset.toml
# ------------------------------------------------------------------------------------------------------------


def _settings_failure(root, toml: str) -> str:
    drop = root / "drops" / "conf"
    drop.mkdir()
    write_byo(drop / "embeddings.parquet")
    (drop / "dataset.toml").write_text(toml)
    with instance_for_test() as instance:
        failed = run_assets(root, instance, "conf", FIRST_TWO)
    message = step_failures(failed)["semantic_centers"]
    assert str(drop / "dataset.toml") in message
    return message


def test_dataset_toml_with_a_wrong_type_names_the_field(root):
    message = _settings_failure(root, 'n_clusters = "three"\n[tac]\nepochs = 2.5\n')
    assert "field 'n_clusters'" in message and "'three'" in message
    assert "field 'tac.epochs'" in message


def test_dataset_toml_with_an_unknown_key_names_the_field(root):
    message = _settings_failure(root, "n_cluster = 3\n[tac]\ngama = 5\n")
    assert "unknown field 'n_cluster'" in message and "unknown field 'tac.gama'" in message
    assert "allowed: n_clusters" in message  # and what would have been right


# ------------------------------------------------------------------------------------------------------------
# drop folder names
# ------------------------------------------------------------------------------------------------------------

UNSAFE_NAMES = {
    "dotdot": "..",
    "traversal": "../x",
    "slash": "a/b",
    "absolute": "/etc",
    "hidden": ".hidden",
    "empty": "",
    "space": "a b",
    "too-long": "x" * 65,
    "backslash": "a\\b",
    "inner-dotdot": "a..b",
    "leading-dash": "-x",
    "non-ascii": "caf\u00e9",
    "nul": "a\x00b",
    "newline": "a\n",
}


@pytest.mark.parametrize("name", list(UNSAFE_NAMES.values()), ids=list(UNSAFE_NAMES))
def test_unsafe_drop_folder_name_is_rejected_with_the_pattern(name):
    with pytest.raises(InvalidDatasetKeyError) as info:
        validate_dataset_key(name)
    assert PARTITION_KEY_PATTERN in str(info.value)


def test_drop_scan_registers_only_safe_folder_names(root, tmp_path):
    drops = root / "drops"
    for name in ("good-1.0_x", "bad name", "-lead", "x" * 65, "a..b", ".hidden"):
        (drops / name).mkdir()
    os.mkdir(os.path.join(os.fsencode(drops), b"caf\xe9"))
    (tmp_path / "elsewhere").mkdir()
    os.symlink(tmp_path / "elsewhere", drops / "linked")  # a folder link is not a drop
    valid, rejected = discover_dataset_keys(root)
    assert valid == ["good-1.0_x"]
    assert sorted(rejected) == sorted(["bad name", "-lead", "x" * 65, "a..b", "caf\udce9"])


def test_unsafe_partition_key_never_reaches_the_file_system(root):
    """A key added through the UI or the API, not the drop scan: refused before it is joined to a path,
    even though ``drops/../escape`` exists and holds images."""
    _image_drop(root / "escape")
    with instance_for_test() as instance:
        failed = run_assets(root, instance, "../escape", ["image_embeddings"])
    message = step_failures(failed)["image_embeddings"]
    assert "not a valid dataset name" in message and PARTITION_KEY_PATTERN in message
    assert not list(root.parent.rglob("*.parquet"))


# ------------------------------------------------------------------------------------------------------------
# bring-your-own embeddings.parquet
# ------------------------------------------------------------------------------------------------------------


def _byo_failure(root, **byo) -> str:
    drop = root / "drops" / "byo"
    drop.mkdir(exist_ok=True)
    write_byo(drop / "embeddings.parquet", **byo)
    with instance_for_test() as instance:
        failed = run_assets(root, instance, "byo", ["image_embeddings"])
    message = step_failures(failed)["image_embeddings"]
    assert str(drop / "embeddings.parquet") in message
    return message


def test_byo_rows_of_different_widths_are_refused(root):
    rows = [[1.0, 0.0, 0.0]] * 5 + [[0.0, 1.0]] + [[0.0, 0.0, 1.0]] * 6
    message = _byo_failure(root, rows=rows)
    assert "different lengths (2..3)" in message and "same width" in message


def test_byo_width_different_from_the_noun_embeddings_names_the_fix(world):
    drop = world.root / "drops" / "byo24"
    drop.mkdir()
    write_byo(drop / "embeddings.parquet", n=30, width=24)
    failed = run_assets(
        world.root, world.instance, "byo24", ["image_embeddings", "semantic_centers", "text_space"]
    )
    message = step_failures(failed)["text_space"]
    assert "24 wide" in message and "nouns.parquet" in message


def test_byo_nan_is_refused_and_the_previous_embeddings_stay(root):
    drop = root / "drops" / "byo"
    drop.mkdir()
    write_byo(drop / "embeddings.parquet")
    with instance_for_test() as instance:
        assert run_assets(root, instance, "byo", ["image_embeddings"]).success
        before = snapshot(root, instance, {"image_embeddings": "byo"})
        rows = [[float("nan")] * 16 if i in (3, 7) else [1.0] + [0.0] * 15 for i in range(12)]
        write_byo(drop / "embeddings.parquet", rows=rows)
        failed = run_assets(root, instance, "byo", ["image_embeddings"])
        message = step_failures(failed)["image_embeddings"]
        assert "2 row(s) hold NaN or infinite values (rows 3, 7)" in message
        assert snapshot(root, instance, {"image_embeddings": "byo"}) == before


def test_byo_duplicate_ids_are_refused(root):
    ids = [f"img{i:03d}" for i in range(10)] + ["img004", "img007"]
    message = _byo_failure(root, ids=ids)
    assert "'image_id' must be unique" in message and "'img004'" in message and "'img007'" in message
