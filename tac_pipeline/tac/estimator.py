"""``TAC``: the whole method (spec §3-§8) composed from the module-level functions."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import Literal

import numpy as np

# torch.optim.Adam imports torch._dynamo (about 900 modules, 1 s on 2 cores) the first time one is built, and
# no Adam option avoids it: importing it with the estimator keeps it out of every fit's time (the pipeline's
# step processes preload it, defs/executors/local.py). Prediction alone (heads.py) does not pay it.
import torch._dynamo  # noqa: F401
from pydantic import ValidationError
from sklearn.base import BaseEstimator, ClusterMixin
from sklearn.utils.validation import check_is_fitted

from tac_pipeline.common.devices import ArrayLike, DeviceLike, resolve_device, to_numpy

from .baselines import SphericalKMeans
from .choose_k import KSweep, choose_n_clusters
from .heads import ClusterHead, HeadTrainingConfig, TrainingHistory, predict_proba, train_heads
from .novelty import NOVELTY_QUANTILE, NoveltyRule, best_similarity
from .params import DEFAULTS, TacParams, auto_k_range
from .text_space import (
    TextSpace,
    concat_modalities,
    retrieve_counterparts,
    select_text_space,
    semantic_center_count,
)
from .validation import validate_embeddings
from .vectors import Backend, knn_inner_product, spherical_kmeans

Head = Literal["image", "text", "mean"]
_BACKENDS = ("auto", "faiss", "torch")


class TAC(ClusterMixin, BaseEstimator):
    """Text-Aided Clustering (Li et al., ICML 2024) with every default of the spec.

    The keyword arguments are the fields of :class:`~tac_pipeline.tac.params.TacParams`, which holds their
    defaults and ranges: ``TAC(n_clusters, **params.model_dump())``.

    A scikit-learn estimator: ``__init__`` only stores the parameters, ``fit`` checks them (a bad one raises
    ``ValueError`` naming it) and ``get_params`` / ``set_params`` / ``sklearn.base.clone`` work. Predicting
    before ``fit`` raises ``sklearn.exceptions.NotFittedError``.

    ``fit`` runs: semantic centres (spherical k-means on the images) -> text space (gamma nouns
    per centre) -> counterparts (soft retrieval) -> kNN in both spaces -> the two cluster heads.

    Args:
        n_clusters: K, the number of clusters to find (>= 2, < number of fitting images), or "auto": K is
            chosen in ``n_clusters_range`` by :func:`~tac_pipeline.tac.choose_k.choose_n_clusters` (the cosine
            silhouette of the text counterparts over the cuts of one Ward tree), then the heads are fitted
            with it. The semantic centres are then sized for the range's upper end.
        n_clusters_range: (low, high), inclusive, the K tried by "auto"; None: 2 to min(100, N // 10)
            (:func:`~tac_pipeline.tac.params.auto_k_range`).
        seed: seeds k-means, head initialisation and sampling (deterministic on CPU).
        device: "auto" (CUDA when available), "cpu", "cuda", ... .
        gamma: nouns kept per semantic centre (5).
        retrieval_temperature: softmax temperature of counterpart retrieval (0.005).
        n_neighbors: kNN list length in each space (50); shrunk to N-1 with a warning when N <= 50.
        n_centers: override the semantic centre count (default ``semantic_center_count``).
        kmeans_iter, kmeans_restarts: semantic-centre k-means (300 iterations, best of 10).
        baseline_restarts: restarts of the training-free baseline's k-means (20).
        epochs, batch_size, tau: head training; None applies the spec's K < 100 / K >= 100 rule.
        lr, entropy_weight: Adam learning rate (1e-3) and L_bal weight (5).
        backend: "auto" | "faiss" | "torch" for k-means and kNN.
        cuda_graph: replay the training step as a CUDA graph on CUDA (experimental).

    Fitted attributes: ``n_clusters_`` (K used), ``n_clusters_scores_`` ({K: silhouette} of every K tried, or
    None when K was given), ``k_sweep_`` (:class:`~tac_pipeline.tac.choose_k.KSweep` or None), ``labels_`` (N,) the image head's cluster of every fitting image, ``device_``, ``n_features_in_``, ``n_centers_``, ``centers_`` (k_c, d),
    ``center_labels_`` (N,), ``center_n_iter_`` (kmeans_restarts,) the Lloyd iterations of each restart of
    the centres' k-means (it stops at its fixed point), ``text_space_`` (:class:`TextSpace`), ``text_embeddings_`` (M, d),
    ``counterparts_`` (N, d), ``top_nouns_`` (N,) index into the text space of each image's
    nearest noun, ``n_neighbors_``, ``knn_image_`` / ``knn_text_`` (N, n_neighbors_),
    ``training_config_``, ``image_head_``, ``text_head_``, ``history_`` (:class:`TrainingHistory`),
    ``novelty_`` (:class:`~tac_pipeline.tac.novelty.NoveltyRule` from the fitting images), ``stage_seconds_``
    (the seconds of each stage of the fit: ``centers``, ``nouns``, ``counterparts``, ``choose_k``, ``knn``,
    ``heads``, ``novelty``); after
    :meth:`fit_baseline`, ``baseline_`` (a fitted :class:`~tac_pipeline.tac.baselines.SphericalKMeans` on
    ``[v, counterpart(v)]``).

    New images: :meth:`predict` / :meth:`predict_proba` (the heads), :meth:`transform_counterparts`,
    :meth:`predict_novel` and :meth:`predict_baseline` label them with the fitted model, nothing refitted.
    """

    def __init__(
        self,
        n_clusters: int | Literal["auto"],
        *,
        n_clusters_range: tuple[int, int] | None = None,
        seed: int = DEFAULTS.seed,
        device: DeviceLike = "auto",
        gamma: int = DEFAULTS.gamma,
        retrieval_temperature: float = DEFAULTS.retrieval_temperature,
        n_neighbors: int = DEFAULTS.n_neighbors,
        n_centers: int | None = DEFAULTS.n_centers,
        kmeans_iter: int = DEFAULTS.kmeans_iter,
        kmeans_restarts: int = DEFAULTS.kmeans_restarts,
        baseline_restarts: int = DEFAULTS.baseline_restarts,
        epochs: int | None = DEFAULTS.epochs,
        batch_size: int | None = DEFAULTS.batch_size,
        tau: float | None = DEFAULTS.tau,
        lr: float = DEFAULTS.lr,
        entropy_weight: float = DEFAULTS.entropy_weight,
        backend: Backend = "auto",
        cuda_graph: bool = False,
    ):
        self.n_clusters = n_clusters
        self.n_clusters_range = n_clusters_range
        self.seed = seed
        self.device = device
        self.gamma = gamma
        self.retrieval_temperature = retrieval_temperature
        self.n_neighbors = n_neighbors
        self.n_centers = n_centers
        self.kmeans_iter = kmeans_iter
        self.kmeans_restarts = kmeans_restarts
        self.baseline_restarts = baseline_restarts
        self.epochs = epochs
        self.batch_size = batch_size
        self.tau = tau
        self.lr = lr
        self.entropy_weight = entropy_weight
        self.backend = backend
        self.cuda_graph = cuda_graph

    # ---------------------------------------------------------------------------------------
    def _validated_params(self) -> TacParams:
        """The parameters checked against ``TacParams``'s ranges; ``ValueError`` names every bad one."""
        k = self.n_clusters
        if isinstance(k, str):
            if k != "auto":
                hint = " (did you mean 'auto'?)" if k.strip().lower() == "auto" else ""
                raise ValueError(
                    f"TAC parameter 'n_clusters' must be an integer >= 2 or 'auto', got {k!r}{hint}"
                )
        elif isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 2:
            raise ValueError(f"TAC parameter 'n_clusters' must be an integer >= 2 or 'auto', got {k!r}")
        elif self.n_clusters_range is not None:
            raise ValueError(
                f"TAC parameter 'n_clusters_range' is only used with n_clusters='auto' (n_clusters is {k}); "
                "leave it None or set n_clusters='auto'"
            )
        if self.backend not in _BACKENDS:
            raise ValueError(f"TAC parameter 'backend' must be one of {_BACKENDS}, got {self.backend!r}")
        if not isinstance(self.cuda_graph, bool):
            raise ValueError(f"TAC parameter 'cuda_graph' must be True or False, got {self.cuda_graph!r}")
        try:
            return TacParams(**{name: getattr(self, name) for name in TacParams.model_fields})
        except ValidationError as exc:
            problems = [
                f"TAC parameter '{'.'.join(map(str, e['loc']))}': {e['msg']} (got {e.get('input')!r})"
                for e in exc.errors()
            ]
            raise ValueError("; ".join(problems)) from None

    def fit(
        self,
        image_embeddings: ArrayLike,
        noun_embeddings: ArrayLike,
        *,
        callback: Callable[[int, dict[str, float]], None] | None = None,
    ) -> TAC:
        """Fit on the fitting split.

        Args:
            image_embeddings: (N, d) image embeddings of the fitting split.
            noun_embeddings: (M_all, d) embeddings of the whole noun vocabulary.
            callback: per-epoch ``callback(epoch, losses)`` of the head training.

        Returns:
            self.
        """
        params = self._validated_params()
        dev = resolve_device(self.device)
        # Host copies: the steps below move what they need to the device themselves.
        images = to_numpy(validate_embeddings(image_embeddings, "image embeddings"))
        nouns = to_numpy(validate_embeddings(noun_embeddings, "noun embeddings"))
        n, d = images.shape
        if nouns.shape[1] != d:
            raise ValueError(f"noun embeddings are {nouns.shape[1]} wide but image embeddings are {d} wide")
        auto = self.n_clusters == "auto"
        if auto:
            try:
                k_range = auto_k_range(n, self.n_clusters_range)
            except ValueError as exc:
                raise ValueError(f"TAC parameter 'n_clusters_range': {exc}") from None
        elif self.n_clusters >= n:
            raise ValueError(f"n_clusters={self.n_clusters} must be smaller than the number of images ({n})")

        self.device_ = dev
        self.n_features_in_ = d
        # With 'auto' the centres are sized for the largest K tried, so every K of the range has its nouns.
        self.n_centers_ = (
            semantic_center_count(n, k_range[1] if auto else self.n_clusters)
            if params.n_centers is None
            else min(params.n_centers, n)
        )
        stage = _StageClock()
        self.centers_, self.center_labels_, self.center_n_iter_ = spherical_kmeans(
            images,
            self.n_centers_,
            n_iter=params.kmeans_iter,
            n_restarts=params.kmeans_restarts,
            seed=params.seed,
            device=dev,
            backend=self.backend,
            return_n_iter=True,
        )
        stage("centers")
        self.text_space_: TextSpace = select_text_space(nouns, self.centers_, params.gamma, device=dev)
        self.text_embeddings_ = nouns[self.text_space_.noun_indices]
        stage("nouns")
        self.counterparts_, top, _ = retrieve_counterparts(
            images, self.text_embeddings_, params.retrieval_temperature, device=dev, return_top=1
        )
        self.top_nouns_ = top[:, 0]
        stage("counterparts")

        # K: given, or chosen from the counterparts (nothing above depends on K except the centre count).
        self.k_sweep_: KSweep | None = (
            choose_n_clusters(images, self.counterparts_, k_range, seed=params.seed) if auto else None
        )
        self.n_clusters_ = self.k_sweep_.chosen if auto else int(self.n_clusters)
        self.n_clusters_scores_ = self.k_sweep_.as_dict() if auto else None
        stage("choose_k")

        self.n_neighbors_ = params.n_neighbors
        if params.n_neighbors >= n:
            self.n_neighbors_ = n - 1
            warnings.warn(
                f"only {n} images: using {n - 1} nearest neighbours instead of {params.n_neighbors}",
                stacklevel=2,
            )
        self.knn_image_ = knn_inner_product(images, self.n_neighbors_, device=dev, backend=self.backend)
        self.knn_text_ = knn_inner_product(
            self.counterparts_, self.n_neighbors_, device=dev, backend=self.backend
        )
        stage("knn")

        self.training_config_ = HeadTrainingConfig.for_clusters(
            self.n_clusters_,
            epochs=params.epochs,
            batch_size=params.batch_size,
            tau=params.tau,
            lr=params.lr,
            entropy_weight=params.entropy_weight,
            cuda_graph=self.cuda_graph,
        )
        self.image_head_: ClusterHead
        self.text_head_: ClusterHead
        self.history_: TrainingHistory
        self.image_head_, self.text_head_, self.history_ = train_heads(
            images,
            self.counterparts_,
            self.knn_image_,
            self.knn_text_,
            self.n_clusters_,
            self.training_config_,
            seed=params.seed,
            device=dev,
            callback=callback,
        )
        stage("heads")
        confidence = predict_proba(self.image_head_, images)
        self.labels_ = confidence.argmax(axis=1).astype(np.int64)
        self.novelty_ = NoveltyRule.fit(
            confidence.max(axis=1),
            best_similarity(images, self.text_embeddings_, device=dev),
            NOVELTY_QUANTILE,
        )
        stage("novelty")
        self.stage_seconds_ = stage.seconds
        return self

    def fit_predict(self, image_embeddings: ArrayLike, noun_embeddings: ArrayLike, **kwargs) -> np.ndarray:
        """``fit`` then ``labels_``: the (N,) int64 image-head cluster of every fitting image."""
        return self.fit(image_embeddings, noun_embeddings, **kwargs).labels_

    # ---------------------------------------------------------------------------------------
    def _check_input(self, x: ArrayLike) -> np.ndarray:
        check_is_fitted(self, "history_")
        images = to_numpy(validate_embeddings(x, "image embeddings"))
        if images.shape[1] != self.n_features_in_:
            raise ValueError(f"expected {self.n_features_in_}-wide embeddings, got {images.shape[1]}")
        return images

    def transform_counterparts(self, x: ArrayLike) -> np.ndarray:
        """(N, d) image embeddings -> (N, d) float32 text counterparts from the fitted text space."""
        images = self._check_input(x)
        return retrieve_counterparts(
            images, self.text_embeddings_, self.retrieval_temperature, device=self.device_
        )

    def predict_proba(self, x: ArrayLike, head: Head = "image") -> np.ndarray:
        """(N, d) image embeddings -> (N, K) float32 cluster probabilities.

        head: "image" (f(v), the paper's result), "text" (g of the counterparts) or "mean"
        (average of the two).
        """
        if head not in ("image", "text", "mean"):
            raise ValueError(f"head must be 'image', 'text' or 'mean', got {head!r}")
        images = self._check_input(x)
        if head == "image":
            return predict_proba(self.image_head_, images)
        text = predict_proba(self.text_head_, self.transform_counterparts(images))
        if head == "text":
            return text
        return 0.5 * (predict_proba(self.image_head_, images) + text)

    def predict(self, x: ArrayLike) -> np.ndarray:
        """(N, d) image embeddings -> (N,) int64 labels, argmax of the image head (spec §8)."""
        return self.predict_proba(x, "image").argmax(axis=1).astype(np.int64)

    def predict_text(self, x: ArrayLike) -> np.ndarray:
        """(N,) int64 labels from the text head applied to the counterparts of x."""
        return self.predict_proba(x, "text").argmax(axis=1).astype(np.int64)

    def predict_mean(self, x: ArrayLike) -> np.ndarray:
        """(N,) int64 labels from the mean of the image- and text-head probabilities."""
        return self.predict_proba(x, "mean").argmax(axis=1).astype(np.int64)

    def novelty_scores(self, x: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
        """(N, d) image embeddings -> the two novelty signals, (N,) image-head confidence and (N,) best
        similarity to the text space's nouns (float32 each)."""
        images = self._check_input(x)
        confidence = predict_proba(self.image_head_, images).max(axis=1)
        return confidence, best_similarity(images, self.text_embeddings_, device=self.device_)

    def predict_novel(self, x: ArrayLike) -> np.ndarray:
        """(N, d) image embeddings -> (N,) bool, True for an image that fits no fitted cluster
        (:class:`~tac_pipeline.tac.novelty.NoveltyRule`, thresholds in ``novelty_``)."""
        check_is_fitted(self, "novelty_")
        return self.novelty_.flag(*self.novelty_scores(x))

    def fit_baseline(self, x: ArrayLike) -> TAC:
        """Fit training-free TAC on x (spec §5): k-means with K clusters on [v, counterpart(v)], kept as
        ``baseline_``. Needs only the fitted text space."""
        images = self._check_input(x)
        self.baseline_ = SphericalKMeans(
            self.n_clusters_,
            n_iter=self.kmeans_iter,
            n_restarts=self.baseline_restarts,
            seed=self.seed,
            device=self.device_,
            backend=self.backend,
        ).fit(concat_modalities(images, self.transform_counterparts(images)))
        return self

    def predict_baseline(self, x: ArrayLike) -> np.ndarray:
        """(N,) int64 training-free TAC labels of x: the nearest centre of ``baseline_`` for [v, counterpart(v)]."""
        check_is_fitted(self, "baseline_")
        images = self._check_input(x)
        return self.baseline_.predict(concat_modalities(images, self.transform_counterparts(images)))

    def fit_predict_baseline(self, x: ArrayLike) -> np.ndarray:
        """:meth:`fit_baseline` on x, then its labels: (N,) int64."""
        return self.fit_baseline(x).baseline_.labels_


class _StageClock:
    """Seconds between successive calls, by stage name: ``clock("centers")`` ends the stage begun at the
    previous call (or at creation)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.perf_counter()

    def __call__(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, 4)
        self._last = now
