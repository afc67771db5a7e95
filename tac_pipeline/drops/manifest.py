"""A drop's manifest: every file's relative path, size and modification time, and one digest of them.

The sensor and the schedule compare digests to decide whether a drop changed; the ``image_embeddings``
asset records the digest it clustered. Only ``stat`` calls: cheap enough to run every sensor tick.
"""

from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DropManifest:
    """``entries``: sorted ``(relative path, size, mtime_ns)``; ``newest_mtime``: seconds since the epoch."""

    entries: tuple[tuple[str, int, int], ...]
    digest: str
    newest_mtime: float

    def __len__(self) -> int:
        return len(self.entries)

    def settling(self, settle_seconds: float, now: float | None = None) -> bool:
        """True while a file or folder changed less than ``settle_seconds`` ago (a copy still under way)."""
        now = time.time() if now is None else now
        return self.newest_mtime > now - settle_seconds


def drop_manifest(drop_dir: str | os.PathLike[str]) -> DropManifest:
    """Walk ``drop_dir`` (hidden entries skipped, symlinks not followed) and summarise it.

    A drop whose ``dataset.toml`` keeps its images elsewhere (``[images]``) also covers those folders, listed
    as ``@images/<folder>/…``; a ``dataset.toml`` that does not parse covers the drop alone (the run that it
    triggers reports the error).
    """
    from tac_pipeline.settings import DatasetSettingsError, load_dataset_settings

    root = Path(drop_dir)
    entries: list[tuple[str, int, int]] = []
    newest = _walk_into(root, root, "", entries, root.stat().st_mtime if root.exists() else 0.0)
    try:
        source = load_dataset_settings(root).images if root.is_dir() else None
    except DatasetSettingsError:
        source = None
    if source is not None:
        image_root = Path(source.root)
        for folder in (source.splits or {"": ""}).values():
            base = image_root / folder if folder else image_root
            for name in source.classes or [""]:
                newest = _walk_into(base / name if name else base, image_root, "@images/", entries, newest)
    entries.sort()
    hasher = hashlib.sha256()
    for relative, size, mtime_ns in entries:
        hasher.update(os.fsencode(relative) + b"\0" + f"{size}:{mtime_ns}".encode() + b"\n")
    return DropManifest(entries=tuple(entries), digest=hasher.hexdigest(), newest_mtime=newest)


def _walk_into(
    top: Path, root: Path, prefix: str, entries: list[tuple[str, int, int]], newest: float
) -> float:
    """Add ``(prefix + path relative to root, size, mtime_ns)`` for every file under ``top``; the newest mtime."""
    for folder, dirs, files in os.walk(top, followlinks=False):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        folder_path = Path(folder)
        newest = max(newest, folder_path.stat().st_mtime)  # a new or deleted file touches its folder
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
