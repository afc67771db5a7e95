"""Generators for the odd image files of issues 4 and 8 (imported by the decoding workers too: numpy/Pillow only)."""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

#: Good files: name -> (expected RGB size after EXIF orientation, or None when not checked).
GOOD = (
    "rgb.jpg",
    "one_pixel.png",
    "grey16.png",
    "cmyk.jpg",
    "palette_transparent.png",
    "la.png",
    "rgba.png",
    "animated.gif",
    "photo.webp",
    "bitmap.bmp",
    "scan.tiff",
    "exif_rotated.jpg",
    "UPPER.JPEG",
)
#: Bad files: name -> words expected in the skip reason.
BAD = {
    "truncated.jpg": "truncated",
    "zero_bytes.png": "empty file",
    "not_an_image.png": "not an image",
    "bomb.png": "decompression bomb",
}
NON_UTF8_NAME = b"caf\xe9.png"
NON_UTF8_ID = "caf\\xe9.png"
LONG_NAME = "long_" + "x" * 240 + ".png"


def noise(size: tuple[int, int], seed: int = 0, mode: str = "RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "LA": 2, "L": 1}[mode]
    arr = rng.integers(0, 256, size=(size[1], size[0], channels), dtype=np.uint8)
    return Image.fromarray(arr[..., 0] if channels == 1 else arr, mode)


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def bomb_png(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid-looking PNG whose header claims width×height RGB pixels (a few dozen bytes on disk)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * 64)
    return (
        b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) + png_chunk(b"IDAT", idat) + png_chunk(b"IEND", b"")
    )


def grey16() -> Image.Image:
    """A 16-bit grey ramp: 0 … 65535 (left to right) that must not come out white."""
    ramp = np.linspace(0, 65535, 40, dtype=np.float64).round().astype(np.uint16)
    arr = np.tile(ramp, (24, 1))
    return Image.fromarray(arr)  # mode I;16


def palette_transparent() -> Image.Image:
    img = Image.new("P", (30, 20), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    img.paste(1, (0, 0, 15, 20))  # left half red, right half index 0 = transparent (black underneath)
    img.info["transparency"] = 0
    return img


def exif_rotated_jpeg() -> bytes:
    """A 20×10 JPEG with EXIF orientation 6 (rotate 90° clockwise to display): 10×20 once applied."""
    img = noise((20, 10), seed=3)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    img.save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    return buf.getvalue()


def animated_gif(path: Path) -> None:
    red = Image.new("RGB", (16, 16), (255, 0, 0))
    blue = Image.new("RGB", (16, 16), (0, 0, 255))
    red.save(path, save_all=True, append_images=[blue], duration=100, loop=0)


def write_odd_drop(folder: Path, outside: Path) -> None:
    """Every good and bad case in one flat folder; ``outside`` receives the symlink target."""
    folder.mkdir(parents=True, exist_ok=True)
    outside.mkdir(parents=True, exist_ok=True)
    noise((64, 48), 1).save(folder / "rgb.jpg", quality=90)
    noise((1, 1), 2).save(folder / "one_pixel.png")
    grey16().save(folder / "grey16.png")
    Image.new("CMYK", (24, 24), (0, 255, 255, 0)).save(folder / "cmyk.jpg")  # red in CMYK
    palette_transparent().save(folder / "palette_transparent.png")
    noise((20, 20), 4, "LA").save(folder / "la.png")
    noise((20, 20), 5, "RGBA").save(folder / "rgba.png")
    animated_gif(folder / "animated.gif")
    noise((40, 30), 6).save(folder / "photo.webp")
    noise((33, 17), 7).save(folder / "bitmap.bmp")
    noise((25, 35), 8).save(folder / "scan.tiff")
    (folder / "exif_rotated.jpg").write_bytes(exif_rotated_jpeg())
    noise((30, 30), 9).save(folder / "UPPER.JPEG", format="JPEG")
    noise((12, 12), 10).save(os.path.join(os.fsencode(folder), NON_UTF8_NAME), format="PNG")
    noise((12, 12), 11).save(folder / LONG_NAME)

    buf = io.BytesIO()
    noise((64, 64), 12).save(buf, "JPEG", quality=90)
    (folder / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (folder / "zero_bytes.png").write_bytes(b"")
    (folder / "not_an_image.png").write_text("hello, I am text\n")
    (folder / "bomb.png").write_bytes(bomb_png())

    # ignored silently: hidden files, other extensions
    noise((8, 8), 13).save(folder / ".hidden.png")
    (folder / "notes.txt").write_text("not an image")
    # a symlink leading outside the drop: reported, not followed
    noise((8, 8), 14).save(outside / "secret.png")
    os.symlink(outside / "secret.png", folder / "escape.png")


class CrashOnWidth:
    """A preprocess callable that kills its process on images of one width (a stand-in for a decoder
    segfault or an out-of-memory kill); other images get a small constant-size float array."""

    def __init__(self, width: int) -> None:
        self.width = width

    def __call__(self, img: Image.Image) -> np.ndarray:
        if img.size[0] == self.width:
            os._exit(13)
        arr = np.asarray(img.resize((8, 8)), dtype=np.float32) / 255.0
        return arr.transpose(2, 0, 1)
