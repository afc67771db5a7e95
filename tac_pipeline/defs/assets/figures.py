"""Figures for the UI: small PNGs beside the Parquet store, shown through Dagster metadata.

Every figure goes through :func:`publish_figure`: rendered with matplotlib (the Agg canvas, no pyplot state),
reduced to a palette PNG under :data:`MAX_FIGURE_BYTES`, written atomically where the run's IO manager
keeps figures (:meth:`tac_pipeline.defs.io_managers.StoreIOManager.figure_path`: by default
``<data root>/store/figures/<asset>/<partition>/<name>.png``; any fsspec store), and returned as two metadata
entries: markdown embedding the image as a base64 data URI (what the asset page shows) and the file's path.

matplotlib is imported lazily so that loading the definitions stays fast.
"""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
from dagster import MetadataValue

from tac_pipeline.common.atomic import write_bytes_atomically
from tac_pipeline.common.messages import more_row
from tac_pipeline.defs.io_managers import StoreIOManager
from tac_pipeline.encoders.images.discovery import text_path
from tac_pipeline.tac.naming import cluster_names, cluster_noun_counts

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Upper bound of one PNG; a figure over it is re-rendered at a lower resolution.
MAX_FIGURE_BYTES = 190_000
DPI = 100
#: Gallery and legend limits, so a figure stays small whatever K is.
GALLERY_CLUSTERS = 16
GALLERY_THUMBS = 6
THUMB_PX = 40
GUTTER_PX = 3
MAP_POINTS = 5000
LEGEND_CLUSTERS = 12
NAME_TABLE_ROWS = 100


# ---------------------------------------------------------------------------------------------------------
# Writing and showing
# ---------------------------------------------------------------------------------------------------------


