"""``image_embeddings`` computed in shards gives the table one step gives, reuses rows, and cleans up."""

from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance, materialize
from upath import UPath

from tac_pipeline.common.tables import column_matrix
from tac_pipeline.config import Deployment, DeploymentError, deployment_from_env
from tac_pipeline.defs.assets import build_assets
from tac_pipeline.defs.assets.sharded import SHARD_IO_MANAGER, ShardIOManager, shard_io_manager, shard_slices
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline.store.layout import intermediate_dir
from tac_pipeline_tests.conftest import TOY_CLASSES, toy_image, write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import read_output, resources, tiny_encoder

KEY = "toy"


def _embed(data_dir, instance, shards: int, handoffs=None):
    encoder = tiny_encoder()
    if not instance.has_dynamic_partition(datasets_partitions.name, KEY):
        instance.add_dynamic_partitions(datasets_partitions.name, [KEY])
    result = materialize(
        build_assets(encoder.identity(), embed_shards=shards),
        selection=["image_embeddings"],
        partition_key=KEY,
        resources={**resources(data_dir, encoder), SHARD_IO_MANAGER: handoffs or shard_io_manager(data_dir)},
        instance=instance,
    )
    assert result.success
    [event] = result.get_asset_materialization_events()
    return read_output(data_dir, "image_embeddings", KEY), event.materialization.metadata


def test_hand_offs_on_an_fsspec_store_are_removed_by_the_io_manager_that_wrote_them(data_dir):
    base = f"memory://tac-handoffs-{uuid.uuid4().hex}"
    count = write_toy_drop(data_dir / "drops" / KEY, train=3, test=1)
    with DagsterInstance.ephemeral() as instance:
        table, _ = _embed(data_dir, instance, shards=2, handoffs=ShardIOManager(base_dir=base))
        [run] = instance.get_runs()
    assert table.num_rows == count
    root = UPath(base)
    assert root.exists() and not (root / run.run_id).exists()  # written there, then removed
    assert not list(root.iterdir())


@pytest.mark.parametrize(("n", "k"), [(10, 3), (2, 3), (0, 2), (7, 7)])
def test_shard_slices_cover_the_listing_in_even_contiguous_pieces(n, k):
    slices = shard_slices(n, k)
    assert len(slices) == k and slices[0][0] == 0 and slices[-1][1] == n
    assert all(a[1] == b[0] for a, b in zip(slices, slices[1:], strict=False))
    sizes = [b - a for a, b in slices]
    assert max(sizes) - min(sizes) <= 1


def test_sharded_table_equals_the_one_step_table_and_reuses_rows(data_dir):
    drop = data_dir / "drops" / KEY
    count = write_toy_drop(drop, train=5, test=2)
    with DagsterInstance.ephemeral() as one_step, DagsterInstance.ephemeral() as sharded:
        single, _ = _embed(data_dir, one_step, shards=1)
        table, metadata = _embed(data_dir, sharded, shards=3)
        assert table.num_rows == single.num_rows == count
        for column in ("image_id", "path", "content_hash", "label", "split"):
            assert table[column].to_pylist() == single[column].to_pylist()
        np.testing.assert_allclose(
            column_matrix(table, "embedding"), column_matrix(single, "embedding"), atol=1e-6
        )
        assert metadata["encoded"].value == count and metadata["reused"].value == 0
        assert len(metadata["shard_workers"].value) == 3
        assert "| 2 |" in metadata["shards"].value  # one row per shard in the UI table
        # the hand-offs of the run are gone once the table is written
        assert not any(intermediate_dir(data_dir).glob("*/*"))

        # two new files and one removed: only the two are encoded, across whichever shards hold them
        rng = np.random.default_rng(5)
        background, stripe = TOY_CLASSES["red"]
        for i in range(2):
            toy_image(rng, background, stripe).save(drop / "train" / "red" / f"new_{i}.png")
        removed = sorted((drop / "test" / "blue").glob("*.png"))[0]
        removed.unlink()
        again, metadata = _embed(data_dir, sharded, shards=3)
        assert again.num_rows == count + 1
        assert (metadata["encoded"].value, metadata["reused"].value, metadata["removed"].value) == (
            2,
            count - 1,
            1,
        )
        before = dict(zip(table["content_hash"].to_pylist(), column_matrix(table, "embedding"), strict=True))
        after = column_matrix(again, "embedding")
        reused = [i for i, h in enumerate(again["content_hash"].to_pylist()) if h in before]
        assert len(reused) == count - 1
        for i in reused:  # bit for bit the previous rows
            assert np.array_equal(after[i], before[again["content_hash"][i].as_py()])
        record = sharded.get_latest_materialization_event(AssetKey("image_embeddings"))
        assert record is not None


