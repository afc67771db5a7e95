"""Atomic file writes: write a temporary sibling, flush it to disk, then rename it over the target (or, to
create a file only once, link it into place).

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
    _publish(path, write, os.replace)


def atomic_create(path: str | os.PathLike[str], write: Callable[[BinaryIO], object]) -> bool:
    """Create ``path`` with what ``write(handle)`` writes unless it exists; never exposes half a file.

    The complete temporary file is hard-linked to ``path``, which fails when ``path`` exists: of writers
    racing for the same path exactly one wins. Returns True for the winner, False when ``path`` existed.
    """
    try:
        _publish(path, write, os.link)
    except FileExistsError:
        return False
    return True


def _publish(path, write, publish: Callable[[str, str], None]) -> None:
    path = os.fspath(path)
    folder = os.path.dirname(path) or "."
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.{uuid.uuid4().hex}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        publish(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