def render_png(fig: Figure, *, dpi: int = DPI, max_bytes: int = MAX_FIGURE_BYTES) -> bytes:
    """The figure as a palette PNG of at most ``max_bytes`` (lower resolutions are tried until it fits)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    FigureCanvasAgg(fig)  # the Agg canvas, whatever pyplot's backend is
    data = b""
    for scale in (1.0, 0.8, 0.65, 0.5, 0.4):
        raw = io.BytesIO()
        fig.savefig(
            raw, format="png", dpi=dpi * scale, bbox_inches="tight", pad_inches=0.05, facecolor="white"
        )
        raw.seek(0)
        with Image.open(raw) as image:
            buffer = io.BytesIO()
            image.convert("RGB").quantize(colors=256).save(buffer, format="PNG", optimize=True)
        data = buffer.getvalue()
        if len(data) <= max_bytes:
            break
    return data


def figure_markdown(png: bytes, title: str) -> str:
    """Markdown showing the PNG inline (a base64 data URI, Dagster's documented pattern for images)."""
    return f"![{title}](data:image/png;base64,{base64.b64encode(png).decode('ascii')})"


def publish_figure(
    fig: Figure,
    *,
    store: StoreIOManager,
    asset: str,
    partition: str | None,
    name: str,
    title: str,
    dpi: int = DPI,
) -> dict[str, MetadataValue]:
    """Render, write atomically where ``store`` keeps figures, and return ``{name: markdown with the image,
    name_path: the file}``."""
    if not isinstance(store, StoreIOManager):
        raise TypeError(
            f"the io_manager resource is a {type(store).__name__}: figures need the project's ParquetIOManager "
            "(tac_pipeline.defs.io_managers), which knows where they go"
        )
    png = render_png(fig, dpi=dpi)
    path = store.figure_path(asset, partition, name)
    write_bytes_atomically(png, path)
    return {
        name: MetadataValue.md(figure_markdown(png, title)),
        f"{name}_path": MetadataValue.path(str(path)),
    }


def _new_figure(width_in: float, height_in: float, layout: str | None = "constrained") -> Figure:
    from matplotlib.figure import Figure

    return Figure(figsize=(width_in, height_in), layout=layout)


def _cluster_colors(n: int) -> np.ndarray:
    from matplotlib import colormaps

    if n <= 10:
        return colormaps["tab10"](np.arange(n))
    if n <= 20:
        return colormaps["tab20"](np.arange(n))
    return colormaps["turbo"](np.linspace(0, 1, n))


# ---------------------------------------------------------------------------------------------------------
# semantic_centers, trained_heads
# ---------------------------------------------------------------------------------------------------------


def center_sizes_figure(sizes: Sequence[int]) -> Figure:
    """Bar chart of the semantic centres' sizes, largest first."""
    sizes = np.sort(np.asarray(sizes, dtype=np.int64))[::-1]
    fig = _new_figure(5, 2.4)
    ax = fig.add_subplot()
    ax.bar(np.arange(len(sizes)), sizes, width=1.0, color="#4c72b0")
    ax.set_xlabel(f"semantic centre (sorted by size, {len(sizes)} in all)")
    ax.set_ylabel("images")
    ax.set_title("Semantic centre sizes", fontsize=10)
    ax.set_xlim(-0.5, max(len(sizes), 1) - 0.5)
    return fig


def k_scores_figure(ks: Sequence[int], scores: Sequence[float], chosen: int) -> Figure:
    """The choice of K: the criterion's score for every K tried, the chosen one marked."""
    ks, scores = np.asarray(ks, dtype=np.int64), np.asarray(scores, dtype=np.float64)
    fig = _new_figure(5, 2.4)
    ax = fig.add_subplot()
    ax.plot(ks, scores, marker="o", markersize=2.5, linewidth=1.2, color="#4c72b0")
    best = scores[ks == chosen]
    ax.axvline(chosen, color="#c44e52", linestyle="--", linewidth=1)
    ax.plot([chosen], best, marker="o", markersize=6, color="#c44e52", label=f"chosen K = {chosen}")
    ax.set_xlabel("K (clusters)")
    ax.set_ylabel("silhouette of the counterparts")
    ax.set_title("Choosing K: score of every K tried", fontsize=10)
    ax.legend(fontsize=8, loc="best")
    return fig


def history_from_heads_table(table: pa.Table) -> dict[str, np.ndarray]:
    """The ``history.*`` rows of ``trained_heads`` as ``{loss name: per-epoch values}``."""
    return {
        name[len("history.") :]: np.asarray(values, dtype=np.float64)
        for name, values in zip(table["name"].to_pylist(), table["values"].to_pylist(), strict=True)
        if name.startswith("history.")
    }


_LOSS_LABELS = {
    "distillation": "L_dis (distillation)",
    "consistency": "L_con (consistency)",
    "balance": "L_bal (balance, maximised)",
    "total": "L (total)",
}


def loss_curves_figure(history: Mapping[str, Sequence[float]]) -> Figure:
    """The per-epoch losses of the head training (docs/METHOD.md §7)."""
    fig = _new_figure(5, 3)
    ax = fig.add_subplot()
    for name, label in _LOSS_LABELS.items():
        values = np.asarray(history.get(name, []), dtype=np.float64)
        if len(values):
            style = "--" if name == "total" else "-"
            ax.plot(np.arange(1, len(values) + 1), values, style, marker="o", markersize=2.5, label=label)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss (epoch mean)")
    ax.set_title("Cluster head training", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="best")
    return fig


def loss_curves_metadata(
    heads: pa.Table, *, store: StoreIOManager, partition: str
) -> dict[str, MetadataValue]:
    """The loss-curve figure of a ``trained_heads`` table, plus the losses per epoch as a markdown table."""
    history = history_from_heads_table(heads)
    epochs = len(history.get("total", []))
    lines = ["| epoch | L_dis | L_con | L_bal | L |", "| --- | --- | --- | --- | --- |"]
    for e in range(epochs):
        cells = [f"{history[k][e]:.4f}" for k in ("distillation", "consistency", "balance", "total")]
        lines.append(f"| {e + 1} | " + " | ".join(cells) + " |")
    return {
        **publish_figure(
            loss_curves_figure(history),
            store=store,
            asset="trained_heads",
            partition=partition,
            name="loss_curves",
            title="loss curves per epoch",
        ),
        "losses_per_epoch": MetadataValue.md("\n".join(lines)),
    }


# ---------------------------------------------------------------------------------------------------------
# cluster_labels: names, gallery, 2-D map
# ---------------------------------------------------------------------------------------------------------


def pca_2d(x: np.ndarray) -> np.ndarray:
    """The first two principal components of the rows of ``x`` (N, 2); N < 2 gives zeros."""
    x = np.asarray(x, dtype=np.float64)
    if len(x) < 2:
        return np.zeros((len(x), 2))
    centred = x - x.mean(axis=0)
    if len(x) > x.shape[1]:  # more rows than dimensions: the (d, d) scatter's top eigenvectors, cheaper
        _, vectors = np.linalg.eigh(centred.T @ centred)
        axes = vectors[:, ::-1][:, :2].T
    else:
        _, _, axes = np.linalg.svd(centred, full_matrices=False)
    projected = centred @ axes[:2].T
    if projected.shape[1] < 2:
        projected = np.pad(projected, ((0, 0), (0, 2 - projected.shape[1])))
    return projected


def cluster_map_figure(
    x: np.ndarray, clusters: np.ndarray, names: Sequence[str], *, max_points: int = MAP_POINTS, seed: int = 0
) -> Figure:
    """A scatter of the images' 2-D PCA, coloured by cluster (a random subsample of at most ``max_points``)."""
    clusters = np.asarray(clusters, dtype=np.int64)
    rows = np.arange(len(clusters))
    if len(rows) > max_points:
        rows = np.sort(np.random.default_rng(seed).choice(rows, max_points, replace=False))
    xy = pca_2d(np.asarray(x)[rows])
    colors = _cluster_colors(len(names))
    legend = len(names) <= LEGEND_CLUSTERS
    fig = _new_figure(6.2 if legend else 4.6, 3.8)
    ax = fig.add_subplot()
    for k in range(len(names)):
        member = clusters[rows] == k
        if member.any():
            ax.scatter(
                xy[member, 0], xy[member, 1], s=7, color=colors[k], alpha=0.8, linewidths=0,
                label=f"{k}: {names[k]}"[:40],
            )  # fmt: skip
    shown = "" if len(rows) == len(clusters) else f" ({len(rows)} of {len(clusters)} images)"
    ax.set_title(f"Images, PCA of the embeddings, coloured by cluster{shown}", fontsize=9)
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_xticks([])
    ax.set_yticks([])
    if legend:
        ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5), markerscale=1.5, frameon=False)
    return fig


