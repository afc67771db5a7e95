"""Shared memory for decoded pixels: a worker parks a chunk's pixels in ``/dev/shm`` and the reader takes them.

One copy instead of four, and no unpickling of ~40 MB per chunk in the consumer's process. A chunk goes through
the result pipe instead when ``/dev/shm`` is short of space (Docker's default is 64 MB; writing past a full
tmpfs would kill the worker with SIGBUS).
"""

from __future__ import annotations

import os

import numpy as np

__all__ = ["SHM_HEADROOM", "park_in_shm", "shm_free_bytes", "take_from_shm"]

#: Shared memory (``/dev/shm``) must keep this much free beyond a chunk, else the chunk goes through the pipe.
SHM_HEADROOM = 256 << 20


def shm_free_bytes() -> int:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def park_in_shm(arrays: list[np.ndarray]) -> tuple[str, tuple[int, ...], str] | None:
    """Copy the chunk's images into a new shared-memory block (the reader unlinks it). None when /dev/shm is
    short of space (Docker's default is 64 MB; writing past a full tmpfs would kill the worker with SIGBUS)."""
    from multiprocessing import shared_memory

    shape = (len(arrays), *arrays[0].shape)
    dtype = arrays[0].dtype
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if shm_free_bytes() < nbytes + SHM_HEADROOM:
        return None
    try:
        block = shared_memory.SharedMemory(create=True, size=nbytes)
    except OSError:
        return None
    try:
        view = np.ndarray(shape, dtype=dtype, buffer=block.buf)
        for i, arr in enumerate(arrays):
            view[i] = arr
        del view
        return block.name, shape, dtype.str
    finally:
        block.close()


def take_from_shm(name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
    """Copy a parked chunk out of shared memory and unlink the block."""
    from multiprocessing import shared_memory

    block = shared_memory.SharedMemory(name=name)
    try:
        view = np.ndarray(shape, dtype=np.dtype(dtype), buffer=block.buf)
        out = view.copy()
        del view
        return out
    finally:
        block.close()
        block.unlink()
