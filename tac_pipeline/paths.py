"""Where the pipeline keeps its files: one data root, chosen by ``TAC_DATA_DIR`` (default ``./data``).

Layout under the root (see ``data/README.md``)::

    drops/<dataset>/            input image drops, one folder per dataset partition
    store/<asset>/<key>.parquet outputs written by the Parquet IO manager
    store/reports/<dataset>/    per-file outcomes a user must act on (skipped_files.parquet)
    store/intermediate/<run>/   hand-offs between the steps of one run (embedding shards), removed after use
    cache/                      parsed vocabularies and other caches
    nltk_data/                  an nltk-readable WordNet built from the system database when needed
"""

from __future__ import annotations

import os
from pathlib import Path

DATA_DIR_ENV = "TAC_DATA_DIR"


def data_root(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The data root: ``data_dir`` when given, else ``$TAC_DATA_DIR``, else ``./data`` (absolute)."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_DIR_ENV) or "data"
    return Path(chosen).expanduser().absolute()


def drops_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    return data_root(data_dir) / "drops"


def store_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    return data_root(data_dir) / "store"


def cache_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    return data_root(data_dir) / "cache"


def skipped_files_report(dataset: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """``<store>/reports/<dataset>/skipped_files.parquet``: every file of the drop's last embedding run that
    was not embedded, with the reason (columns ``file``, ``reason``)."""
    from tac_pipeline.drops.keys import validate_dataset_key

    return store_dir(data_dir) / "reports" / validate_dataset_key(dataset) / "skipped_files.parquet"


def intermediate_dir(data_dir: str | os.PathLike[str] | None = None) -> Path:
    """Per-run hand-offs between steps that are not assets (embedding shards): ``<store>/intermediate``."""
    return store_dir(data_dir) / "intermediate"
