"""``make reproduce``: prepare one of the paper's datasets as a drop, cluster it, compare with the paper.

:func:`prepare_drop` writes ``data/drops/<name>/`` (``train|test/<class>/*.png`` for CIFAR and STL-10, the
original JPEGs for DTD, only a ``dataset.toml`` pointing at the ImageNet root for the ImageNet family) with the
paper's K and resize; :func:`comparison_markdown` puts the measured figures beside the paper's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pyarrow as pa
from PIL import Image

from tac_pipeline.common.atomic import publish_folder, staging_folder
from tac_pipeline.common.messages import listed
from tac_pipeline.reproduce.catalog import PAPER_DATASETS, PaperDataset, dataset_listing
from tac_pipeline.reproduce.sources import ArraySplit, SourceError, download, read_source, safe_class_name
from tac_pipeline.store.layout import downloads_dir, drops_dir

__all__ = [
    "PAPER_DATASETS",
    "PaperDataset",
    "SourceError",
    "comparison_markdown",
    "dataset_listing",
    "paper_dataset",
    "prepare_drop",
]

#: Written last into a prepared drop: what it was prepared from (a drop without it is prepared again).
PREPARED_MARKER = ".prepared.json"

#: The methods compared with the paper, as ``metrics`` names them.
COMPARED = (("tac_image", "TAC"), ("tac_no_train", "TAC, no training"), ("kmeans_image", "k-means on images"))


def paper_dataset(name: str) -> PaperDataset:
    try:
        return PAPER_DATASETS[name]
    except KeyError:
        raise SourceError(f"unknown dataset {name!r}.\n{dataset_listing()}") from None


def _settings_toml(dataset: PaperDataset, image_root: Path | None) -> str:
    lines = [
        f"# {dataset.title}, prepared by `make reproduce` with the paper's settings.",
        f"n_clusters = {dataset.n_clusters}",
        f"resize = {dataset.resize}",
    ]
    if image_root is not None:
        lines += [
            "",
            "[images]",
            f"root = {json.dumps(str(image_root))}",
            'splits = { train = "train", test = "val" }',
        ]
        if dataset.wnids is not None:
            lines.append("classes = [" + ", ".join(json.dumps(w) for w in dataset.wnids) + "]")
    return "\n".join(lines) + "\n"


def _write_splits(staging: Path, splits: dict) -> int:
    count = 0
    for split, content in splits.items():
        if isinstance(content, ArraySplit):
            for index, (pixels, label) in enumerate(zip(content.images, content.labels, strict=True)):
                folder = staging / split / safe_class_name(label)
                folder.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(folder / f"{index:06d}.png", format="PNG", compress_level=1)
                count += 1
        else:  # files: copied byte for byte (no re-encoding)
            for label, path in content.files:
                folder = staging / split / safe_class_name(label)
                folder.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, folder / path.name)
                count += 1
    return count


def _check_imagenet_root(dataset: PaperDataset, source: Path) -> None:
    missing = []
    for split in ("train", "val"):
        folder = source / split
        if not folder.is_dir():
            raise SourceError(
                f"{dataset.title}: SOURCE={source} has no {split}/ folder; it must be an ImageNet root in the "
                "ImageFolder layout (train/<wnid>/*.JPEG, val/<wnid>/*.JPEG)"
            )
        if dataset.wnids is not None:
            missing += [f"{split}/{w}" for w in dataset.wnids if not (folder / w).is_dir()]
    if missing:
        raise SourceError(
            f"{dataset.title}: SOURCE={source} lacks {len(missing)} of the subset's class folders: "
            f"{listed(missing)}"
        )


def prepare_drop(
    name: str, source: str | os.PathLike[str] | None = None, data_dir: str | os.PathLike[str] | None = None
) -> tuple[Path, int | None]:
    """Write the drop of paper dataset ``name``; return its folder and how many images were written
    (None: an ImageNet drop, whose images stay in ``source``, or a drop already prepared from that source).

    Without ``source`` the files are downloaded through torchvision into ``<data root>/downloads/<name>``.
    The drop is built in a hidden folder and renamed into place, so the drops sensor never sees half of it.
    """
    dataset = paper_dataset(name)
    target = drops_dir(data_dir) / dataset.name
    source_path = Path(source).expanduser().absolute() if source else None
    stamp = {"dataset": dataset.name, "source": str(source_path) if source_path else "download"}
    marker = target / PREPARED_MARKER
    if marker.is_file():
        try:
            if json.loads(marker.read_text()) == stamp:
                return target, None
        except (OSError, ValueError):
            pass  # an unreadable marker: prepare again
    if dataset.kind == "imagenet":
        if source_path is None:
            raise SourceError(
                f"{dataset.title} cannot be downloaded: pass SOURCE=<your ImageNet root> (ImageFolder layout: "
                "train/<wnid>/*.JPEG, val/<wnid>/*.JPEG); only the subset's class folders are read, in place"
            )
        _check_imagenet_root(dataset, source_path)
        splits, image_root = None, source_path
    else:
        root = source_path or download(dataset.kind, dataset.title, downloads_dir(dataset.name, data_dir))
        splits, image_root = read_source(dataset.kind, root), None

    with staging_folder(target) as staging:
        count = _write_splits(staging, splits) if splits is not None else None
        (staging / "dataset.toml").write_text(_settings_toml(dataset, image_root), encoding="utf-8")
        (staging / PREPARED_MARKER).write_text(json.dumps(stamp), encoding="utf-8")
        # Only a drop this command prepared is replaced; anything else under that name is the user's.
        if target.exists() and not (target / PREPARED_MARKER).exists() and any(target.iterdir()):
            raise SourceError(
                f"{target} already exists and was not prepared by make reproduce: move it away first"
            )
        publish_folder(staging, target)
    return target, count


def _cells(values: tuple[float | None, ...]) -> str:
    return " / ".join("–" if v is None else f"{v:.1f}" for v in values)


def comparison_markdown(dataset: PaperDataset, metrics: pa.Table) -> str:
    """Measured NMI / ACC / ARI beside the paper's, for TAC, TAC without training and k-means."""
    rows = {row["method"]: row for row in metrics.to_pylist()}
    lines = [
        f"{dataset.title}: NMI / ACC / ARI in percent",
        "",
        "| method | measured | paper |",
        "| --- | --- | --- |",
    ]
    for method, title in COMPARED:
        row = rows.get(method, {})
        measured = _cells((row.get("nmi"), row.get("acc"), row.get("ari")))
        paper = "–"
        if method == "tac_image":
            f = dataset.figures
            paper = _cells((f.nmi, f.acc, f.ari))
        lines.append(f"| {title} | {measured} | {paper} |")
    split = next(iter(rows.values()), {}).get("split", "?")
    lines += [
        "",
        f"Measured on the '{split}' split. '–' under paper: a figure the paper's table does not give here.",
    ]
    return "\n".join(lines)
