"""Text stage: ``semantic_centers`` → ``text_space`` → ``counterparts`` (docs/METHOD.md §3–§5)."""

import dataclasses
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, ResourceParam

from tac_pipeline import tac
from tac_pipeline.common.messages import more_row
from tac_pipeline.common.tables import (
    column_matrix,
    embedding_array,
    matching_rows,
    row_digests,
    take_rows,
)
from tac_pipeline.defs.assets import figures
from tac_pipeline.defs.assets.common import (
    DatasetRun,
    dataset_asset,
    dataset_run,
    embeddings,
    fit_indices,
    n_clusters_of,
    previous_output,
    with_n_clusters,
)
from tac_pipeline.defs.assets.lineage import lineage
from tac_pipeline.defs.assets.noun_source import dataset_nouns
from tac_pipeline.defs.assets.run_kind import check_assign_allowed, run_kind
from tac_pipeline.defs.checks import NOUN_FOR_EVERY_CENTER, nouns_per_center_check
from tac_pipeline.defs.io_managers import StoreIOManager
from tac_pipeline.defs.names import ASSIGN, FIT, NOUN_ASSET
from tac_pipeline.defs.resources.compute import ComputeDeviceResource
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.encoders.byo import BYO_NOUNS
from tac_pipeline.tac.params import optional_field
from tac_pipeline.tac.text_space import IMAGES_PER_CENTER


class SemanticCentersConfig(Config):
    n_centers: int | None = optional_field("n_centers")
    kmeans_iter: int | None = optional_field("kmeans_iter")
    kmeans_restarts: int | None = optional_field("kmeans_restarts")


class TextSpaceConfig(Config):
    gamma: int | None = optional_field("gamma")


class CounterpartsConfig(Config):
    retrieval_temperature: float | None = optional_field("retrieval_temperature")


@dataset_asset(
    "text",
    "Semantic centres: spherical k-means of the fitting images into k_c = N/300 (or 3K) centres.",
    gpu=True,
)
def semantic_centers(
    context: AssetExecutionContext,
    config: SemanticCentersConfig,
    image_embeddings: pa.Table,
    tac_data: TacDataResource,
    compute_device: ComputeDeviceResource,
    io_manager: ResourceParam[StoreIOManager],
) -> pa.Table:
    run = dataset_run(context, tac_data, image_embeddings, config)
    params = run.params
    fit = fit_indices(image_embeddings)
    # With n_clusters = "auto" the centres are sized for the largest K the choice tries.
    rule_k = run.k_range[1] if run.auto else run.n_clusters
    rule_count = tac.semantic_center_count(len(fit), rule_k)
    n_centers = rule_count if params.n_centers is None else params.n_centers
    if n_centers > len(fit):
        raise ValueError(f"n_centers={n_centers} exceeds the {len(fit)} fitting images; lower it")
    with compute_device.acquire(context.log) as device:
        started = time.perf_counter()
        centers, assignment, iterations = tac.spherical_kmeans(
            embeddings(image_embeddings)[fit],
            n_centers,
            n_iter=params.kmeans_iter,
            n_restarts=params.kmeans_restarts,
            seed=run.seed,
            device=device,
            return_n_iter=True,
        )
        seconds = time.perf_counter() - started
    sizes = np.bincount(assignment, minlength=n_centers)
    if n_centers == rule_count:
        ratio, per = len(fit) / rule_k, IMAGES_PER_CENTER
        rule = (
            f"N/K = {ratio:.0f} < {per}, so k_c = 3·K = {rule_count}"
            if ratio < per
            else f"k_c = round(N/{per}) = round({len(fit)}/{per}) = {rule_count}"
        )
        if run.auto:
            rule = f"n_clusters = auto: K is taken as the range's upper end {rule_k}; {rule}"
    else:
        rule = f"set to {n_centers} by configuration (the spec's rule gives {rule_count})"
    context.add_output_metadata(
        {
            "n_centers": n_centers,
            "rule": rule,
            "fitting_images": len(fit),
            "n_clusters": run.n_clusters if run.n_clusters is not None else "auto",
            "seed": run.seed,
            "size_min": int(sizes.min()),
            "size_median": float(np.median(sizes)),
            "size_max": int(sizes.max()),
            "empty_centers": int((sizes == 0).sum()),
            "center_sizes": MetadataValue.json([int(s) for s in sizes]),
            # Each restart stops at its fixed point (assignments unchanged), at most kmeans_iter iterations.
            "kmeans_iterations": MetadataValue.json([int(i) for i in iterations]),
            "kmeans_seconds": round(seconds, 3),
            **run.settings_metadata("n_centers", "kmeans_iter", "kmeans_restarts", n_centers=n_centers),
            **figures.publish_figure(
                figures.center_sizes_figure(sizes),
                store=io_manager,
                asset="semantic_centers",
                partition=context.partition_key,
                name="center_sizes_plot",
                title="semantic centre sizes",
            ),
        }
    )
    return pa.table(
        {
            "center": pa.array(np.arange(n_centers), type=pa.int64()),
            "size": pa.array(sizes, type=pa.int64()),
            "embedding": embedding_array(centers),
        }
    )


