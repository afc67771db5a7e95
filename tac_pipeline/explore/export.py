"""``make export``: a clustered drop as folders of images, a CSV or a Parquet table, with its metrics and names.

* ``folders`` -- one folder per cluster, ``<id>-<name>``, holding hard links to the images (symbolic links when
  the target is on another file system), never copies;
* ``csv`` / ``parquet`` -- ``clusters.csv`` or ``clusters.parquet``: image id, image path, cluster id, cluster
  name, confidence, novelty, duplicate group, label.

Every export also holds ``export.json`` (the dataset, the method, the fit, the cluster names and sizes, the
metrics) and a short ``README.md``. The target must not exist or be an empty folder; the export is built in a
hidden sibling and moved into place at the end, so a failure leaves nothing behind. The drop and the store are
only read.
"""

from __future__ import annotations

import errno
import json
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from tac_pipeline.common.atomic import publish_folder, staging_folder
from tac_pipeline.defs.names import METHOD_COLUMNS
from tac_pipeline.drops.settings import load_dataset_settings
from tac_pipeline.store.layout import drop_path, exports_dir
from tac_pipeline.store.records import latest_materialization, read_stored_table
from tac_pipeline.tac.naming import cluster_names

FORMATS = ("folders", "csv", "parquet")
DEFAULT_METHOD = "tac_image"
#: Characters a folder name cannot hold on common file systems; everything else (unicode, spaces) is kept.
_UNSAFE = re.compile(r'[\x00-\x1f/\\:*?"<>|]+')


class ExportError(ValueError):
    """The export cannot be made as asked; the message says why and what to do."""


@dataclass(frozen=True)
class Clustered:
    """What the store holds of one clustered dataset, as an export needs it."""

    dataset: str
    labels: pa.Table  # cluster_labels
    files: list[Path | None]  # every row's image file (None for a drop's own embeddings)
    top_nouns: list[str | None]
    metrics: pa.Table | None
    fit: str | None
    images: pa.Table  # image_embeddings, row-aligned with labels
    counterparts: pa.Table  # counterparts, row-aligned with labels


def method_names(clustered: Clustered) -> dict[str, list[str]]:
    """Every method's cluster names (``{method: [name of cluster 0, ...]}``), from the members' top nouns as the
    Dagster UI names them (:func:`~tac_pipeline.tac.naming.cluster_names`)."""
    names = {}
    for method, column in METHOD_COLUMNS.items():
        clusters = clustered.labels[column].to_numpy()
        k = int(max(clusters.max(initial=-1) + 1, _recorded_k(clustered.labels)))
        names[method] = cluster_names(clusters, clustered.top_nouns, k)
    return names


def read_clustered(instance, dataset: str, data_dir=None) -> Clustered:
    """The dataset's stored labels, image files, retrieved nouns and metrics (row-aligned)."""
    try:
        labels = read_stored_table(instance, "cluster_labels", dataset)
        images = read_stored_table(instance, "image_embeddings", dataset)
        parts = read_stored_table(instance, "counterparts", dataset)
    except FileNotFoundError as exc:
        raise ExportError(f"{exc}: cluster the drop first (make cluster DATASET={dataset})") from None
    if not (labels["image_id"].equals(images["image_id"]) and labels["image_id"].equals(parts["image_id"])):
        raise ExportError(
            f"the stored tables of '{dataset}' describe different images (a run is under way, or one failed "
            f"half-way): run make cluster DATASET={dataset} again, then export"
        )
    drop = drop_path(dataset, data_dir)
    try:
        source = load_dataset_settings(drop).images
    except ValueError:
        source = None
    root = Path(source.root) if source is not None else drop
    from tac_pipeline.encoders.images.discovery import text_path

    files = [None if p is None else root / text_path(p) for p in images["path"].to_pylist()]
    latest_metrics = latest_materialization(instance, "metrics", dataset)
    metrics = (
        latest_metrics.read_table() if latest_metrics is not None and latest_metrics.readable() else None
    )
    fitted = latest_materialization(instance, "cluster_labels", dataset)
    fit = fitted.value("labels_from") if fitted is not None else None
    return Clustered(dataset, labels, files, parts["top_noun"].to_pylist(), metrics, fit, images, parts)


def folder_name(cluster: int, name: str) -> str:
    """``<id>-<name>`` with path separators and control characters replaced, unicode and spaces kept."""
    safe = _UNSAFE.sub("_", name).strip(" .") or "cluster"
    return f"{cluster}-{safe}"[:200]


def _link(source: Path, target: Path) -> str:
    """A hard link, or a symbolic link when they cannot share an inode (another file system)."""
    try:
        os.link(source, target)
        return "hard"
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EMLINK, errno.ENOTSUP):
            raise
    os.symlink(os.path.abspath(source), target)
    return "symbolic"


