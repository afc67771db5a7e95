"""The one reader of the latest materialization (``store/records.py``), on a local store and on an fsspec one.

With the Parquet store on ``memory://``, everything that reads a previous table works as on disk: the CLI's
readers, the reuse of image embeddings, the stable cluster ids and the schedule's drop digest.
"""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    DynamicPartitionsDefinition,
    asset,
    instance_for_test,
    materialize,
)
from upath import UPath

from tac_pipeline.defs.automation import recorded_drop_digest
from tac_pipeline.defs.io_managers import ParquetIOManager
from tac_pipeline.drops.manifest import drop_manifest
from tac_pipeline.store.records import latest_materialization, read_stored_table
from tac_pipeline_tests.conftest import TOY_CLASSES, toy_image, write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import materialize_dataset, materialize_nouns, resources


def _memory_store() -> str:
    return f"memory://tac-store-{uuid.uuid4().hex}"


def test_readers_outside_a_run_open_the_recorded_path_on_any_fsspec_store():
    base = _memory_store()
    parts = DynamicPartitionsDefinition(name="datasets")

    @asset(partitions_def=parts)
    def metrics():
        return pa.table({"method": ["tac_image"], "nmi": [1.0]})

    with DagsterInstance.ephemeral() as instance:
        assert latest_materialization(instance, "metrics", "toy") is None
        with pytest.raises(FileNotFoundError, match="no stored metrics for partition 'toy'"):
            read_stored_table(instance, "metrics", "toy")
        instance.add_dynamic_partitions("datasets", ["toy"])
        io_manager = ParquetIOManager(base_dir=base)
        result = materialize(
            [metrics], partition_key="toy", resources={"io_manager": io_manager}, instance=instance
        )
        latest = latest_materialization(instance, AssetKey("metrics"), "toy")
        assert latest is not None and latest.run_id == result.run_id and latest.partition == "toy"
        path = latest.existing_path()
        assert str(path) == f"{base}/metrics/toy.parquet" and isinstance(path, UPath)
        assert latest.value("dagster/row_count") == 1 and latest.code_version is not None
        assert read_stored_table(instance, "metrics", "toy")["method"].to_pylist() == ["tac_image"]
        assert latest_materialization(instance, "metrics", "toy", since=latest.timestamp + 1) is None
        path.fs.rm(path.path)  # the file is gone: the record says so, and the reader names the asset
        assert latest_materialization(instance, "metrics", "toy").existing_path() is None
        with pytest.raises(FileNotFoundError, match="stored metrics for partition 'toy'.*is gone"):
            read_stored_table(instance, "metrics", "toy")


def test_reuse_stable_ids_and_digests_work_on_an_fsspec_store(data_dir):
    """The whole graph on ``memory://``: a second run of a grown drop encodes only the new image, keeps the
    cluster ids of the first run, and the schedule reads the digest the run recorded."""
    drop = data_dir / "drops" / "toy"
    count = write_toy_drop(drop, train=6, test=3)
    store = resources(data_dir)
    store["io_manager"] = ParquetIOManager(base_dir=_memory_store())
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)  # on disk: the shared nouns are found through their record
        first = _materialize(data_dir, instance, store)
        assert first["image_embeddings"]["encoded"] == count
        assert first["cluster_labels"]["images_changed_cluster"] == "first clustering"
        background, stripe = TOY_CLASSES["red"]
        toy_image(np.random.default_rng(99), background, stripe).save(drop / "train" / "red" / "new.png")
        second = _materialize(data_dir, instance, store)
        assert second["image_embeddings"]["encoded"] == 1  # the previous table was found and its rows reused
        assert second["image_embeddings"]["reused"] == count
        assert isinstance(second["cluster_labels"]["images_changed_cluster"], int)  # matched to the first run
        assert str(latest_materialization(instance, "cluster_labels", "toy").path()).startswith("memory://")
        assert recorded_drop_digest(instance, "toy") == drop_manifest(drop).digest


def _materialize(data_dir, instance, store) -> dict[str, dict]:
    assert materialize_dataset(data_dir, instance, "toy", store=store).success
    return {
        name: {
            key: value.value for key, value in latest_materialization(instance, name, "toy").metadata.items()
        }
        for name in ("image_embeddings", "cluster_labels")
    }


def test_a_cut_short_table_is_named_with_its_fix_and_the_shared_nouns_are_made_again(tmp_path):
    from tac_pipeline.defs.names import NOUN_ASSET
    from tac_pipeline.drops.nouns import shared_nouns_ready
    from tac_pipeline.store.records import StoredTableError

    @asset(name=NOUN_ASSET, code_version="v1")
    def nouns():
        return pa.table({"noun": ["dog", "cat"] * 500, "embedding": [[0.5, 0.5]] * 1000})

    with DagsterInstance.ephemeral() as instance:
        store = {"io_manager": ParquetIOManager(base_dir=str(tmp_path / "store"))}
        assert materialize([nouns], resources=store, instance=instance).success
        latest = latest_materialization(instance, NOUN_ASSET)
        assert latest.readable() and shared_nouns_ready(instance, "v1")
        assert not shared_nouns_ready(instance, "v2")  # another encoder's nouns
        path = latest.existing_path()
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])  # cut short, as a full disk or a killed copy leaves it
        assert not latest.readable() and not shared_nouns_ready(
            instance, "v1"
        )  # make cluster makes them again
        with pytest.raises(StoredTableError) as caught:
            latest.read_table()
        message = str(caught.value)
        assert (
            str(path) in message and f"materialize {NOUN_ASSET} again" in message and "cut short" in message
        )
