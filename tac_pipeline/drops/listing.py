"""Which drops exist, and a drop's images and settings."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

from tac_pipeline.drops.keys import InvalidDatasetKeyError, validate_dataset_key
from tac_pipeline.drops.settings import DatasetSettings, load_dataset_settings
from tac_pipeline.store.layout import drops_dir

if TYPE_CHECKING:  # pragma: no cover
    from tac_pipeline.encoders import DropListing


def discover_dataset_keys(data_dir: str | os.PathLike[str] | None = None) -> tuple[list[str], list[str]]:
    """Scan ``drops/`` and return ``(valid_keys, rejected_names)``, both sorted. Hidden folders are ignored."""
    root = drops_dir(data_dir)
    valid, rejected = [], []
    if not root.is_dir():
        return valid, rejected
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            valid.append(validate_dataset_key(entry.name))
        except InvalidDatasetKeyError:
            rejected.append(entry.name)
    return valid, rejected


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