@dataset_asset(
    "text",
    "Text space: the γ most confident nouns of each semantic centre, from the drop's nouns.parquet when it "
    "has one, else from the shared WordNet noun embeddings.",
    check_specs=[NOUN_FOR_EVERY_CENTER],
    # A lineage edge, not an input: a drop with its own nouns never loads (or needs) the shared table.
    deps=[NOUN_ASSET],
)
def text_space(
    context: AssetExecutionContext,
    config: TextSpaceConfig,
    semantic_centers: pa.Table,
    tac_data: TacDataResource,
):
    drop = tac_data.drop_dir(context.partition_key)
    centers = embeddings(semantic_centers)
    source = dataset_nouns(context.instance, drop, width=centers.shape[1])
    nouns = source.table
    noun_matrix = embeddings(nouns)
    if noun_matrix.shape[1] != centers.shape[1]:
        raise ValueError(
            f"noun embeddings are {noun_matrix.shape[1]} wide but the images are {centers.shape[1]} wide: "
            f"use the same encoder for both, or put a {BYO_NOUNS} of matching width in {drop}"
        )
    run = dataset_run(context, tac_data, config=config)
    gamma = run.params.gamma
    selected = tac.select_text_space(noun_matrix, centers, gamma=gamma)
    rows = selected.noun_indices
    table = pa.table(
        {
            "noun_index": pa.array(rows, type=pa.int64()),
            "noun": nouns["noun"].take(rows),
            "synset": nouns["synset"].take(rows),
            "gloss": nouns["gloss"].take(rows),
            "center": pa.array(selected.center, type=pa.int64()),
            "confidence": pa.array(selected.confidence, type=pa.float32()),
            "embedding": embedding_array(noun_matrix[rows]),
        }
    )
    if len(selected.centers_without_nouns):
        context.log.warning(
            f"{len(selected.centers_without_nouns)} of {selected.n_centers} semantic centres received no noun."
        )
    metadata = {
        "nouns_selected": len(selected),
        **source.metadata,
        "gamma": gamma,
        "centers_without_nouns": len(selected.centers_without_nouns),
        "nouns_by_center": MetadataValue.md(_nouns_by_center_markdown(table)),
        **run.settings_metadata("gamma"),
    }
    # The check runs in this step, on the table in memory (no step process of its own). With a check the
    # op has two outputs: metadata goes in the result (``context.add_output_metadata`` would need the output
    # name), and the function has no return annotation (Dagster would type ``-> MaterializeResult`` as
    # Nothing and skip the IO manager).
    return MaterializeResult(
        value=table,
        metadata=metadata,
        data_version=source.data_version(table),
        check_results=[nouns_per_center_check(table, semantic_centers)],
    )


def _nouns_by_center_markdown(table: pa.Table, max_centers: int = 40) -> str:
    lines = ["| centre | noun | gloss | confidence |", "| --- | --- | --- | --- |"]
    centers = table["center"].to_pylist()
    nouns, glosses, confidence = (
        table["noun"].to_pylist(),
        table["gloss"].to_pylist(),
        table["confidence"].to_pylist(),
    )
    shown = sorted(set(centers))[:max_centers]
    for c, n, g, p in zip(centers, nouns, glosses, confidence, strict=True):
        if c in shown:
            gloss = (g or "").replace("|", "/")[:80]
            lines.append(f"| {c} | {n} | {gloss} | {p:.3f} |")
    lines += more_row(len(set(centers)), max_centers, "centres", columns=4)
    return "\n".join(lines)


