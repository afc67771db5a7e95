"""Materialize the asset graph in process, as the UI would, with the offline tiny model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import DagsterInstance, materialize

from tac_pipeline.defs.assets import build_assets
from tac_pipeline.defs.checks import build_asset_checks
from tac_pipeline.defs.io_managers import ParquetIOManager
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline.defs.resources.compute import ComputeDeviceResource
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.defs.resources.encoder import ClipEncoderResource
from tac_pipeline.store.layout import store_dir

NOUN_ASSET = "wordnet_noun_embeddings"
#: The vocabulary is cut for speed in tests; the selection logic is the same.
TEST_NOUNS = 3000


def tiny_encoder(**overrides) -> ClipEncoderResource:
    return ClipEncoderResource(model_name="tac-tiny", pretrained=None, num_workers=0, **overrides)


def resources(data_dir: Path, encoder: ClipEncoderResource | None = None) -> dict:
    return {
        "io_manager": ParquetIOManager(base_dir=str(store_dir(data_dir))),
        "tac_data": TacDataResource(data_dir=str(data_dir)),
        "clip_encoder": encoder or tiny_encoder(),
        "compute_device": ComputeDeviceResource(device="cpu"),
    }


def materialize_nouns(data_dir: Path, instance: DagsterInstance, encoder: ClipEncoderResource | None = None):
    encoder = encoder or tiny_encoder()
    assets = build_assets(encoder.identity())
    result = materialize(
        [*assets, *build_asset_checks(assets)],
        selection=[NOUN_ASSET],
        resources=resources(data_dir, encoder),
        instance=instance,
        run_config={"ops": {NOUN_ASSET: {"config": {"max_nouns": TEST_NOUNS}}}},
    )
    assert result.success
    return result


def materialize_dataset(
    data_dir: Path,
    instance: DagsterInstance,
    key: str,
    encoder: ClipEncoderResource | None = None,
    raise_on_error: bool = True,
    run_config: dict | None = None,
    store: dict | None = None,
):
    """The dataset's assets for partition ``key``; ``store`` replaces :func:`resources` (another IO manager)."""
    encoder = encoder or tiny_encoder()
    if not instance.has_dynamic_partition(datasets_partitions.name, key):
        instance.add_dynamic_partitions(datasets_partitions.name, [key])
    assets = build_assets(encoder.identity())
    return materialize(
        [*assets, *build_asset_checks(assets)],
        selection=[a.key for a in assets if a.partitions_def is not None],
        partition_key=key,
        resources=store or resources(data_dir, encoder),
        instance=instance,
        raise_on_error=raise_on_error,
        run_config=run_config,
    )


def read_output(data_dir: Path, asset: str, key: str | None = None):
    path = store_dir(data_dir) / (f"{asset}.parquet" if key is None else f"{asset}/{key}.parquet")
    return pq.read_table(path)


def byo_embeddings(path, n_per_class: int, width: int, *, seed: int = 0, split=True) -> np.ndarray:
    """An ``embeddings.parquet`` of three labelled blobs (train/test split unless ``split=False``); returns
    the blobs' directions."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(3, width))
    rows, ids, labels, splits = [], [], [], []
    for c in range(3):
        for i in range(n_per_class):
            rows.append(directions[c] + 0.3 * rng.normal(size=width))
            ids.append(f"c{c}-{i}")
            labels.append(f"class{c}")
            splits.append("train" if i < n_per_class * 2 // 3 else "test")
    columns = {"image_id": ids, "embedding": [list(map(float, r)) for r in rows], "label": labels}
    if split:
        columns["split"] = splits
    pq.write_table(pa.table(columns), path)
    return directions


def byo_nouns(path, directions: np.ndarray, *, extra: int = 20, seed: int = 3) -> None:
    """A ``nouns.parquet`` holding a noun near each blob direction and ``extra`` random ones."""
    rng = np.random.default_rng(seed)
    vectors = np.concatenate(
        [directions + 0.1 * rng.normal(size=directions.shape), rng.normal(size=(extra, directions.shape[1]))]
    )
    pq.write_table(
        pa.table({"noun": [f"noun{i}" for i in range(len(vectors))], "embedding": vectors.tolist()}), path
    )


def step_failure_messages(result) -> str:
    """The error messages (and causes) of every failed step of a materialization, joined."""
    return " ".join(
        str(e.event_specific_data.error.message) + str(e.event_specific_data.error.cause or "")
        for e in result.all_events
        if e.is_step_failure
    )
