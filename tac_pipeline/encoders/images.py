"""Reading image drops: discovery, robust decoding, CLIP preprocessing in worker processes (docs/METHOD.md §1).

Four layers, each usable on its own:

- :func:`discover_images` walks a drop folder and returns an :class:`DropListing` (records with labels and
  splits read from the folder structure, plus what was skipped and why).
- :func:`load_image` turns one file into an RGB :class:`PIL.Image.Image` (every mode Pillow can open, EXIF
  orientation applied, decompression-bomb limit enforced) or raises :class:`ImageDecodeError` with a reason.
- :func:`read_images` decodes and preprocesses many files in worker processes and yields ordered batches;
  files that cannot be decoded are collected in ``reader.skipped`` and never stop the run.
- :func:`encode_drop` feeds those batches to a :class:`~tac_pipeline.encoders.clip.ClipEncoder` as they arrive.

This module does not import torch at import time: the decoding workers import only Pillow and numpy, so they
start in a fraction of a second and stay small (torch is imported lazily where tensors are produced).

``image_id``: the path of the image relative to the drop, ``/``-separated (``cat/0001.png``). A name component
that is not valid UTF-8 (possible on POSIX file systems) is written with Python's ``backslashreplace``
(``caf\\xe9.png`` for the byte ``0xE9``), so every image_id is valid UTF-8 and storable in Parquet; the
``path`` field keeps the real file name for reading. In the unlikely event two ids collide this way, the later
one gets ``~`` and 8 hex digits of a hash of its raw path appended.
"""

from __future__ import annotations

import collections
import concurrent.futures as cf
import dataclasses
import hashlib
import io
import logging
import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from tac_pipeline.messages import listed

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .clip import ClipEncoder

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

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif"})
SPLIT_NAMES = ("train", "test")

_log = logging.getLogger(__name__)


# --------------------------------------------------------------------------------------------------------------
# discovery
# --------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRecord:
    """One image of a drop. ``image_id`` is the drop-relative posix path (see the module docstring)."""

    image_id: str
    path: Path
    label: str | None = None
    split: str | None = None


@dataclass
class DropListing:
    """What :func:`discover_images` found.

    ``layout`` is ``"flat"`` (no labels, no splits), ``"classes"`` (``drop/<class>/…``: labels) or ``"splits"``
    (``drop/train/<class>/…`` and ``drop/test/<class>/…``: splits and labels). ``has_labels`` is true when every
    record has a label; ``has_splits`` when the drop uses the ``train/`` / ``test/`` layout (``split_names``
    says which of the two are present). ``skipped`` lists ``(image_id, reason)`` for entries that were seen but
    not taken: symlinks leading outside the drop, broken links, link loops, unreadable folders, images outside
    ``train/``/``test/`` in a split drop. Hidden files and non-image extensions are ignored silently.
    """

    root: Path
    records: list[ImageRecord]
    has_labels: bool
    has_splits: bool
    label_names: list[str]
    layout: str
    split_names: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


