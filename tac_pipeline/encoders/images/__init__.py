"""Reading image drops (docs/METHOD.md §1), in layers each usable on its own:

- :mod:`.discovery`: :func:`discover_images` walks a drop folder and returns a :class:`DropListing` (records
  with labels and splits read from the folder structure, plus what was skipped and why).
- :mod:`.decoding`: :func:`load_image` turns one file into an RGB :class:`PIL.Image.Image` (every mode Pillow
  can open, EXIF orientation applied, decompression-bomb limit enforced) or raises :class:`ImageDecodeError`.
- :mod:`.preprocess`: :class:`PreprocessSpec`, CLIP's eval transform as plain data, run with Pillow alone.
- :mod:`.reader` (with :mod:`.chunks`, the workers' side, and :mod:`.shm`, the pixels' way back):
  :func:`read_images` decodes and preprocesses many files in worker processes and yields ordered batches; files
  that cannot be decoded are collected in ``reader.skipped`` and never stop the run.
- :mod:`.encode`: :func:`encode_drop` feeds those batches to a :class:`~tac_pipeline.encoders.clip.ClipEncoder`
  as they arrive.

Nothing here imports torch at import time: the decoding workers import only Pillow and numpy, so they start in
a fraction of a second and stay small (torch is imported lazily where tensors are produced).
"""

from __future__ import annotations

from .decoding import ImageDecodeError, decode_image_bytes, load_image, to_rgb
from .discovery import IMAGE_EXTENSIONS, SPLIT_NAMES, DropListing, ImageRecord, discover_images
from .encode import EncodedImages, encode_drop
from .preprocess import PreprocessSpec
from .reader import ImageBatch, ImageReader, default_num_workers, default_start_method, read_images

__all__ = [
    "IMAGE_EXTENSIONS",
    "DropListing",
    "EncodedImages",
    "ImageBatch",
    "ImageDecodeError",
    "ImageReader",
    "ImageRecord",
    "PreprocessSpec",
    "discover_images",
    "encode_drop",
    "load_image",
    "read_images",
]
#: Also importable from here, but not re-exported by ``tac_pipeline.encoders``.
_EXTRAS = (SPLIT_NAMES, decode_image_bytes, to_rgb, default_num_workers, default_start_method)
