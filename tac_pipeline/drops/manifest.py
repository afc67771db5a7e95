"""A drop's manifest: every file's relative path, size and modification time, and one digest of them.

The sensor and the schedule compare digests to decide whether a drop changed; the ``image_embeddings``
asset records the digest it clustered. :func:`drop_manifest` stats every file: its cost grows with the drop.

:func:`watched_drop_manifest` is what the sensor calls on every tick. It keeps, per drop, the modification
times of every folder the last full walk visited, and the size and mtime of the drop's
:data:`CONTROL_FILES` (``dataset.toml``, ``embeddings.parquet``, ``nouns.parquet``), in a small state file.
When none of them changed and the drop had settled, it returns the recorded digest after one ``stat`` per
folder, without listing a folder or touching an image; otherwise it walks the drop again. Adding, removing
or renaming a file changes its folder's mtime, so those are seen on the next tick. An image rewritten
**in place** (same name, same folder) does not change its folder's mtime: the sensor sees it at its next
full walk, at least every :data:`FULL_WALK_SECONDS` (an hour), and the nightly schedule, which always walks
the whole drop and compares with the digest the last materialization recorded, re-clusters it too.
``docs/PERFORMANCE.md`` has what each costs for a million files.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tac_pipeline.common.atomic import atomic_write
from tac_pipeline.encoders.images.walk import PSEUDO_FILE_SYSTEMS, is_inside


@dataclass(frozen=True)
class DropManifest:
    """``entries``: sorted ``(relative path, size, mtime_ns)``; ``newest_mtime``: seconds since the epoch."""

    entries: tuple[tuple[str, int, int], ...]
    digest: str
    newest_mtime: float
    #: Every folder the walk listed (and every walk root, ``None`` when missing): path -> ``st_mtime_ns``.
    folders: dict[str, int | None] = field(default_factory=dict, compare=False, repr=False)

    def __len__(self) -> int:
        return len(self.entries)

    def settling(self, settle_seconds: float, now: float | None = None) -> bool:
        """True while a file or folder changed less than ``settle_seconds`` ago (a copy still under way)."""
        now = time.time() if now is None else now
        return self.newest_mtime > now - settle_seconds


def drop_manifest(
    drop_dir: str | os.PathLike[str], roots: Sequence[str | os.PathLike[str]] | None = None
) -> DropManifest:
    """Walk ``drop_dir`` (hidden entries skipped, symlinks not followed) and summarise it.

    A drop whose ``dataset.toml`` keeps its images elsewhere (``[images]``) also covers those folders, listed
    as ``@images/<folder>/…``; a ``dataset.toml`` that does not parse covers the drop alone (the run that it
    triggers reports the error). With ``roots`` (the data root and the allowed image roots), an ``[images]``
    root resolving elsewhere is not walked (the run that the drop triggers refuses it, naming the setting).
    """
    from tac_pipeline.drops.settings import DatasetSettingsError, load_dataset_settings

    root = Path(drop_dir)
    entries: list[tuple[str, int, int]] = []
    folders: dict[str, int | None] = {}
    newest = _walk_into(root, root, "", entries, root.stat().st_mtime if root.exists() else 0.0, folders)
    try:
        source = load_dataset_settings(root).images if root.is_dir() else None
    except DatasetSettingsError:
        source = None
    if source is not None and roots is not None:
        real = os.path.realpath(source.root)
        if not any(is_inside(real, os.path.realpath(r)) for r in roots):
            source = None
    if source is not None:
        image_root = Path(source.root)
        for folder in (source.splits or {"": ""}).values():
            base = image_root / folder if folder else image_root
            for name in source.classes or [""]:
                top = base / name if name else base
                newest = _walk_into(top, image_root, "@images/", entries, newest, folders)
    entries.sort()
    hasher = hashlib.sha256()
    for relative, size, mtime_ns in entries:
        hasher.update(os.fsencode(relative) + b"\0" + f"{size}:{mtime_ns}".encode() + b"\n")
    return DropManifest(
        entries=tuple(entries), digest=hasher.hexdigest(), newest_mtime=newest, folders=folders
    )


def _walk_into(
    top: Path,
    root: Path,
    prefix: str,
    entries: list[tuple[str, int, int]],
    newest: float,
    folders: dict[str, int | None],
) -> float:
    """Add ``(prefix + path relative to root, size, mtime_ns)`` for every file under ``top``; the newest mtime.

    ``folders`` receives the mtime of every folder listed, and ``None`` for a ``top`` that does not exist.
    """
    folders.setdefault(os.fspath(top), _mtime_ns(top))
    for folder, dirs, files in os.walk(top, followlinks=False):
        dirs[:] = sorted(
            d for d in dirs if not d.startswith(".") and os.path.join(folder, d) not in PSEUDO_FILE_SYSTEMS
        )  # never /proc, /sys or /dev, even under an [images] root of /
        folder_path = Path(folder)
        folder_stat = folder_path.stat()
        folders[folder] = folder_stat.st_mtime_ns
        newest = max(newest, folder_stat.st_mtime)  # a new or deleted file touches its folder
        for name in sorted(files):
            if name.startswith("."):
                continue  # editors' and copiers' temporary files are not part of the drop yet
            path = folder_path / name
            try:
                stat = path.lstat()
            except FileNotFoundError:  # deleted between listing and stat: it is changing, count it so
                newest = time.time()
                continue
            relative = prefix + path.relative_to(root).as_posix()
            entries.append((relative, stat.st_size, stat.st_mtime_ns))
            newest = max(newest, stat.st_mtime)
    return newest


def _mtime_ns(path: str | os.PathLike[str]) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


#: The files of a drop folder that say what the drop is (settings, its own embeddings): always checked.
CONTROL_FILES = ("dataset.toml", "embeddings.parquet", "nouns.parquet")


def _top_files(root: Path) -> dict[str, list[int] | None]:
    """The drop's :data:`CONTROL_FILES`: name -> ``[size, mtime_ns]`` (None when absent)."""
    found: dict[str, list[int] | None] = {}
    for name in CONTROL_FILES:
        try:
            stat = os.stat(root / name)
            found[name] = [stat.st_size, stat.st_mtime_ns]
        except OSError:
            found[name] = None
    return found


