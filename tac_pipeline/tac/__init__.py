"""TAC (Text-Aided Clustering, Li et al., ICML 2024) as a framework-free library.

The mathematics of docs/METHOD.md §3-§8 as small, typed, device-agnostic functions; ``TAC`` composes
them. Nothing here imports Dagster. Every function accepts numpy arrays or torch tensors and
returns numpy arrays (heads are torch modules).
"""

from .device import as_tensor, resolve_device, to_numpy
from .estimator import TAC
from .heads import (
    ClusterHead,
    HeadTrainingConfig,
    TrainingHistory,
    balance_loss,
    consistency_loss,
    distillation_loss,
    predict_proba,
    train_heads,
)
from .metrics import cluster_metrics, clustering_accuracy
from .stability import match_cluster_ids, relabel_stably
from .text_space import (
    TextSpace,
    classify_nouns,
    concat_modalities,
    no_train_baseline,
    retrieve_counterparts,
    select_text_space,
    semantic_center_count,
)
from .validation import validate_embeddings
from .vectors import assign_to_centers, drop_self, faiss_has_gpu, knn_inner_product, spherical_kmeans

__all__ = [
    "TAC",
    "ClusterHead",
    "HeadTrainingConfig",
    "TextSpace",
    "TrainingHistory",
    "as_tensor",
    "assign_to_centers",
    "balance_loss",
    "classify_nouns",
    "cluster_metrics",
    "clustering_accuracy",
    "concat_modalities",
    "consistency_loss",
    "distillation_loss",
    "drop_self",
    "faiss_has_gpu",
    "knn_inner_product",
    "match_cluster_ids",
    "no_train_baseline",
    "predict_proba",
    "relabel_stably",
    "resolve_device",
    "retrieve_counterparts",
    "select_text_space",
    "semantic_center_count",
    "spherical_kmeans",
    "to_numpy",
    "train_heads",
    "validate_embeddings",
]
