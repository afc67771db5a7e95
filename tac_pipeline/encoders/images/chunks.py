"""The decoding workers' side: read, hash, decode and preprocess a run of files (a chunk), never raising for a
bad file. Pillow and numpy only, so a worker process starts in a fraction of a second and stays small.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import numpy as np
from PIL import Image

from .decoding import MAX_FILE_BYTES, ImageDecodeError, decode_image_bytes, read_bytes
from .preprocess import PreprocessSpec
from .shm import park_in_shm

__all__ = ["ChunkResult", "decode_chunk"]


class ChunkResult(NamedTuple):
    start: int
    ok: list[int]  # offsets within the chunk
    pixels: np.ndarray | None  # (n_ok, 3, H, W), uint8 (spec) or float32 (callable)
    hashes: list[str]
    skipped: list[tuple[int, str]]  # (offset, reason)
    shm: tuple[str, tuple[int, ...], str] | None = (
        None  # pixels parked in shared memory: (name, shape, dtype)
    )


def _preprocess_one(
    img: Image.Image, preprocess: PreprocessSpec | Callable[[Image.Image], Any]
) -> np.ndarray:
    if isinstance(preprocess, PreprocessSpec):
        return preprocess.to_uint8_chw(img)
    out = preprocess(img)
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32))


def decode_chunk(
    start: int,
    paths: Sequence[str | os.PathLike[str]],
    preprocess: PreprocessSpec | Callable[[Image.Image], Any],
    max_pixels: int | None,
    use_shm: bool = False,
    known_hashes: Sequence[str | None] | None = None,
    max_bytes: int | None = MAX_FILE_BYTES,
) -> ChunkResult:
    """Worker entry point: read, hash, decode and preprocess a run of files. Never raises for a bad file.

    ``known_hashes``: the sha256 of each file where the caller has already hashed it (each file is hashed once
    per run); the bytes are hashed here only where it is None.

    With ``use_shm`` the pixels travel back through a shared-memory block instead of the result pipe (one copy
    instead of four, and no unpickling of ~40 MB per chunk in the consumer's process)."""
    ok: list[int] = []
    arrays: list[np.ndarray] = []
    hashes: list[str] = []
    skipped: list[tuple[int, str]] = []
    for offset, path in enumerate(paths):
        try:
            data = read_bytes(path, max_bytes)
            known = known_hashes[offset] if known_hashes is not None else None
            digest = known or hashlib.sha256(data).hexdigest()
            img = decode_image_bytes(data, max_pixels=max_pixels)
            try:
                arr = _preprocess_one(img, preprocess)
            except MemoryError:
                raise ImageDecodeError("out of memory while preprocessing") from None
            except Exception as exc:
                raise ImageDecodeError(f"preprocessing failed: {type(exc).__name__}: {exc}") from None
        except ImageDecodeError as exc:
            skipped.append((offset, exc.reason))
            continue
        except Exception as exc:  # belt and braces: one file never ends the chunk
            skipped.append((offset, f"unexpected error: {type(exc).__name__}: {exc}"))
            continue
        if arrays and arr.shape != arrays[0].shape:
            skipped.append((offset, f"preprocessing gave shape {arr.shape}, expected {arrays[0].shape}"))
            continue
        ok.append(offset)
        arrays.append(arr)
        hashes.append(digest)
    if use_shm and arrays:
        parked = park_in_shm(arrays)
        if parked is not None:
            return ChunkResult(start, ok, None, hashes, skipped, parked)
    pixels = np.stack(arrays) if arrays else None
    return ChunkResult(start, ok, pixels, hashes, skipped)
