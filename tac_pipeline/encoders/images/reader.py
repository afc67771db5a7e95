"""The worker pool: decode and preprocess many files in worker processes and yield ordered batches.

:func:`read_images` returns an :class:`ImageReader`; iterating it gives :class:`ImageBatch` es in input order.
Files that cannot be decoded are collected in ``reader.skipped`` and never stop the run; a worker that dies
(decoder crash, out-of-memory kill) is replaced and its chunk re-run file by file, so the culprit is skipped.
torch is imported only where tensors are made.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image

from .chunks import ChunkResult, decode_chunk
from .decoding import MAX_FILE_BYTES
from .discovery import DropListing, ImageRecord, id_component
from .preprocess import PreprocessSpec
from .shm import SHM_HEADROOM, shm_free_bytes, take_from_shm

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["ImageBatch", "ImageReader", "default_num_workers", "default_start_method", "read_images"]

_log = logging.getLogger(__name__)


def _release_when_done(fut: cf.Future[ChunkResult]) -> None:
    """A result nobody will read: unlink its shared memory once it arrives."""
    if fut.cancelled() or fut.exception() is not None:
        return
    res = fut.result()
    if res.shm is not None:
        try:
            take_from_shm(*res.shm)
        except (OSError, ValueError):
            pass


class ImageBatch(NamedTuple):
    """One batch from :func:`read_images`: positions in the input, pixels ``(b,3,H,W)``, sha256 per file."""

    indices: np.ndarray
    pixels: torch.Tensor
    content_hashes: list[str]


def default_num_workers() -> int:
    """One decoding process per available core, minus one for the consumer; at least 1, at most 32."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        cores = os.cpu_count() or 1
    return max(1, min(32, cores - 1))


def default_start_method() -> str:
    """``forkserver`` where the platform has it (clean, fast, safe with threads), else ``spawn``."""
    return "forkserver" if "forkserver" in multiprocessing.get_all_start_methods() else "spawn"


