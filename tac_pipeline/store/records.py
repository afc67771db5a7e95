"""The one reader of "the latest materialization of asset A for partition P": its stored path, its metadata,
its code and data versions.

Every materialization of the Parquet IO manager records the file it wrote (``path`` metadata); other files an
asset writes beside it are recorded under their own entries (``skipped_report``). Readers outside a step (the
CLI, the automation) and steps that reuse their previous output open the path that was recorded, through
UPath, so the same code works for a local store and for any fsspec store (``s3://``, ``memory://``…).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance
from upath import UPath

from tac_pipeline.common.tables import parquet_footer_reads, read_parquet

CODE_VERSION_TAG = "dagster/code_version"
DATA_VERSION_TAG = "dagster/data_version"


@dataclass(frozen=True)
class Materialization:
    """What one materialization of an asset (partition) recorded."""

    asset: str
    partition: str | None
    run_id: str
    timestamp: float
    storage_id: int
    metadata: Mapping[str, Any]  # entry name -> Dagster MetadataValue
    code_version: str | None
    data_version: str | None

    def value(self, entry: str) -> Any:
        """The value of a metadata entry (None when absent)."""
        return getattr(self.metadata.get(entry), "value", None)

    def path(self, entry: str = "path") -> UPath | None:
        """The file recorded under ``entry`` (``path``: the asset's table; Dagster's ``dagster/uri`` when a
        store recorded only that), whether or not it still exists; None when nothing was recorded."""
        value = self.value(entry)
        if value is None and entry == "path":
            value = self.value("dagster/uri")
        return UPath(value) if value else None

    def existing_path(self, entry: str = "path") -> UPath | None:
        """:meth:`path` when that file still exists, else None."""
        path = self.path(entry)
        return path if path is not None and path.exists() else None

    def read_table(self, entry: str = "path") -> pa.Table:
        """The Parquet table recorded under ``entry``; FileNotFoundError naming it when it is gone."""
        path = self.existing_path(entry)
        if path is None:
            where = f" for partition '{self.partition}'" if self.partition else ""
            raise FileNotFoundError(
                f"the stored {self.asset}{where} ({self.path(entry) or 'no file recorded'}) is gone: "
                f"materialize {self.asset} again"
            )
        try:
            with path.open("rb") as handle:
                return read_parquet(handle)
        except (OSError, pa.ArrowException) as exc:
            where = f" for partition '{self.partition}'" if self.partition else ""
            raise StoredTableError(
                f"{path}: the stored {self.asset}{where} cannot be read ({type(exc).__name__}: {exc}): the "
                f"file is damaged or cut short; materialize {self.asset}{where} again"
            ) from None

    def readable(self, entry: str = "path") -> bool:
        """True when the file recorded under ``entry`` exists and its Parquet footer reads (a cut-short or
        damaged file does not); reads the footer only."""
        path = self.existing_path(entry)
        if path is None:
            return False
        try:
            with path.open("rb") as handle:
                return parquet_footer_reads(handle)
        except OSError:
            return False


class StoredTableError(OSError):
    """A stored table exists but cannot be read; the message names the file and what to materialize again."""


def latest_materialization(
    instance: DagsterInstance,
    asset: str | AssetKey,
    partition: str | None = None,
    *,
    since: float | None = None,
) -> Materialization | None:
    """The latest materialization of ``asset`` (for ``partition``), or None when there is none (or it is older
    than ``since``, a time stamp)."""
    key = AssetKey.from_coercible(asset)
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[partition] if partition is not None else None),
        limit=1,
    ).records
    if not records or (since is not None and records[0].timestamp < since):
        return None
    record = records[0]
    materialization = record.asset_materialization
    tags = materialization.tags or {}
    return Materialization(
        asset=key.to_user_string(),
        partition=materialization.partition,
        run_id=record.run_id,
        timestamp=record.timestamp,
        storage_id=record.storage_id,
        metadata=materialization.metadata,
        code_version=tags.get(CODE_VERSION_TAG),
        data_version=tags.get(DATA_VERSION_TAG),
    )


def read_stored_table(
    instance: DagsterInstance, asset: str | AssetKey, partition: str | None = None
) -> pa.Table:
    """The table the latest materialization of ``asset`` stored, read from the path it recorded."""
    latest = latest_materialization(instance, asset, partition)
    if latest is None:
        where = f" for partition '{partition}'" if partition else ""
        name = AssetKey.from_coercible(asset).to_user_string()
        raise FileNotFoundError(f"no stored {name}{where}: materialize it first (never materialized)")
    return latest.read_table()
