"""Finding a drop's images: the folder layouts, labels and splits, and what was seen but not taken.

:func:`discover_images` walks a drop folder and returns a :class:`DropListing` (records with labels and splits
read from the folder structure, plus what was skipped and why).

``image_id``: the path of the image relative to the drop, ``/``-separated (``cat/0001.png``). A name component
that is not valid UTF-8 (possible on POSIX file systems) is written with Python's ``backslashreplace``
(``caf\\xe9.png`` for the byte ``0xE9``), so every image_id is valid UTF-8 and storable in Parquet; the
``path`` field keeps the real file name for reading. In the unlikely event two ids collide this way, the later
one gets ``~`` and 8 hex digits of a hash of its raw path appended.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tac_pipeline.common.messages import listed

from .walk import MAX_FILES, Found, Progress, Walker, id_component, is_inside

__all__ = [
    "IMAGE_EXTENSIONS",
    "SPLIT_NAMES",
    "DropListing",
    "ImageRecord",
    "discover_images",
    "id_component",
    "path_text",
    "text_path",
]

#: Image files a drop is listed for. AVIF decodes with Pillow itself; HEIC/HEIF with the optional
#: ``pillow-heif`` (without it such files are listed and skipped, with the reason and the remedy).
IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".avif", ".heic", ".heif"}
)
SPLIT_NAMES = ("train", "test")


@dataclass(frozen=True)
class ImageRecord:
    """One image of a drop. ``image_id`` is the drop-relative posix path (see the module docstring)."""

    image_id: str
    path: Path
    label: str | None = None
    split: str | None = None


@dataclass
class DropListing:
    """What :func:`discover_images` found.

    ``layout`` is ``"flat"`` (no labels, no splits), ``"classes"`` (``drop/<class>/…``: labels) or ``"splits"``
    (``drop/train/<class>/…`` and ``drop/test/<class>/…``: splits and labels; see :func:`discover_images` for
    the rule). ``has_labels`` is true when every record has a label; ``has_splits`` when the drop uses the
    ``train/`` / ``test/`` layout (``split_names`` says which of the two are present). ``skipped`` lists
    ``(image_id, reason)`` for entries that were seen but not taken: symlinks leading outside the drop, broken
    links, link loops, unreadable folders, images outside ``train/``/``test/`` in a split drop, and a file
    reached a second time (through a symlink inside the drop: it is counted once). ``notes`` are warnings about
    how the layout was read, for the user to check. Hidden files and non-image extensions are ignored silently.
    """

    root: Path
    records: list[ImageRecord]
    has_labels: bool
    has_splits: bool
    label_names: list[str]
    layout: str
    split_names: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.records)


def path_text(path: str | os.PathLike[str]) -> str:
    r"""A relative path as valid UTF-8 text that names exactly one file: an undecodable byte as ``\xNN`` and a
    literal backslash as ``\\``, so a file named with the byte ``0xE9`` and one literally named ``\xe9``
    never share a text (:func:`text_path` reads it back)."""
    return os.fsencode(path).replace(b"\\", b"\\\\").decode("utf-8", "backslashreplace")


def text_path(text: str) -> Path:
    r"""The path :func:`path_text` wrote (``\\`` → ``\``, ``\xNN`` → that byte)."""
    raw, out, i = text.encode("utf-8"), bytearray(), 0
    while i < len(raw):
        if raw[i : i + 2] == b"\\\\":
            out += b"\\"
            i += 2
        elif raw[i : i + 2] == b"\\x" and len(raw) >= i + 4:
            out.append(int(raw[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(raw[i])
            i += 1
    return Path(os.fsdecode(bytes(out)))


def _count_once(found: list[Found], skipped: list[tuple[str, str]]) -> list[Found]:
    """Each real file once: where symlinks inside the drop reach a file under two names (two labels), keep the
    name reached without a symlink (else the first) and report the others as skipped."""
    by_real: dict[str, list[Found]] = {}
    for item in found:
        by_real.setdefault(item.real, []).append(item)
    kept: list[Found] = []
    for group in by_real.values():
        keep = next((item for item in group if not item.linked), group[0])
        kept.append(keep)
        shown = "/".join(keep.rel)
        for item in group:
            if item is not keep:
                skipped.append(("/".join(item.rel), f"the same file as {shown}, reached again: counted once"))
    return kept


def discover_images(
    drop_dir: str | os.PathLike[str],
    *,
    image_root: str | os.PathLike[str] | None = None,
    splits: dict[str, str] | None = None,
    classes: Sequence[str] | None = None,
    allowed_roots: Sequence[str | os.PathLike[str]] = (),
    progress: Progress | None = None,
    max_files: int | None = MAX_FILES,
) -> DropListing:
    """List the images of a drop folder in a deterministic order (sorted by image_id).

    Layouts: ``drop/*.png`` (flat), ``drop/<class>/**/*.png`` (label = first folder), and
    ``drop/train|test/<class>/**/*.png`` (split and label). Top-level ``train`` / ``test`` folders are splits
    when they are the only folders or each holds class folders (other top-level folders are then skipped); a
    ``train`` folder holding its images directly beside other folders is a class (a class may be named
    ``train``). ``notes`` says how an ambiguous top level was read. Extensions
    (case-insensitive): see :data:`IMAGE_EXTENSIONS`. Hidden entries (names starting with ``.``) and other
    extensions are skipped silently. Symlinks are followed only when their resolved target lies inside the
    drop or one of ``allowed_roots``; each real folder is walked once and a file reached twice
    (``cat/alias -> ../dog``) is counted once, under the name reached without a symlink; the other names are
    reported in ``skipped`` (:mod:`.walk`). ``progress(folders, files)`` hears from a long walk; a drop of more
    than ``max_files`` files raises :class:`~.walk.DropTooLargeError`.

    With ``image_root`` (a drop's ``[images]`` setting) the images come from that folder instead:
    ``image_root/<splits[split]>/<class>/**`` for each split (ids ``<split>/<class>/…``), or
    ``image_root/<class>/**`` without ``splits``; only the ``classes`` named (default: every class folder).
    """
    options = {"allowed": allowed_roots, "progress": progress, "max_files": max_files}
    if image_root is not None:
        return _discover_outside(Path(image_root), splits, classes, options)
    root = Path(drop_dir)
    if not root.is_dir():
        raise NotADirectoryError(f"drop folder not found or not a folder: {root}")
    root_real = os.path.realpath(root)
    walker = Walker(root_real, IMAGE_EXTENSIONS, **options)
    walker.walk(root, (), root_real)
    skipped = walker.skipped
    found = _count_once(walker.found, skipped)
    layout, notes = _layout(found)
    return _listing(root, found, skipped, layout, notes)


def _layout(found: list[Found]) -> tuple[str, list[str]]:
    """The layout of a drop's own folders, and the notes a user should read about it.

    Top-level folders named ``train`` or ``test`` are splits when they are all there is, or when each of them
    holds class folders (other top-level folders are then left out, and reported). A ``train`` folder that holds
    its images directly beside other folders is a class (CIFAR-100 has one): the drop is a class layout.
    """
    top_dirs = sorted({item.rel[0] for item in found if len(item.rel) > 1})
    split_dirs = [d for d in top_dirs if d.lower() in SPLIT_NAMES]
    others = [d for d in top_dirs if d not in split_dirs]
    shown_splits = listed([f"{d}/" for d in split_dirs])
    if not top_dirs:
        return "flat", []
    if not split_dirs:
        return "classes", []
    nested = {item.rel[0] for item in found if len(item.rel) > 2}
    if not others or all(d in nested for d in split_dirs):
        notes = []
        direct = sorted({item.rel[0] for item in found if len(item.rel) == 2 and item.rel[0] in split_dirs})
        if direct:
            notes.append(
                f"{listed([f'{d}/' for d in direct])} hold(s) images directly, outside class folders: those "
                "images have no label (put them in <split>/<class>/ folders to label them)"
            )
        if others:
            notes.append(
                f"{listed([f'{d}/' for d in others])} sit(s) beside the split folders {shown_splits} and "
                f"{'was' if len(others) == 1 else 'were'} left out (listed in the skipped files). If "
                f"{listed([repr(d) for d in split_dirs])} is a class rather than a split, rename that folder"
            )
        return "splits", notes
    flat = [f"{d}/" for d in split_dirs if d not in nested]
    notes = [
        f"the top level mixes {shown_splits} with other folders ({listed([f'{d}/' for d in others])}), and "
        f"{listed(flat)} hold(s) images directly, as a class folder does: every top-level folder is read as a "
        f"class, so {listed([repr(d) for d in split_dirs])} is a class. To use train/ and test/ as splits "
        "instead, put every class folder inside them"
    ]
    return "classes", notes


def _listing(
    root: Path,
    found: list[Found],
    skipped: list[tuple[str, str]],
    layout: str,
    notes: list[str] | None = None,
) -> DropListing:
    records: list[ImageRecord] = []
    seen: set[str] = set()
    for rel, path, _, _ in found:
        image_id = "/".join(rel)
        label: str | None = None
        split: str | None = None
        if layout == "splits":
            if len(rel) < 2 or rel[0].lower() not in SPLIT_NAMES:
                skipped.append((image_id, "outside train/ and test/ in a drop that uses splits"))
                continue
            split = rel[0].lower()
            label = rel[1] if len(rel) > 2 else None
        elif layout == "classes":
            label = rel[0] if len(rel) > 1 else None
        if image_id in seen:  # only possible through backslashreplace of undecodable names
            image_id += "~" + hashlib.sha256(os.fsencode(path)).hexdigest()[:8]
        seen.add(image_id)
        records.append(ImageRecord(image_id=image_id, path=path, label=label, split=split))

    records.sort(key=lambda r: r.image_id)
    skipped.sort()
    has_labels = bool(records) and all(r.label is not None for r in records)
    labels = sorted({r.label for r in records if r.label is not None})
    splits = sorted({r.split for r in records if r.split is not None})
    return DropListing(
        root=root,
        records=records,
        has_labels=has_labels,
        has_splits=layout == "splits" and bool(records),
        label_names=labels,
        layout=layout,
        split_names=splits,
        skipped=skipped,
        notes=list(notes or []),
    )


def _discover_outside(
    image_root: Path, splits: dict[str, str] | None, classes: Sequence[str] | None, options: dict
) -> DropListing:
    """The images of a drop kept under ``image_root`` (see :func:`discover_images`)."""
    if not image_root.is_dir():
        raise NotADirectoryError(
            f"dataset.toml: images.root {image_root} is not a folder: point it at the folder holding the images"
        )
    root_real = os.path.realpath(image_root)
    walker = Walker(
        root_real, IMAGE_EXTENSIONS, outside="symlink pointing outside images.root: not followed", **options
    )
    skipped = walker.skipped
    for split, folder in (splits or {None: None}).items():
        base = image_root / folder if folder else image_root
        if not base.is_dir():
            raise NotADirectoryError(
                f"dataset.toml: images.splits.{split} = {folder!r}, but {base} is not a folder"
            )
        present = sorted(e.name for e in os.scandir(base) if e.is_dir() and not e.name.startswith("."))
        wanted = list(classes) if classes is not None else present
        missing = sorted(set(wanted) - set(present))
        if missing:
            raise FileNotFoundError(
                f"dataset.toml: images.classes names {len(missing)} folder(s) missing from {base}: "
                f"{listed(missing)}"
            )
        for name in sorted(wanted):
            prefix = (split, name) if split else (name,)
            folder_real = os.path.realpath(base / name)
            if not any(is_inside(folder_real, root) for root in walker.roots):
                skipped.append(("/".join(prefix), walker.outside))
                continue
            walker.walk(base / name, prefix, folder_real, os.path.islink(base / name))
    return _listing(
        image_root, _count_once(walker.found, skipped), skipped, "splits" if splits else "classes"
    )
