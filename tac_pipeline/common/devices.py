"""Device resolution and array conversion shared by every TAC step.

All public functions of :mod:`tac_pipeline.tac` accept numpy arrays or torch tensors and
take a ``device`` argument; this module is the single place that decides what it means (the encoders use it too).
"""

from __future__ import annotations

import numpy as np
import torch

DeviceLike = str | torch.device | None
ArrayLike = np.ndarray | torch.Tensor


def resolve_device(device: DeviceLike = "auto") -> torch.device:
    """Turn a user-facing device setting into a :class:`torch.device`.

    ``"auto"`` or ``None`` pick ``cuda`` when a GPU is visible, otherwise ``cpu``. Any other
    string (``"cpu"``, ``"cuda"``, ``"cuda:1"``) or a ``torch.device`` is used as given; asking
    for CUDA on a machine without it is an error rather than a silent fallback.
    """
    if device is None or (isinstance(device, str) and device.lower() == "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available on this machine")
    return resolved


def host_array(x, dtype: np.dtype | type | None = None) -> np.ndarray:
    """A C-contiguous, writable numpy view or copy of x (read-only inputs, e.g. Arrow-backed
    arrays, are copied so torch can wrap them without undefined behaviour)."""
    arr = np.ascontiguousarray(np.asarray(x, dtype=dtype))
    return arr if arr.flags.writeable else arr.copy()


def as_tensor(x: ArrayLike, device: DeviceLike = None, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Convert ``x`` (numpy array or tensor, any shape) to a detached tensor on ``device``.

    ``device=None`` keeps a tensor where it already is and puts numpy data on the CPU.
    """
    t = x.detach() if isinstance(x, torch.Tensor) else torch.from_numpy(host_array(x))
    target = t.device if device is None else resolve_device(device)
    return t.to(device=target, dtype=dtype)


def to_numpy(x: ArrayLike, dtype: np.dtype | type | None = None) -> np.ndarray:
    """Return ``x`` as a numpy array (copied off the GPU when needed)."""
    arr = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return arr if dtype is None else arr.astype(dtype, copy=False)
