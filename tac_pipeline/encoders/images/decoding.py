"""Decoding one image file robustly: every mode Pillow can open to 8-bit RGB, or a reason why not.

:func:`load_image` turns one file into an RGB :class:`PIL.Image.Image` (EXIF orientation applied,
decompression-bomb limit enforced) or raises :class:`ImageDecodeError` with a reason in a few words;
:func:`decode_image_bytes` does the same for bytes already read. Pillow and numpy only (the decoding workers
import this).
"""

from __future__ import annotations

import io
import os

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

__all__ = ["ImageDecodeError", "decode_image_bytes", "load_image", "read_bytes", "to_rgb"]


class ImageDecodeError(Exception):
    """A file that cannot be turned into an RGB image; ``reason`` says why in a few words."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


#: The largest image file read by default (256 MiB): a larger one is refused before any byte is read.
MAX_FILE_BYTES = 256 * 2**20


def read_bytes(path: str | os.PathLike[str], max_bytes: int | None = MAX_FILE_BYTES) -> bytes:
    """The file's bytes; :class:`ImageDecodeError` for a folder, an unreadable file, or one larger than
    ``max_bytes`` (checked on the open file before reading it; None: no limit)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if max_bytes is not None and size > max_bytes:
                raise ImageDecodeError(
                    f"too large: {size / 2**20:,.1f} MiB, over the {max_bytes / 2**20:,.0f} MiB limit for one "
                    "image file (max_file_bytes): not read"
                )
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


#: The ISO base-media brands of HEIF images (HEIC, and still images in general); AVIF's are decoded by Pillow.
_HEIF_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"mif1", b"msf1"})


def _heif_brand(data: bytes) -> str | None:
    """The HEIF brand of an ISO base-media file (``ftyp`` box), or None."""
    if len(data) >= 12 and data[4:8] == b"ftyp" and data[8:12] in _HEIF_BRANDS:
        return data[8:12].decode("ascii")
    return None


def _register_heif() -> None:
    """Let Pillow open HEIC/HEIF where the optional ``pillow-heif`` is installed."""
    try:
        from pillow_heif import register_heif_opener
    except ImportError:
        return
    register_heif_opener()


_register_heif()


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
        if _heif_brand(data) is not None:
            raise ImageDecodeError(
                f"HEIF image ({_heif_brand(data)}) that this Pillow cannot decode: pip install pillow-heif "
                "to embed HEIC/HEIF files"
            ) from None
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


def load_image(
    path: str | os.PathLike[str], *, max_pixels: int | None = None, max_bytes: int | None = MAX_FILE_BYTES
) -> Image.Image:
    """Read one image file as RGB (see :func:`decode_image_bytes`); raises :class:`ImageDecodeError`."""
    return decode_image_bytes(read_bytes(path, max_bytes), max_pixels=max_pixels)
