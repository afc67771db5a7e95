"""Results stage: ``cluster_labels`` → ``metrics`` (docs/METHOD.md §8)."""

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from dagster import AssetExecutionContext, Config, MaterializeResult, MetadataValue, ResourceParam

from tac_pipeline import tac
from tac_pipeline.common.messages import metrics_markdown
from tac_pipeline.common.tables import column_matrix, matching_rows
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
from tac_pipeline.defs.assets.lineage import lineage
from tac_pipeline.defs.assets.run_kind import run_kind, run_reason
from tac_pipeline.defs.assets.training import FittedModel
from tac_pipeline.defs.checks import (
    METRICS_PRESENT,
    NO_EMPTY_CLUSTERS,
    NOVEL_SHARE,
    empty_clusters_check,
    metrics_check,
    novel_share_check,
)
from tac_pipeline.defs.io_managers import StoreIOManager
from tac_pipeline.defs.names import ASSIGN
from tac_pipeline.defs.resources.compute import ComputeDeviceResource
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.drops.refit import ASSIGNED_ENTRY, LABELS_FIT_ENTRY, NOVEL_ASSIGNED_ENTRY, stored_fit
from tac_pipeline.drops.settings import DATASET_TOML, DEFAULT, RUN_CONFIG, optional_setting

#: Schema metadata of ``cluster_labels``: per clustering column, the stable id of each of the model's ids.
CLUSTER_IDS_KEY = b"tac_pipeline.cluster_ids"
#: Schema metadata of ``cluster_labels``: the lineage token of the ``trained_heads`` that labelled its rows.
MODEL_KEY = b"tac_pipeline.model"
#: The clustering columns of ``cluster_labels``, in table order (the image head's first).
LABEL_COLUMNS = ("cluster", "cluster_text", "cluster_mean", "cluster_no_train", "cluster_kmeans")
#: Novel images shown in the gallery of novel images.
NOVEL_GALLERY = 16


def predict_rows(
    model: FittedModel, images: np.ndarray, counterpart: np.ndarray, device
) -> dict[str, np.ndarray]:
    """Every clustering's model ids (before stable renumbering) and the confidence of some rows."""
    if not len(images):
        return {
            **{c: np.empty(0, dtype=np.int64) for c in LABEL_COLUMNS},
            "confidence": np.empty(0, np.float32),
        }
    p = tac.predict_proba(model.image_head, images, device=device)
    q = tac.predict_proba(model.text_head, counterpart, device=device)
    confidence = p.max(axis=1)
    return {
        "cluster": p.argmax(axis=1),
        "cluster_text": q.argmax(axis=1),
        "cluster_mean": ((p + q) / 2).argmax(axis=1),
        "cluster_no_train": tac.assign_to_centers(
            tac.concat_modalities(images, counterpart), model.no_train_centers, device=device
        ),
        "cluster_kmeans": tac.assign_to_centers(images, model.kmeans_centers, device=device),
        "confidence": confidence.astype(np.float32),
    }


def _stable_ids(table: pa.Table | None) -> dict[str, np.ndarray] | None:
    raw = (table.schema.metadata or {}).get(CLUSTER_IDS_KEY) if table is not None else None
    return {k: np.asarray(v, dtype=np.int64) for k, v in json.loads(raw).items()} if raw else None


class ClusterLabelsConfig(Config):
    duplicate_threshold: float | None = optional_setting("duplicate_threshold")


