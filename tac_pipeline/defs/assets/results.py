"""Results stage: ``cluster_labels`` → ``metrics`` (docs/METHOD.md §8)."""

from pathlib import Path

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, MaterializeResult, MetadataValue, ResourceParam

from tac_pipeline import tac
from tac_pipeline.common.messages import metrics_markdown
from tac_pipeline.common.tables import column_matrix
from tac_pipeline.defs.assets import figures
from tac_pipeline.defs.assets.common import (
    METHOD_COLUMNS,
    METHODS,
    DatasetRun,
    dataset_asset,
    dataset_run,
    embeddings,
    n_clusters_of,
    previous_output,
    report_indices,
    with_n_clusters,
)
from tac_pipeline.defs.assets.training import heads_from_table
from tac_pipeline.defs.checks import (
    METRICS_PRESENT,
    NO_EMPTY_CLUSTERS,
    empty_clusters_check,
    metrics_check,
)
from tac_pipeline.defs.io_managers import StoreIOManager
from tac_pipeline.defs.resources.compute import ComputeDeviceResource
from tac_pipeline.defs.resources.data import TacDataResource


@dataset_asset(
    "results",
    "The cluster of every image: image head (the paper's label), text head, their mean, no-train TAC, k-means.",
    gpu=True,
    check_specs=[NO_EMPTY_CLUSTERS],
)
def cluster_labels(
    context: AssetExecutionContext,
    image_embeddings: pa.Table,
    counterparts: pa.Table,
    trained_heads: pa.Table,
    compute_device: ComputeDeviceResource,
    tac_data: TacDataResource,
    io_manager: ResourceParam[StoreIOManager],
):
    run = dataset_run(context, tac_data, image_embeddings, chosen_in=counterparts)
    image_head, text_head, _ = heads_from_table(trained_heads)
    with compute_device.acquire(context.log) as device:
        p = tac.predict_proba(image_head, embeddings(image_embeddings), device=device)
        q = tac.predict_proba(text_head, column_matrix(counterparts, "counterpart"), device=device)
        kmeans = _kmeans_baseline(image_embeddings, run.seed, n_clusters=p.shape[1], device=device)
    n_clusters = p.shape[1]
    labels = {
        "cluster": p.argmax(axis=1),
        "cluster_text": q.argmax(axis=1),
        "cluster_mean": ((p + q) / 2).argmax(axis=1),
        "cluster_no_train": counterparts["cluster_no_train"].to_numpy(),
        "cluster_kmeans": kmeans,
    }
    # Stable ids: each clustering is renumbered to agree best with this partition's previous one.
    previous = previous_output(context)
    changed, turnover = {}, {}
    if previous is not None:
        image_ids = image_embeddings["image_id"].to_numpy(zero_copy_only=False)
        old_ids = previous["image_id"].to_numpy(zero_copy_only=False)
        # A table stored before a clustering existed (no such column) leaves that one as computed.
        for column in (c for c in labels if c in previous.column_names):
            labels[column], _, changed[column] = tac.relabel_stably(
                image_ids, labels[column], old_ids, previous[column].to_numpy(), n_clusters
            )
        # K may differ from the previous clustering's (a grown drop with n_clusters = "auto"): count what
        # matched, what is new and what is gone.
        old_clusters = previous["cluster"].to_numpy()
        # The previous K as recorded with its table (a table from before K was recorded: the ids it used).
        old_k = (n_clusters_of(previous) or (int(old_clusters.max(initial=-1)) + 1, ""))[0]
        turnover = tac.cluster_turnover(
            image_ids, labels["cluster"], old_ids, old_clusters, n_clusters, old_k
        )
    cluster = labels["cluster"]
    sizes = np.bincount(cluster, minlength=n_clusters)
    metadata = {
        "images": len(cluster),
        "n_clusters": n_clusters,
        "n_clusters_from": run.n_clusters_from,
        "empty_clusters": int((sizes == 0).sum()),
        "cluster_sizes": MetadataValue.json({str(i): int(s) for i, s in enumerate(sizes)}),
        "image_text_head_agreement": round(float((cluster == labels["cluster_text"]).mean()), 4),
        "images_changed_cluster": changed.get("cluster", 0) if previous is not None else "first clustering",
    }
    if turnover:
        metadata |= {
            "previous_n_clusters": turnover["previous_n_clusters"],
            "clusters_matched": turnover["matched"],
            "clusters_new": turnover["new"],
            "clusters_gone": turnover["gone"],
        }
    table = pa.table(
        {
            "image_id": image_embeddings["image_id"],
            "split": image_embeddings["split"],
            "label": image_embeddings["label"],
            **{column: pa.array(values, type=pa.int64()) for column, values in labels.items()},
            "confidence": pa.array(p.max(axis=1), type=pa.float32()),
        }
    )
    table = with_n_clusters(table, n_clusters, run.n_clusters_from)
    # Names from the members' top nouns, the gallery and the 2-D map (figures where the IO manager keeps them).
    metadata |= figures.cluster_labels_metadata(
        table,
        image_embeddings,
        counterparts,
        n_clusters,
        drop_dir=image_folder(run, tac_data.drop_dir(context.partition_key)),
        store=io_manager,
        partition=context.partition_key,
    )
    # The check runs in this step, on the table in memory (no step process of its own): see text_space for
    # why the metadata travels in the result and the function has no return annotation.
    return MaterializeResult(
        value=table, metadata=metadata, check_results=[empty_clusters_check(table, n_clusters)]
    )


