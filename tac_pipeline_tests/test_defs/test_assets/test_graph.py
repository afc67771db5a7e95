"""The nine assets end to end with the offline tiny model: schemas, invariants, idempotence, staleness."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from dagster import AssetKey, instance_for_test
from dagster._utils.test.data_versions import get_stale_status_resolver

from tac_pipeline import tac
from tac_pipeline.common.tables import column_matrix
from tac_pipeline.defs.assets import ASSET_NAMES, build_assets
from tac_pipeline_tests.conftest import TOY_CLASSES, toy_image, write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import (
    TEST_NOUNS,
    byo_embeddings,
    byo_nouns,
    materialize_dataset,
    materialize_nouns,
    read_output,
    step_failure_messages,
    tiny_encoder,
)

TINY_WIDTH = 64


def unit_norm(x: np.ndarray) -> bool:
    return bool(np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-4))


@pytest.fixture
def toy(data_dir):
    count = write_toy_drop(data_dir / "drops" / "toy")
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        result = materialize_dataset(data_dir, instance, "toy")
        yield data_dir, instance, result, count


def test_all_nine_assets_materialize_with_their_schemas(toy):
    data_dir, instance, result, count = toy
    materialized = {k.to_user_string() for k in instance.get_asset_keys()}
    assert set(ASSET_NAMES) <= materialized
    # Every column of every stored table is described in its asset's column schema (the UI's Columns tab).
    from tac_pipeline.store.records import latest_materialization

    for asset in ASSET_NAMES:
        latest = latest_materialization(
            instance, asset, None if asset == "wordnet_noun_embeddings" else "toy"
        )
        schema = latest.value("dagster/column_schema")
        stored = latest.read_table()
        described = {c.name: c.description for c in schema.columns}
        assert list(described) == stored.column_names, asset
        assert all(d and len(d) > 10 for d in described.values()), asset

    images = read_output(data_dir, "image_embeddings", "toy")
    assert images.column_names == ["image_id", "path", "content_hash", "label", "split", "embedding"]
    assert images.num_rows == count == 54
    assert images.schema.field("embedding").type == pa.list_(pa.float32(), TINY_WIDTH)
    assert unit_norm(column_matrix(images, "embedding"))
    assert set(images["label"].to_pylist()) == set(TOY_CLASSES)
    assert images["split"].to_pylist().count("train") == 36
    assert images["image_id"].to_pylist() == sorted(images["image_id"].to_pylist())

    nouns = read_output(data_dir, "wordnet_noun_embeddings")
    assert nouns.column_names == ["noun", "synset", "gloss", "embedding"]
    assert nouns.num_rows == TEST_NOUNS and unit_norm(column_matrix(nouns, "embedding"))

    centers = read_output(data_dir, "semantic_centers", "toy")
    # 36 fitting images, K = 3: N/K = 12 < 300 so k_c = 3K = 9 (docs/METHOD.md §3)
    assert centers.num_rows == tac.semantic_center_count(36, 3) == 9
    assert sum(centers["size"].to_pylist()) == 36

    space = read_output(data_dir, "text_space", "toy")
    assert 1 <= space.num_rows <= 5 * 9
    for center in set(space["center"].to_pylist()):
        conf = [
            c
            for c, k in zip(space["confidence"].to_pylist(), space["center"].to_pylist(), strict=True)
            if k == center
        ]
        assert len(conf) <= 5 and conf == sorted(conf, reverse=True)
    noun_rows = space["noun_index"].to_numpy()
    np.testing.assert_allclose(
        column_matrix(space, "embedding"), column_matrix(nouns, "embedding")[noun_rows], atol=1e-6
    )

    parts = read_output(data_dir, "counterparts", "toy")
    assert parts.column_names == [
        "image_id", "split", "image_digest", "top_noun", "top_weight", "top_nouns", "top_weights",
        "noun_similarity", "counterpart",
    ]  # fmt: skip
    assert parts.num_rows == count and unit_norm(column_matrix(parts, "counterpart"))
    # The three most weighted nouns, strongest first; the first is top_noun.
    top_nouns, top_weights = parts["top_nouns"].to_pylist(), column_matrix(parts, "top_weights")
    assert [n[0] for n in top_nouns] == parts["top_noun"].to_pylist() and top_weights.shape == (count, 3)
    assert (np.diff(top_weights, axis=1) <= 0).all() and (top_weights.sum(axis=1) <= 1 + 1e-5).all()
    np.testing.assert_allclose(top_weights[:, 0], parts["top_weight"].to_numpy())
    similarity = parts["noun_similarity"].to_numpy()
    assert ((similarity >= -1 - 1e-5) & (similarity <= 1 + 1e-5)).all()

    knn = read_output(data_dir, "knn_graphs", "toy")
    assert knn.num_rows == 36
    neighbours = column_matrix(knn, "neighbors_image", dtype=np.int64)
    assert neighbours.shape == (36, 35)  # 50 shrunk to N_tr - 1
    assert not (neighbours == np.arange(36)[:, None]).any()

    heads = read_output(data_dir, "trained_heads", "toy")
    names = heads["name"].to_pylist()
    assert any(n.startswith("image_head.") for n in names) and any(n.startswith("text_head.") for n in names)
    history = dict(zip(names, heads["values"].to_pylist(), strict=True))
    assert len(history["history.distillation"]) == 20  # K < 100: 20 epochs
    shapes = dict(zip(names, heads["shape"].to_pylist(), strict=True))
    assert shapes["kmeans.centers"] == [3, TINY_WIDTH] and shapes["no_train.centers"] == [3, 2 * TINY_WIDTH]
    assert shapes["novelty.thresholds"] == [3]

    labels = read_output(data_dir, "cluster_labels", "toy")
    assert labels.column_names == [
        "image_id", "split", "label", "image_digest", "cluster", "cluster_text", "cluster_mean", "cluster_no_train",
        "cluster_kmeans", "confidence", "novel", "assigned", "duplicate_group",
    ]  # fmt: skip
    assert not any(labels["assigned"].to_pylist())  # a fit
    assert labels.num_rows == count
    for column in ("cluster", "cluster_text", "cluster_mean", "cluster_no_train", "cluster_kmeans"):
        assert set(labels[column].to_pylist()) <= {0, 1, 2}
    confidence = labels["confidence"].to_numpy()
    assert ((confidence >= 1 / 3 - 1e-6) & (confidence <= 1 + 1e-6)).all()

    metrics = read_output(data_dir, "metrics", "toy")
    assert metrics["method"].to_pylist() == [
        "kmeans_image",
        "tac_no_train",
        "tac_image",
        "tac_text",
        "tac_mean",
    ]
    assert set(metrics["split"].to_pylist()) == {"test"} and set(metrics["n_images"].to_pylist()) == {18}
    assert set(metrics["seed"].to_pylist()) == {0}
    for name in ("nmi", "acc", "ari"):
        values = metrics[name].to_numpy()
        assert np.isfinite(values).all() and (values >= -100).all() and (values <= 100).all()
    assert (metrics["acc"].to_numpy() >= 100 / 3 - 1e-6).all()  # best matching is never below chance


def test_second_materialization_is_idempotent(toy):
    data_dir, instance, _, _ = toy
    first = {a: read_output(data_dir, a, "toy") for a in ("image_embeddings", "cluster_labels", "metrics")}
    again = materialize_dataset(data_dir, instance, "toy")
    assert again.success
    for asset, table in first.items():
        assert read_output(data_dir, asset, "toy").equals(table), asset


def test_output_metadata_shows_in_the_ui(toy):
    _, instance, _, _ = toy
    event = instance.get_latest_materialization_event(AssetKey("metrics"))
    metadata = event.asset_materialization.metadata
    assert metadata["dagster/row_count"].value == 5
    assert "tac_image" in metadata["metrics"].value
    assert "path" in metadata or "dagster/uri" in metadata


def test_flat_unlabelled_drop_needs_n_clusters(data_dir):
    drop = data_dir / "drops" / "flat"
    drop.mkdir()
    rng = np.random.default_rng(1)
    for i, (background, stripe) in enumerate(list(TOY_CLASSES.values()) * 8):
        toy_image(rng, background, stripe).save(drop / f"img_{i:02d}.png")
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        failed = materialize_dataset(data_dir, instance, "flat", raise_on_error=False)
        assert not failed.success
        messages = step_failure_messages(failed)
        assert "n_clusters" in messages and "dataset.toml" in messages
        assert 'n_clusters = "auto"' in messages  # the error suggests letting TAC choose K
        # image embeddings were written before the failing step and stay readable
        assert read_output(data_dir, "image_embeddings", "flat").num_rows == 24

        (drop / "dataset.toml").write_text("n_clusters = 3\nseed = 7\n")
        assert materialize_dataset(data_dir, instance, "flat").success
    metrics = read_output(data_dir, "metrics", "flat")
    assert metrics["nmi"].null_count == 5  # no labels: no scores, but the balance is still reported
    assert set(metrics["seed"].to_pylist()) == {7} and set(metrics["split"].to_pylist()) == {"all"}


def test_bring_your_own_embeddings_end_to_end_without_the_image_encoder(data_dir, monkeypatch):
    from tac_pipeline.encoders import ClipEncoder

    def no_image_encoding(*args, **kwargs):
        raise AssertionError("the image encoder must not run for a bring-your-own drop")

    monkeypatch.setattr(ClipEncoder, "encode_images", no_image_encoding)
    # A foreign 16-wide model: its own nouns replace the encoder's WordNet embeddings.
    drop = data_dir / "drops" / "byo"
    drop.mkdir()
    directions = byo_embeddings(drop / "embeddings.parquet", 30, 16)
    byo_nouns(drop / "nouns.parquet", directions)
    # 60 fitting images make one step per epoch at the spec's batch size: train longer (an override).
    (drop / "dataset.toml").write_text("[tac]\nepochs = 150\n")
    # A second drop in the tiny model's own width uses the shared noun embeddings.
    same_width = data_dir / "drops" / "byo64"
    same_width.mkdir()
    byo_embeddings(same_width / "embeddings.parquet", 20, TINY_WIDTH, split=False)
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        assert materialize_dataset(data_dir, instance, "byo").success
        assert materialize_dataset(data_dir, instance, "byo64").success
    images = read_output(data_dir, "image_embeddings", "byo")
    assert images.num_rows == 90 and unit_norm(column_matrix(images, "embedding"))
    assert set(read_output(data_dir, "text_space", "byo")["noun"].to_pylist()) <= {
        f"noun{i}" for i in range(23)
    }
    metrics = read_output(data_dir, "metrics", "byo").to_pandas().set_index("method")
    assert (metrics["split"] == "test").all() and (metrics["n_images"] == 30).all()
    assert metrics.loc["tac_image", "acc"] > 90  # three well separated blobs
    assert read_output(data_dir, "metrics", "byo64")["n_images"].to_pylist() == [60] * 5


def test_bring_your_own_embeddings_of_the_wrong_width_fail_clearly(data_dir):
    drop = data_dir / "drops" / "byo_wrong"
    drop.mkdir()
    byo_embeddings(drop / "embeddings.parquet", 10, 24)
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        failed = materialize_dataset(data_dir, instance, "byo_wrong", raise_on_error=False)
    assert not failed.success
    text = " ".join(str(e.event_specific_data.error) for e in failed.all_events if e.is_step_failure)
    assert "24 wide" in text and "nouns.parquet" in text


def test_changing_the_encoder_makes_only_the_noun_embeddings_stale(data_dir):
    write_toy_drop(data_dir / "drops" / "toy", train=6, test=3)
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        assert materialize_dataset(data_dir, instance, "toy").success
        nouns = AssetKey("wordnet_noun_embeddings")

        same = get_stale_status_resolver(instance, build_assets(tiny_encoder().identity()))
        assert same.get_status(nouns).value == "FRESH"

        # A new image in the drop changes nothing about the noun embeddings.
        toy_image(np.random.default_rng(9), *TOY_CLASSES["red"]).save(
            data_dir / "drops/toy/train/red/new.png"
        )
        after_drop_change = get_stale_status_resolver(instance, build_assets(tiny_encoder().identity()))
        assert after_drop_change.get_status(nouns).value == "FRESH"

        other = tiny_encoder(checkpoint=str(data_dir / "other-weights.pt"))
        assert other.identity() != tiny_encoder().identity()
        changed = get_stale_status_resolver(instance, build_assets(other.identity()))
        assert changed.get_status(nouns).value == "STALE"
        assert changed.get_status(AssetKey("image_embeddings"), "toy").value == "STALE"
