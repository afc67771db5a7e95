"""Atomic writes, in one place: files and Parquet tables (a temporary sibling, flushed to disk, then renamed
over the target, or, to create a file only once, linked into place) and folders (filled under a hidden
sibling name, then renamed into place).

A crash mid-write leaves the previous file untouched; concurrent writers resolve as last-writer-wins, each
rename publishing a complete file. A writer killed outright leaves its hidden ``.<name>.<uuid>.tmp`` (or
``.<name>.<uuid>.staging`` folder) behind, which nothing reads.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow as pa
    from upath import UPath

__all__ = [
    "atomic_write",
    "publish_folder",
    "staging_folder",
    "write_bytes_atomically",
    "write_parquet_atomically",
    "write_to_store",
]


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


def write_to_store(path: UPath | os.PathLike[str] | str, write: Callable[[BinaryIO], object]) -> None:
    """Create or replace ``path`` (local or any fsspec store) with what ``write(handle)`` writes, never
    exposing half a file: locally through :func:`atomic_write`; object stores publish a put atomically, so
    there is no rename to do."""
    from upath import UPath

    path = UPath(path)
    if getattr(path, "protocol", "") not in ("", "file", "local"):
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as handle:
            write(handle)
        return
    atomic_write(os.fspath(path.path if hasattr(path, "path") else path), write)


def write_bytes_atomically(data: bytes, path: UPath | os.PathLike[str] | str) -> None:
    """Write ``data`` to ``path`` (local or fsspec) atomically: readers never see half a file."""
    write_to_store(path, lambda handle: handle.write(data))


def write_parquet_atomically(table: pa.Table, path: UPath | os.PathLike[str] | str) -> None:
    """Write ``table`` as Parquet to ``path`` (local or fsspec) through :func:`write_to_store`."""
    import pyarrow.parquet as pq

    from tac_pipeline.common.tables import dictionary_columns

    columns = dictionary_columns(table.schema)
    write_to_store(path, lambda handle: pq.write_table(table, handle, use_dictionary=columns))


@contextlib.contextmanager
def staging_folder(target: str | os.PathLike[str]) -> Iterator[Path]:
    """A new, empty hidden sibling of ``target`` to fill; removed on leaving unless :func:`publish_folder`
    moved it into place (so an error or an early return never leaves a half-built folder under ``target``)."""
    target = Path(target)
    staging = target.with_name(f".{target.name}.{uuid.uuid4().hex}.staging")
    staging.mkdir(parents=True)
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def publish_folder(staging: str | os.PathLike[str], target: str | os.PathLike[str]) -> None:
    """Put a filled :func:`staging_folder` in place of ``target`` (whatever ``target`` held is removed first)."""
    target = Path(target)
    if target.exists():
        shutil.rmtree(target)
    os.replace(staging, target)