#: Nouns kept per image in ``counterparts`` (``top_nouns``, ``top_weights``): why an image is where it is.
SHOWN_NOUNS = 3
#: Schema metadata of ``counterparts``: the retrieval temperature its rows were computed with.
TEMPERATURE_KEY = b"tac_pipeline.retrieval_temperature"


def reusable(previous: pa.Table | None, text_space: pa.Table, temperature: float) -> pa.Table | None:
    """The previous ``counterparts`` when its rows are still exact: computed from this very text space (its
    lineage token) at this temperature; else None."""
    if previous is None or "top_nouns" not in previous.column_names:
        return None
    built_from = (lineage(previous) or {}).get("from", {})
    current = lineage(text_space)
    if current is None or built_from.get("text_space") != current["token"]:
        return None
    if (previous.schema.metadata or {}).get(TEMPERATURE_KEY) != repr(float(temperature)).encode():
        return None
    return previous


@dataset_asset(
    "text",
    "Text counterpart of every image (soft retrieval over the text space), its nearest noun and its best "
    "similarity to the text space; rows of unchanged images are reused.",
    gpu=True,
)
def counterparts(
    context: AssetExecutionContext,
    config: CounterpartsConfig,
    image_embeddings: pa.Table,
    text_space: pa.Table,
    tac_data: TacDataResource,
    compute_device: ComputeDeviceResource,
    io_manager: ResourceParam[StoreIOManager],
) -> pa.Table:
    run = dataset_run(context, tac_data, image_embeddings, config)
    temperature = run.params.retrieval_temperature
    kind = run_kind(context)
    if kind == ASSIGN:
        check_assign_allowed(context, tac_data)
    images = embeddings(image_embeddings)
    nouns = embeddings(text_space)
    if len(nouns) == 0:
        raise ValueError("the text space is empty: no noun was selected for any semantic centre")
    ids = image_embeddings["image_id"].to_pylist()
    digests = row_digests(images)
    previous = previous_output(context)
    kept = reusable(previous, text_space, temperature)
    here, there, todo = matching_rows(ids, digests, kept)
    shown = min(SHOWN_NOUNS, len(nouns))
    parts = [take_rows(kept.select(COUNTERPART_COLUMNS), there)] if len(here) else []
    with compute_device.acquire(context.log) as device:
        if len(todo) or not parts:
            parts.append(_counterpart_rows(images[todo], nouns, text_space, temperature, shown, device))
        # The stored rows and the new ones, back in the images' order (Arrow columns, never Python objects).
        position = np.empty(len(ids), dtype=np.int64)
        position[here] = np.arange(len(here))
        position[todo] = len(here) + np.arange(len(todo))
        rows = take_rows(pa.concat_tables([part.cast(parts[0].schema) for part in parts]), position)
        choice = {}
        if kind == FIT and run.auto:  # K is chosen here, on the fitting images, and travels with this table
            counterpart = column_matrix(rows, "counterpart")
            run, choice = _choose_k(
                context, run, images, counterpart, fit_indices(image_embeddings), io_manager
            )
    if kind == ASSIGN:
        run = _fitted_k(run, previous, context.partition_key)
    weight = rows["top_weight"].to_numpy()
    counts = pc.value_counts(rows["top_noun"]).to_pylist()
    most_retrieved = sorted(((c["values"], c["counts"]) for c in counts), key=lambda nc: -nc[1])[:20]
    context.add_output_metadata(
        {
            "images": len(images),
            "computed": len(todo),
            "reused": len(here),
            "run_kind": kind,
            "text_space_size": len(nouns),
            "median_top_weight": float(np.median(weight)) if len(weight) else 0.0,
            "most_retrieved_nouns": MetadataValue.md(
                "| noun | images |\n| --- | --- |\n" + "\n".join(f"| {n} | {c} |" for n, c in most_retrieved)
            ),
            **run.settings_metadata("retrieval_temperature"),
            **choice,
        }
    )
    table = pa.table(
        {
            "image_id": image_embeddings["image_id"],
            "split": image_embeddings["split"],
            "image_digest": pa.array(digests, type=pa.string()),
            **{name: rows[name] for name in COUNTERPART_COLUMNS},
        }
    )
    table = table.replace_schema_metadata({TEMPERATURE_KEY: repr(float(temperature)).encode()})
    return with_n_clusters(table, run.n_clusters, run.n_clusters_from)


