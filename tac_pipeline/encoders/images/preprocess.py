"""CLIP's eval transform as plain data, run with Pillow alone in the decoding workers.

:class:`PreprocessSpec` recognises open_clip's ``Resize → CenterCrop → RGB → ToTensor → Normalize`` and runs
its geometric part bit-identically with Pillow (workers ship uint8, 4× less than float32); the normalisation
runs on the batch, on whatever device it lives. torch is imported only where tensors are made.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

if TYPE_CHECKING:  # pragma: no cover
    import torch

__all__ = ["PreprocessSpec"]

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