class ImageReader:
    """Iterable of :class:`ImageBatch`, in input order, built by :func:`read_images`. Single pass.

    After (or during) iteration: ``skipped`` holds ``(image_id or path, reason)`` per file that failed,
    ``n_ok``/``n_total`` count images, ``seconds`` is the wall time so far, ``images_per_second`` the rate.
    """

    def __init__(
        self,
        items: Sequence[ImageRecord | str | os.PathLike[str]],
        preprocess: Any,
        *,
        num_workers: int | None = None,
        batch_size: int = 256,
        logger: logging.Logger | Any | None = None,
        progress_every: float = 10.0,
        max_image_pixels: int | None = None,
        max_file_bytes: int | None = MAX_FILE_BYTES,
        output: str = "float32",
        start_method: str | None = None,
        content_hashes: Sequence[str | None] | None = None,
    ) -> None:
        if output not in ("float32", "uint8"):
            raise ValueError("output must be 'float32' or 'uint8'")
        if batch_size < 1:
            raise ValueError("batch_size must be >= 1")
        self._paths: list[str | os.PathLike[str]] = []
        self._names: list[str] = []
        for item in items:
            if isinstance(item, ImageRecord):
                self._paths.append(item.path)
                self._names.append(item.image_id)
            else:
                self._paths.append(item)
                self._names.append(id_component(os.fsdecode(item)))
        self.n_total = len(self._paths)
        if content_hashes is not None and len(content_hashes) != self.n_total:
            raise ValueError(f"content_hashes: {len(content_hashes)} given for {self.n_total} images")
        self._known = None if content_hashes is None else list(content_hashes)
        spec = PreprocessSpec.from_transform(preprocess)
        if spec is None and not callable(preprocess):
            raise TypeError(
                "preprocess must be a PreprocessSpec or a callable PIL.Image -> (3,H,W) array/tensor"
            )
        if output == "uint8" and spec is None:
            raise ValueError("output='uint8' needs CLIP's standard transform (a PreprocessSpec)")
        self._worker_preprocess: PreprocessSpec | Callable[[Image.Image], Any] = spec or preprocess
        self._spec = spec
        self._output = output
        self.batch_size = batch_size
        self.num_workers = default_num_workers() if num_workers is None else max(0, int(num_workers))
        if num_workers is None and self.n_total <= 32:
            self.num_workers = 0  # a pool costs more than it saves
        self.num_workers = min(self.num_workers, max(1, math.ceil(self.n_total / 8)) if self.n_total else 0)
        self._logger = logger
        self._progress_every = progress_every
        self._max_pixels = Image.MAX_IMAGE_PIXELS if max_image_pixels is None else max_image_pixels
        self._max_bytes = max_file_bytes
        self._start_method = start_method or default_start_method()
        # Pixels come back through shared memory where /dev/shm exists (Linux); a chunk falls back to the pipe
        # when /dev/shm is short of space.
        self._use_shm = self.num_workers > 0 and os.path.isdir("/dev/shm") and shm_free_bytes() > SHM_HEADROOM
        self.skipped: list[tuple[str, str]] = []
        self.n_ok = 0
        self.n_done = 0
        self._t0: float | None = None
        self._t_end: float | None = None
        self._used = False
        self._executor: cf.ProcessPoolExecutor | None = None

    # -- bookkeeping -------------------------------------------------------------------------------------
    @property
    def seconds(self) -> float:
        if self._t0 is None:
            return 0.0
        return (self._t_end or time.perf_counter()) - self._t0

    @property
    def images_per_second(self) -> float:
        s = self.seconds
        return self.n_done / s if s > 0 else 0.0

    def _info(self, msg: str, *args: Any) -> None:
        if self._logger is not None:
            self._logger.info(msg, *args)

    def _chunk_size(self) -> int:
        if self.num_workers == 0:
            return self.batch_size
        # enough chunks to keep every worker busy, none larger than a batch
        return max(1, min(self.batch_size, math.ceil(self.n_total / (self.num_workers * 4))))

    # -- worker pool ---------------------------------------------------------------------------------------
    def _new_executor(self, workers: int) -> cf.ProcessPoolExecutor:
        ctx = multiprocessing.get_context(self._start_method)
        return cf.ProcessPoolExecutor(max_workers=workers, mp_context=ctx)

    def _chunk(self, start: int, stop: int, use_shm: bool = False) -> tuple[Any, ...]:
        """The arguments of :func:`decode_chunk` for the files ``start:stop``."""
        known = None if self._known is None else self._known[start:stop]
        return (
            start, self._paths[start:stop], self._worker_preprocess, self._max_pixels, use_shm, known,
            self._max_bytes,
        )  # fmt: skip

    def _submit(self, executor: cf.ProcessPoolExecutor, start: int, stop: int) -> cf.Future[ChunkResult]:
        return executor.submit(decode_chunk, *self._chunk(start, stop, self._use_shm))

    def _isolate(self, start: int, stop: int) -> ChunkResult:
        """A chunk whose worker died: run its files one at a time in a private worker, so the file that kills
        the process (decoder crash, out-of-memory kill) is skipped and the others still come through."""
        ok: list[int] = []
        arrays: list[np.ndarray] = []
        hashes: list[str] = []
        skipped: list[tuple[int, str]] = []
        executor = self._new_executor(1)
        try:
            for i in range(start, stop):
                try:
                    res = executor.submit(decode_chunk, *self._chunk(i, i + 1)).result()
                except BrokenProcessPool:
                    skipped.append((i - start, "decoder process died on this file (crash or out of memory)"))
                    executor.shutdown(wait=False, cancel_futures=True)
                    executor = self._new_executor(1)
                    continue
                if res.ok and res.pixels is not None:
                    ok.append(i - start)
                    arrays.append(res.pixels[0])
                    hashes.append(res.hashes[0])
                skipped.extend((i - start, reason) for _, reason in res.skipped)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)
        return ChunkResult(start, ok, np.stack(arrays) if arrays else None, hashes, skipped)

    def _results(self) -> Iterator[ChunkResult]:
        n = self.n_total
        chunk = self._chunk_size()
        bounds = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
        if self.num_workers == 0:
            for start, stop in bounds:
                yield decode_chunk(*self._chunk(start, stop))
            return
        window = self.num_workers * 2 + 1
        next_chunk = 0
        pending: collections.deque[tuple[int, cf.Future[ChunkResult]]] = collections.deque()
        self._executor = self._new_executor(self.num_workers)
        try:
            while next_chunk < len(bounds) and len(pending) < window:
                pending.append((next_chunk, self._submit(self._executor, *bounds[next_chunk])))
                next_chunk += 1
            while pending:
                cid, fut = pending.popleft()
                try:
                    res = fut.result()
                except BrokenProcessPool:
                    _log.warning("image decoding worker died; isolating the files of chunk %d", cid)
                    self._executor.shutdown(wait=False, cancel_futures=True)
                    self._executor = self._new_executor(self.num_workers)
                    pending = collections.deque(
                        (
                            c,
                            f
                            if f.done() and f.exception() is None
                            else self._submit(self._executor, *bounds[c]),
                        )
                        for c, f in pending
                    )
                    res = self._isolate(*bounds[cid])
                if res.shm is not None:
                    res = res._replace(pixels=take_from_shm(*res.shm), shm=None)
                if next_chunk < len(bounds):
                    pending.append((next_chunk, self._submit(self._executor, *bounds[next_chunk])))
                    next_chunk += 1
                yield res
        finally:
            for _, fut in pending:  # stopped early: free what the workers still deliver
                fut.add_done_callback(_release_when_done)
            executor, self._executor = self._executor, None
            if executor is not None:
                executor.shutdown(wait=False, cancel_futures=True)

    # -- iteration -----------------------------------------------------------------------------------------
    def __iter__(self) -> Iterator[ImageBatch]:
        if self._used:
            raise RuntimeError("an ImageReader can be iterated only once")
        self._used = True
        self._t0 = time.perf_counter()
        last_report = self._t0
        self._info(
            "reading %d images with %d decoding worker(s)%s",
            self.n_total,
            self.num_workers,
            "" if self.num_workers == 0 else f" ({self._start_method})",
        )
        results = self._results()
        try:
            yield from self._batches(results, last_report)
        finally:
            results.close()
        self._t_end = time.perf_counter()
        self._info(
            "read %d/%d images in %.1f s (%.0f images/s), %d skipped",
            self.n_ok,
            self.n_total,
            self.seconds,
            self.images_per_second,
            len(self.skipped),
        )

    def _batches(self, results: Iterator[ChunkResult], last_report: float) -> Iterator[ImageBatch]:
        import torch

        assert self._t0 is not None
        for res in results:
            self.n_done += len(res.ok) + len(res.skipped)
            for offset, reason in res.skipped:
                self.skipped.append((self._names[res.start + offset], reason))
            if res.pixels is not None and res.ok:
                self.n_ok += len(res.ok)
                pixels = torch.from_numpy(res.pixels)
                if self._output == "float32" and self._spec is not None:
                    pixels = self._spec.normalize(pixels)
                indices = np.asarray(res.ok, dtype=np.int64) + res.start
                for lo in range(0, len(indices), self.batch_size):
                    hi = lo + self.batch_size
                    yield ImageBatch(indices[lo:hi], pixels[lo:hi], res.hashes[lo:hi])
            now = time.perf_counter()
            if now - last_report >= self._progress_every:
                last_report = now
                self._info(
                    "decoded %d/%d images (%.0f images/s), %d skipped",
                    self.n_done,
                    self.n_total,
                    self.n_done / max(now - self._t0, 1e-9),
                    len(self.skipped),
                )