def _thumbnail(path: Path, size: int):
    from PIL import ImageOps

    from tac_pipeline.encoders.images import load_image

    try:
        return ImageOps.fit(load_image(path), (size, size))
    except Exception:  # a file that vanished or no longer decodes shows as a grey tile
        return None


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (OSError, ValueError):
        return False
    return True


def gallery_mosaic(
    drop_dir: Path,
    paths: Sequence[str | None],
    clusters: np.ndarray,
    confidence: np.ndarray,
    shown_clusters: Sequence[int],
    *,
    thumbs: int = GALLERY_THUMBS,
    size: int = THUMB_PX,
) -> np.ndarray | None:
    """An RGB mosaic, one row per shown cluster of its ``thumbs`` most confident members; None without files."""
    if not any(paths):
        return None
    cell = size + GUTTER_PX
    mosaic = np.full((len(shown_clusters) * cell, thumbs * cell, 3), 255, dtype=np.uint8)
    found = False
    for row, k in enumerate(shown_clusters):
        members = np.flatnonzero(clusters == k)
        members = members[np.argsort(-confidence[members], kind="stable")][:thumbs]
        for col, i in enumerate(members):
            tile = None
            if paths[i]:
                path = drop_dir / text_path(paths[i])
                if _inside(path, drop_dir) and path.is_file():
                    tile = _thumbnail(path, size)
            top, left = row * cell, col * cell
            if tile is None:
                mosaic[top : top + size, left : left + size] = 200
                continue
            found = True
            mosaic[top : top + size, left : left + size] = np.asarray(tile)
    return mosaic if found else None


