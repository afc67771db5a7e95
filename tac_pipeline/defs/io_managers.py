"""Parquet IO manager: one file per asset and partition, written atomically.

``<base_dir>/<asset>/<partition>.parquet`` for partitioned assets, ``<base_dir>/<asset>.parquet`` otherwise;
the UI figures of an asset beside them, ``<base_dir>/figures/<asset>/<partition>/<name>.png``
(:meth:`StoreIOManager.figure_path`). Assets return ``pyarrow.Table`` (or ``pandas.DataFrame``); inputs load
as ``pyarrow.Table`` so embedding columns stay fixed-size list<float32> with no per-row Python objects.

Every materialization records its file (``path`` metadata); readers outside a step open that recorded path
through :mod:`tac_pipeline.store.records`, which works for any fsspec store.
"""

from __future__ import annotations

from typing import Any

import pandas as pd
import pyarrow as pa
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
        write_parquet_atomically(as_table(obj), path)

    def load_from_path(self, context: InputContext, path: UPath) -> pa.Table:
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: materialize {context.asset_key.to_user_string()} "
                "for this partition first"
            )
        with path.open("rb") as handle:
            return read_parquet(handle)

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
