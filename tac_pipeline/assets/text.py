"""Text stage: ``semantic_centers`` → ``text_space`` → ``counterparts`` (docs/METHOD.md §3–§5)."""

from collections import Counter

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue
from pydantic import Field

from tac_pipeline import tac
from tac_pipeline.assets import figures
from tac_pipeline.assets.checks import NOUN_FOR_EVERY_CENTER, nouns_per_center_check
from tac_pipeline.assets.common import dataset_asset, dataset_run, embeddings, fit_indices, report_indices
from tac_pipeline.assets.nouns import dataset_nouns
from tac_pipeline.encoders.byo import BYO_NOUNS
from tac_pipeline.jobs import NOUN_ASSET
from tac_pipeline.resources.compute import ComputeDeviceResource
from tac_pipeline.resources.data import TacDataResource
from tac_pipeline.tables import embedding_array


def pick(run_value, dataset_value, default):
    """Run config wins over ``dataset.toml``, which wins over the spec default."""
    if run_value is not None:
        return run_value
    if dataset_value is not None:
        return dataset_value
    return default


class SemanticCentersConfig(Config):
    n_centers: int | None = Field(default=None, description="k_c; None: the spec's rule (N/300, or 3K).")
    kmeans_iter: int | None = Field(default=None, description="Spherical k-means iterations (spec: 300).")
    kmeans_restarts: int | None = Field(default=None, description="Best of this many restarts (spec: 10).")


class TextSpaceConfig(Config):
    gamma: int | None = Field(default=None, description="Nouns kept per semantic centre (spec: 5).")


class CounterpartsConfig(Config):
    retrieval_temperature: float | None = Field(default=None, description="Retrieval softmax (spec: 0.005).")
    baseline_restarts: int | None = Field(default=None, description="Baseline k-means restarts (spec: 20).")
    kmeans_iter: int | None = Field(default=None, description="Baseline k-means iterations (spec: 300).")


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
) -> pa.Table:
    run = dataset_run(context.partition_key, tac_data, image_embeddings)
    overrides = run.settings.tac
    fit = fit_indices(image_embeddings)
    rule_count = tac.semantic_center_count(len(fit), run.n_clusters)
    n_centers = pick(config.n_centers, overrides.n_centers, rule_count)
    if n_centers > len(fit):
        raise ValueError(f"n_centers={n_centers} exceeds the {len(fit)} fitting images; lower it")
    with compute_device.acquire(context.log) as device:
        centers, assignment = tac.spherical_kmeans(
            embeddings(image_embeddings)[fit],
            n_centers,
            n_iter=pick(config.kmeans_iter, overrides.kmeans_iter, 300),
            n_restarts=pick(config.kmeans_restarts, overrides.kmeans_restarts, 10),
            seed=run.seed,
            device=device,
        )
    sizes = np.bincount(assignment, minlength=n_centers)
    if n_centers == rule_count:
        ratio = len(fit) / run.n_clusters
        rule = (
            f"N/K = {ratio:.0f} < 300, so k_c = 3·K = {rule_count}"
            if ratio < 300
            else f"k_c = round(N/300) = round({len(fit)}/300) = {rule_count}"
        )
    else:
        rule = f"set to {n_centers} by configuration (the spec's rule gives {rule_count})"
    context.add_output_metadata(
        {
            "n_centers": n_centers,
            "rule": rule,
            "fitting_images": len(fit),
            "n_clusters": run.n_clusters,
            "seed": run.seed,
            "size_min": int(sizes.min()),
            "size_median": float(np.median(sizes)),
            "size_max": int(sizes.max()),
            "empty_centers": int((sizes == 0).sum()),
            "center_sizes": MetadataValue.json([int(s) for s in sizes]),
            **figures.publish_figure(
                figures.center_sizes_figure(sizes),
                data_root=tac_data.root,
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
    gamma = pick(config.gamma, tac_data.settings(context.partition_key).tac.gamma, 5)
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
    if len(set(centers)) > max_centers:
        lines.append(f"| … | {len(set(centers)) - max_centers} more centres | | |")
    return "\n".join(lines)


@dataset_asset(
    "text",
    "Text counterpart of every image (soft retrieval over the text space) and the training-free TAC.",
    gpu=True,
)
def counterparts(
    context: AssetExecutionContext,
    config: CounterpartsConfig,
    image_embeddings: pa.Table,
    text_space: pa.Table,
    tac_data: TacDataResource,
    compute_device: ComputeDeviceResource,
) -> pa.Table:
    run = dataset_run(context.partition_key, tac_data, image_embeddings)
    overrides = run.settings.tac
    images = embeddings(image_embeddings)
    nouns = embeddings(text_space)
    if len(nouns) == 0:
        raise ValueError("the text space is empty: no noun was selected for any semantic centre")
    report, split_name = report_indices(image_embeddings)
    with compute_device.acquire(context.log) as device:
        counterpart, top, weight = tac.retrieve_counterparts(
            images,
            nouns,
            temperature=pick(config.retrieval_temperature, overrides.retrieval_temperature, 0.005),
            device=device,
            return_top=True,
        )
        # Training-free TAC is fitted on the reported split (as the paper evaluates it) and extended to
        # the other rows by their nearest baseline centre, so every image gets a label.
        baseline_labels, baseline_centers = tac.no_train_baseline(
            images[report],
            counterpart[report],
            run.n_clusters,
            seed=run.seed,
            n_iter=pick(config.kmeans_iter, overrides.kmeans_iter, 300),
            n_restarts=pick(config.baseline_restarts, overrides.baseline_restarts, 20),
            device=device,
            return_centers=True,
        )
    no_train = tac.assign_to_centers(tac.concat_modalities(images, counterpart), baseline_centers)
    no_train[report] = baseline_labels
    top_nouns = text_space["noun"].take(pa.array(top, type=pa.int64()))
    most_retrieved = Counter(top_nouns.to_pylist()).most_common(20)
    context.add_output_metadata(
        {
            "images": len(images),
            "text_space_size": len(nouns),
            "baseline_fitted_on": split_name,
            "median_top_weight": float(np.median(weight)),
            "most_retrieved_nouns": MetadataValue.md(
                "| noun | images |\n| --- | --- |\n" + "\n".join(f"| {n} | {c} |" for n, c in most_retrieved)
            ),
        }
    )
    return pa.table(
        {
            "image_id": image_embeddings["image_id"],
            "split": image_embeddings["split"],
            "top_noun": top_nouns,
            "top_weight": pa.array(weight, type=pa.float32()),
            "cluster_no_train": pa.array(no_train, type=pa.int64()),
            "counterpart": embedding_array(counterpart),
        }
    )
