"""The paper's datasets as data: how each is prepared, its K and resize, and the figures the paper reports.

Figures are TAC's (ViT-B/32; NMI / ACC / ARI in percent) as the paper reports them; ``None`` where the paper
reports no figure for that metric. See docs/METHOD.md for the protocol (fit on train, report on test).
"""

from __future__ import annotations

from dataclasses import dataclass

#: ImageNet-10, by WordNet id (the list the deep-clustering literature uses).
IMAGENET10_WNIDS = (
    "n02056570 n02085936 n02128757 n02690373 n02692877 n03095699 n04254680 n04285008 n04467665 n07747607"
).split()
#: ImageNet-Dogs, by WordNet id.
IMAGENET_DOGS_WNIDS = (
    "n02085936 n02086646 n02088238 n02091467 n02097130 n02099601 n02101388 n02101556 n02102177 n02105056 "
    "n02105412 n02105855 n02107142 n02110958 n02112137"
).split()


_FROM_IMAGENET_ROOT = "nothing: SOURCE is your ImageNet root (train/<wnid>/, val/<wnid>/)"
_IN_PLACE = "none (images stay in SOURCE)"


@dataclass(frozen=True)
class Figures:
    nmi: float | None
    acc: float | None
    ari: float | None


@dataclass(frozen=True)
class PaperDataset:
    """One row of the paper's table and how ``make reproduce`` prepares it.

    ``kind``: ``cifar10``, ``cifar100-coarse``, ``stl10``, ``dtd`` (torchvision's files, downloaded or from a
    source folder, written as PNG/JPEG drops) or ``imagenet`` (an ImageFolder root the drop points at).
    ``wnids``: the ImageNet subset (None: all classes). ``resize``: short side before the 224 crop.
    """

    name: str
    title: str
    kind: str
    n_clusters: int
    resize: int
    figures: Figures
    download: str  # what is downloaded, for the README and the listing
    disk: str  # disk the prepared drop (and any download) needs
    wnids: tuple[str, ...] | None = None

    @property
    def downloadable(self) -> bool:
        return self.kind != "imagenet"


PAPER_DATASETS: dict[str, PaperDataset] = {
    d.name: d
    for d in (
        PaperDataset(
            "cifar10", "CIFAR-10", "cifar10", 10, 224, Figures(83.3, 91.9, 83.1),
            "CIFAR-10 python batches (163 MB), torchvision's checksums", "about 0.5 GB",
        ),
        PaperDataset(
            "cifar20", "CIFAR-20 (CIFAR-100 super-classes)", "cifar100-coarse", 20, 224, Figures(61.1, 60.7, 44.8),
            "CIFAR-100 python files (161 MB), torchvision's checksums", "about 0.5 GB",
        ),
        PaperDataset(
            "stl10", "STL-10", "stl10", 10, 224, Figures(None, 98.2, None),
            "STL-10 binaries (2.6 GB, of which train and test are used), torchvision's checksums",
            "about 3.5 GB",
        ),
        PaperDataset(
            "imagenet10", "ImageNet-10", "imagenet", 10, 256, Figures(98.5, 99.2, 98.3),
            _FROM_IMAGENET_ROOT, _IN_PLACE,
            IMAGENET10_WNIDS,
        ),
        PaperDataset(
            "imagenet-dogs", "ImageNet-Dogs", "imagenet", 15, 256, Figures(None, None, None),
            _FROM_IMAGENET_ROOT, _IN_PLACE,
            IMAGENET_DOGS_WNIDS,
        ),
        PaperDataset(
            "imagenet", "ImageNet-1K", "imagenet", 1000, 256, Figures(79.9, 58.2, 43.5),
            _FROM_IMAGENET_ROOT, _IN_PLACE,
        ),
        PaperDataset(
            "dtd", "DTD (split 1)", "dtd", 47, 224, Figures(62.1, 50.1, 34.4),
            "DTD archive (625 MB), torchvision's checksums", "about 1.3 GB",
        ),
    )
}  # fmt: skip


def dataset_listing() -> str:
    """The datasets ``make reproduce`` knows, one line each."""
    lines = ["Datasets (make reproduce DATASET=<name> [SOURCE=<path>] [MODEL=<open_clip model>]):", ""]
    for d in PAPER_DATASETS.values():
        source = "SOURCE required" if not d.downloadable else "downloaded, or SOURCE"
        lines.append(f"  {d.name:<14} {d.title:<38} K={d.n_clusters:<5} resize {d.resize}  ({source})")
        lines.append(f"  {'':<14} downloads {d.download}; disk {d.disk}")
    return "\n".join(lines)
