"""Atomic file writes: write a temporary sibling, flush it to disk, then rename it over the target.

A crash mid-write leaves the previous file untouched; concurrent writers resolve as last-writer-wins, each
rename publishing a complete file. A writer killed outright leaves its hidden ``.<name>.<uuid>.tmp``
behind, which nothing reads.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import BinaryIO


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` with what ``write(handle)`` writes, never exposing half a file."""
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
