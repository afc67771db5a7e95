"""Where a dataset's nouns come from: the drop's own ``nouns.parquet``, or the shared WordNet noun embeddings.

The graph keeps one edge from ``wordnet_noun_embeddings`` to ``text_space``, a ``deps`` edge (lineage and
staleness, no input loaded by the IO manager). ``text_space`` reads the drop's ``nouns.parquet`` when the drop
has one and never touches the shared table, so such a drop needs no encoder, no WordNet and no noun run;
otherwise it reads the shared table through the path its latest materialization recorded. The same rule
decides, in :func:`waiting_for_shared_nouns`, whether ``make cluster``, the drops sensor and the schedule must
materialize the shared noun embeddings before a dataset's run.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetKey, DagsterInstance, DataVersion, MetadataValue
from upath import UPath

from tac_pipeline.encoders.byo import BYO_NOUNS, read_byo_nouns
from tac_pipeline.tables import table_digest

#: The shared noun embeddings, computed once per encoder.
NOUN_ASSET = "wordnet_noun_embeddings"
NOUN_ASSET_KEY = AssetKey(NOUN_ASSET)


def drop_nouns(drop: Path) -> Path | None:
    """The drop's own ``nouns.parquet``, or None when its nouns come from the shared WordNet embeddings."""
    path = Path(drop) / BYO_NOUNS
    return path if path.exists() else None


def uses_shared_nouns(drop: Path) -> bool:
    return drop_nouns(drop) is None


def _recorded_path(materialization) -> str | None:
    entry = materialization.metadata.get("path") or materialization.metadata.get("dagster/uri")
    return getattr(entry, "value", None)


def _latest_shared(instance: DagsterInstance):
    """The latest materialization record of the shared noun embeddings, or None."""
    records = instance.fetch_materializations(NOUN_ASSET_KEY, limit=1).records
    return records[0] if records else None


def shared_nouns_ready(instance: DagsterInstance, noun_code_version: str) -> bool:
    """True when the shared noun embeddings were materialized by this code version (i.e. this encoder and
    vocabulary) and the file that materialization recorded still exists."""
    record = _latest_shared(instance)
    if record is None:
        return False
    materialization = record.asset_materialization
    if (materialization.tags or {}).get("dagster/code_version") != noun_code_version:
        return False
    path = _recorded_path(materialization)
    return bool(path) and UPath(path).exists()


def waiting_for_shared_nouns(
    instance: DagsterInstance, noun_code_version: str, drops: Mapping[str, Path]
) -> list[str]:
    """The datasets among ``drops`` (key → drop folder) that cannot run yet: those that take the shared noun
    embeddings while these are missing or were made by another encoder. Drops with their own
    ``nouns.parquet`` never wait. Empty when every one of them can run now."""
    shared = [key for key, drop in drops.items() if uses_shared_nouns(drop)]
    if not shared or shared_nouns_ready(instance, noun_code_version):
        return []
    return shared


@dataclass
class DatasetNouns:
    """The noun table a dataset's text space is selected from, and where it came from."""

    table: pa.Table
    fingerprint: str  # changes whenever the noun table may have changed
    metadata: dict = field(default_factory=dict)

    def data_version(self, text_space: pa.Table) -> DataVersion:
        """``text_space``'s data version: its noun source and its own content. A changed ``nouns.parquet``
        (or a new materialization of the shared nouns) gives a new version, so what is downstream goes
        stale; re-running on the same nouns keeps it."""
        digest = hashlib.sha256(json.dumps([self.fingerprint, table_digest(text_space)]).encode())
        return DataVersion(digest.hexdigest()[:24])


def dataset_nouns(instance: DagsterInstance, drop: Path, width: int) -> DatasetNouns:
    """The nouns of the dataset in ``drop``, for image embeddings ``width`` wide (checked for the drop's file;
    the caller checks the shared table's width).

    The drop's ``nouns.parquet`` when it has one (validated; the shared table is not read), otherwise the
    shared ``wordnet_noun_embeddings`` from the file their latest materialization recorded.
    """
    own = drop_nouns(drop)
    if own is not None:
        table = read_byo_nouns(own, expected_width=width)
        with open(own, "rb") as handle:
            digest = hashlib.file_digest(handle, "sha256").hexdigest()
        return DatasetNouns(
            table=table,
            fingerprint=f"drop:{digest}",
            metadata={
                "nouns_source": "drop",
                "nouns_file": MetadataValue.path(str(own)),
                "nouns_rows": table.num_rows,
                "nouns_sha256": digest,
                "nouns_encoder": "none (bring your own)",
            },
        )
    record = _latest_shared(instance)
    path = _recorded_path(record.asset_materialization) if record is not None else None
    if not path or not UPath(path).exists():
        raise FileNotFoundError(
            f"{drop} has no {BYO_NOUNS}, so its nouns come from the shared {NOUN_ASSET}, which "
            + ("are not materialized" if record is None else f"are missing ({path})")
            + f": materialize {NOUN_ASSET} first (make cluster does), or put a {BYO_NOUNS} "
            "(noun, embedding) in the drop"
        )
    with UPath(path).open("rb") as handle:
        table = pq.read_table(handle)
    materialization = record.asset_materialization
    shown = {
        name: getattr(materialization.metadata.get(name), "value", None) for name in ("model", "vocabulary")
    }
    code_version = (materialization.tags or {}).get("dagster/code_version", "")
    return DatasetNouns(
        table=table,
        fingerprint=f"shared:{code_version}:{record.storage_id}",
        metadata={
            "nouns_source": NOUN_ASSET,
            "nouns_file": MetadataValue.path(str(path)),
            "nouns_rows": table.num_rows,
            "nouns_encoder": shown["model"] or "unknown",
            "nouns_vocabulary": shown["vocabulary"] or "unknown",
        },
    )
