"""Input checks for embedding matrices: shape, finiteness, non-zero norm."""

from __future__ import annotations

import numpy as np
import torch

from tac_pipeline.messages import listed

from .device import ArrayLike, host_array


def _describe_rows(bad: np.ndarray, n_rows: int, what: str, name: str) -> str:
    rows = np.flatnonzero(bad)
    return f"{name}: {rows.size} of {n_rows} rows {what} (rows {listed(rows)})"


def validate_embeddings(x: ArrayLike, name: str = "embeddings") -> ArrayLike:
    """Check an embedding matrix and return it L2-normalised as float32.

    Args:
        x: (N, d) numpy array or torch tensor, N >= 1 and d >= 1.
        name: what the matrix is, used in error messages.

    Returns:
        (N, d) float32, every row of unit norm; a numpy array for numpy input, a tensor on the
        same device for tensor input.

    Raises:
        ValueError: wrong rank or empty; rows with NaN/inf (the message says how many and which);
            rows of zero norm (same), since they have no direction to compare by cosine.
    """
    is_tensor = isinstance(x, torch.Tensor)
    if is_tensor:
        t = x.detach().to(torch.float32)
    else:
        t = torch.from_numpy(host_array(x, dtype=np.float32))
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (N, d) matrix, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (N, d) matrix, got shape {tuple(t.shape)}")
    # One host round-trip for both checks: this runs once per call, never inside a training loop.
    nonfinite = (~torch.isfinite(t)).any(dim=1)
    norms = torch.linalg.vector_norm(torch.nan_to_num(t, nan=0.0, posinf=0.0, neginf=0.0), dim=1)
    flags = torch.stack([nonfinite, (norms <= 1e-12) & ~nonfinite]).cpu().numpy()
    if flags[0].any():
        raise ValueError(_describe_rows(flags[0], t.shape[0], "contain non-finite values (NaN or inf)", name))
    if flags[1].any():
        raise ValueError(_describe_rows(flags[1], t.shape[0], "have zero norm", name))
    out = t / norms.unsqueeze(1)
    return out if is_tensor else out.numpy()