def image_folder(run: DatasetRun, drop_dir: Path) -> Path:
    """The folder the ``path`` column of ``image_embeddings`` is relative to: the drop, or the folder its
    ``[images]`` setting names."""
    images = run.settings.images
    return Path(images.root) if images is not None else drop_dir


def _kmeans_baseline(image_embeddings, seed, *, n_clusters, device) -> np.ndarray:
    """The k-means baseline's cluster of every image (docs/METHOD.md §9).

    Fitted on the reported rows (the test split when there is one, as the metrics are); every other row
    takes its nearest centre, so the column covers the whole table like the other clusterings.
    """
    report, _ = report_indices(image_embeddings)
    x = embeddings(image_embeddings)
    centers, fitted = tac.spherical_kmeans(x[report], n_clusters, seed=seed, device=device)
    kmeans = (x @ centers.T).argmax(axis=1)
    kmeans[report] = fitted
    return kmeans


@dataset_asset(
    "results",
    "NMI / ACC / ARI (percent) of k-means on images, TAC without training and the TAC heads.",
    check_specs=[METRICS_PRESENT],
)
def metrics(
    context: AssetExecutionContext,
    cluster_labels: pa.Table,
    image_embeddings: pa.Table,
    tac_data: TacDataResource,
):
    run = dataset_run(context, tac_data, image_embeddings, chosen_in=cluster_labels)
    report, split_name = report_indices(image_embeddings)
    truth = cluster_labels["label"].to_numpy(zero_copy_only=False)[report]
    # Scores cover the reported images that carry a label; the others are counted and reported, never
    # allowed to make the scores vanish (one stray image beside the class folders, one null BYO label).
    scored = np.flatnonzero([t is not None for t in truth])
    unlabelled = len(truth) - len(scored)
    labelled = len(scored) > 0
    if labelled and unlabelled:
        context.log.warning(
            f"{unlabelled} of {len(truth)} reported images have no label: NMI / ACC / ARI are computed on the "
            f"{len(scored)} labelled ones"
        )
    predictions = {
        method: cluster_labels[column].to_numpy()[report] for method, column in METHOD_COLUMNS.items()
    }
    rows = {k: [] for k in ("method", "nmi", "acc", "ari", "n_images", "split", "seed", "cluster_size_ratio")}
    for method in METHODS:
        scores = tac.cluster_metrics(truth[scored], predictions[method][scored]) if labelled else {}
        sizes = np.bincount(predictions[method], minlength=run.n_clusters)
        rows["method"].append(method)
        for name in ("nmi", "acc", "ari"):
            rows[name].append(scores.get(name))
        rows["n_images"].append(len(report))
        rows["split"].append(split_name)
        rows["seed"].append(run.seed)
        # Balance: smallest over largest cluster (1 = perfectly even, 0 = some cluster empty).
        rows["cluster_size_ratio"].append(float(sizes.min() / max(sizes.max(), 1)))
    table = pa.table(
        {
            "method": pa.array(rows["method"], type=pa.string()),
            "nmi": pa.array(rows["nmi"], type=pa.float64()),
            "acc": pa.array(rows["acc"], type=pa.float64()),
            "ari": pa.array(rows["ari"], type=pa.float64()),
            "n_images": pa.array(rows["n_images"], type=pa.int64()),
            "split": pa.array(rows["split"], type=pa.string()),
            "seed": pa.array(rows["seed"], type=pa.int64()),
            "cluster_size_ratio": pa.array(rows["cluster_size_ratio"], type=pa.float64()),
        }
    )
    return MaterializeResult(
        value=table,
        metadata={
            "labelled": labelled,
            "scored_images": len(scored),
            "unlabelled_images": unlabelled,
            "n_clusters": run.n_clusters,
            "metrics": MetadataValue.md(metrics_markdown(table)),
            **run.settings_metadata(),
        },
        check_results=[metrics_check(table, cluster_labels)],
    )
