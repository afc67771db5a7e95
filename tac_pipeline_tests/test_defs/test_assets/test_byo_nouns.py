"""Nouns from the drop or from WordNet: a drop with its own nouns.parquet needs no encoder, no WordNet and no
shared noun run; its text space records which nouns it used, and new nouns make what is downstream stale."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, instance_for_test, materialize
from dagster._utils.test.data_versions import get_stale_status_resolver

from tac_pipeline.defs.assets import DATASET_ASSETS, NOUN_ASSET, build_assets
from tac_pipeline.defs.checks import build_asset_checks
from tac_pipeline.defs.resources.encoder import ClipEncoderResource
from tac_pipeline.encoders import wordnet
from tac_pipeline.encoders.clip import EncoderUnavailableError
from tac_pipeline.store.layout import store_dir
from tac_pipeline_tests.test_defs.test_assets.helpers import (
    byo_embeddings,
    byo_nouns,
    materialize_dataset,
    read_output,
    resources,
)


@pytest.fixture
def unreachable(data_dir, tmp_path, monkeypatch):
    """The default encoder with no weights to be had (offline, empty cache) and no WordNet anywhere; every
    attempt to build the encoder or open WordNet is recorded before it fails."""
    attempts = []
    build = ClipEncoderResource.build

    def recorded_build(self, device):
        attempts.append("encoder")
        return build(self, device)

    def no_wordnet(*args, **kwargs):
        attempts.append("wordnet")
        raise wordnet.WordNetUnavailableError("WordNet is not available (test)")

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(ClipEncoderResource, "build", recorded_build)
    monkeypatch.setattr(wordnet, "open_wordnet", no_wordnet)
    (data_dir / "cache" / wordnet.CACHE_FILE).unlink()
    encoder = ClipEncoderResource(model_name="ViT-B-32", pretrained="openai", cache_dir=str(tmp_path / "hf"))
    with pytest.raises(EncoderUnavailableError):
        encoder.build("cpu")
    with pytest.raises(wordnet.WordNetUnavailableError):
        wordnet.load_noun_vocabulary(data_dir)
    attempts.clear()
    return encoder, attempts


def _own_drop(data_dir, name: str = "own") -> np.ndarray:
    drop = data_dir / "drops" / name
    drop.mkdir()
    directions = byo_embeddings(drop / "embeddings.parquet", 30, 16)
    byo_nouns(drop / "nouns.parquet", directions)
    (drop / "dataset.toml").write_text("[tac]\nepochs = 150\n")
    return directions


def _text_space_only(data_dir, instance, encoder, key: str):
    assets = build_assets(encoder.identity())
    return materialize(
        [*assets, *build_asset_checks(assets)],
        selection=["text_space"],
        partition_key=key,
        resources=resources(data_dir, encoder),
        instance=instance,
    )


def _latest(instance, asset: str, key: str):
    records = instance.fetch_materializations(
        AssetRecordsFilter(AssetKey(asset), asset_partitions=[key]), limit=1
    ).records
    return records[0].asset_materialization


def test_a_drop_with_its_own_nouns_clusters_with_no_encoder_and_no_wordnet(data_dir, unreachable):
    encoder, attempts = unreachable
    directions = _own_drop(data_dir)
    with instance_for_test() as instance:
        result = materialize_dataset(data_dir, instance, "own", encoder=encoder)
        assert result.success and attempts == []
        # Nothing touched the shared nouns: never materialized, never stored, never loaded.
        assert not instance.fetch_materializations(AssetKey(NOUN_ASSET), limit=1).records
        assert not (store_dir(data_dir) / f"{NOUN_ASSET}.parquet").exists()
        loaded = [
            e.event_specific_data.input_name
            for e in result.all_events
            if e.event_type == DagsterEventType.LOADED_INPUT and e.step_key == "text_space"
        ]
        assert loaded == ["semantic_centers"]
        for asset in DATASET_ASSETS:
            assert read_output(data_dir, asset, "own").num_rows > 0, asset
        metrics = read_output(data_dir, "metrics", "own").to_pandas().set_index("method")
        assert metrics["nmi"].notna().all() and metrics.loc["tac_image", "acc"] > 90

        # The text space says which nouns it used: the drop's file, its rows and digest.
        nouns_file = data_dir / "drops" / "own" / "nouns.parquet"
        meta = {k: v.value for k, v in _latest(instance, "text_space", "own").metadata.items()}
        assert meta["nouns_source"] == "drop" and meta["nouns_file"] == str(nouns_file)
        assert meta["nouns_rows"] == 23
        assert meta["nouns_sha256"] == hashlib.sha256(nouns_file.read_bytes()).hexdigest()

        # Re-selecting from the same nouns keeps everything downstream fresh ...
        counterparts = AssetKey("counterparts")
        assert _text_space_only(data_dir, instance, encoder, "own").success
        graph = build_assets(encoder.identity())
        assert get_stale_status_resolver(instance, graph).get_status(counterparts, "own").value == "FRESH"
        # ... new nouns in the drop give the text space a new data version: counterparts and what follows
        # them are stale.
        before = _latest(instance, "text_space", "own").tags["dagster/data_version"]
        byo_nouns(nouns_file, directions, seed=11)
        assert _text_space_only(data_dir, instance, encoder, "own").success
        assert _latest(instance, "text_space", "own").tags["dagster/data_version"] != before
        assert get_stale_status_resolver(instance, graph).get_status(counterparts, "own").value == "STALE"
    assert attempts == []


def test_a_drop_without_nouns_waits_for_the_shared_ones(data_dir, unreachable):
    encoder, _ = unreachable
    drop = data_dir / "drops" / "shared"
    drop.mkdir()
    byo_embeddings(drop / "embeddings.parquet", 10, 16)
    with instance_for_test() as instance:
        failed = materialize_dataset(data_dir, instance, "shared", encoder=encoder, raise_on_error=False)
    assert not failed.success
    failures = {e.step_key: str(e.event_specific_data.error) for e in failed.all_events if e.is_step_failure}
    assert list(failures) == ["text_space"]
    text = failures["text_space"]
    assert "nouns.parquet" in text and f"materialize {NOUN_ASSET} first" in text and str(drop) in text
