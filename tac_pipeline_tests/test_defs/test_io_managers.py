"""The Parquet IO manager writes atomically: a failure mid-write leaves the previous file intact."""

from __future__ import annotations

import uuid

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, asset, instance_for_test, materialize

from tac_pipeline.common.atomic import write_parquet_atomically
from tac_pipeline.common.tables import column_matrix, embedding_array
from tac_pipeline.defs.io_managers import ParquetIOManager


def _table(value: float) -> pa.Table:
    return pa.table({"id": [1, 2, 3], "embedding": embedding_array(np.full((3, 4), value, dtype=np.float32))})


def test_failed_write_keeps_the_previous_file(tmp_path, monkeypatch):
    path = tmp_path / "store" / "asset" / "part.parquet"
    write_parquet_atomically(_table(1.0), path)
    real_write = pq.write_table

    def crash_half_way(table, where, **kwargs):
        real_write(table.slice(0, 1), where, **kwargs)  # some bytes reach the disk...
        raise OSError("disk full")  # ...then the write dies

    monkeypatch.setattr(pq, "write_table", crash_half_way)
    with pytest.raises(OSError, match="disk full"):
        write_parquet_atomically(_table(2.0), path)
    monkeypatch.undo()

    kept = pq.read_table(path)
    assert kept.equals(_table(1.0))
    assert sorted(p.name for p in path.parent.iterdir()) == ["part.parquet"]  # no temporary file left


def test_io_manager_round_trip_and_failed_run_keep_store_readable(tmp_path, monkeypatch):
    state = {"value": 1.0}

    @asset
    def vectors() -> pa.Table:
        return _table(state["value"])

    resources = {"io_manager": ParquetIOManager(base_dir=str(tmp_path))}
    with instance_for_test() as instance:
        assert materialize([vectors], resources=resources, instance=instance).success
        stored = tmp_path / "vectors.parquet"
        table = pq.read_table(stored)
        assert table.schema.field("embedding").type == pa.list_(pa.float32(), 4)
        np.testing.assert_array_equal(column_matrix(table, "embedding"), np.ones((3, 4)))

        def crash(*args, **kwargs):
            raise OSError("killed during write")

        state["value"] = 5.0
        monkeypatch.setattr(pq, "write_table", crash)
        result = materialize([vectors], resources=resources, instance=instance, raise_on_error=False)
        assert not result.success
        monkeypatch.undo()
        assert pq.read_table(stored).equals(table)
        event = instance.get_latest_materialization_event(AssetKey("vectors"))
        assert event.asset_materialization.metadata["dagster/row_count"].value == 3


def test_figures_go_where_the_io_manager_keeps_them_local_or_fsspec(tmp_path):
    from matplotlib.figure import Figure
    from upath import UPath

    from tac_pipeline.defs.assets.figures import publish_figure

    for base in (str(tmp_path / "store"), f"memory://tac-figures-{uuid.uuid4().hex}"):
        store = ParquetIOManager(base_dir=base).create_io_manager(None)
        fig = Figure(figsize=(2, 1))
        fig.add_subplot().plot([0, 1], [1, 0])
        md = publish_figure(fig, store=store, asset="trained_heads", partition="toy", name="loss", title="t")
        path = UPath(base) / "figures" / "trained_heads" / "toy" / "loss.png"
        assert md["loss_path"].value == str(path) and path.read_bytes().startswith(b"\x89PNG")
        with pytest.raises(ValueError, match="not a valid dataset name"):
            store.figure_path("trained_heads", "../x", "loss")
    with pytest.raises(TypeError, match="ParquetIOManager"):
        publish_figure(fig, store=object(), asset="trained_heads", partition="toy", name="loss", title="t")


def test_atomic_create_publishes_once_and_never_replaces(tmp_path):
    from tac_pipeline.common.atomic import atomic_create

    target = tmp_path / "sub" / "pinned.json"
    assert atomic_create(target, lambda h: h.write(b"first"))
    assert not atomic_create(target, lambda h: h.write(b"second"))
    assert target.read_bytes() == b"first"
    assert sorted(p.name for p in target.parent.iterdir()) == ["pinned.json"]  # no temporary file left


def test_a_table_loaded_in_the_process_that_wrote_it_is_what_the_file_holds(tmp_path):
    """One run process writes a table in a step and loads it in the next: the load comes from memory, and
    is exactly what a read of the file gives (types, chunks, values, schema metadata); a file replaced since
    by another writer is read again."""
    from tac_pipeline.defs.io_managers import RECENT_TABLES

    upstream_table = pa.concat_tables(
        [
            pa.table(
                {
                    "image_id": ["a", "b"],
                    "top_nouns": pa.array([["x", "y"], ["z"]], pa.list_(pa.string())),
                    "embedding": embedding_array(np.eye(2, 4, dtype=np.float32) + k),
                    "path": pa.nulls(2, pa.string()),
                }
            )
            for k in range(2)
        ]
    ).replace_schema_metadata({b"tac/lineage": b"{}"})
    seen = []

    @asset
    def upstream() -> pa.Table:
        return upstream_table

    @asset
    def downstream(upstream: pa.Table) -> pa.Table:
        seen.append(upstream)
        return upstream.select([0])

    resources = {"io_manager": ParquetIOManager(base_dir=str(tmp_path))}
    RECENT_TABLES.clear()
    with instance_for_test() as instance:
        assert materialize([upstream, downstream], resources=resources, instance=instance).success
        stored = tmp_path / "upstream.parquet"
        [loaded] = seen
        assert loaded.equals(pq.read_table(stored), check_metadata=True)
        assert [c.num_chunks for c in loaded.columns] == [1] * 4
        assert any(t is loaded for t in RECENT_TABLES._tables.values())  # it came from memory

        # Another writer replaces the file: the next load reads it.
        write_parquet_atomically(_table(7.0), stored)
        assert materialize(
            [upstream.to_source_asset(), downstream], resources=resources, instance=instance
        ).success
        assert seen[-1].equals(pq.read_table(stored)) and seen[-1].num_rows == 3


def test_tables_over_the_memory_budget_are_not_kept(tmp_path):
    from upath import UPath

    from tac_pipeline.defs.io_managers import RecentTables

    recent = RecentTables(max_bytes=200)
    small, large = _table(1.0), pa.table({"x": np.zeros(1000)})
    for name, table in (("small", small), ("large", large)):
        write_parquet_atomically(table, tmp_path / f"{name}.parquet")
        recent.keep(recent.identity(UPath(tmp_path / f"{name}.parquet")), table, written=True)
    assert recent.get(recent.identity(UPath(tmp_path / "small.parquet"))).equals(small)
    assert recent.get(recent.identity(UPath(tmp_path / "large.parquet"))) is None
