"""Wiring shared by the asset modules: the evaluation protocol and the dataset's K and seed."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    Config,
    MetadataValue,
    OpExecutionContext,
    asset,
)

from tac_pipeline.assets.lineage import with_lineage
from tac_pipeline.assets.run_settings import pinned_dataset_settings, step_params
from tac_pipeline.partitions import datasets_partitions
from tac_pipeline.resources.compute import gpu_step_tags
from tac_pipeline.resources.data import TacDataResource
from tac_pipeline.settings import DATASET_TOML, DatasetSettings, ResolvedParams, resolve_n_clusters
from tac_pipeline.tables import column_matrix
from tac_pipeline.tac.params import TacParams

#: Each method scored by ``metrics`` and the ``cluster_labels`` column holding its labels.
METHOD_COLUMNS = {
    "kmeans_image": "cluster_kmeans",
    "tac_no_train": "cluster_no_train",
    "tac_image": "cluster",
    "tac_text": "cluster_text",
    "tac_mean": "cluster_mean",
}
#: The rows of ``metrics``, one per method, in this order.
METHODS = tuple(METHOD_COLUMNS)


def dataset_asset(group: str, description: str, *, gpu: bool = False, code_version: str = "1", **kwargs):
    """``@asset`` for one stage of a dataset: partitioned by dataset, versioned, in a UI group.

    ``gpu=True`` tags the step ``tac/gpu`` so the executors give it a device of its own; other keyword
    arguments (``check_specs``…) go to ``@asset`` as they are. The compute function is wrapped by
    :func:`~tac_pipeline.assets.lineage.with_lineage`: its input tables must come from one state of the store,
    and its table records which one.
    """
    decorate = asset(
        partitions_def=datasets_partitions,
        group_name=group,
        code_version=code_version,
        op_tags=gpu_step_tags() if gpu else None,
        description=description,
        **kwargs,
    )
    return lambda compute: decorate(with_lineage(compute))


def fit_indices(table: pa.Table) -> np.ndarray:
    """Rows the heads are fitted on: the ``train`` split when the drop has one, else every row (docs/METHOD.md §8)."""
    split = table["split"].to_numpy(zero_copy_only=False)
    train = np.flatnonzero(split == "train")
    return train if len(train) else np.arange(table.num_rows)


def report_indices(table: pa.Table) -> tuple[np.ndarray, str]:
    """Rows the metrics are reported on, and their name: ``test`` when present, else ``all``."""
    split = table["split"].to_numpy(zero_copy_only=False)
    test = np.flatnonzero(split == "test")
    if len(test) and (split == "train").any():
        return test, "test"
    return np.arange(table.num_rows), "all"


def label_names(table: pa.Table) -> list[str]:
    return sorted(set(table["label"].drop_null().to_pylist()))


@dataclass(frozen=True)
class DatasetRun:
    """What a stage needs to know about the partition being computed, resolved once per run."""

    key: str
    settings: DatasetSettings  # dataset.toml as this run read it at its start
    resolved: ResolvedParams  # this step's TAC settings and where each came from
    n_clusters: int | None = None  # None for the stages that do not need K
    n_clusters_from: str = ""

    @property
    def params(self) -> TacParams:
        return self.resolved.params

    @property
    def seed(self) -> int:
        return self.params.seed

    def settings_metadata(self, *names: str, **applied) -> dict:
        """``settings``: the named settings (and K) this step used, each with its value and source.

        ``applied`` gives the value a rule chose for a setting left at None (``n_centers``, ``epochs``…).
        """
        used = self.resolved.record("seed", *names)
        for name, value in applied.items():
            if used[name]["value"] is None:
                used[name]["value"] = value
        if self.n_clusters is not None:
            used = {"n_clusters": {"value": self.n_clusters, "from": self.n_clusters_from}, **used}
        return {"settings": MetadataValue.json(used)}


def dataset_run(
    context: AssetExecutionContext,
    tac_data: TacDataResource,
    images: pa.Table | None = None,
    config: Config | None = None,
) -> DatasetRun:
    """The run's pinned settings, this step's ``config`` applied, and K when ``images`` are given."""
    key = context.partition_key
    settings = pinned_dataset_settings(context, tac_data)
    resolved = step_params(context, settings, config)
    if images is None:
        return DatasetRun(key=key, settings=settings, resolved=resolved)
    k = resolve_n_clusters(settings, label_names(images), tac_data.drop_dir(key))
    if k >= images.num_rows:
        raise ValueError(
            f"dataset '{key}' asks for {k} clusters but has only {images.num_rows} images: "
            "lower n_clusters in dataset.toml or add images"
        )
    source = DATASET_TOML if settings.n_clusters is not None else "labels"
    return DatasetRun(key=key, settings=settings, resolved=resolved, n_clusters=k, n_clusters_from=source)


def embeddings(table: pa.Table, column: str = "embedding") -> np.ndarray:
    return column_matrix(table, column)


def previous_output(
    context: AssetExecutionContext | OpExecutionContext,
    *,
    code_version: str | None = None,
    asset_key: AssetKey | str | None = None,
    metadata: dict[str, str] | None = None,
) -> pa.Table | None:
    """This asset's last stored table for the partition being computed, or None.

    With ``code_version``, only a materialization made by that code version counts (e.g. the same encoder);
    with ``metadata``, only one whose metadata holds those text values (e.g. the same preprocessing).
    ``asset_key`` names the asset when the caller is an op inside a graph-backed asset (an embedding shard).
    Read through the path the IO manager recorded, so the store layout has one owner.
    """
    key = AssetKey.from_coercible(asset_key) if asset_key is not None else context.asset_key
    records = context.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=key, asset_partitions=[context.partition_key]), limit=1
    ).records
    if not records:
        return None
    materialization = records[0].asset_materialization
    if code_version is not None and (materialization.tags or {}).get("dagster/code_version") != code_version:
        return None
    for name, wanted in (metadata or {}).items():
        if getattr(materialization.metadata.get(name), "value", None) != wanted:
            return None
    entry = materialization.metadata.get("path") or materialization.metadata.get("dagster/uri")
    path = getattr(entry, "value", None)
    if not path or not os.path.exists(path):
        return None
    try:
        return pq.read_table(path)
    except (OSError, pa.ArrowException) as exc:  # an unreadable previous file only costs recomputation
        context.log.warning(f"cannot read the previous output {path} ({exc}); starting afresh")
        return None
