"""Decode and embed a drop: the worker pool's batches fed to a :class:`~tac_pipeline.encoders.clip.ClipEncoder`
as they arrive, so decoding (worker processes) and embedding (the encoder's device) overlap.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from . import reader
from .decoding import MAX_FILE_BYTES
from .discovery import DropListing, ImageRecord
from .preprocess import PreprocessSpec

if TYPE_CHECKING:  # pragma: no cover
    from tac_pipeline.encoders.clip import ClipEncoder

__all__ = ["EncodedImages", "encode_drop"]


@dataclass
class EncodedImages:
    """Embeddings of the images that decoded, in input order, and what was skipped.

    ``indices`` are positions in the records given to :func:`encode_drop`; ``skipped`` holds
    ``(image_id, reason)`` for discovery skips (when a :class:`DropListing` was given) and decoding failures.
    """

    embeddings: np.ndarray
    image_ids: list[str]
    content_hashes: list[str]
    labels: list[str | None]
    splits: list[str | None]
    indices: np.ndarray
    skipped: list[tuple[str, str]]
    seconds: float
    images_per_second: float

    def __len__(self) -> int:
        return len(self.image_ids)


def encode_drop(
    encoder: ClipEncoder,
    records: Sequence[ImageRecord] | DropListing,
    *,
    num_workers: int | None = None,
    logger: logging.Logger | Any | None = None,
    batch_size: int | None = None,
    progress_every: float = 10.0,
    max_image_pixels: int | None = None,
    max_file_bytes: int | None = MAX_FILE_BYTES,
    start_method: str | None = None,
    resize: int | None = None,
    content_hashes: Sequence[str | None] | None = None,
) -> EncodedImages:
    """Decode (worker processes) and embed (``encoder``) a drop, overlapping the two.

    Workers keep decoding ahead while the encoder embeds the batch that arrived; uint8 pixels are normalised
    on the encoder's device. Returns L2-normalised float32 embeddings, one row per decodable image.
    ``resize``: the short side before the centre crop (default: the model's own, its crop size).
    ``content_hashes``: the sha256 of each record where the caller already has it (not computed again).
    ``max_file_bytes``: a larger file is skipped before it is read (None: no limit).
    """
    listing_skipped: list[tuple[str, str]] = []
    if isinstance(records, DropListing):
        listing_skipped = list(records.skipped)
        records = records.records
    records = list(records)
    spec = PreprocessSpec.from_transform(encoder.preprocess)
    if resize is not None:
        if spec is None:
            raise ValueError(
                f"resize = {resize} needs CLIP's standard eval transform (Resize, CenterCrop, Normalize), but "
                f"{encoder.model_name}'s preprocessing is another one: remove 'resize' from dataset.toml"
            )
        spec = spec.with_resize(resize)
    images = reader.read_images(
        records,
        spec if spec is not None else encoder.preprocess,
        num_workers=num_workers,
        batch_size=batch_size or encoder.batch_size,
        logger=logger,
        progress_every=progress_every,
        max_image_pixels=max_image_pixels,
        max_file_bytes=max_file_bytes,
        output="uint8" if spec is not None else "float32",
        start_method=start_method,
        content_hashes=content_hashes,
    )
    t0 = time.perf_counter()
    chunks: list[np.ndarray] = []
    indices: list[np.ndarray] = []
    hashes: list[str] = []
    for batch in images:
        chunks.append(encoder.encode_images(batch.pixels))
        indices.append(batch.indices)
        hashes.extend(batch.content_hashes)
    seconds = time.perf_counter() - t0
    idx = np.concatenate(indices) if indices else np.zeros(0, dtype=np.int64)
    emb = np.concatenate(chunks) if chunks else np.zeros((0, encoder.embedding_dim), dtype=np.float32)
    ok = [records[i] for i in idx]
    n = len(ok)
    if logger is not None:
        logger.info(
            "embedded %d images in %.1f s (%.0f images/s end to end), %d skipped",
            n,
            seconds,
            n / seconds if seconds > 0 else 0.0,
            len(images.skipped) + len(listing_skipped),
        )
    return EncodedImages(
        embeddings=emb,
        image_ids=[r.image_id for r in ok],
        content_hashes=hashes,
        labels=[r.label for r in ok],
        splits=[r.split for r in ok],
        indices=idx,
        skipped=listing_skipped + images.skipped,
        seconds=seconds,
        images_per_second=(n / seconds) if seconds > 0 else 0.0,
    )
