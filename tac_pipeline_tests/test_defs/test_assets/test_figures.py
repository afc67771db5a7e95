"""The figures' own computations (the rendering is covered by the asset tests that publish them)."""

from __future__ import annotations

import numpy as np
import pytest

from tac_pipeline.defs.assets.figures import pca_2d


@pytest.mark.parametrize("shape", [(400, 16), (10, 32), (2, 3), (1, 4)])
def test_the_map_is_the_first_two_principal_components(shape):
    rng = np.random.default_rng(0)
    x = rng.normal(size=shape) * np.linspace(4, 1, shape[1])  # distinct variances: well-defined axes
    projected = pca_2d(x)
    assert projected.shape == (shape[0], 2)
    if shape[0] < 2:
        assert (projected == 0).all()
        return
    centred = x - x.mean(axis=0)
    _, _, vt = np.linalg.svd(centred, full_matrices=False)
    expected = centred @ vt[:2].T
    # Each component is defined up to its sign.
    np.testing.assert_allclose(np.abs(projected), np.abs(expected), atol=1e-8)
