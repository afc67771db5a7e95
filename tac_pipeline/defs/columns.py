"""What every column of every stored table means: the column schema the UI shows on each asset's *Columns* tab.

One home for the descriptions (:data:`COLUMNS`); :func:`column_schema` turns a stored table into Dagster's
``dagster/column_schema`` value with each column's Arrow type and description. The store's IO manager
(:mod:`tac_pipeline.defs.io_managers`) records it with every table it writes.
"""

from __future__ import annotations

import pyarrow as pa
from dagster import TableColumn, TableSchema

_IMAGE_ID = (
    "The image's id: its path in the drop (split/class/file), or the id of the drop's embeddings.parquet."
)
_SPLIT = "train or test when the drop has those folders, else null."
_LABEL = "The class folder the image sits in (or the label column of embeddings.parquet); null without one."
_EMBEDDING = "L2-normalised vector (list of float32)."

COLUMNS: dict[str, dict[str, str]] = {
    "image_embeddings": {
        "image_id": _IMAGE_ID,
        "path": "The file, relative to the drop (or to its [images] root); null for a drop's own embeddings.",
        "content_hash": "sha256 of the file's bytes: an unchanged file reuses its row; null for own embeddings.",
        "label": _LABEL,
        "split": _SPLIT,
        "embedding": f"The CLIP image embedding. {_EMBEDDING}",
    },
    "wordnet_noun_embeddings": {
        "noun": "A WordNet noun lemma (underscores as spaces).",
        "synset": "Its WordNet synset, e.g. dog.n.01.",
        "gloss": "The synset's definition.",
        "embedding": f"The CLIP text embedding of the noun, averaged over the prompt templates. {_EMBEDDING}",
    },
    "semantic_centers": {
        "center": "The centre's id, 0..k_c-1.",
        "size": "How many fitting images are closest to it.",
        "embedding": f"The mean of its images. {_EMBEDDING}",
    },
    "text_space": {
        "noun_index": "Row of the noun in the noun table it was chosen from.",
        "noun": "The selected noun (a WordNet lemma, or a row of the drop's nouns.parquet).",
        "synset": "Its WordNet synset (null for a drop's own nouns without one).",
        "gloss": "The synset's definition (null without one).",
        "center": "The semantic centre the noun was classified into.",
        "confidence": "The noun's softmax probability for that centre; the gamma most confident per centre are kept.",
        "embedding": f"The noun's embedding. {_EMBEDDING}",
    },
    "counterparts": {
        "image_id": _IMAGE_ID,
        "split": _SPLIT,
        "image_digest": "Digest of the image's vector: a row whose vector and text space are unchanged is reused.",
        "top_noun": "The text-space noun the image retrieves most strongly.",
        "top_weight": "That noun's retrieval weight (softmax at the retrieval temperature).",
        "top_nouns": "The image's most weighted text-space nouns (at most 3), strongest first: why it is where "
        "it is.",
        "top_weights": "Their retrieval weights, in the same order.",
        "noun_similarity": "The image's best cosine similarity to the text space's nouns (novelty's second signal).",
        "counterpart": f"The image's text counterpart: the retrieval-weighted sum of the nouns. {_EMBEDDING}",
    },
    "knn_graphs": {
        "image_id": "A fitting image's id.",
        "fit_index": "Its row among the image table's rows.",
        "neighbors_image": "Its nearest fitting images in image space, as positions among the fitting images.",
        "neighbors_text": "Its nearest fitting images in counterpart space, as positions among the fitting images.",
    },
    "trained_heads": {
        "name": "What the row holds: a head's parameter (image_head.*, text_head.*), a loss history (history.*), "
        "a baseline's centres (kmeans.centers, no_train.centers) or the novelty thresholds.",
        "shape": "The array's shape.",
        "values": "The array's values, flattened (float64).",
    },
    "cluster_labels": {
        "image_id": _IMAGE_ID,
        "split": _SPLIT,
        "label": _LABEL,
        "image_digest": "Digest of the image's vector: rows labelled by the same fitted model are kept.",
        "cluster": "The image head's cluster (the paper's label), a stable id.",
        "cluster_text": "The text head's cluster, from the image's counterpart.",
        "cluster_mean": "The cluster of the mean of both heads' probabilities.",
        "cluster_no_train": "Training-free TAC: the nearest centre of k-means on [image, counterpart].",
        "cluster_kmeans": "The k-means baseline: the nearest centre of k-means on the images alone.",
        "confidence": "The image head's probability for its cluster.",
        "novel": "True when the image fits no fitted cluster (docs/METHOD.md, novelty).",
        "assigned": "True when the image joined after the fit and was assigned by the fitted model.",
        "duplicate_group": "Its group of near-duplicates (cosine similarity >= duplicate_threshold), numbered by "
        "decreasing size; null when it has none.",
    },
    "metrics": {
        "method": "kmeans_image, tac_no_train, tac_image, tac_text or tac_mean.",
        "nmi": "Normalised mutual information with the labels, percent (null without labels).",
        "acc": "Accuracy under the best one-to-one matching of clusters to classes, percent.",
        "ari": "Adjusted Rand index, percent.",
        "n_images": "Images the scores are computed on (the reported split).",
        "split": "The reported split: test, or all.",
        "seed": "The seed of the run.",
        "cluster_size_ratio": "Smallest over largest cluster (1: even sizes, 0: a cluster is empty).",
    },
}


def column_schema(asset: str, table: pa.Table) -> TableSchema:
    """Every column of ``table`` as ``asset`` stores it: its name, Arrow type and description (empty for a
    column :data:`COLUMNS` does not know; the tests require every column of the nine assets to be known)."""
    described = COLUMNS.get(asset, {})
    return TableSchema(
        columns=[
            TableColumn(name=field.name, type=str(field.type), description=described.get(field.name))
            for field in table.schema
        ]
    )
