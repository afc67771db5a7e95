"""Dataset keys: one per folder in ``<data root>/drops/<key>/``, validated before they become paths.

Keys become paths (``drops/<key>``, ``store/<asset>/<key>.parquet``), so a key is a safe file name, never a
path.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from tac_pipeline.paths import drops_dir

#: Letters, digits, '_', '-' and '.', starting with a letter or digit; at most 64 characters.
PARTITION_KEY_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
_KEY_RE = re.compile(rf"^{PARTITION_KEY_PATTERN}$")


class InvalidDatasetKeyError(ValueError):
    """A drop folder name that cannot be a partition key."""


def validate_dataset_key(key: str) -> str:
    """Return ``key`` if it is a safe partition key, else raise naming the allowed pattern."""
    if not isinstance(key, str) or not _KEY_RE.fullmatch(key) or ".." in key:
        raise InvalidDatasetKeyError(
            f"{key!r} is not a valid dataset name: use {PARTITION_KEY_PATTERN} "
            "(letters, digits, '_', '-', '.', starting with a letter or digit, no '..'). "
            "Rename the folder under data/drops/."
        )
    return key


def drop_path(key: str, data_dir: str | os.PathLike[str] | None = None) -> Path:
    """The drop folder of a dataset key, after validating the key."""
    return drops_dir(data_dir) / validate_dataset_key(key)


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
