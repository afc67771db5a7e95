"""The nine TAC assets, one module per stage; each is wiring around ``tac_pipeline.tac`` and the encoders."""

from __future__ import annotations

from dagster import AssetsDefinition

from tac_pipeline.defs.assets.embeddings import build_embedding_assets
from tac_pipeline.defs.assets.results import cluster_labels, metrics
from tac_pipeline.defs.assets.text import counterparts, semantic_centers, text_space
from tac_pipeline.defs.assets.training import knn_graphs, trained_heads
from tac_pipeline.defs.names import ASSET_NAMES, DATASET_ASSETS, NOUN_ASSET
from tac_pipeline.encoders.wordnet import DEFAULT_VOCABULARY

__all__ = ["ASSET_NAMES", "DATASET_ASSETS", "NOUN_ASSET", "build_assets"]


def build_assets(
    encoder_identity: str, embed_shards: int = 1, noun_vocabulary: str = DEFAULT_VOCABULARY
) -> list[AssetsDefinition]:
    """The nine assets; ``embed_shards`` > 1 computes ``image_embeddings`` in that many parallel steps;
    ``noun_vocabulary`` is the WordNet list the shared noun embeddings hold (``lemmas`` or ``synsets``)."""
    image_embeddings, noun_embeddings = build_embedding_assets(encoder_identity, noun_vocabulary)
    if embed_shards > 1:
        from tac_pipeline.defs.assets.sharded import build_sharded_image_embeddings

        image_embeddings = build_sharded_image_embeddings(encoder_identity, embed_shards)
    return [
        image_embeddings,
        noun_embeddings,
        semantic_centers,
        text_space,
        counterparts,
        knn_graphs,
        trained_heads,
        cluster_labels,
        metrics,
    ]
