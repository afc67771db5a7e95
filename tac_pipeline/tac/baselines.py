"""The two baselines as fitted models: spherical k-means that labels new rows by their nearest centre.

:class:`SphericalKMeans` is :func:`~tac_pipeline.tac.vectors.spherical_kmeans` behind scikit-learn's protocol:
``fit`` keeps the centres, ``predict`` gives any row its most similar centre. ``labels_`` are the fitted rows'
nearest centres, so ``predict`` on the fitted rows returns exactly ``labels_`` (the authors label by a search
of the final centroids too). It serves both baselines:

* k-means on the images (``kmeans_image``): ``SphericalKMeans(K).fit(images)``;
* training-free TAC (spec §5): ``SphericalKMeans(K, n_restarts=20).fit(concat_modalities(images, counterparts))``
  (:meth:`~tac_pipeline.tac.TAC.fit_baseline` does this with the fitted text space).
"""

from __future__ import annotations

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from tac_pipeline.common.devices import ArrayLike, DeviceLike, to_numpy

from .params import DEFAULTS
from .validation import validate_embeddings
from .vectors import Backend, assign_to_centers, spherical_kmeans


class SphericalKMeans(ClusterMixin, BaseEstimator):
    """Cosine k-means, best of ``n_restarts``; new rows take their most similar centre.

    Args:
        n_clusters: k (1 <= k <= rows).
        n_iter: Lloyd iterations per restart (300).
        n_restarts: initialisations, the best objective kept (10; the training-free baseline uses 20).
        seed, device, backend: as in :func:`~tac_pipeline.tac.vectors.spherical_kmeans`.

    Fitted attributes: ``cluster_centers_`` (k, d) float32, L2-normalised; ``labels_`` (N,) int64, the nearest
    centre of every fitted row; ``n_iter_`` (n_restarts,) int64, the Lloyd iterations each restart ran (it
    stops at its fixed point, at most ``n_iter``); ``n_features_in_``.
    """

    def __init__(
        self,
        n_clusters: int = 8,
        *,
        n_iter: int = DEFAULTS.kmeans_iter,
        n_restarts: int = DEFAULTS.kmeans_restarts,
        seed: int = DEFAULTS.seed,
        device: DeviceLike = "auto",
        backend: Backend = "auto",
    ):
        self.n_clusters = n_clusters
        self.n_iter = n_iter
        self.n_restarts = n_restarts
        self.seed = seed
        self.device = device
        self.backend = backend

    def fit(self, x: ArrayLike, y=None) -> SphericalKMeans:
        """Fit on (N, d) rows; ``y`` is ignored (scikit-learn's signature)."""
        rows = to_numpy(validate_embeddings(x, "k-means input"))
        centers, _, self.n_iter_ = spherical_kmeans(
            rows,
            self.n_clusters,
            n_iter=self.n_iter,
            n_restarts=self.n_restarts,
            seed=self.seed,
            device=self.device,
            backend=self.backend,
            return_n_iter=True,
        )
        self.cluster_centers_ = centers
        self.n_features_in_ = rows.shape[1]
        self.labels_ = assign_to_centers(rows, centers, device=self.device)
        return self

    def predict(self, x: ArrayLike) -> np.ndarray:
        """(N, d) rows -> (N,) int64 index of each row's most similar centre."""
        check_is_fitted(self, "cluster_centers_")
        rows = to_numpy(validate_embeddings(x, "k-means input"))
        if rows.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_}-wide rows, got {rows.shape[1]}")
        return assign_to_centers(rows, self.cluster_centers_, device=self.device)

    @classmethod
    def from_centers(cls, centers: ArrayLike, **params) -> SphericalKMeans:
        """A fitted model from stored centres (k, d), e.g. read back from the pipeline's store."""
        c = to_numpy(validate_embeddings(centers, "centres"))
        model = cls(n_clusters=int(c.shape[0]), **params)
        model.cluster_centers_ = c.astype(np.float32)
        model.n_features_in_ = int(c.shape[1])
        return model
