"""make export: folders of hard links, CSV and Parquet; the drop and the store are only read."""

import errno
import json
import os

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import instance_for_test

from tac_pipeline.explore.export import ExportError, export, folder_name, read_clustered
from tac_pipeline.store.layout import store_dir
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import (
    byo_embeddings,
    byo_nouns,
    materialize_dataset,
    read_output,
)

UNICODE_NOUNS = ["café au lait", "東京 tower", "crème brûlée", "red/blue thing"]


def _snapshot(folder):
    return sorted(
        (os.path.relpath(os.path.join(d, f), folder), os.stat(os.path.join(d, f)).st_size)
        for d, _, files in os.walk(folder)
        for f in files
    )


@pytest.fixture(scope="module")
def clustered(tmp_path_factory):
    """A toy image drop clustered with its own unicode nouns (so cluster names hold unicode and spaces)."""
    root = tmp_path_factory.mktemp("export")
    drop = root / "drops" / "toy"
    write_toy_drop(drop)
    (drop / "dataset.toml").write_text("[tac]\nepochs = 5\n")
    with instance_for_test() as instance:
        # A first run stores the image embeddings (text_space then fails: no nouns yet); the drop's own nouns
        # are then some of those embeddings, named in unicode.
        assert materialize_dataset(root, instance, "toy", raise_on_error=False) is not None
        images = read_output(root, "image_embeddings", "toy")
        vectors = np.asarray(images["embedding"].to_pylist())[[0, 20, 40, 50]]
        pq.write_table(
            pa.table({"noun": UNICODE_NOUNS, "embedding": vectors.tolist()}), drop / "nouns.parquet"
        )
        assert materialize_dataset(root, instance, "toy").success
        yield root, drop, read_clustered(instance, "toy", root)


def test_folders_hold_hard_links_named_by_cluster_and_the_summary(clustered, tmp_path):
    root, drop, data = clustered
    before_drop, before_store = _snapshot(drop), _snapshot(store_dir(root))
    target = tmp_path / "out"
    summary = export(data, target, fmt="folders")
    assert summary["links"] == {"hard": 54, "symbolic": 0, "missing": 0}
    folders = sorted(p.name for p in target.iterdir() if p.is_dir())
    assert folders == sorted(c["folder"] for c in summary["clusters"] if c["size"])
    assert all(f.split("-", 1)[0].isdigit() for f in folders)
    linked = [p for p in target.rglob("*.png")]
    assert len(linked) == 54 and all(p.stat().st_nlink >= 2 for p in linked)
    labels = read_output(root, "cluster_labels", "toy")
    for image_id, cluster in zip(labels["image_id"].to_pylist(), labels["cluster"].to_pylist(), strict=True):
        folder = next(c["folder"] for c in summary["clusters"] if c["id"] == cluster)
        assert (target / folder / image_id.replace("/", "__")).samefile(drop / image_id)
    saved = json.loads((target / "export.json").read_text(encoding="utf-8"))
    assert saved["method"] == "tac_image" and len(saved["metrics"]) == 5
    assert "| cluster | name | images |" in (target / "README.md").read_text(encoding="utf-8")
    assert _snapshot(drop) == before_drop and _snapshot(store_dir(root)) == before_store


def test_names_with_unicode_and_spaces_make_valid_folder_names(clustered, tmp_path):
    assert folder_name(3, "café au lait / 東京 tower") == "3-café au lait _ 東京 tower"
    assert folder_name(0, "a\\b:c*?") == "0-a_b_c_"
    _, _, data = clustered
    summary = export(data, tmp_path / "u", fmt="folders", method="tac_no_train")
    names = " ".join(c["name"] for c in summary["clusters"])
    assert any(noun.split()[0] in names for noun in UNICODE_NOUNS)
    for cluster in summary["clusters"]:
        if cluster["size"]:
            assert (tmp_path / "u" / cluster["folder"]).is_dir()


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_tables_hold_path_cluster_name_confidence_novelty_and_label(clustered, tmp_path, fmt):
    root, drop, data = clustered
    summary = export(data, tmp_path / fmt, fmt=fmt, method="kmeans_image")
    if fmt == "csv":
        import pyarrow.csv as pacsv

        table = pacsv.read_csv(tmp_path / fmt / "clusters.csv")
    else:
        table = pq.read_table(tmp_path / fmt / "clusters.parquet")
    assert table.column_names == [
        "image_id", "path", "cluster", "cluster_name", "confidence", "novel", "duplicate_group", "label",
    ]  # fmt: skip
    labels = read_output(root, "cluster_labels", "toy")
    assert table["cluster"].to_pylist() == labels["cluster_kmeans"].to_pylist()
    names = {c["id"]: c["name"] for c in summary["clusters"]}
    assert table["cluster_name"].to_pylist() == [names[c] for c in labels["cluster_kmeans"].to_pylist()]
    assert all(os.path.isfile(p) for p in table["path"].to_pylist())


def test_a_non_empty_target_is_refused_and_left_alone(clustered, tmp_path):
    _, _, data = clustered
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "mine.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not an empty folder"):
        export(data, tmp_path / "busy")
    assert os.listdir(tmp_path / "busy") == ["mine.txt"]
    with pytest.raises(ExportError, match="METHOD='nope'"):
        export(data, tmp_path / "x", method="nope")
    assert not (tmp_path / "x").exists()


def test_across_file_systems_the_folders_hold_symbolic_links(clustered, tmp_path, monkeypatch):
    _, drop, data = clustered

    def no_hard_links(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_hard_links)
    summary = export(data, tmp_path / "s")
    assert summary["links"] == {"hard": 0, "symbolic": 54, "missing": 0}
    linked = list((tmp_path / "s").rglob("*.png"))
    assert all(p.is_symlink() and p.resolve().is_relative_to(drop.resolve()) for p in linked)


def test_a_drop_of_its_own_embeddings_exports_tables_but_no_folders(data_dir, tmp_path):
    drop = data_dir / "drops" / "own"
    drop.mkdir()
    byo_nouns(drop / "nouns.parquet", byo_embeddings(drop / "embeddings.parquet", 10, 16))
    with instance_for_test() as instance:
        assert materialize_dataset(data_dir, instance, "own").success
        data = read_clustered(instance, "own", data_dir)
    with pytest.raises(ExportError, match="FORMAT=csv or FORMAT=parquet"):
        export(data, tmp_path / "f")
    export(data, tmp_path / "c", fmt="csv")
    assert (tmp_path / "c" / "clusters.csv").read_text().count("\n") == 31


def test_a_dataset_never_clustered_names_the_fix(tmp_path):
    with instance_for_test() as instance, pytest.raises(ExportError, match="make cluster DATASET=nothing"):
        read_clustered(instance, "nothing", tmp_path)
