"""Read the paper's datasets in the formats torchvision downloads them in, and download them.

Each reader takes a folder that holds torchvision's files (the ``root`` given to the torchvision dataset, or
the dataset's own folder inside it) and returns, per split, either images as a uint8 array with class names
(CIFAR, STL-10) or image files with class names (DTD). Downloads go through torchvision, which verifies its
checksums; a bounded reachability probe comes first, so that an offline machine fails in seconds.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tac_pipeline.common.netprobe import reachable
from tac_pipeline.reproduce.batchfile import BatchFormatError, read_batch


class SourceError(RuntimeError):
    """A dataset could not be found, read or downloaded; the message names the dataset and the way out."""


@dataclass
class ArraySplit:
    """``images``: uint8 ``(N, H, W, 3)``; ``labels``: the class name of each image."""

    images: np.ndarray
    labels: list[str]


@dataclass
class FileSplit:
    """``files``: ``(class name, image file)`` per image."""

    files: list[tuple[str, Path]]


def _load_batch(path: Path) -> dict:
    try:
        batch = read_batch(path.read_bytes())
    except (OSError, BatchFormatError) as exc:
        raise SourceError(f"{path}: not a readable CIFAR batch ({exc})") from exc
    if not isinstance(batch, dict):
        raise SourceError(f"{path}: not a readable CIFAR batch (holds a {type(batch).__name__}, not a dict)")
    return batch


def find_folder(source: Path, name: str, marker: str) -> Path:
    """``source/name`` or ``source`` itself, whichever holds ``marker``."""
    for folder in (source / name, source):
        if (folder / marker).exists():
            return folder
    raise SourceError(f"{source}: no {name}/{marker} there (nor {marker} directly inside)")


def _cifar_images(batch: dict) -> np.ndarray:
    return np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)


def read_cifar10(source: Path) -> dict[str, ArraySplit]:
    folder = find_folder(source, "cifar-10-batches-py", "batches.meta")
    names = _load_batch(folder / "batches.meta")["label_names"]
    out = {}
    for split, files in (("train", [f"data_batch_{i}" for i in range(1, 6)]), ("test", ["test_batch"])):
        batches = [_load_batch(folder / f) for f in files]
        images = np.concatenate([_cifar_images(b) for b in batches])
        labels = [names[int(y)] for b in batches for y in b["labels"]]
        out[split] = ArraySplit(images, labels)
    return out


def read_cifar100_coarse(source: Path) -> dict[str, ArraySplit]:
    """CIFAR-100 with its 20 coarse super-class labels (CIFAR-20)."""
    folder = find_folder(source, "cifar-100-python", "meta")
    names = _load_batch(folder / "meta")["coarse_label_names"]
    out = {}
    for split in ("train", "test"):
        batch = _load_batch(folder / split)
        out[split] = ArraySplit(_cifar_images(batch), [names[int(y)] for y in batch["coarse_labels"]])
    return out


def read_stl10(source: Path) -> dict[str, ArraySplit]:
    """STL-10's labelled train and test splits (the unlabelled split is not used)."""
    folder = find_folder(source, "stl10_binary", "class_names.txt")
    names = [n for n in (folder / "class_names.txt").read_text().split("\n") if n]
    out = {}
    for split in ("train", "test"):
        raw = np.fromfile(folder / f"{split}_X.bin", dtype=np.uint8)
        if raw.size % (3 * 96 * 96):
            raise SourceError(f"{folder / f'{split}_X.bin'}: not a whole number of 96x96 images")
        # column-major per channel, as torchvision reads it
        images = raw.reshape(-1, 3, 96, 96).transpose(0, 3, 2, 1)
        labels = np.fromfile(folder / f"{split}_y.bin", dtype=np.uint8).astype(int) - 1
        if len(labels) != len(images):
            raise SourceError(f"{folder}: {split}_y.bin has {len(labels)} labels for {len(images)} images")
        out[split] = ArraySplit(np.ascontiguousarray(images), [names[y] for y in labels])
    return out


def read_dtd(source: Path, partition: int = 1) -> dict[str, FileSplit]:
    """DTD split ``partition``: train + val to fit, test to report."""
    try:
        folder = find_folder(source / "dtd", "dtd", "labels")
    except SourceError:
        folder = find_folder(source, "dtd", "labels")
    out = {}
    for split, lists in (("train", ("train", "val")), ("test", ("test",))):
        files = []
        for name in lists:
            listing = folder / "labels" / f"{name}{partition}.txt"
            if not listing.is_file():
                raise SourceError(f"{listing}: missing (DTD's split lists)")
            for line in listing.read_text().split():
                label = line.split("/", 1)[0]
                files.append((label, folder / "images" / line))
        out[split] = FileSplit(files)
    return out


#: kind -> (reader, torchvision class name, its keyword arguments per split)
READERS = {
    "cifar10": (read_cifar10, "CIFAR10", ({"train": True}, {"train": False})),
    "cifar100-coarse": (read_cifar100_coarse, "CIFAR100", ({"train": True}, {"train": False})),
    "stl10": (read_stl10, "STL10", ({"split": "train"}, {"split": "test"})),
    "dtd": (read_dtd, "DTD", ({"split": "train"}, {"split": "val"}, {"split": "test"})),
}


def download_url(kind: str) -> str:
    """The address torchvision downloads ``kind`` from."""
    from torchvision import datasets

    cls = getattr(datasets, READERS[kind][1])
    return getattr(cls, "url", None) or cls._URL


def download(kind: str, title: str, root: Path, *, timeout: float = 8.0) -> Path:
    """Download ``kind`` into ``root`` through torchvision (checksums verified); return ``root``.

    Fails within about ``timeout`` seconds when the host cannot be reached, naming the way out.
    """
    from torchvision import datasets

    url = download_url(kind)
    ok, why = reachable(url, timeout)
    if not ok:
        raise SourceError(
            f"{title}: cannot download {url} ({why}).\n"
            f"Download it on a machine with internet access (torchvision.datasets.{READERS[kind][1]}"
            f"(root, download=True)), copy that root here and pass it as SOURCE=<root>."
        )
    root.mkdir(parents=True, exist_ok=True)
    cls = getattr(datasets, READERS[kind][1])
    for kwargs in READERS[kind][2]:
        try:
            cls(str(root), download=True, **kwargs)
        except Exception as exc:  # torchvision raises RuntimeError, URLError, OSError...
            raise SourceError(
                f"{title}: the download from {url} failed ({type(exc).__name__}: {exc}); pass SOURCE=<a folder "
                "holding torchvision's files> instead"
            ) from exc
    return root


def read_source(kind: str, source: Path):
    """The splits of ``kind`` read from ``source`` (see the module docstring)."""
    if not Path(source).is_dir():
        raise SourceError(f"SOURCE={source} is not a folder")
    try:
        return READERS[kind][0](Path(source))
    except (OSError, KeyError, IndexError) as exc:
        raise SourceError(f"{source}: could not read the {kind} files ({type(exc).__name__}: {exc})") from exc


def safe_class_name(name: str) -> str:
    """A class name as one folder name (CIFAR's names are plain; '/' never reaches the file system)."""
    cleaned = name.replace(os.sep, "_").replace("/", "_").strip()
    return cleaned if cleaned not in ("", ".", "..") and not cleaned.startswith(".") else f"class_{cleaned}"