#: The columns of ``counterparts`` computed per image (after ``image_id``, ``split`` and ``image_digest``).
COUNTERPART_COLUMNS = ("top_noun", "top_weight", "top_nouns", "top_weights", "noun_similarity", "counterpart")


def _counterpart_rows(
    images: np.ndarray, nouns: np.ndarray, text_space: pa.Table, temperature: float, shown: int, device
) -> pa.Table:
    """The :data:`COUNTERPART_COLUMNS` of some images: their counterparts, the ``shown`` most weighted nouns
    and their weights, and each image's best similarity to the text space."""
    if len(images):
        counterpart, top, weights = tac.retrieve_counterparts(
            images, nouns, temperature=temperature, device=device, return_top=shown
        )
        similarity = tac.best_similarity(images, nouns, device=device)
    else:
        counterpart, similarity = np.empty((0, nouns.shape[1]), np.float32), np.empty(0, np.float32)
        top, weights = np.empty((0, shown), np.int64), np.empty((0, shown), np.float32)
    names = text_space["noun"].take(pa.array(top.reshape(-1)))
    return pa.table(
        {
            "top_noun": names.take(pa.array(np.arange(len(images)) * shown)),
            "top_weight": pa.array(weights[:, 0], type=pa.float32()),
            "top_nouns": pa.FixedSizeListArray.from_arrays(names.combine_chunks(), shown).cast(
                pa.list_(pa.string())
            ),
            "top_weights": pa.FixedSizeListArray.from_arrays(
                pa.array(weights.reshape(-1), pa.float32()), shown
            ),
            "noun_similarity": pa.array(similarity, type=pa.float32()),
            "counterpart": embedding_array(counterpart),
        }
    )


def _fitted_k(run: DatasetRun, previous: pa.Table | None, key: str) -> DatasetRun:
    """An assign keeps the K of the fit: the one its counterparts recorded."""
    fitted = n_clusters_of(previous) if previous is not None else None
    if fitted is None:
        if run.n_clusters is None:
            raise ValueError(
                f"dataset '{key}' has no fitted counterparts to take K from, so new images cannot be "
                f"assigned: run a fit first (make cluster DATASET={key} REFIT=1, or the cluster_dataset job)"
            )
        return run
    k, source = fitted
    return dataclasses.replace(run, n_clusters=k, n_clusters_from=source)


def _choose_k(context, run: DatasetRun, images, counterpart, fit, io_manager) -> tuple[DatasetRun, dict]:
    """``n_clusters = "auto"``: sweep K over the run's range on the fitting images; the run with K, and the
    metadata showing why (the score curve, the chosen K, how to pin it)."""
    sweep = tac.choose_n_clusters(images[fit], counterpart[fit], run.k_range, seed=run.seed)
    low, high = run.k_range
    source = f"auto: best counterpart silhouette for K in {low}..{high}"
    context.log.info(f"n_clusters = auto: chose K = {sweep.chosen} ({source}, {sweep.seconds:.1f} s)")
    pin = (
        f"Chosen K = **{sweep.chosen}** (best silhouette {sweep.scores.max():.3f} of the text counterparts over "
        f"K = {low}..{high}, on {sweep.n_samples} fitting images). To pin it, write `n_clusters = "
        f"{sweep.chosen}` in the drop's dataset.toml; to search elsewhere, `n_clusters_range = [low, high]`."
    )
    metadata = {
        "n_clusters": sweep.chosen,
        "n_clusters_chosen": MetadataValue.md(pin),
        "n_clusters_range": MetadataValue.json([low, high]),
        "n_clusters_scores": MetadataValue.json({str(k): round(v, 4) for k, v in sweep.as_dict().items()}),
        "n_clusters_sweep_seconds": round(sweep.seconds, 2),
        **figures.publish_figure(
            figures.k_scores_figure(sweep.ks, sweep.scores, sweep.chosen),
            store=io_manager,
            asset="counterparts",
            partition=context.partition_key,
            name="n_clusters_scores_plot",
            title="score of every K tried",
        ),
    }
    return dataclasses.replace(run, n_clusters=sweep.chosen, n_clusters_from=source), metadata