@dataset_asset(
    "results",
    "The cluster of every image (image head: the paper's label; text head; their mean; no-train TAC; k-means), "
    "its confidence, whether it is novel, and whether it was assigned after the fit.",
    gpu=True,
    check_specs=[NO_EMPTY_CLUSTERS, NOVEL_SHARE],
)
def cluster_labels(
    context: AssetExecutionContext,
    config: ClusterLabelsConfig,
    image_embeddings: pa.Table,
    counterparts: pa.Table,
    knn_graphs: pa.Table,
    trained_heads: pa.Table,
    compute_device: ComputeDeviceResource,
    tac_data: TacDataResource,
    io_manager: ResourceParam[StoreIOManager],
):
    run = dataset_run(context, tac_data, image_embeddings, config, chosen_in=counterparts)
    kind = run_kind(context)
    model = FittedModel.from_table(trained_heads)
    fit = stored_fit(context.instance, context.partition_key)
    model_token = (lineage(trained_heads) or {}).get("token", "")
    images = embeddings(image_embeddings)
    counterpart = column_matrix(counterparts, "counterpart")
    ids = image_embeddings["image_id"].to_pylist()
    digests = counterparts["image_digest"].to_pylist()
    previous = previous_output(context)
    # Rows labelled by this very model before (same image, same vector) are kept as they are.
    same_model = (
        previous is not None and (previous.schema.metadata or {}).get(MODEL_KEY) == model_token.encode()
    )
    here, there, todo = matching_rows(ids, digests, previous if same_model else None)
    with compute_device.acquire(context.log) as device:
        computed = predict_rows(model, images[todo], counterpart[todo], device)
    n_clusters = model.n_clusters
    stored_ids = _stable_ids(previous) if same_model else None
    changed, turnover = {}, {}
    if stored_ids is not None:
        mapping = stored_ids  # the fit's renumbering: images labelled by its model get its (stable) ids
    else:
        mapping, changed, turnover = _renumber(previous, ids, todo, computed, n_clusters)
    columns = {c: np.empty(len(ids), dtype=np.int64) for c in LABEL_COLUMNS}
    confidence = np.empty(len(ids), dtype=np.float32)
    novel = np.zeros(len(ids), dtype=bool)
    assigned = np.zeros(len(ids), dtype=bool)
    for column in columns:
        columns[column][todo] = mapping[column][computed[column]]
    confidence[todo] = computed["confidence"]
    novel[todo] = model.novelty.flag(computed["confidence"], counterparts["noun_similarity"].to_numpy()[todo])
    assigned[todo] = kind == ASSIGN
    if len(here):
        for column in columns:
            columns[column][here] = previous[column].to_numpy()[there]
        confidence[here] = previous["confidence"].to_numpy()[there]
        novel[here] = previous["novel"].to_numpy(zero_copy_only=False)[there]
        # A fit's images are all fitted ones; an assign keeps who was assigned before.
        assigned[here] = kind == ASSIGN and previous["assigned"].to_numpy(zero_copy_only=False)[there]
    near, near_from = (
        (config.duplicate_threshold, RUN_CONFIG)
        if config.duplicate_threshold is not None
        else (
            run.settings.duplicate_threshold,
            DATASET_TOML if "duplicate_threshold" in run.settings.model_fields_set else DEFAULT,
        )
    )
    duplicates = tac.find_duplicates(images, near, **_fitted_graph(knn_graphs, ids))
    cluster = columns["cluster"]
    sizes = np.bincount(cluster, minlength=n_clusters)
    n_assigned, n_novel_assigned = int(assigned.sum()), int((novel & assigned).sum())
    metadata = {
        "images": len(cluster),
        "n_clusters": n_clusters,
        "n_clusters_from": run.n_clusters_from,
        "run_kind": kind,
        "refit_decision": run_reason(context),
        **({LABELS_FIT_ENTRY: fit.run_id, "labels_from": f"the fit of {fit.describe()}"} if fit else {}),
        "labelled_now": len(todo),
        "kept": len(here),
        ASSIGNED_ENTRY: n_assigned,
        NOVEL_ASSIGNED_ENTRY: n_novel_assigned,
        "novel_images": int(novel.sum()),
        "novel_share_of_assigned": round(n_novel_assigned / n_assigned, 4) if n_assigned else 0.0,
        "novelty_thresholds": MetadataValue.json(
            {k: round(v, 6) for k, v in model.novelty.as_dict().items()}
        ),
        "empty_clusters": int((sizes == 0).sum()),
        "cluster_sizes": MetadataValue.json({str(i): int(s) for i, s in enumerate(sizes)}),
        "image_text_head_agreement": round(float((cluster == columns["cluster_text"]).mean()), 4),
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
            "image_digest": pa.array(digests, type=pa.string()),
            **{column: pa.array(values, type=pa.int64()) for column, values in columns.items()},
            "confidence": pa.array(confidence, type=pa.float32()),
            "novel": pa.array(novel, type=pa.bool_()),
            "assigned": pa.array(assigned, type=pa.bool_()),
            "duplicate_group": pa.array(np.where(duplicates >= 0, duplicates, None), type=pa.int64()),
        }
    )
    table = table.replace_schema_metadata(
        {
            CLUSTER_IDS_KEY: json.dumps({c: m.tolist() for c, m in mapping.items()}).encode(),
            MODEL_KEY: model_token.encode(),
        }
    )
    table = with_n_clusters(table, n_clusters, run.n_clusters_from)
    # Names from the members' top nouns, the gallery and the 2-D map (figures where the IO manager keeps them).
    folder = image_folder(run, tac_data.drop_dir(context.partition_key))
    metadata |= figures.cluster_labels_metadata(
        table,
        image_embeddings,
        counterparts,
        n_clusters,
        drop_dir=folder,
        store=io_manager,
        partition=context.partition_key,
    )
    metadata |= _novel_gallery(table, image_embeddings, folder, io_manager, context.partition_key)
    metadata |= _duplicates_metadata(duplicates, image_embeddings, folder, io_manager, context.partition_key)
    metadata["duplicate_threshold"] = MetadataValue.json({"value": near, "from": near_from})
    threshold = run.settings.refit_novel_share
    # The checks run in this step, on the table in memory (no step process of their own): see text_space for
    # why the metadata travels in the result and the function has no return annotation.
    return MaterializeResult(
        value=table,
        metadata=metadata,
        check_results=[empty_clusters_check(table, n_clusters), novel_share_check(table, threshold)],
    )


