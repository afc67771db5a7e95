"""Where the pipeline keeps its files: one data root (``TAC_DATA_DIR``, default ``./data``), and every folder
under it, named here and nowhere else.

Layout under the root (see ``data/README.md``)::

    drops/<dataset>/                      input image drops, one folder per dataset partition
    store/<asset>/<key>.parquet           outputs written by the Parquet IO manager
    store/figures/<asset>/<key>/<name>.png   the UI's figures of an asset, beside its tables
    store/reports/<dataset>/              per-file outcomes a user must act on (skipped_files.parquet)
    store/intermediate/<run>/             hand-offs between the steps of one run (embedding shards)
    store/run_settings/<dataset>/<run>.json   dataset.toml as the run read it at its start (one per run)
    cache/                                parsed vocabularies (the WordNet nouns) and other caches
    cache/drops_sensor/<dataset>.json     what the drops sensor saw of a drop at its last tick
    nltk_data/                            an nltk-readable WordNet built from the system database when needed
    downloads/<dataset>/                  archives ``make reproduce`` downloaded

and, beside the Dagster instance, ``$DAGSTER_HOME/locks/`` (:func:`locks_dir`) and ``$DAGSTER_HOME/logs/``
(:func:`command_log`). The data root itself comes
from :mod:`tac_pipeline.config` when no folder is given.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from upath import UPath

from tac_pipeline.drops.keys import validate_dataset_key

PathLike = str | os.PathLike[str]

#: The sub-folders of the data root and of its store.
DROPS, STORE, CACHE, NLTK_DATA, DOWNLOADS = "drops", "store", "cache", "nltk_data", "downloads"
FIGURES, REPORTS, INTERMEDIATE, RUN_SETTINGS = "figures", "reports", "intermediate", "run_settings"
DROPS_SENSOR_STATE = "drops_sensor"
SKIPPED_FILES = "skipped_files.parquet"


def data_root(data_dir: PathLike | None = None) -> Path:
    """The data root: ``data_dir`` when given, else the configured one (``$TAC_DATA_DIR``, else ``./data``),
    absolute."""
    if data_dir is None:
        from tac_pipeline.config import data_dir_from_env

        data_dir = data_dir_from_env()
    return Path(data_dir).expanduser().absolute()


def drops_dir(data_dir: PathLike | None = None) -> Path:
    return data_root(data_dir) / DROPS


def drop_path(key: str, data_dir: PathLike | None = None) -> Path:
    """The drop folder of a dataset key, after validating the key (a key never becomes a traversal)."""
    return drops_dir(data_dir) / validate_dataset_key(key)


def store_dir(data_dir: PathLike | None = None) -> Path:
    return data_root(data_dir) / STORE


def cache_dir(data_dir: PathLike | None = None) -> Path:
    return data_root(data_dir) / CACHE


def nltk_data_dir(data_dir: PathLike | None = None) -> Path:
    """``<root>/nltk_data``: where an nltk-readable WordNet is built or downloaded when none is found."""
    return data_root(data_dir) / NLTK_DATA


def downloads_dir(dataset: str, data_dir: PathLike | None = None) -> Path:
    """``<root>/downloads/<dataset>``: what ``make reproduce`` downloaded for a paper dataset."""
    return data_root(data_dir) / DOWNLOADS / validate_dataset_key(dataset)


def drops_sensor_state(dataset: str, data_dir: PathLike | None = None) -> Path:
    """``<root>/cache/drops_sensor/<dataset>.json``: the drops sensor's memory of one drop."""
    return cache_dir(data_dir) / DROPS_SENSOR_STATE / f"{validate_dataset_key(dataset)}.json"


def skipped_files_report(dataset: str, data_dir: PathLike | None = None) -> Path:
    """``<store>/reports/<dataset>/skipped_files.parquet``: every file of the drop's last embedding run that
    was not embedded, with the reason (columns ``file``, ``reason``)."""
    return store_dir(data_dir) / REPORTS / validate_dataset_key(dataset) / SKIPPED_FILES


def exports_dir(data_dir: PathLike | None = None) -> Path:
    """Where ``make export`` writes when it is given no ``TO=``."""
    return data_root(data_dir) / "exports"


def fiftyone_dir(data_dir: PathLike | None = None) -> Path:
    """``<data root>/fiftyone``: the FiftyOne database of ``make explore``'s datasets."""
    return data_root(data_dir) / "fiftyone"


def image_state_path(dataset: str, drop_digest: str, data_dir: PathLike | None = None) -> Path:
    """The drop's images as one run saw them (key -> fingerprint), for the refit policy: one file per drop
    digest, so an assign never overwrites the state its fit was made from."""
    if not drop_digest.isalnum():
        raise ValueError(f"a drop digest is hexadecimal, got {drop_digest!r}")
    return store_dir(data_dir) / "image_states" / validate_dataset_key(dataset) / f"{drop_digest}.parquet"


def intermediate_dir(data_dir: PathLike | None = None) -> Path:
    """Per-run hand-offs between steps that are not assets (embedding shards): ``<store>/intermediate``."""
    return store_dir(data_dir) / INTERMEDIATE


_FIGURE_NAME = re.compile(r"^[a-z0-9_]{1,64}$")


def figure_path(store: UPath, asset: str, partition: str | None, name: str) -> UPath:
    """``<store>/figures/<asset>/<partition>/<name>.png`` (``_`` for an unpartitioned asset); ``store`` is
    the IO manager's base (a local folder or any fsspec URL)."""
    for part in (asset, name):
        if not _FIGURE_NAME.fullmatch(part):
            raise ValueError(f"figure path component {part!r} must match {_FIGURE_NAME.pattern}")
    key = "_" if partition is None else validate_dataset_key(partition)
    return UPath(store) / FIGURES / asset / key / f"{name}.png"


_RUN_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def run_settings_dir(dataset: str, data_dir: PathLike | None = None) -> Path:
    """``<store>/run_settings/<dataset>/``: the settings each run of the dataset pinned at its start."""
    return store_dir(data_dir) / RUN_SETTINGS / validate_dataset_key(dataset)


def run_settings_path(dataset: str, run_id: str, data_dir: PathLike | None = None) -> Path:
    """``<store>/run_settings/<dataset>/<run id>.json`` (the run id validated: it becomes a file name)."""
    if not _RUN_ID.fullmatch(run_id):
        raise ValueError(f"{run_id!r} is not a Dagster run id")
    return run_settings_dir(dataset, data_dir) / f"{run_id}.json"


def locks_dir(dagster_home: PathLike) -> Path:
    """``$DAGSTER_HOME/locks``: the lock files that order commands (the instance's creation, a dataset's
    turn), created when missing."""
    folder = Path(dagster_home) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def command_log(dagster_home: PathLike, token: str) -> Path:
    """``$DAGSTER_HOME/logs/<token>.log``: what a command's run process printed (Dagster's console, warnings),
    kept when the run fails, so that the terminal shows one line per step."""
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,64}", token):
        raise ValueError(f"{token!r} is not a log name")
    folder = Path(dagster_home) / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{token}.log"
