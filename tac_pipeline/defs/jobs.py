"""The jobs over the asset graph: one dataset end to end, and what the automation requests."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job

from tac_pipeline.defs.names import ASSIGN_ASSETS, DATASET_ASSET_KEYS, NOUN_ASSET_KEY

#: One dataset partition, end to end: a fit (the shared noun embeddings must exist unless the drop has its own).
cluster_dataset_job = define_asset_job(
    "cluster_dataset",
    selection=AssetSelection.assets(*DATASET_ASSET_KEYS),
    description="Fit one dataset partition end to end (the shared noun embeddings must exist, unless the "
    "drop has its own nouns.parquet).",
)

#: An assign: new images embedded and labelled by the dataset's fitted model, nothing refitted. It runs when
#: the refit policy allows it (dataset.toml's refit) and otherwise fails first, saying why.
assign_new_images_job = define_asset_job(
    "assign_new_images",
    selection=AssetSelection.assets(*ASSIGN_ASSETS),
    description="Assign the new images of one dataset partition to its fitted clusters, without retraining "
    "(refused, with the reason, when dataset.toml's refit policy asks for a fit: launch cluster_dataset then).",
)


#: What the drops sensor and the re-clustering schedule run: the shared noun embeddings alone (no
#: partition), or one dataset partition's assets. Each run request names its asset selection.
drops_job = define_asset_job(
    "refresh_drops",
    selection=AssetSelection.assets(NOUN_ASSET_KEY, *DATASET_ASSET_KEYS),
    description="The runs the drops sensor and the re-clustering schedule request: the noun embeddings "
    "alone, or one dataset partition's assets.",
)


JOBS = (cluster_dataset_job, assign_new_images_job, drops_job)
