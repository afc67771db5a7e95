"""Wiring shared by the asset modules: the evaluation protocol and the dataset's K and seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from dagster import (
    AssetExecutionContext,
    AssetKey,
    Config,
    MetadataValue,
    OpExecutionContext,
    asset,
)

from tac_pipeline.common.tables import column_matrix
from tac_pipeline.defs.assets.lineage import with_lineage
from tac_pipeline.defs.assets.run_settings import pinned_dataset_settings, step_params
from tac_pipeline.defs.names import METHOD_COLUMNS
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline.defs.resources.compute import gpu_step_tags
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.drops.settings import (
    AUTO,
    DATASET_TOML,
    DatasetSettings,
    ResolvedParams,
    resolve_k_range,
    resolve_n_clusters,
)
from tac_pipeline.store.records import latest_materialization
from tac_pipeline.tac.params import TacParams

#: The rows of ``metrics``, one per method, in this order.
METHODS = tuple(METHOD_COLUMNS)


def dataset_asset(group: str, description: str, *, gpu: bool = False, code_version: str = "1", **kwargs):
    """``@asset`` for one stage of a dataset: partitioned by dataset, versioned, in a UI group.

    ``gpu=True`` tags the step ``tac/gpu`` so the executors give it a device of its own; other keyword
    arguments (``check_specs``…) go to ``@asset`` as they are. The compute function is wrapped by
    :func:`~tac_pipeline.defs.assets.lineage.with_lineage`: its input tables must come from one state of the store,
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
    n_clusters: int | None = None  # None for the stages that do not need K, and before "auto" chose it
    n_clusters_from: str = ""
    k_range: tuple[int, int] | None = None  # with n_clusters = "auto": the K the choice tries

    @property
    def auto(self) -> bool:
        return self.k_range is not None

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
        if self.n_clusters is not None or self.auto:
            k = AUTO if self.n_clusters is None else self.n_clusters
            used = {"n_clusters": {"value": k, "from": self.n_clusters_from}, **used}
        return {"settings": MetadataValue.json(used)}


#: Schema metadata of the tables that carry the K of their clustering (``counterparts``, ``cluster_labels``).
K_KEY, K_FROM_KEY = b"tac_pipeline.n_clusters", b"tac_pipeline.n_clusters_from"


def with_n_clusters(table: pa.Table, n_clusters: int, source: str) -> pa.Table:
    """``table`` carrying K and where it came from in its schema metadata (kept by the Parquet store)."""
    extra = {K_KEY: str(n_clusters).encode(), K_FROM_KEY: source.encode()}
    return table.replace_schema_metadata({**(table.schema.metadata or {}), **extra})


def n_clusters_of(table: pa.Table) -> tuple[int, str] | None:
    """The K (and its source) a table was computed with, from :func:`with_n_clusters`; None if absent."""
    meta = table.schema.metadata or {}
    if K_KEY not in meta:
        return None
    return int(meta[K_KEY]), meta.get(K_FROM_KEY, b"").decode()


def dataset_run(
    context: AssetExecutionContext,
    tac_data: TacDataResource,
    images: pa.Table | None = None,
    config: Config | None = None,
    chosen_in: pa.Table | None = None,
) -> DatasetRun:
    """The run's pinned settings, this step's ``config`` applied, and K when ``images`` are given.

    With ``n_clusters = "auto"`` K is the one chosen upstream (``counterparts`` chooses it and records it in its
    table): ``chosen_in`` is a table carrying it; without one, ``n_clusters`` is None and ``k_range`` is set.
    """
    key = context.partition_key
    settings = pinned_dataset_settings(context, tac_data)
    resolved = step_params(context, settings, config)
    if images is None:
        return DatasetRun(key=key, settings=settings, resolved=resolved)
    k = resolve_n_clusters(settings, label_names(images), tac_data.drop_dir(key))
    if k == AUTO:
        k_range = resolve_k_range(settings, len(fit_indices(images)), tac_data.drop_dir(key))
        chosen = n_clusters_of(chosen_in) if chosen_in is not None else None
        if chosen_in is not None and chosen is None:
            raise ValueError(
                f"dataset '{key}' has n_clusters = \"auto\" but its counterparts were computed without choosing "
                "K (before the setting was made): materialize counterparts again, or set n_clusters = K"
            )
        k, source = (
            chosen
            if chosen is not None
            else (None, f"auto: not chosen yet (K in {k_range[0]}..{k_range[1]})")
        )
        return DatasetRun(key, settings, resolved, n_clusters=k, n_clusters_from=source, k_range=k_range)
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
    latest = latest_materialization(context.instance, key, context.partition_key)
    if latest is None or (code_version is not None and latest.code_version != code_version):
        return None
    if any(latest.value(name) != wanted for name, wanted in (metadata or {}).items()):
        return None
    if latest.existing_path() is None:
        return None
    try:
        return latest.read_table()
    except (OSError, pa.ArrowException) as exc:  # an unreadable previous file only costs recomputation
        context.log.warning(f"cannot read the previous output {latest.path()} ({exc}); starting afresh")
        return None