def _id_component(name: str) -> str:
    """A file-name component as valid UTF-8 text (undecodable bytes written as ``\\xNN``)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


def _is_inside(target: str, root: str) -> bool:
    try:
        return os.path.commonpath([target, root]) == root
    except ValueError:  # different drives (Windows)
        return False


def _walk(
    folder: Path,
    rel: tuple[str, ...],
    ancestors: frozenset[str],
    root_real: str,
    found: list[tuple[tuple[str, ...], Path]],
    skipped: list[tuple[str, str]],
) -> None:
    """Collect the image files under ``folder`` (sorted, hidden entries skipped); follow a symlink only when
    its target lies inside ``root_real``; ``rel`` is the id prefix of ``folder``."""
    try:
        with os.scandir(folder) as it:
            entries = sorted(it, key=lambda e: os.fsencode(e.name))
    except OSError as exc:
        skipped.append(("/".join(rel) or ".", f"unreadable folder: {exc.strerror or exc}"))
        return
    for entry in entries:
        name = entry.name
        if name.startswith("."):
            continue
        rel_entry = (*rel, _id_component(name))
        shown = "/".join(rel_entry)
        path = Path(entry.path)
        try:
            if entry.is_symlink():
                target = os.path.realpath(path)
                if not _is_inside(target, root_real):
                    skipped.append((shown, "symlink pointing outside the drop: not followed"))
                    continue
                if not os.path.exists(target):
                    skipped.append((shown, "broken symlink"))
                    continue
            is_dir = entry.is_dir(follow_symlinks=True)
            is_file = not is_dir and entry.is_file(follow_symlinks=True)
        except OSError as exc:
            skipped.append((shown, f"unreadable entry: {exc.strerror or exc}"))
            continue
        if is_dir:
            real = os.path.realpath(path)
            if real in ancestors:
                skipped.append((shown, "symlink loop: not followed"))
                continue
            _walk(path, rel_entry, ancestors | {real}, root_real, found, skipped)
        elif is_file and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS:
            found.append((rel_entry, path))


def discover_images(
    drop_dir: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    splits: dict[str, str] | None = None,
    classes: Sequence[str] | None = None,
) -> DropListing:
    """List the images of a drop folder in a deterministic order (sorted by image_id).

    Layouts: ``drop/*.png`` (flat), ``drop/<class>/**/*.png`` (label = first folder), and
    ``drop/train|test/<class>/**/*.png`` (split and label). Extensions (case-insensitive): see
    :data:`IMAGE_EXTENSIONS`. Hidden entries (names starting with ``.``) and other extensions are skipped
    silently. Symlinks are followed only when their resolved target lies inside the drop.

    With ``image_root`` (a drop's ``[images]`` setting) the images come from that folder instead:
    ``image_root/<splits[split]>/<class>/**`` for each split (ids ``<split>/<class>/…``), or
    ``image_root/<class>/**`` without ``splits``; only the ``classes`` named (default: every class folder).
    """
    if image_root is not None:
        return _discover_outside(Path(image_root), splits, classes)
    root = Path(drop_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"drop folder not found or not a folder: {root}")
    root_real = os.path.realpath(root)
    found: list[tuple[tuple[str, ...], Path]] = []
    skipped: list[tuple[str, str]] = []
    _walk(root, (), frozenset({root_real}), root_real, found, skipped)
    top_dirs = {rel[0] for rel, _ in found if len(rel) > 1}
    split_dirs = {d for d in top_dirs if d.lower() in SPLIT_NAMES}
    layout = "splits" if split_dirs else ("classes" if top_dirs else "flat")

    return _listing(root, found, skipped, layout)


def _listing(
    root: Path, found: list[tuple[tuple[str, ...], Path]], skipped: list[tuple[str, str]], layout: str
) -> DropListing:
    records: list[ImageRecord] = []
    seen: set[str] = set()
    for rel, path in found:
        image_id = "/".join(rel)
        label: str | None = None
        split: str | None = None
        if layout == "splits":
            if len(rel) < 2 or rel[0].lower() not in SPLIT_NAMES:
                skipped.append((image_id, "outside train/ and test/ in a drop that uses splits"))
                continue
            split = rel[0].lower()
            label = rel[1] if len(rel) > 2 else None
        elif layout == "classes":
            label = rel[0] if len(rel) > 1 else None
        if image_id in seen:  # only possible through backslashreplace of undecodable names
            image_id += "~" + hashlib.sha256(os.fsencode(path)).hexdigest()[:8]
        seen.add(image_id)
        records.append(ImageRecord(image_id=image_id, path=path, label=label, split=split))

    records.sort(key=lambda r: r.image_id)
    skipped.sort()
    has_labels = bool(records) and all(r.label is not None for r in records)
    labels = sorted({r.label for r in records if r.label is not None})
    splits = sorted({r.split for r in records if r.split is not None})
    return DropListing(
        root=root,
        records=records,
        has_labels=has_labels,
        has_splits=layout == "splits" and bool(records),
        label_names=labels,
        layout=layout,
        split_names=splits,
        skipped=skipped,
    )


def _discover_outside(
    image_root: Path, splits: dict[str, str] | None, classes: Sequence[str] | None
) -> DropListing:
    """The images of a drop kept under ``image_root`` (see :func:`discover_images`)."""
    if not image_root.is_dir():
        raise NotADirectoryError(
            f"dataset.toml: images.root {image_root} is not a folder: point it at the folder holding the images"
        )
    root_real = os.path.realpath(image_root)
    found: list[tuple[tuple[str, ...], Path]] = []
    skipped: list[tuple[str, str]] = []
    for split, folder in (splits or {None: None}).items():
        base = image_root / folder if folder else image_root
        if not base.is_dir():
            raise NotADirectoryError(
                f"dataset.toml: images.splits.{split} = {folder!r}, but {base} is not a folder"
            )
        present = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        wanted = list(classes) if classes is not None else present
        missing = sorted(set(wanted) - set(present))
        if missing:
            raise FileNotFoundError(
                f"dataset.toml: images.classes names {len(missing)} folder(s) missing from {base}: "
                f"{listed(missing)}"
            )
        for name in sorted(wanted):
            prefix = (split, name) if split else (name,)
            folder_real = os.path.realpath(base / name)
            if not _is_inside(folder_real, root_real):
                skipped.append(("/".join(prefix), "symlink pointing outside images.root: not followed"))
                continue
            _walk(base / name, prefix, frozenset({root_real, folder_real}), root_real, found, skipped)
    return _listing(image_root, found, skipped, "splits" if splits else "classes")


# --------------------------------------------------------------------------------------------------------------
# decoding one image
# --------------------------------------------------------------------------------------------------------------


class ImageDecodeError(Exception):
    """A file that cannot be turned into an RGB image; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _read_bytes(path: str | os.PathLike[str]) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read()
    except IsADirectoryError:
        raise ImageDecodeError("unreadable: is a folder") from None
    except OSError as exc:
        raise ImageDecodeError(f"unreadable: {exc.strerror or exc}") from None


def _bomb_message(width: int, height: int, limit: int) -> str:
    return (
        f"decompression bomb: {width}x{height} = {width * height:,} pixels exceeds the limit of {limit:,} "
        "(PIL.Image.MAX_IMAGE_PIXELS)"
    )


def _scale_to_uint8(arr: np.ndarray, *, full_scale: float | None) -> np.ndarray:
    """Grey values to 0..255: divide by ``full_scale/255`` when given, else stretch min..max."""
    a = np.nan_to_num(arr.astype(np.float64), nan=0.0, posinf=0.0, neginf=0.0)
    if full_scale is None:
        lo, hi = float(a.min()), float(a.max())
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    else:
        a = a * (255.0 / full_scale)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB.

    - Transparency (RGBA, LA, PA, palette or grey/RGB with a transparency key) is composited over white.
    - 16-bit grey (``I;16*``) is scaled by 255/65535 (never clipped to white). ``I`` (32-bit int) is taken as
      8-bit when its values fit 0..255, as 16-bit when they fit 0..65535, and stretched min..max otherwise;
      ``F`` (float) as 0..1 when it fits, as 0..255 when it fits, and stretched otherwise.
    - Everything else (``1``, ``L``, ``P``, ``CMYK``, ``YCbCr``, …) goes through Pillow's ``convert("RGB")``.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode.startswith("I;16") or mode in ("I", "F"):
        arr = np.asarray(img)
        if arr.ndim != 2:
            raise ImageDecodeError(f"unsupported image mode {mode}")
        if mode.startswith("I;16"):
            grey = _scale_to_uint8(arr, full_scale=65535.0)
        elif mode == "I":
            lo, hi = (int(arr.min()), int(arr.max())) if arr.size else (0, 0)
            if lo >= 0 and hi <= 255:
                grey = arr.astype(np.uint8)
            elif lo >= 0 and hi <= 65535:
                grey = _scale_to_uint8(arr, full_scale=65535.0)
            else:
                grey = _scale_to_uint8(arr, full_scale=None)
        else:
            finite = arr[np.isfinite(arr)]
            lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 0.0)
            if lo >= 0.0 and hi <= 1.0:
                grey = _scale_to_uint8(arr, full_scale=1.0)
            elif lo >= 0.0 and hi <= 255.0:
                grey = _scale_to_uint8(arr, full_scale=255.0)
            else:
                grey = _scale_to_uint8(arr, full_scale=None)
        return Image.fromarray(grey).convert("RGB")
    has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in img.info
    if has_alpha:
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def _exif_transpose(img: Image.Image) -> Image.Image:
    """Apply the EXIF orientation (in place: no copy for the usual unrotated image)."""
    try:
        ImageOps.exif_transpose(img, in_place=True)
    except Exception:  # a broken EXIF block must not lose the image: keep it unrotated
        pass
    return img


def decode_image_bytes(data: bytes, *, max_pixels: int | None = None) -> Image.Image:
    """Decode an encoded image to RGB (first frame, EXIF orientation applied), or raise ImageDecodeError.

    ``max_pixels`` defaults to Pillow's ``Image.MAX_IMAGE_PIXELS``; anything larger is refused, i.e. Pillow's
    DecompressionBombWarning range counts as an error too (without touching the process-wide warning filters).
    """
    if not data:
        raise ImageDecodeError("empty file (0 bytes)")
    limit = Image.MAX_IMAGE_PIXELS if max_pixels is None else max_pixels
    try:
        # Pillow raises DecompressionBombError above 2x its limit and warns above 1x; the warning range is
        # refused by the explicit check below (no process-wide warning filters are touched: thread-safe).
        img = Image.open(io.BytesIO(data))
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(f"decompression bomb: {exc}") from None
    except UnidentifiedImageError:
        raise ImageDecodeError("not an image: unknown format or not image data") from None
    except Exception as exc:  # Pillow plugins raise many types on malformed headers
        raise ImageDecodeError(f"corrupt image header: {type(exc).__name__}: {exc}") from None
    width, height = img.size
    if limit and width * height > limit:
        raise ImageDecodeError(_bomb_message(width, height, limit))
    if width <= 0 or height <= 0:
        raise ImageDecodeError("empty image (0 pixels)")
    try:
        img.load()
    except MemoryError:
        raise ImageDecodeError("out of memory while decoding") from None
    except Exception as exc:
        text = str(exc)
        if "truncated" in text.lower() or isinstance(exc, EOFError):
            raise ImageDecodeError(f"truncated image data: {text}") from None
        raise ImageDecodeError(f"corrupt image data: {type(exc).__name__}: {text}") from None
    img = _exif_transpose(img)
    try:
        return to_rgb(img)
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(f"cannot convert mode {img.mode} to RGB: {exc}") from None


def load_image(path: str | os.PathLike[str], *, max_pixels: int | None = None) -> Image.Image:
    """Read one image file as RGB (see :func:`decode_image_bytes`); raises :class:`ImageDecodeError`."""
    return decode_image_bytes(_read_bytes(path), max_pixels=max_pixels)


# --------------------------------------------------------------------------------------------------------------
# CLIP preprocessing without torch
# --------------------------------------------------------------------------------------------------------------

_RESAMPLE = {"bicubic": Image.Resampling.BICUBIC, "bilinear": Image.Resampling.BILINEAR}


@dataclass(frozen=True)
class PreprocessSpec:
    """CLIP's eval transform as plain data: resize the short side to ``resize`` (bicubic; default ``size``),
    centre-crop ``size``×``size``, RGB, then ``(x/255 - mean)/std``.

    ``resize`` is a dataset's choice (the TAC authors resize ImageNet images to 256 before the 224 crop):
    :meth:`with_resize` returns the spec with it.

    The geometric part (:meth:`to_uint8_chw`) is pure Pillow and bit-identical to torchvision's
    ``Resize(size) → CenterCrop(size)`` on PIL images; workers run it and ship uint8 (4× less than float32).
    :meth:`normalize` finishes the job on a batch, on whatever device the batch lives.
    """

    size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    resize: int | None = None

    #: Above this many pixels in the resized (pre-crop) image (aspect ratios beyond ~330:1 at 224 px), only the
    #: crop window is resampled (PIL's ``box``), so a 1×50,000 strip does not become a 224×11,200,000
    #: intermediate. Same filter, but PIL's vertical offsets round differently: a few grey levels apart.
    BOX_RESIZE_MAX_PIXELS = 1 << 24

    @property
    def resize_to(self) -> int:
        """The short side before the crop."""
        return self.resize or self.size

    def with_resize(self, resize: int | None) -> PreprocessSpec:
        """This spec resizing the short side to ``resize`` (None: the crop size) before the centre crop."""
        if resize is not None and (not isinstance(resize, int) or resize < self.size):
            raise ValueError(
                f"resize must be a whole number of pixels >= the crop size {self.size}, not {resize!r}"
            )
        return dataclasses.replace(self, resize=None if resize == self.size else resize)

    def geometric(self, img: Image.Image) -> Image.Image:
        size, short_side = self.size, self.resize_to
        width, height = img.size
        short, long = (width, height) if width <= height else (height, width)
        new_short, new_long = short_side, int(short_side * long / short)
        new_w, new_h = (new_short, new_long) if width <= height else (new_long, new_short)
        top = int(round((new_h - size) / 2.0))
        left = int(round((new_w - size) / 2.0))
        resample = _RESAMPLE[self.interpolation]
        if new_w * new_h > self.BOX_RESIZE_MAX_PIXELS:
            sx, sy = width / new_w, height / new_h
            box = (left * sx, top * sy, (left + size) * sx, (top + size) * sy)
            return img.resize((size, size), resample, box=box)
        if (new_w, new_h) != (width, height):
            img = img.resize((new_w, new_h), resample)
        return img.crop((left, top, left + size, top + size))

    def to_uint8_chw(self, img: Image.Image) -> np.ndarray:
        out = self.geometric(img)
        if out.mode != "RGB":
            out = out.convert("RGB")
        return np.ascontiguousarray(np.asarray(out, dtype=np.uint8).transpose(2, 0, 1))

    def normalize(self, pixels: torch.Tensor) -> torch.Tensor:
        """uint8 ``(b,3,H,W)`` → float32 CLIP input (same operations, in the same order, as ToTensor+Normalize)."""
        import torch

        x = pixels.to(dtype=torch.float32).div(255)
        mean = torch.as_tensor(self.mean, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=torch.float32, device=x.device).view(-1, 1, 1)
        return x.sub_(mean).div_(std)

    @classmethod
    def from_transform(cls, preprocess: Any) -> PreprocessSpec | None:
        """Recognise open_clip's eval transform ``Resize(s) → CenterCrop(s) → [RGB] → ToTensor → Normalize``;
        None for anything else (the reader then runs that transform itself in the workers)."""
        if isinstance(preprocess, PreprocessSpec):
            return preprocess
        steps = list(getattr(preprocess, "transforms", None) or [])
        if len(steps) < 4:
            return None
        try:
            from torchvision import transforms as T
        except ImportError:  # pragma: no cover
            return None
        resize, crop, *middle, to_tensor, normalize = steps
        if type(resize) is not T.Resize or type(crop) is not T.CenterCrop:
            return None
        size = (
            resize.size[0]
            if isinstance(resize.size, (list, tuple)) and len(resize.size) == 1
            else resize.size
        )
        if not isinstance(size, int) or getattr(resize, "max_size", None) is not None:
            return None
        crop_size = tuple(crop.size)
        if len(crop_size) != 2 or crop_size[0] != crop_size[1] or crop_size[0] > size:
            return None
        modes = {T.InterpolationMode.BICUBIC: "bicubic", T.InterpolationMode.BILINEAR: "bilinear"}
        if resize.interpolation not in modes:
            return None
        for step in middle:
            if type(step).__name__ != "MaybeConvertMode" or getattr(step, "mode", None) != "RGB":
                return None
        if not isinstance(to_tensor, T.ToTensor) or type(normalize) is not T.Normalize:
            return None
        mean = tuple(float(v) for v in np.broadcast_to(np.asarray(normalize.mean, dtype=float), (3,)))
        std = tuple(float(v) for v in np.broadcast_to(np.asarray(normalize.std, dtype=float), (3,)))
        return cls(
            size=crop_size[0],
            mean=mean,  # type: ignore[arg-type]
            std=std,  # type: ignore[arg-type]
            interpolation=modes[resize.interpolation],
            resize=None if size == crop_size[0] else size,
        )


# --------------------------------------------------------------------------------------------------------------
# the parallel reader
# --------------------------------------------------------------------------------------------------------------


class _ChunkResult(NamedTuple):
    start: int
    ok: list[int]  # offsets within the chunk
    pixels: np.ndarray | None  # (n_ok, 3, H, W), uint8 (spec) or float32 (callable)
    hashes: list[str]
    skipped: list[tuple[int, str]]  # (offset, reason)
    shm: tuple[str, tuple[int, ...], str] | None = (
        None  # pixels parked in shared memory: (name, shape, dtype)
    )


#: Shared memory (``/dev/shm``) must keep this much free beyond a chunk, else the chunk goes through the pipe.
_SHM_HEADROOM = 256 << 20


def _shm_free_bytes() -> int:
    try:
        st = os.statvfs("/dev/shm")
    except OSError:
        return 0
    return st.f_bavail * st.f_frsize


def _park_in_shm(arrays: list[np.ndarray]) -> tuple[str, tuple[int, ...], str] | None:
    """Copy the chunk's images into a new shared-memory block (the reader unlinks it). None when /dev/shm is
    short of space (Docker's default is 64 MB; writing past a full tmpfs would kill the worker with SIGBUS)."""
    from multiprocessing import shared_memory

    shape = (len(arrays), *arrays[0].shape)
    dtype = arrays[0].dtype
    nbytes = int(np.prod(shape)) * dtype.itemsize
    if _shm_free_bytes() < nbytes + _SHM_HEADROOM:
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


def _take_from_shm(name: str, shape: tuple[int, ...], dtype: str) -> np.ndarray:
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


def _release_when_done(fut: cf.Future[_ChunkResult]) -> None:
    """A result nobody will read: unlink its shared memory once it arrives."""
    if fut.cancelled() or fut.exception() is not None:
        return
    res = fut.result()
    if res.shm is not None:
        try:
            _take_from_shm(*res.shm)
        except (OSError, ValueError):
            pass


def _preprocess_one(
    img: Image.Image, preprocess: PreprocessSpec | Callable[[Image.Image], Any]
) -> np.ndarray:
    if isinstance(preprocess, PreprocessSpec):
        return preprocess.to_uint8_chw(img)
    out = preprocess(img)
    if hasattr(out, "detach"):
        out = out.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(out, dtype=np.float32))


def _decode_chunk(
    start: int,
    paths: Sequence[str | os.PathLike[str]],
    preprocess: PreprocessSpec | Callable[[Image.Image], Any],
    max_pixels: int | None,
    use_shm: bool = False,
) -> _ChunkResult:
    """Worker entry point: read, hash, decode and preprocess a run of files. Never raises for a bad file.

    With ``use_shm`` the pixels travel back through a shared-memory block instead of the result pipe (one copy
    instead of four, and no unpickling of ~40 MB per chunk in the consumer's process)."""
    ok: list[int] = []
    arrays: list[np.ndarray] = []
    hashes: list[str] = []
    skipped: list[tuple[int, str]] = []
    for offset, path in enumerate(paths):
        try:
            data = _read_bytes(path)
            digest = hashlib.sha256(data).hexdigest()
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
        parked = _park_in_shm(arrays)
        if parked is not None:
            return _ChunkResult(start, ok, None, hashes, skipped, parked)
    pixels = np.stack(arrays) if arrays else None
    return _ChunkResult(start, ok, pixels, hashes, skipped)


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
        output: str = "float32",
        start_method: str | None = None,
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
                self._names.append(_id_component(os.fsdecode(item)))
        self.n_total = len(self._paths)
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
        self._start_method = start_method or default_start_method()
        # Pixels come back through shared memory where /dev/shm exists (Linux); a chunk falls back to the pipe
        # when /dev/shm is short of space.
        self._use_shm = (
            self.num_workers > 0 and os.path.isdir("/dev/shm") and _shm_free_bytes() > _SHM_HEADROOM
        )
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

    def _submit(self, executor: cf.ProcessPoolExecutor, start: int, stop: int) -> cf.Future[_ChunkResult]:
        return executor.submit(
            _decode_chunk,
            start,
            self._paths[start:stop],
            self._worker_preprocess,
            self._max_pixels,
            self._use_shm,
        )

    def _isolate(self, start: int, stop: int) -> _ChunkResult:
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
                    res = executor.submit(
                        _decode_chunk, i, [self._paths[i]], self._worker_preprocess, self._max_pixels
                    ).result()
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
        return _ChunkResult(start, ok, np.stack(arrays) if arrays else None, hashes, skipped)

    def _results(self) -> Iterator[_ChunkResult]:
        n = self.n_total
        chunk = self._chunk_size()
        bounds = [(s, min(n, s + chunk)) for s in range(0, n, chunk)]
        if self.num_workers == 0:
            for start, stop in bounds:
                yield _decode_chunk(start, self._paths[start:stop], self._worker_preprocess, self._max_pixels)
            return
        window = self.num_workers * 2 + 1
        next_chunk = 0
        pending: collections.deque[tuple[int, cf.Future[_ChunkResult]]] = collections.deque()
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
                    res = res._replace(pixels=_take_from_shm(*res.shm), shm=None)
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

    def _batches(self, results: Iterator[_ChunkResult], last_report: float) -> Iterator[ImageBatch]:
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
    ``output`` (``"float32"`` or ``"uint8"``), ``start_method``.
    """
    items = records_or_paths.records if isinstance(records_or_paths, DropListing) else records_or_paths
    return ImageReader(items, preprocess, **options)


# --------------------------------------------------------------------------------------------------------------
# decode + embed
# --------------------------------------------------------------------------------------------------------------


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
    start_method: str | None = None,
    resize: int | None = None,
) -> EncodedImages:
    """Decode (worker processes) and embed (``encoder``) a drop, overlapping the two.

    Workers keep decoding ahead while the encoder embeds the batch that arrived; uint8 pixels are normalised
    on the encoder's device. Returns L2-normalised float32 embeddings, one row per decodable image.
    ``resize``: the short side before the centre crop (default: the model's own, its crop size).
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
    reader = read_images(
        records,
        spec if spec is not None else encoder.preprocess,
        num_workers=num_workers,
        batch_size=batch_size or encoder.batch_size,
        logger=logger,
        progress_every=progress_every,
        max_image_pixels=max_image_pixels,
        output="uint8" if spec is not None else "float32",
        start_method=start_method,
    )
    t0 = time.perf_counter()
    chunks: list[np.ndarray] = []
    indices: list[np.ndarray] = []
    hashes: list[str] = []
    for batch in reader:
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
            len(reader.skipped) + len(listing_skipped),
        )
    return EncodedImages(
        embeddings=emb,
        image_ids=[r.image_id for r in ok],
        content_hashes=hashes,
        labels=[r.label for r in ok],
        splits=[r.split for r in ok],
        indices=idx,
        skipped=listing_skipped + reader.skipped,
        seconds=seconds,
        images_per_second=(n / seconds) if seconds > 0 else 0.0,
    )
