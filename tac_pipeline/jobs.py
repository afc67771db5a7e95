"""The graph's asset keys, the embedding assets' code versions and the jobs over them, defined once.

Nothing here imports an asset module (nor torch): the sensor, the schedule and the CLI name assets through
these keys, and the asset modules are free to import anything Dagster-free (:mod:`tac_pipeline.drops`).
``tac_pipeline_tests/test_jobs.py`` checks both that the keys are the ones :func:`tac_pipeline.assets.build_assets`
defines and that importing the automation pulls in no asset module.
"""

from __future__ import annotations

from dagster import AssetKey, AssetSelection, define_asset_job

from tac_pipeline.encoders.wordnet import DEFAULT_VOCABULARY, check_vocabulary

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
NOUN_ASSET = "wordnet_noun_embeddings"
IMAGE_ASSET = "image_embeddings"
COUNTERPARTS_ASSET = "counterparts"  # where n_clusters = "auto" records the K it chose
#: The assets partitioned by dataset: everything but the shared noun embeddings.
DATASET_ASSETS = tuple(name for name in ASSET_NAMES if name != NOUN_ASSET)

NOUN_ASSET_KEY = AssetKey(NOUN_ASSET)
IMAGE_ASSET_KEY = AssetKey(IMAGE_ASSET)
DATASET_ASSET_KEYS = tuple(AssetKey(name) for name in DATASET_ASSETS)

#: Bump when the embedding assets' computation changes; the encoder identity is appended at definition time.
CODE_VERSION = "1"


def embedding_code_version(encoder_identity: str) -> str:
    """The code version of both embedding assets: changing the encoder makes them (only them) stale."""
    return f"{CODE_VERSION}+{encoder_identity}"


def noun_code_version(encoder_identity: str, vocabulary: str = DEFAULT_VOCABULARY) -> str:
    """The code version of ``wordnet_noun_embeddings``: the encoder and the noun vocabulary it embeds."""
    return f"{embedding_code_version(encoder_identity)}+nouns-{check_vocabulary(vocabulary)}"


#: One dataset partition, end to end (the shared noun embeddings must exist unless the drop has its own).
cluster_dataset_job = define_asset_job(
    "cluster_dataset",
    selection=AssetSelection.assets(*DATASET_ASSET_KEYS),
    description="Cluster one dataset partition (the shared noun embeddings must exist, unless the drop "
    "has its own nouns.parquet).",
)

#: What the drops sensor and the re-clustering schedule run: the shared noun embeddings alone (no
#: partition), or one dataset partition's assets. Each run request names its asset selection.
drops_job = define_asset_job(
    "refresh_drops",
    selection=AssetSelection.assets(NOUN_ASSET_KEY, *DATASET_ASSET_KEYS),
    description="The runs the drops sensor and the re-clustering schedule request: the noun embeddings "
    "alone, or one dataset partition's assets.",
)

JOBS = (cluster_dataset_job, drops_job)
