"""The nouns ``text_space`` selects from: the drop's own ``nouns.parquet``, or the shared WordNet noun
embeddings (the rule and the prerequisite: :mod:`tac_pipeline.drops.nouns`)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
from dagster import DagsterInstance, DataVersion, MetadataValue

from tac_pipeline.common.tables import table_digest
from tac_pipeline.defs.names import NOUN_ASSET
from tac_pipeline.drops.nouns import DROP_NOUNS, drop_nouns
from tac_pipeline.encoders.byo import read_byo_nouns
from tac_pipeline.store.records import latest_materialization


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
    latest = latest_materialization(instance, NOUN_ASSET)
    path = latest.existing_path() if latest is not None else None
    if path is None:
        raise FileNotFoundError(
            f"{drop} has no {DROP_NOUNS}, so its nouns come from the shared {NOUN_ASSET}, which "
            + ("are not materialized" if latest is None else "have no stored file any more")
            + f": materialize {NOUN_ASSET} first (make cluster does), or put a {DROP_NOUNS} "
            "(noun, embedding) in the drop"
        )
    table = latest.read_table()
    shown = {name: latest.value(name) for name in ("model", "vocabulary")}
    return DatasetNouns(
        table=table,
        fingerprint=f"shared:{latest.code_version or ''}:{latest.storage_id}",
        metadata={
            "nouns_source": NOUN_ASSET,
            "nouns_file": MetadataValue.path(str(path)),
            "nouns_rows": table.num_rows,
            "nouns_encoder": shown["model"] or "unknown",
            "nouns_vocabulary": shown["vocabulary"] or "unknown",
        },
    )
