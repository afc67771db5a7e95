"""Input checks for embedding matrices: shape, finiteness, non-zero norm, unit norm.

The rule for a row, in one place: it is *non-finite* when any value is NaN or infinite; its norm is the L2 norm
of its values with the non-finite ones counted as 0; it has *zero norm* at or below :data:`ZERO_NORM` (no
direction to compare by cosine); it is *unit-norm* within :data:`UNIT_NORM_TOLERANCE`. :func:`row_norms` applies
it (the stored-embeddings checks, the reuse of stored rows); :func:`validate_embeddings` raises on it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch

from tac_pipeline.common.devices import ArrayLike, host_array
from tac_pipeline.common.messages import listed

#: float32 embeddings are normalised to about 1e-7; a row further than this from norm 1 is a real defect.
UNIT_NORM_TOLERANCE = 1e-3
#: A row of this norm or less has no direction.
ZERO_NORM = 1e-12


def _as_float32_tensor(x: ArrayLike) -> torch.Tensor:
    """``x`` as a float32 tensor for reading only: nothing in this module writes to its input, so a read-only
    array (Arrow-backed, as the store's tables give) is wrapped as it is instead of copied (a copy of
    60,000 x 512 floats per check otherwise)."""
    if isinstance(x, torch.Tensor):
        return x.detach().to(torch.float32)
    arr = np.asarray(x, dtype=np.float32)
    if arr.flags.writeable or not arr.flags.c_contiguous:
        return torch.from_numpy(host_array(arr))
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(arr)


def _nonfinite_and_norms(t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of a 2-D tensor, on its device: (has a NaN or inf, L2 norm with those values counted as 0).

    One pass over the matrix for the usual case: a row whose norm is finite holds only finite values (a NaN
    or an infinity makes its norm NaN or infinite), so only rows whose norm is not finite -- a bad value, or
    values so large that their squares overflow -- are looked at again, value by value.
    """
    norms = torch.linalg.vector_norm(t, dim=1)
    suspect = ~torch.isfinite(norms)
    nonfinite = torch.zeros_like(suspect)
    if bool(suspect.any()):
        rows = t[suspect]
        nonfinite[suspect] = (~torch.isfinite(rows)).any(dim=1)
        norms[suspect] = torch.linalg.vector_norm(
            torch.nan_to_num(rows, nan=0.0, posinf=0.0, neginf=0.0), dim=1
        )
    return nonfinite, norms


@dataclass(frozen=True)
class RowNorms:
    """The rule of this module applied to every row of an ``(N, d)`` matrix (host numpy arrays)."""

    non_finite: np.ndarray  #: bool ``(N,)``
    norms: np.ndarray  #: float32 ``(N,)``, non-finite values counted as 0

    @property
    def zero(self) -> np.ndarray:
        """Finite rows of (near) zero norm."""
        return ~self.non_finite & (self.norms <= ZERO_NORM)

    @property
    def off_unit(self) -> np.ndarray:
        """Finite rows whose norm is not 1 (within :data:`UNIT_NORM_TOLERANCE`)."""
        return ~self.non_finite & (np.abs(self.norms - 1.0) > UNIT_NORM_TOLERANCE)

    @property
    def sound(self) -> np.ndarray:
        """Rows that are finite and unit-norm."""
        return ~self.non_finite & ~self.off_unit

    @property
    def max_deviation(self) -> float:
        """The largest distance of a finite row's norm from 1 (0 without finite rows)."""
        finite = ~self.non_finite
        return float(np.abs(self.norms[finite] - 1.0).max()) if finite.any() else 0.0


def row_norms(x: ArrayLike) -> RowNorms:
    """Apply the row rule to an ``(N, d)`` matrix (numpy or torch, any device; one host round-trip)."""
    t = _as_float32_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"expected a 2-D (N, d) matrix, got shape {tuple(t.shape)}")
    nonfinite, norms = _nonfinite_and_norms(t)
    return RowNorms(non_finite=nonfinite.cpu().numpy(), norms=norms.cpu().numpy())


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
    t = _as_float32_tensor(x)
    if t.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D (N, d) matrix, got shape {tuple(t.shape)}")
    if t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"{name}: expected a non-empty (N, d) matrix, got shape {tuple(t.shape)}")
    # One host round-trip for both checks: this runs once per call, never inside a training loop.
    nonfinite, norms = _nonfinite_and_norms(t)
    flags = torch.stack([nonfinite, (norms <= ZERO_NORM) & ~nonfinite]).cpu().numpy()
    if flags[0].any():
        raise ValueError(_describe_rows(flags[0], t.shape[0], "contain non-finite values (NaN or inf)", name))
    if flags[1].any():
        raise ValueError(_describe_rows(flags[1], t.shape[0], "have zero norm", name))
    out = t / norms.unsqueeze(1)
    return out if is_tensor else out.numpy()