def test_deployment_settings_from_the_environment():
    assert deployment_from_env({}) == Deployment()
    assert deployment_from_env({"TAC_EXECUTOR": "in_process"}).executor == "in_process"
    chosen = deployment_from_env(
        {
            "TAC_EXECUTOR": "dask",
            "TAC_DASK_SCHEDULER": "tcp://h:8786",
            "TAC_EMBED_SHARDS": "4",
            "TAC_DASK_GPU_RESOURCE": "1",
        }
    )
    assert (chosen.executor, chosen.dask_scheduler, chosen.embed_shards, chosen.dask_gpu_resource) == (
        "dask",
        "tcp://h:8786",
        4,
        True,
    )
    for env, name in (
        ({"TAC_EXECUTOR": "celery"}, "TAC_EXECUTOR"),
        ({"TAC_EMBED_SHARDS": "0"}, "TAC_EMBED_SHARDS"),
        ({"TAC_EMBED_SHARDS": "two"}, "TAC_EMBED_SHARDS"),
        ({"TAC_DASK_SCHEDULER": "tcp://h:1"}, "TAC_EXECUTOR=dask"),
        ({"TAC_DASK_GPU_RESOURCE": "maybe"}, "TAC_DASK_GPU_RESOURCE"),
    ):
        with pytest.raises(DeploymentError, match=name):
            deployment_from_env(env)


def test_more_shards_than_images_and_bring_your_own_embeddings(data_dir):
    from tac_pipeline_tests.test_reliability.helpers import write_byo

    drop = data_dir / "drops" / KEY
    count = write_toy_drop(drop, train=1, test=0)
    with DagsterInstance.ephemeral() as instance:
        table, metadata = _embed(data_dir, instance, shards=5)  # two shards get nothing to do
        assert table.num_rows == count and metadata["encoded"].value == count
        write_byo(drop / "embeddings.parquet", n=12, width=16)
        table, metadata = _embed(data_dir, instance, shards=5)
        assert table.num_rows == 12 and metadata["encoder"].value == "none (bring your own)"


def test_handoffs_round_trip_through_parquet_with_any_file_name(tmp_path):
    """Plans and parts are stored as Parquet (no pickles), and a non-UTF-8 file name survives."""
    from tac_pipeline.defs.assets.embeddings import EmbeddedPart
    from tac_pipeline.defs.assets.sharded import ShardPlan
    from tac_pipeline.encoders.images import DropListing, ImageRecord

    drop = tmp_path / "drop"
    odd = drop / os.fsdecode(b"caf\xe9.png")
    listing = DropListing(
        root=drop,
        records=[
            ImageRecord("caf\\xe9.png", odd, "a", None),
            ImageRecord("b.png", drop / "b.png", None, None),
        ],
        has_labels=False,
        has_splits=False,
        label_names=["a"],
        layout="flat",
        skipped=[("c.png", "truncated")],
    )
    plan = ShardPlan(drop=drop, listing=listing, slices=[(0, 1), (1, 2)], drop_digest="abc")
    again = ShardPlan.from_table(plan.to_table())
    assert again == plan
    part = EmbeddedPart(
        positions=np.array([0, 2]),
        content_hashes=["h0", "h2"],
        embeddings=np.eye(2, 4, dtype=np.float32),
        reused=1,
        skipped=[("x.png", "not an image")],
        device="cpu",
        images_per_second=10.0,
        seconds=0.5,
        worker="tcp://127.0.0.1:1",
    )
    back = EmbeddedPart.from_table(part.to_table())
    assert back.positions.tolist() == [0, 2] and back.content_hashes == ["h0", "h2"]
    assert np.array_equal(back.embeddings, part.embeddings) and back.skipped == part.skipped
    assert (back.reused, back.worker, back.encoded) == (1, "tcp://127.0.0.1:1", 1)


@pytest.mark.parametrize("shards", [1, 2])
def test_defective_previous_rows_are_re_encoded_not_reused(data_dir, shards):
    """A stored table that failed its embeddings check must not poison the next run's reuse."""
    import pyarrow.parquet as pq

    from tac_pipeline.common.tables import embedding_array
    from tac_pipeline.store.layout import store_dir

    count = write_toy_drop(data_dir / "drops" / KEY, train=2, test=1)
    with DagsterInstance.ephemeral() as instance:
        table, _ = _embed(data_dir, instance, shards=shards)
        matrix = column_matrix(table, "embedding").copy()
        matrix[0] = np.nan
        matrix[1] *= 3.0
        path = store_dir(data_dir) / "image_embeddings" / f"{KEY}.parquet"
        pq.write_table(table.set_column(5, "embedding", embedding_array(matrix)), path)
        again, metadata = _embed(data_dir, instance, shards=shards)
        assert (metadata["encoded"].value, metadata["reused"].value) == (2, count - 2)
        fixed = column_matrix(again, "embedding")
        assert np.isfinite(fixed).all()
        np.testing.assert_allclose(np.linalg.norm(fixed, axis=1), 1.0, atol=1e-5)