@dataclass(frozen=True)
class WatchedManifest:
    """What the sensor needs of a drop: its digest, its newest mtime, and whether it was walked this time."""

    digest: str
    newest_mtime: float
    walked: bool

    def settling(self, settle_seconds: float, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.newest_mtime > now - settle_seconds


#: The longest a file rewritten in place goes unseen by :func:`watched_drop_manifest`.
FULL_WALK_SECONDS = 3600.0


def watched_drop_manifest(
    drop_dir: str | os.PathLike[str],
    state_file: str | os.PathLike[str],
    settle_seconds: float,
    full_walk_seconds: float = FULL_WALK_SECONDS,
    roots: Sequence[str | os.PathLike[str]] | None = None,
) -> WatchedManifest:
    """The drop's digest, walking it only when a folder's mtime (or one of the drop's control files) changed.

    ``state_file`` holds what the last walk saw; a missing or unreadable one means a full walk. A drop that
    was still settling at the last walk is walked again (files being written in place change no folder), and
    so is one last walked more than ``full_walk_seconds`` ago.
    """
    root = Path(drop_dir)
    state = _read_state(state_file)
    now = time.time()
    if (
        state is not None
        and state["newest_mtime"] <= now - settle_seconds
        and state["walked_at"] > now - full_walk_seconds
        and all(_mtime_ns(folder) == mtime for folder, mtime in state["folders"].items())
        and _top_files(root) == state["top_files"]
    ):
        return WatchedManifest(state["digest"], state["newest_mtime"], walked=False)
    manifest = drop_manifest(root, roots)
    state = {
        "version": _STATE_VERSION,
        "walked_at": now,
        "digest": manifest.digest,
        "newest_mtime": manifest.newest_mtime,
        "folders": manifest.folders,
        "top_files": _top_files(root),
    }
    payload = json.dumps(state).encode()
    atomic_write(state_file, lambda handle: handle.write(payload))
    return WatchedManifest(manifest.digest, manifest.newest_mtime, walked=True)


_STATE_VERSION = 1


def _read_state(state_file: str | os.PathLike[str]) -> dict | None:
    try:
        with open(state_file, "rb") as handle:
            state = json.load(handle)
    except (OSError, ValueError):
        return None
    if not isinstance(state, dict) or state.get("version") != _STATE_VERSION:
        return None
    return state
