"""TAC (Text-Aided Clustering, Li et al., ICML 2024) as a framework-free library.

The mathematics of docs/METHOD.md §3-§8 as small, typed, device-agnostic functions; ``TAC`` composes
them. Nothing here imports Dagster. Every function accepts numpy arrays or torch tensors and
returns numpy arrays (heads are torch modules).

The names below load on first use (PEP 562), so ``tac_pipeline.tac.params``, TAC's settings, is
importable without torch (``dataset.toml`` parsing and the drop sensor need it, not the mathematics).
"""

from __future__ import annotations

import importlib

#: Public name -> the module of this package that defines it.
_HOMES = {
    **dict.fromkeys(["as_tensor", "resolve_device", "to_numpy"], "tac_pipeline.common.devices"),
    "TAC": "estimator",
    "SphericalKMeans": "baselines",
    "find_duplicates": "duplicates",
    **dict.fromkeys(["NOVELTY_QUANTILE", "NoveltyRule", "best_similarity"], "novelty"),
    **dict.fromkeys(
        [
            "ClusterHead",
            "HeadTrainingConfig",
            "TrainingDivergedError",
            "TrainingHistory",
            "balance_loss",
            "consistency_loss",
            "distillation_loss",
            "predict_proba",
            "train_heads",
        ],
        "heads",
    ),
    **dict.fromkeys(["cluster_metrics", "clustering_accuracy"], "metrics"),
    **dict.fromkeys(["DEFAULTS", "TacParams"], "params"),
    **dict.fromkeys(["cluster_turnover", "match_cluster_ids", "relabel_stably"], "stability"),
    **dict.fromkeys(["KSweep", "choose_n_clusters"], "choose_k"),
    **dict.fromkeys(
        [
            "TextSpace",
            "classify_nouns",
            "concat_modalities",
            "no_train_baseline",
            "retrieve_counterparts",
            "select_text_space",
            "semantic_center_count",
        ],
        "text_space",
    ),
    "validate_embeddings": "validation",
    **dict.fromkeys(
        ["assign_to_centers", "drop_self", "faiss_has_gpu", "knn_inner_product", "spherical_kmeans"],
        "vectors",
    ),
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name not in _HOMES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    home = _HOMES[name]
    value = getattr(importlib.import_module(home if "." in home else f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_HOMES))
