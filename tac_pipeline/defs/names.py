"""The graph's asset names and keys, and the embedding assets' code versions, defined once.

Nothing here imports an asset module (nor torch): the automation and the CLI name assets through these, and
``tac_pipeline_tests/test_defs/test_names.py`` checks that they are the ones
:func:`tac_pipeline.defs.assets.build_assets` defines.
"""

from __future__ import annotations

from dagster import AssetKey

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


COUNTERPARTS_ASSET = "counterparts"
METRICS_ASSET = (
    "metrics"  # what the command line prints after a run  # where n_clusters = "auto" records the K it chose
)


#: The assets partitioned by dataset: everything but the shared noun embeddings.
DATASET_ASSETS = tuple(name for name in ASSET_NAMES if name != NOUN_ASSET)

#: Each clustering method and the ``cluster_labels`` column holding its labels (the order of ``metrics``' rows).
METHOD_COLUMNS = {
    "kmeans_image": "cluster_kmeans",
    "tac_no_train": "cluster_no_train",
    "tac_image": "cluster",
    "tac_text": "cluster_text",
    "tac_mean": "cluster_mean",
}

#: The fitted model of a dataset: what a fit computes and an assign reuses.
FIT_ASSETS = ("semantic_centers", "text_space", "knn_graphs", "trained_heads")
#: What an assign run materializes: new images embedded, retrieved, labelled by the fitted model, scored.
ASSIGN_ASSETS = tuple(name for name in DATASET_ASSETS if name not in FIT_ASSETS)
#: The asset whose materialization records the fit (its run, the state it was fitted on).
FIT_RECORD_ASSET = "trained_heads"
LABELS_ASSET = "cluster_labels"

#: Run tags: the kind of a dataset run ("fit" or "assign") and why the refit policy chose it.
RUN_KIND_TAG = "tac/run_kind"
REFIT_REASON_TAG = "tac/refit_reason"
FIT, ASSIGN = "fit", "assign"


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
