"""Parquet IO manager: one file per asset and partition, written atomically.

``<base_dir>/<asset>/<partition>.parquet`` for partitioned assets, ``<base_dir>/<asset>.parquet`` otherwise;
the UI figures of an asset beside them, ``<base_dir>/figures/<asset>/<partition>/<name>.png``
(:meth:`StoreIOManager.figure_path`). Assets return ``pyarrow.Table`` (or ``pandas.DataFrame``); inputs load
as ``pyarrow.Table`` so embedding columns stay fixed-size list<float32> with no per-row Python objects.

Every materialization records its file (``path`` metadata); readers outside a step open that recorded path
through :mod:`tac_pipeline.store.records`, which works for any fsspec store.

A run whose steps share one process (the in-process executor, an assign run) writes a table in one step and
reads it in the next: the last tables written or read there are kept in memory (:class:`RecentTables`, within a
byte budget) and handed to a later load of the very same file instead of decoding its Parquet again.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    ConfigurableIOManagerFactory,
    InputContext,
    MetadataValue,
    OutputContext,
    UPathIOManager,
)
from pydantic import Field
from upath import UPath

from tac_pipeline.common.atomic import write_parquet_atomically
from tac_pipeline.common.tables import is_vector_type, read_parquet
from tac_pipeline.defs.columns import column_schema
from tac_pipeline.drops.keys import validate_dataset_key
from tac_pipeline.store.layout import figure_path

PREVIEW_ROWS = 5


def remove_tree(path: UPath) -> None:
    """Remove a folder and everything under it, on local disk or any fsspec store; nothing if absent."""
    if path.exists():
        path.fs.rm(path.path, recursive=True)


def as_table(obj: Any) -> pa.Table:
    if isinstance(obj, pa.Table):
        return obj
    if isinstance(obj, pd.DataFrame):
        return pa.Table.from_pandas(obj, preserve_index=False)
    raise TypeError(
        f"the Parquet IO manager stores pyarrow Tables or pandas DataFrames, not {type(obj).__name__}"
    )


def table_preview(table: pa.Table, rows: int = PREVIEW_ROWS) -> str:
    """A small markdown preview; vector columns are summarised by their width."""
    head = table.slice(0, rows)
    columns = {}
    for name in head.column_names:
        column = head[name]
        if is_vector_type(column.type):
            columns[name] = [f"[{len(v)} values]" if v is not None else None for v in column.to_pylist()]
        else:
            columns[name] = column.to_pylist()
    frame = pd.DataFrame(columns)
    try:
        return frame.to_markdown(index=False)
    except ImportError:  # tabulate missing: plain text still reads fine in the UI
        return "```\n" + frame.to_string(index=False) + "\n```"


class RecentTables:
    """The last tables this process wrote to or read from local files, by the file's identity (path, inode,
    size, modification time), at most ``max_bytes`` of them (a larger table is not kept). A file changed or
    replaced since (an atomic write is a new inode) no longer matches and is read again. A kept table is the
    one a read of the file gives: the file's schema (Parquet names list items ``element``) and one chunk."""

    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self._tables: OrderedDict[tuple, pa.Table] = OrderedDict()

    @staticmethod
    def identity(path: UPath) -> tuple | None:
        """The local file's (path, inode, size, modification time); None for another store or no file."""
        if getattr(path, "protocol", "") not in ("", "file", "local"):
            return None
        local = os.fspath(path.path if hasattr(path, "path") else path)
        try:
            stat = os.stat(local)
        except OSError:
            return None
        return (local, stat.st_ino, stat.st_size, stat.st_mtime_ns)

    def keep(self, identity: tuple | None, table: pa.Table, *, written: bool = False) -> None:
        """Keep ``table`` as the content of the file of ``identity`` (:meth:`identity`, taken before reading
        it; ``written``: after this process wrote it, the table is brought to the form a read gives)."""
        if identity is None or table.nbytes > self.max_bytes:
            return
        if written:
            stored = pq.read_schema(identity[0])
            table = (
                table.combine_chunks().cast(stored.remove_metadata()).replace_schema_metadata(stored.metadata)
            )
        self._tables[identity] = table
        self._tables.move_to_end(identity)
        while sum(t.nbytes for t in self._tables.values()) > self.max_bytes:
            self._tables.popitem(last=False)

    def get(self, identity: tuple | None) -> pa.Table | None:
        """The table kept for the file of ``identity`` (:meth:`identity`), or None."""
        return self._tables.get(identity) if identity is not None else None

    def clear(self) -> None:
        self._tables.clear()


#: This process's :class:`RecentTables` (one per process: step processes of their own never share it).
RECENT_TABLES = RecentTables()


class StoreIOManager(UPathIOManager):
    """The project's Parquet store (see the module docstring); figures go beside the tables."""

    extension = ".parquet"

    def figure_path(self, asset: str, partition: str | None, name: str) -> UPath:
        """Where an asset's UI figure goes, beside the tables (:func:`tac_pipeline.store.layout.figure_path`)."""
        return figure_path(self._base_path, asset, partition, name)

    def get_path_for_partition(self, context, path: UPath, partition: str) -> UPath:
        # A partition key becomes a file name: validate it first, so that '../x', 'a/b' or '.x' (added through
        # the UI or the API, bypassing the drop scan) can never read or write outside <base_dir>/<asset>/.
        return super().get_path_for_partition(context, path, validate_dataset_key(partition))

    def dump_to_path(self, context: OutputContext, obj: Any, path: UPath) -> None:
        table = as_table(obj)
        write_parquet_atomically(table, path)
        RECENT_TABLES.keep(RECENT_TABLES.identity(path), table, written=True)

    def load_from_path(self, context: InputContext, path: UPath) -> pa.Table:
        identity = RECENT_TABLES.identity(path)
        kept = RECENT_TABLES.get(identity)
        if kept is not None:
            return kept
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: materialize {context.asset_key.to_user_string()} "
                "for this partition first"
            )
        with path.open("rb") as handle:
            table = read_parquet(handle)
        RECENT_TABLES.keep(identity, table)
        return table

    def get_metadata(self, context: OutputContext, obj: Any) -> dict[str, Any]:
        table = as_table(obj)
        schema = column_schema(context.asset_key.to_user_string(), table)
        return {
            "dagster/row_count": MetadataValue.int(table.num_rows),
            "dagster/column_schema": schema,
            "preview": MetadataValue.md(table_preview(table)),
        }


class ParquetIOManager(ConfigurableIOManagerFactory):
    """Stores every asset as Parquet under ``base_dir`` (``<data root>/store``)."""

    base_dir: str = Field(description="Folder (or fsspec URL) holding <asset>/<partition>.parquet files.")

    def create_io_manager(self, context) -> StoreIOManager:
        return StoreIOManager(base_path=UPath(self.base_dir))
