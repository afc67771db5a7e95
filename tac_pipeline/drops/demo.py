"""The demo drop: scikit-learn's bundled handwritten digits written as PNG folders (no download needed)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from tac_pipeline.common.atomic import atomic_write


def write_digits_drop(
    target: str | os.PathLike[str], *, size: int = 64, limit: int | None = None, overwrite: bool = False
) -> int:
    """Write the 1,797 real 8×8 digits as ``<target>/<digit>/<index>.png``, upscaled to ``size`` pixels.

    Returns the number of images in the drop. An existing complete drop is left untouched (idempotent)
    unless ``overwrite``. ``limit`` keeps the first ``limit`` images (tests).
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    images, targets = digits.images, digits.target
    if limit is not None:
        images, targets = images[:limit], targets[:limit]
    target = Path(target)
    existing = sorted(target.glob("*/*.png")) if target.is_dir() else []
    if len(existing) == len(images) and not overwrite:
        return len(existing)
    for index, (image, digit) in enumerate(zip(images, targets, strict=True)):
        folder = target / str(int(digit))
        folder.mkdir(parents=True, exist_ok=True)
        # Values are 0..16; white strokes on black as in the original scans, nearest-neighbour upscaling.
        pixels = np.clip(image * (255.0 / 16.0), 0, 255).astype(np.uint8)
        picture = Image.fromarray(pixels, mode="L").resize((size, size), Image.Resampling.NEAREST)
        path = folder / f"{index:04d}.png"
        atomic_write(
            path, lambda handle, picture=picture: picture.save(handle, format="PNG")
        )  # never half a PNG
    return len(images)
