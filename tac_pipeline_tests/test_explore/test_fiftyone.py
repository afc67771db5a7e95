"""The FiftyOne dataset of a clustered drop: one sample per image with the stored values, a map, a saved view
per cluster, and a refresh in place after a re-clustering.

Needs the ``explore`` extra (``pip install -e '.[explore]'``, which ``make test`` installs); skipped with the reason
without it, unless ``TAC_REQUIRE_EXPLORE`` is set (CI), where that is a failure.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import instance_for_test

from tac_pipeline.defs.names import METHOD_COLUMNS
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import (
    byo_embeddings,
    byo_nouns,
    materialize_dataset,
    read_output,
)


@pytest.fixture(scope="module")
def fiftyone_root(explore_extra, tmp_path_factory):
    """One data folder for the module: a process connects to one FiftyOne database."""
    return tmp_path_factory.mktemp("explore")


@pytest.fixture(scope="module")
def instance():
    with instance_for_test() as instance:
        yield instance


def _byo_drop(root, n_per_class=24):
    drop = root / "drops" / "blobs"
    drop.mkdir(parents=True)
    directions = byo_embeddings(drop / "embeddings.parquet", n_per_class, 32, seed=4)
    byo_nouns(drop / "nouns.parquet", directions)
    (drop / "dataset.toml").write_text("n_clusters = 3\n[tac]\nepochs = 5\n")
    return drop


def _stored(root, key):
    labels = read_output(root, "cluster_labels", key)
    parts = read_output(root, "counterparts", key)
    return labels, parts


def _by_id(dataset, field):
    return dict(zip(dataset.values("image_id"), dataset.values(field), strict=True))


def test_every_image_is_a_sample_with_the_stored_values_a_map_and_a_view_per_cluster(fiftyone_root, instance):
    from tac_pipeline.explore import to_fiftyone
    from tac_pipeline.explore.fiftyone_dataset import INFO_KEY, MAP_KEY

    root = fiftyone_root
    _byo_drop(root)
    assert materialize_dataset(root, instance, "blobs").success
    ds = to_fiftyone("blobs", data_dir=root, instance=instance)
    assert (root / "fiftyone" / "WiredTiger").is_file()  # FiftyOne's database lives in the data folder
    labels, parts = _stored(root, "blobs")
    assert len(ds) == labels.num_rows == 72
    ids = labels["image_id"].to_pylist()
    assert sorted(ds.values("image_id")) == sorted(ids)
    for method, column in METHOD_COLUMNS.items():
        stored = dict(zip(ids, labels[column].to_pylist(), strict=True))
        shown = _by_id(ds, f"{method}.cluster")
        assert shown == stored, method
        assert all(
            label.split(": ", 1)[0] == str(stored[i]) for i, label in _by_id(ds, f"{method}.label").items()
        )
    confidence = dict(zip(ids, labels["confidence"].to_pylist(), strict=True))
    assert _by_id(ds, "confidence") == pytest.approx(confidence)
    assert _by_id(ds, "tac_image.confidence") == pytest.approx(confidence)
    assert _by_id(ds, "ground_truth.label") == dict(zip(ids, labels["label"].to_pylist(), strict=True))
    assert _by_id(ds, "split") == dict(zip(ids, labels["split"].to_pylist(), strict=True))
    nouns = _by_id(ds, "top_nouns")
    assert {i: n[0] for i, n in nouns.items()} == dict(zip(ids, parts["top_noun"].to_pylist(), strict=True))
    weights = _by_id(ds, "noun_weights")
    assert all(
        len(weights[i]) == len(nouns[i]) == 3 and weights[i] == sorted(weights[i], reverse=True) for i in ids
    )
    assert _by_id(ds, "novel") == dict(zip(ids, labels["novel"].to_pylist(), strict=True))
    assert _by_id(ds, "duplicate_group") == dict(zip(ids, labels["duplicate_group"].to_pylist(), strict=True))
    # The map of the stored embeddings (UMAP: the extra installs um-learn) and the fit it came from.
    assert MAP_KEY in ds.list_brain_runs()
    assert ds.get_brain_info(MAP_KEY).config.method == "umap"
    assert ds.load_brain_results(MAP_KEY).points.shape == (72, 2)
    assert ds.info[INFO_KEY]["labels_from"] and len(ds.info[INFO_KEY]["metrics"]) == 5
    # One saved view per (non-empty) cluster of the image head, holding exactly its images.
    clusters = sorted(set(labels["cluster"].to_pylist()))
    views = ds.list_saved_views()
    assert len(views) == len(clusters)
    for cluster in clusters:
        (name,) = [v for v in views if v.startswith(f"cluster {cluster}: ")]
        members = ds.load_saved_view(name).values("image_id")
        assert sorted(members) == sorted(
            i for i, c in zip(ids, labels["cluster"].to_pylist(), strict=True) if c == cluster
        )


def test_a_second_build_after_reclustering_updates_the_same_dataset(fiftyone_root, instance):
    import fiftyone as fo

    from tac_pipeline.explore import to_fiftyone

    root = fiftyone_root
    before = to_fiftyone("blobs", data_dir=root, instance=instance, visualization="pca")
    sample_ids = dict(zip(before.values("image_id"), before.values("id"), strict=True))
    # The drop changes: 6 images leave, 9 new ones of the same blobs arrive; the pipeline runs again.
    drop = root / "drops" / "blobs"
    table = pq.read_table(drop / "embeddings.parquet")
    kept = table.slice(6)
    rng = np.random.default_rng(9)
    vectors = np.asarray(kept["embedding"].to_pylist())[:9] + 0.05 * rng.normal(size=(9, 32))
    new = pa.table(
        {
            "image_id": [f"new-{i}" for i in range(9)],
            "embedding": vectors.tolist(),
            "label": kept["label"].slice(0, 9),
            "split": pa.array(["train"] * 9),
        }
    )
    pq.write_table(pa.concat_tables([kept, new.cast(kept.schema)]), drop / "embeddings.parquet")
    assert materialize_dataset(root, instance, "blobs").success
    after = to_fiftyone("blobs", data_dir=root, instance=instance, visualization="pca")
    labels, _ = _stored(root, "blobs")
    assert fo.list_datasets().count("blobs") == 1 and len(after) == labels.num_rows == 75
    assert len(set(after.values("image_id"))) == 75
    ids_now = dict(zip(after.values("image_id"), after.values("id"), strict=True))
    # Images that stayed keep their samples (and whatever a person tagged on them); gone ones are gone.
    assert all(ids_now[i] == sample_ids[i] for i in ids_now if i in sample_ids)
    assert not set(sample_ids) - set(ids_now) - {f"c0-{i}" for i in range(6)}
    assert _by_id(after, "tac_image.cluster") == dict(
        zip(labels["image_id"].to_pylist(), labels["cluster"].to_pylist(), strict=True)
    )
    assert after.get_brain_info("tac_map").config.method == "pca"
    # Built again with nothing changed: no sample is written (a person's tags stay), and the map (minutes of
    # UMAP on a large drop) is kept, not redrawn.
    drawn = after.get_brain_info("tac_map").timestamp
    after.select(after.values("id")[:3]).tag_samples("checked by hand")
    modified = max(after.values("last_modified_at"))
    again = to_fiftyone("blobs", data_dir=root, instance=instance, visualization="pca")
    assert again.get_brain_info("tac_map").timestamp == drawn and len(again) == 75
    assert max(again.values("last_modified_at")) == modified
    assert again.count_sample_tags() == {"checked by hand": 3}
    clusters = sorted(set(labels["cluster"].to_pylist()))
    assert len(after.list_saved_views()) == len(clusters)


def test_an_image_drop_gets_its_files_and_an_own_embeddings_drop_placeholders(fiftyone_root, instance):
    from pathlib import Path

    from tac_pipeline.explore import to_fiftyone

    root = fiftyone_root
    drop = root / "drops" / "toy"
    write_toy_drop(drop, train=6, test=2)
    (drop / "dataset.toml").write_text("n_clusters = 3\n[tac]\nepochs = 5\n")
    # A first run stores the image embeddings (text_space then fails: no nouns yet); three of them become
    # the drop's own nouns.
    assert materialize_dataset(root, instance, "toy", raise_on_error=False) is not None
    vectors = np.asarray(read_output(root, "image_embeddings", "toy")["embedding"].to_pylist())[[0, 8, 16]]
    pq.write_table(
        pa.table({"noun": ["red", "green", "blue"], "embedding": vectors.tolist()}), drop / "nouns.parquet"
    )
    assert materialize_dataset(root, instance, "toy").success
    ds = to_fiftyone("toy", data_dir=root, instance=instance, visualization=False)
    assert len(ds) == 24 and all(
        Path(p).is_file() and Path(p).is_relative_to(drop) for p in ds.values("filepath")
    )
    blobs = to_fiftyone("blobs", data_dir=root, instance=instance, visualization=False)
    assert not any(Path(p).exists() for p in blobs.values("filepath"))


def test_fiftyone_imports_in_a_process_that_imported_the_importlib_metadata_backport(fiftyone_root):
    """dask imports the ``importlib_metadata`` backport, after which FiftyOne's own import fails
    (``KeyError: 'author'``) unless :func:`require_fiftyone` imports it."""
    import subprocess
    import sys

    pytest.importorskip("importlib_metadata")
    code = (
        "import importlib_metadata\n"
        "from tac_pipeline.explore.fiftyone_dataset import require_fiftyone\n"
        "print(require_fiftyone().__name__)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "fiftyone", done.stderr[-2000:]


def test_a_drop_never_clustered_is_named_with_what_to_run(fiftyone_root, instance):
    from tac_pipeline.explore import to_fiftyone
    from tac_pipeline.explore.export import ExportError

    with pytest.raises(ExportError, match=r"cluster the drop first \(make cluster DATASET=never\)"):
        to_fiftyone("never", data_dir=fiftyone_root, instance=instance)