def export(clustered: Clustered, target: Path, *, method: str = DEFAULT_METHOD, fmt: str = "folders") -> dict:
    """Write the export of ``clustered`` to ``target``; returns its summary (what ``export.json`` holds)."""
    if method not in METHOD_COLUMNS:
        raise ExportError(f"METHOD={method!r} is not a method: use one of {', '.join(METHOD_COLUMNS)}")
    if fmt not in FORMATS:
        raise ExportError(f"FORMAT={fmt!r} is not a format: use one of {', '.join(FORMATS)}")
    target = Path(target).expanduser().absolute()
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise ExportError(f"{target} exists and is not an empty folder: choose another TO=, or empty it")
    if fmt == "folders" and not any(clustered.files):
        raise ExportError(
            f"'{clustered.dataset}' brings its own embeddings and has no image files to put in folders: "
            "use FORMAT=csv or FORMAT=parquet"
        )
    labels = clustered.labels
    column = METHOD_COLUMNS[method]
    clusters = labels[column].to_numpy()
    names = method_names(clustered)[method]
    k = len(names)
    sizes = np.bincount(clusters, minlength=k)
    ids = labels["image_id"].to_pylist()
    links = {"hard": 0, "symbolic": 0, "missing": 0}
    with staging_folder(target) as staging:
        if fmt == "folders":
            folders = [staging / folder_name(c, names[c]) for c in range(k)]
            for folder, size in zip(folders, sizes, strict=True):
                if size:
                    folder.mkdir()
            for image_id, cluster, path in zip(ids, clusters.tolist(), clustered.files, strict=True):
                if path is None or not path.is_file():
                    links["missing"] += 1
                    continue
                name = image_id.replace("/", "__")
                links[_link(path, folders[cluster] / name)] += 1
        else:
            table = pa.table(
                {
                    "image_id": labels["image_id"],
                    "path": pa.array([None if p is None else str(p) for p in clustered.files], pa.string()),
                    "cluster": labels[column],
                    "cluster_name": pa.array([names[c] for c in clusters.tolist()], pa.string()),
                    "confidence": labels["confidence"],
                    "novel": labels["novel"]
                    if "novel" in labels.column_names
                    else pa.nulls(len(ids), pa.bool_()),
                    "duplicate_group": labels["duplicate_group"]
                    if "duplicate_group" in labels.column_names
                    else pa.nulls(len(ids), pa.int64()),
                    "label": labels["label"],
                }
            )
            if fmt == "csv":
                import pyarrow.csv as pacsv

                pacsv.write_csv(table, staging / "clusters.csv")
            else:
                import pyarrow.parquet as pq

                pq.write_table(table, staging / "clusters.parquet")
        summary = {
            "dataset": clustered.dataset,
            "method": method,
            "format": fmt,
            "labels_from": clustered.fit,
            "exported_at": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
            "images": len(ids),
            "clusters": [
                {"id": c, "name": names[c], "size": int(sizes[c])}
                | ({"folder": folder_name(c, names[c])} if fmt == "folders" else {})
                for c in range(k)
            ],
            "metrics": clustered.metrics.to_pylist() if clustered.metrics is not None else None,
            **({"links": links} if fmt == "folders" else {}),
        }
        (staging / "export.json").write_text(
            json.dumps(summary, indent=2, ensure_ascii=False), encoding="utf-8"
        )
        (staging / "README.md").write_text(_readme(summary), encoding="utf-8")
        target.parent.mkdir(parents=True, exist_ok=True)
        publish_folder(staging, target)
    return summary


def _recorded_k(labels: pa.Table) -> int:
    raw = (labels.schema.metadata or {}).get(b"tac_pipeline.n_clusters")
    return int(raw) if raw else 0


def _readme(summary: dict) -> str:
    lines = [
        f"# {summary['dataset']}: clusters of {summary['method']}",
        "",
        f"{summary['images']} images, exported {summary['exported_at']} as {summary['format']}"
        + (f"; labels from {summary['labels_from']}" if summary["labels_from"] else "")
        + ".",
        "",
        "| cluster | name | images |",
        "| --- | --- | --- |",
        *(f"| {c['id']} | {c['name']} | {c['size']} |" for c in summary["clusters"]),
    ]
    if summary["metrics"]:
        lines += ["", "| method | NMI | ACC | ARI |", "| --- | --- | --- | --- |"]
        for row in summary["metrics"]:
            scores = [f"{row[s]:.1f}" if row.get(s) is not None else "–" for s in ("nmi", "acc", "ari")]
            lines.append(f"| {row['method']} | {' | '.join(scores)} |")
    lines += ["", "export.json holds the same, machine-readable."]
    return "\n".join(lines) + "\n"


def default_target(dataset: str, method: str, fmt: str, data_dir=None) -> Path:
    """``<data root>/exports/<dataset>-<method>-<format>-<UTC time>`` (:func:`~tac_pipeline.store.layout.exports_dir`)."""
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    return exports_dir(data_dir) / f"{dataset}-{method}-{fmt}-{stamp}"