def read_images(
    records_or_paths: Sequence[ImageRecord | str | os.PathLike[str]] | DropListing,
    preprocess: Any,
    **options: Any,
) -> ImageReader:
    """Decode and preprocess images in parallel worker processes; iterate the result for ordered batches.

    ``preprocess``: the encoder's ``preprocess`` (open_clip's eval transform, recognised and run as the
    bit-identical pure-Pillow :class:`PreprocessSpec` in the workers, which ship uint8), a
    :class:`PreprocessSpec`, or any picklable callable ``PIL.Image -> (3,H,W)`` (run as-is in the workers).
    Each batch is an :class:`ImageBatch` ``(indices, pixels, content_hashes)``: positions in the input, a
    float32 ``(b,3,H,W)`` tensor (or uint8, not yet normalised, with ``output="uint8"``; normalise it with
    ``PreprocessSpec.normalize``, e.g. on the GPU) and the sha256 of each file's bytes. Batches hold at most
    ``batch_size`` images and come in input order; failed files are absent from them and listed in
    ``reader.skipped``.

    ``num_workers``: processes (default: cores − 1; ``0`` decodes in this process; inputs of ≤ 32 files are
    decoded in-process unless a number is given). Workers start with ``start_method`` (default
    ``forkserver`` where available, else ``spawn``; never ``fork``, which is unsafe with torch and Dagster
    threads), get chunks of paths, and die with the iteration. A worker that crashes is replaced and its chunk
    re-run file by file, so the culprit is skipped. ``max_image_pixels`` defaults to Pillow's
    ``Image.MAX_IMAGE_PIXELS`` at call time. Progress (count and images/s) goes to ``logger.info`` every
    ``progress_every`` seconds, plus a summary at the end. ``options`` are :class:`ImageReader`'s keywords:
    ``num_workers``, ``batch_size`` (256), ``logger``, ``progress_every`` (10 s), ``max_image_pixels``,
    ``output`` (``"float32"`` or ``"uint8"``), ``start_method``, ``content_hashes`` (the sha256 of each input
    already known to the caller, or None per file: those files are not hashed again).
    """
    items = records_or_paths.records if isinstance(records_or_paths, DropListing) else records_or_paths
    return ImageReader(items, preprocess, **options)
