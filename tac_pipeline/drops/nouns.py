"""Where a dataset's nouns come from: the drop's own ``nouns.parquet``, or the shared WordNet noun embeddings
(which must then exist for the loaded encoder). The one home of that rule for ``text_space``, ``make cluster``,
the drops sensor and the schedule.

The graph keeps one edge from ``wordnet_noun_embeddings`` to ``text_space``, a ``deps`` edge (lineage and
staleness, no input loaded by the IO manager). ``text_space`` reads the drop's ``nouns.parquet`` when the drop
has one and never touches the shared table, so such a drop needs no encoder, no WordNet and no noun run;
otherwise it reads the shared table through the path its latest materialization recorded
(:mod:`tac_pipeline.defs.assets.noun_source`). :func:`waiting_for_shared_nouns` is the one prerequisite
``make cluster``, the drops sensor and the schedule check before a dataset's run.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dagster import DagsterInstance

from tac_pipeline.defs.names import NOUN_ASSET
from tac_pipeline.encoders.byo import BYO_NOUNS as DROP_NOUNS
from tac_pipeline.store.records import latest_materialization


def drop_nouns(drop: Path) -> Path | None:
    """The drop's own ``nouns.parquet``, or None when its nouns come from the shared WordNet embeddings."""
    path = Path(drop) / DROP_NOUNS
    return path if path.exists() else None


def uses_shared_nouns(drop: Path) -> bool:
    return drop_nouns(drop) is None


def shared_nouns_ready(instance: DagsterInstance, noun_code_version: str) -> bool:
    """True when the shared noun embeddings were materialized by this code version (i.e. this encoder and
    vocabulary) and the file that materialization recorded still exists and reads (a damaged or cut-short
    file is made again first, by ``make cluster``, the sensor and the schedule)."""
    latest = latest_materialization(instance, NOUN_ASSET)
    return latest is not None and latest.code_version == noun_code_version and latest.readable()


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


def noun_identity(instance: DagsterInstance, drop: Path) -> str:
    """Which nouns the drop's text space is chosen from, as a comparable text: the drop's own
    ``nouns.parquet`` (the sha256 of its bytes), or the shared embeddings' latest materialization (its code
    version, i.e. encoder and vocabulary, and its run). A fit records it; a change means a refit."""
    from tac_pipeline.encoders.incremental import file_sha256

    own = drop_nouns(drop)
    if own is not None:
        return f"drop nouns.parquet sha256 {(file_sha256(own) or 'unreadable')[:16]}"
    latest = latest_materialization(instance, NOUN_ASSET)
    if latest is None:
        return "shared nouns: none"
    return f"shared nouns {latest.code_version} run {latest.run_id}"
