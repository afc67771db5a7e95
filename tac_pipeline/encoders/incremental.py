"""Incremental image embeddings: reuse the rows of unchanged files from the previous materialization.

A file is "unchanged" when its bytes hash (sha256) to a content hash the previous table holds; it may have
moved or been renamed, and then keeps its embedding under its new id, label and split.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pyarrow as pa

_CHUNK = 1 << 20


def sha256_of_file(path: str | os.PathLike[str]) -> str:
    """sha256 of a file's bytes, read in 1 MiB chunks; raises OSError when it cannot be read."""
    hasher = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def file_sha256(path: str | os.PathLike[str]) -> str | None:
    """sha256 of a file's bytes (the image reader's ``content_hash``), or None when it cannot be read."""
    try:
        return sha256_of_file(path)
    except OSError:
        return None


def content_hashes(paths: Sequence[str | os.PathLike[str]], max_workers: int = 8) -> list[str | None]:
    """sha256 of many files; hashlib releases the GIL, so threads overlap reading and hashing."""
    if len(paths) < 64:
        return [file_sha256(p) for p in paths]
    with ThreadPoolExecutor(max_workers=max_workers) as pool:
        return list(pool.map(file_sha256, paths, chunksize=64))


@dataclass(frozen=True)
class ReusePlan:
    """Which listed files to take from the previous table and which to encode.

    ``reuse``: (position in the listing, row of the previous table) pairs; ``encode``: listing positions;
    ``removed``: previous rows whose content no longer appears in the drop.
    """

    reuse: list[tuple[int, int]]
    encode: list[int]
    removed: int


def plan_reuse(hashes: Sequence[str | None], previous: pa.Table | None) -> ReusePlan:
    """Match the listing's content hashes against the previous ``image_embeddings`` table."""
    if previous is None or "content_hash" not in previous.column_names:
        return ReusePlan(reuse=[], encode=list(range(len(hashes))), removed=0)
    row_of = {h: i for i, h in enumerate(previous["content_hash"].to_pylist()) if h is not None}
    reuse, encode = [], []
    for position, digest in enumerate(hashes):
        if digest is not None and digest in row_of:
            reuse.append((position, row_of[digest]))
        else:
            encode.append(position)
    kept = {digest for digest in hashes if digest is not None}
    removed = sum(1 for digest in row_of if digest not in kept)
    return ReusePlan(reuse=reuse, encode=encode, removed=removed)