def _fitted_graph(knn_graphs: pa.Table, ids: list[str]) -> dict:
    """The fit's image kNN graph in today's rows: ``graph_rows`` and ``graph`` for
    :func:`~tac_pipeline.tac.duplicates.find_duplicates` (images gone since the fit are left out)."""
    today = pc.index_in(knn_graphs["image_id"], value_set=pa.array(ids, pa.string())).to_numpy(
        zero_copy_only=False
    )
    fitted = np.nan_to_num(today, nan=-1).astype(np.int64)
    neighbours = column_matrix(knn_graphs, "neighbors_image", dtype=np.int64)
    present = fitted >= 0
    return {"graph_rows": fitted[present], "graph": fitted[neighbours[present]]}


#: Duplicate groups shown in the gallery of duplicates.
DUPLICATE_GALLERY = 6


def _duplicates_metadata(groups, image_embeddings: pa.Table, folder: Path, store, partition: str) -> dict:
    """How many duplicate groups there are, how many images they hold, and a gallery of the largest."""
    found = int(groups.max(initial=-1)) + 1
    metadata = {"duplicate_groups": found, "images_in_duplicate_groups": int((groups >= 0).sum())}
    if not found:
        return metadata
    shown = list(range(min(found, DUPLICATE_GALLERY)))
    sizes = np.bincount(groups[groups >= 0])
    mosaic = figures.gallery_mosaic(
        folder, image_embeddings["path"].to_pylist(), groups, np.zeros(len(groups)), shown
    )
    if mosaic is None:
        return metadata
    figure = figures.gallery_figure(
        mosaic, [f"group {g} ({int(sizes[g])})" for g in shown], "Largest near-duplicate groups"
    )
    return metadata | figures.publish_figure(
        figure,
        store=store,
        asset="cluster_labels",
        partition=partition,
        name="duplicates_gallery",
        title="gallery of near-duplicate groups",
    )


def _renumber(previous, ids, todo, computed, n_clusters):
    """A fit: each clustering renumbered to agree best with this partition's previous labels (stable ids)."""
    identity = np.arange(n_clusters, dtype=np.int64)
    mapping = {c: identity for c in LABEL_COLUMNS}
    if previous is None:
        return mapping, {}, {}
    new_ids = np.asarray(ids, dtype=object)[todo]
    old_ids = previous["image_id"].to_numpy(zero_copy_only=False)
    changed = {}
    # A table stored before a clustering existed (no such column) leaves that one as computed.
    for column in (c for c in mapping if c in previous.column_names):
        _, mapping[column], changed[column] = tac.relabel_stably(
            new_ids, computed[column], old_ids, previous[column].to_numpy(), n_clusters
        )
    # K may differ from the previous clustering's (a grown drop with n_clusters = "auto"): count what matched,
    # what is new and what is gone. The previous K as recorded with its table (else the ids it used).
    old_clusters = previous["cluster"].to_numpy()
    old_k = (n_clusters_of(previous) or (int(old_clusters.max(initial=-1)) + 1, ""))[0]
    turnover = tac.cluster_turnover(
        new_ids, mapping["cluster"][computed["cluster"]], old_ids, old_clusters, n_clusters, old_k
    )
    return mapping, changed, turnover


def _novel_gallery(table: pa.Table, image_embeddings: pa.Table, folder: Path, store, partition: str) -> dict:
    """A gallery of the novel images (least confident first), when there are any and they have files."""
    novel = table["novel"].to_numpy(zero_copy_only=False)
    if not novel.any():
        return {}
    order = np.flatnonzero(novel)
    order = order[np.argsort(table["confidence"].to_numpy()[order], kind="stable")][:NOVEL_GALLERY]
    marks = np.full(len(novel), -1)
    marks[order] = 0
    mosaic = figures.gallery_mosaic(
        folder,
        image_embeddings["path"].to_pylist(),
        marks,
        -table["confidence"].to_numpy(),
        [0],
        thumbs=NOVEL_GALLERY,
    )
    if mosaic is None:
        return {"novel_gallery": MetadataValue.text("no gallery: the novel images have no readable files")}
    figure = figures.gallery_figure(mosaic, [f"novel ({int(novel.sum())})"], "Novel images (least confident)")
    return figures.publish_figure(
        figure,
        store=store,
        asset="cluster_labels",
        partition=partition,
        name="novel_gallery",
        title="gallery of novel images",
    )


def image_folder(run: DatasetRun, drop_dir: Path) -> Path:
    """The folder the ``path`` column of ``image_embeddings`` is relative to: the drop, or the folder its
    ``[images]`` setting names."""
    images = run.settings.images
    return Path(images.root) if images is not None else drop_dir


@dataset_asset(
    "results",
    "NMI / ACC / ARI (percent) of k-means on images, TAC without training and the TAC heads.",
    check_specs=[METRICS_PRESENT],
)
def metrics(
    context: AssetExecutionContext,
    cluster_labels: pa.Table,
    tac_data: TacDataResource,
):
    # cluster_labels carries every image's split and label: the embeddings themselves are not needed here.
    run = dataset_run(context, tac_data, cluster_labels, chosen_in=cluster_labels)
    report, split_name = report_indices(cluster_labels)
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
