"""The nine TAC assets, one module per stage; each is wiring around ``tac_pipeline.tac`` and the encoders."""

from __future__ import annotations

from dagster import AssetsDefinition

from tac_pipeline.assets.embeddings import build_embedding_assets
from tac_pipeline.assets.results import cluster_labels, metrics
from tac_pipeline.assets.text import counterparts, semantic_centers, text_space
from tac_pipeline.assets.training import knn_graphs, trained_heads

ASSET_NAMES = (
    "image_embeddings",
    "wordnet_noun_embeddings",
    "semantic_centers",
    "text_space",
    "counterparts",
    "knn_graphs",
    "trained_heads",
    "cluster_labels",
    "metrics",
)


def build_assets(encoder_identity: str) -> list[AssetsDefinition]:
    return [
        *build_embedding_assets(encoder_identity),
        semantic_centers,
        text_space,
        counterparts,
        knn_graphs,
        trained_heads,
        cluster_labels,
        metrics,
    ]
