"""What a drop is, without Dagster: a folder ``<data root>/drops/<key>/`` of images (or of its own
embeddings), with an optional ``dataset.toml``.

- :mod:`~tac_pipeline.drops.keys`: which folder names are dataset keys (validated before they become paths)
  and which drops exist;
- :mod:`~tac_pipeline.drops.manifest`: a drop's manifest (every file's path, size and mtime) and its digest,
  which the sensor, the schedule and ``image_embeddings`` compare (the sensor's cheap per-tick check:
  :func:`watched_drop_manifest`);
- :func:`drop_settings` and :func:`list_drop_images`: the entry points to the drop's ``dataset.toml``
  (:mod:`tac_pipeline.settings`) and to its images (:mod:`tac_pipeline.encoders`).

The Dagster side wraps these: the ``datasets`` partitions (:mod:`tac_pipeline.partitions`), the ``tac_data``
resource (:mod:`tac_pipeline.resources.data`) and the automation (:mod:`tac_pipeline.automation`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tac_pipeline.drops.keys import (
    PARTITION_KEY_PATTERN,
    InvalidDatasetKeyError,
    discover_dataset_keys,
    drop_path,
    validate_dataset_key,
)
from tac_pipeline.drops.manifest import DropManifest, WatchedManifest, drop_manifest, watched_drop_manifest
from tac_pipeline.settings import DatasetSettings, load_dataset_settings

if TYPE_CHECKING:  # pragma: no cover
    from tac_pipeline.encoders import DropListing

__all__ = [
    "PARTITION_KEY_PATTERN",
    "DropManifest",
    "InvalidDatasetKeyError",
    "discover_dataset_keys",
    "drop_manifest",
    "drop_path",
    "drop_settings",
    "list_drop_images",
    "validate_dataset_key",
    "WatchedManifest",
    "watched_drop_manifest",
]


def drop_settings(drop_dir: str | os.PathLike[str]) -> DatasetSettings:
    """The drop's ``dataset.toml`` (all defaults without one); raises naming the file and field when bad."""
    return load_dataset_settings(Path(drop_dir))


def list_drop_images(
    drop_dir: str | os.PathLike[str], settings: DatasetSettings | None = None
) -> DropListing:
    """The drop's images: its own files, or those its ``[images]`` setting names."""
    from tac_pipeline.encoders import discover_images

    drop_dir = Path(drop_dir)
    source = (settings or drop_settings(drop_dir)).images
    if source is None:
        return discover_images(drop_dir)
    return discover_images(drop_dir, image_root=source.root, splits=source.splits, classes=source.classes)
