"""Where a dataset's nouns come from: the drop's own ``nouns.parquet``, or the shared WordNet noun embeddings
(which must then exist for the loaded encoder). The one home of that rule for ``text_space``, ``make cluster``,
the drops sensor and the schedule.

The graph keeps one edge from ``wordnet_noun_embeddings`` to ``text_space``, a ``deps`` edge (lineage and
staleness, no input loaded by the IO manager). ``text_space`` reads the drop's ``nouns.parquet`` when the drop
has one and never touches the shared table, so such a drop needs no encoder, no WordNet and no noun run;
otherwise it reads the shared table through the path its latest materialization recorded
(:mod:`tac_pipeline.assets.nouns`). :func:`waiting_for_shared_nouns` is the one prerequisite ``make cluster``,
the drops sensor and the schedule check before a dataset's run. No asset module is imported here (the
automation imports this module).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dagster import DagsterInstance
from upath import UPath

from tac_pipeline.encoders.byo import BYO_NOUNS as DROP_NOUNS
from tac_pipeline.jobs import NOUN_ASSET_KEY


def drop_nouns(drop: Path) -> Path | None:
    """The drop's own ``nouns.parquet``, or None when its nouns come from the shared WordNet embeddings."""
    path = Path(drop) / DROP_NOUNS
    return path if path.exists() else None


def uses_shared_nouns(drop: Path) -> bool:
    return drop_nouns(drop) is None


def latest_shared_nouns(instance: DagsterInstance):
    """The latest materialization record of the shared noun embeddings and the file it recorded (None when
    it recorded none or the file is gone); None when they were never materialized."""
    records = instance.fetch_materializations(NOUN_ASSET_KEY, limit=1).records
    if not records:
        return None
    metadata = records[0].asset_materialization.metadata
    path = getattr(metadata.get("path") or metadata.get("dagster/uri"), "value", None)
    return records[0], (path if path and UPath(path).exists() else None)


def shared_nouns_ready(instance: DagsterInstance, noun_code_version: str) -> bool:
    """True when the shared noun embeddings were materialized by this code version (i.e. this encoder and
    vocabulary) and the file that materialization recorded still exists."""
    latest = latest_shared_nouns(instance)
    if latest is None:
        return False
    record, path = latest
    tags = record.asset_materialization.tags or {}
    return tags.get("dagster/code_version") == noun_code_version and path is not None


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
