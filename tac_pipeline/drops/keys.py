"""Dataset keys: one per folder in ``<data root>/drops/<key>/``, validated before they become paths.

Nothing here knows the data root: :func:`tac_pipeline.store.layout.drop_path` turns a key into its folder.

Keys become paths (``drops/<key>``, ``store/<asset>/<key>.parquet``), so a key is a safe file name, never a
path.
"""

from __future__ import annotations

import re

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
