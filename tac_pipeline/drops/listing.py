"""Which drops exist, and a drop's images and settings."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from tac_pipeline.drops.keys import InvalidDatasetKeyError, validate_dataset_key
from tac_pipeline.drops.settings import DatasetSettings, load_dataset_settings
from tac_pipeline.encoders.images.walk import is_inside
from tac_pipeline.store.layout import drops_dir

if TYPE_CHECKING:  # pragma: no cover
    from tac_pipeline.encoders import DropListing


def discover_dataset_keys(data_dir: str | os.PathLike[str] | None = None) -> tuple[list[str], list[str]]:
    """Scan ``drops/`` and return ``(valid_keys, rejected_names)``, both sorted. Hidden folders are ignored."""
    root = drops_dir(data_dir)
    valid, rejected = [], []
    if not root.is_dir():
        return valid, rejected
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or not entry.is_dir() or entry.is_symlink():
            continue
        try:
            valid.append(validate_dataset_key(entry.name))
        except InvalidDatasetKeyError:
            rejected.append(entry.name)
    return valid, rejected


def drop_settings(drop_dir: str | os.PathLike[str]) -> DatasetSettings:
    """The drop's ``dataset.toml`` (all defaults without one); raises naming the file and field when bad."""
    return load_dataset_settings(Path(drop_dir))


class OutsideImageRootsError(PermissionError):
    """A drop (or its ``[images]`` root) resolves outside the data root and the allowed image roots."""


def check_inside_roots(
    folder: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]], what: str
) -> None:
    """Refuse ``folder`` unless it resolves inside one of ``roots`` (the data root, then ``TAC_IMAGE_ROOTS``):
    whoever can write a drop must not make the pipeline read or show files anywhere else."""
    real = os.path.realpath(folder)
    allowed = [os.path.realpath(root) for root in roots]
    if any(is_inside(real, root) for root in allowed):
        return
    extra = ", ".join(allowed[1:]) or "none"
    raise OutsideImageRootsError(
        f"{what} {folder} resolves to {real}, outside the data root {allowed[0]} and the allowed image roots "
        f"(TAC_IMAGE_ROOTS: {extra}): move the images under the data root, or add their folder to "
        "TAC_IMAGE_ROOTS in the deployment's environment"
    )


def list_drop_images(
    drop_dir: str | os.PathLike[str],
    settings: DatasetSettings | None = None,
    *,
    roots: Sequence[str | os.PathLike[str]] = (),
    progress=None,
    max_files: int | None = None,
) -> DropListing:
    """The drop's images: its own files, or those its ``[images]`` setting names.

    With ``roots`` (the data root, then the allowed image roots), a drop folder or an ``[images]`` root that
    resolves elsewhere is refused (:class:`OutsideImageRootsError`), and links inside it are followed only into
    those folders. ``progress(folders, files)`` hears from a long walk; more than ``max_files`` files raise.
    """
    from tac_pipeline.encoders import discover_images

    drop_dir = Path(drop_dir)
    source = (settings or drop_settings(drop_dir)).images
    options = {"allowed_roots": list(roots), "progress": progress}
    if max_files is not None:
        options["max_files"] = max_files
    if roots:
        check_inside_roots(drop_dir, roots, "the drop folder")
    if source is None:
        return discover_images(drop_dir, **options)
    if roots:
        check_inside_roots(source.root, roots, f"{drop_dir / 'dataset.toml'}: images.root")
    return discover_images(
        drop_dir, image_root=source.root, splits=source.splits, classes=source.classes, **options
    )