def gallery_figure(mosaic: np.ndarray, labels: Sequence[str], title: str, size: int = THUMB_PX) -> Figure:
    """The mosaic with one label per row (cluster id, name, size)."""
    height_px, width_px = mosaic.shape[:2]
    # One mosaic pixel per figure pixel; labels and title fall outside and are kept by the tight bounding box.
    fig = _new_figure(width_px / DPI, height_px / DPI, layout=None)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.imshow(mosaic, interpolation="nearest")
    cell = size + GUTTER_PX
    ax.set_yticks(np.arange(len(labels)) * cell + size / 2, labels, fontsize=7)
    ax.set_xticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    ax.tick_params(length=0)
    ax.set_title(title, fontsize=8)
    return fig


def cluster_names_markdown(
    names: Sequence[str], sizes: Sequence[int], noun_counts: Sequence[Sequence[tuple[str, int]]]
) -> str:
    lines = ["| cluster | name | size | top nouns (images) |", "| --- | --- | --- | --- |"]
    for k in range(min(len(names), NAME_TABLE_ROWS)):
        nouns = ", ".join(f"{noun} ({count})" for noun, count in noun_counts[k][:5]) or "–"
        lines.append(f"| {k} | {names[k].replace('|', '/')} | {int(sizes[k])} | {nouns.replace('|', '/')} |")
    lines += more_row(len(names), NAME_TABLE_ROWS, "clusters", columns=4)
    return "\n".join(lines)


def cluster_labels_metadata(
    labels: pa.Table,
    image_embeddings: pa.Table,
    counterparts: pa.Table,
    n_clusters: int,
    *,
    drop_dir: Path | None,
    store: StoreIOManager,
    partition: str,
) -> dict[str, object]:
    """Names (top WordNet nouns), sizes, the gallery and the 2-D map of a ``cluster_labels`` table;
    ``drop_dir`` is the folder the images' ``path`` column is relative to (the drop, or its ``[images]`` root).

    ``labels``, ``image_embeddings`` and ``counterparts`` are row-aligned (one row per image, same order).
    """
    from tac_pipeline.common.tables import column_matrix

    clusters = labels["cluster"].to_numpy()
    top_nouns = counterparts["top_noun"].to_pylist()
    names = cluster_names(clusters, top_nouns, n_clusters)
    noun_counts = cluster_noun_counts(clusters, top_nouns, n_clusters)
    sizes = np.bincount(clusters, minlength=n_clusters)
    metadata: dict[str, object] = {
        "cluster_names": MetadataValue.md(cluster_names_markdown(names, sizes, noun_counts)),
    }
    metadata.update(
        publish_figure(
            cluster_map_figure(column_matrix(image_embeddings, "embedding"), clusters, names),
            store=store,
            asset="cluster_labels",
            partition=partition,
            name="cluster_map",
            title="2-D map of the images coloured by cluster",
        )
    )
    shown = sorted(np.argsort(-sizes, kind="stable")[:GALLERY_CLUSTERS].tolist())
    mosaic = None
    if drop_dir is not None:
        mosaic = gallery_mosaic(
            drop_dir,
            image_embeddings["path"].to_pylist(),
            clusters,
            labels["confidence"].to_numpy(),
            shown,
        )
    if mosaic is None:
        paths = image_embeddings["path"].drop_null()
        why = (
            "the drop holds its own embeddings, no image files"
            if len(paths) == 0
            else f"none of the images could be read for thumbnails (under {drop_dir}: moved or deleted since?)"
        )
        metadata["gallery"] = MetadataValue.text(f"no gallery: {why}")
        return metadata
    which = (
        "every cluster" if len(shown) == n_clusters else f"the {len(shown)} largest of {n_clusters} clusters"
    )
    figure = gallery_figure(
        mosaic,
        [f"{k}: {names[k][:40]} ({int(sizes[k])})" for k in shown],
        f"Most confident members of {which}",
    )
    metadata.update(
        publish_figure(
            figure,
            store=store,
            asset="cluster_labels",
            partition=partition,
            name="gallery",
            title="gallery of representative images per cluster",
        )
    )
    return metadata
