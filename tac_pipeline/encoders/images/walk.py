"""The walk under a drop (or an ``[images]`` root): every real folder visited once, whatever links lead to it.

- **Each real folder once.** Folders are tracked by their resolved path, not by the path that led to them:
  a folder reached again through a symlink (a link to an ancestor, two links to one folder, a "diamond" of
  links) is reported once and not walked again, so the walk is linear in the number of real folders.
  Folders reached without a symlink are walked first, so a file keeps the name (and label) it has without
  one; a link to a folder nothing else reaches (a hidden one) is still read.
- **Where links may lead.** A symlink is followed only when it resolves inside the walk's root or one of the
  ``allowed`` folders; the others are reported, never read.
- **Never a pseudo file system** (``/proc``, ``/sys``, ``/dev``), even under an allowed root of ``/``.
- **Bounded.** ``progress(folders, files)`` is called every :data:`PROGRESS_SECONDS` once the walk has taken
  that long; past ``max_files`` files the walk stops with :class:`DropTooLargeError`.
"""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import NamedTuple

#: Mount points of pseudo file systems, never entered.
PSEUDO_FILE_SYSTEMS = ("/proc", "/sys", "/dev")
#: How often a long walk reports its progress.
PROGRESS_SECONDS = 2.0
#: The most files a drop may hold before its walk is refused (a setting of the pipeline).
MAX_FILES = 10_000_000

Progress = Callable[[int, int], None]


class DropTooLargeError(ValueError):
    """The walk passed its ``max_files``; the message names the folder and the limit."""


class Found(NamedTuple):
    """An image file the walk reached: its id parts, the path it was reached by, its real path, and whether a
    symlink led to it."""

    rel: tuple[str, ...]
    path: Path
    real: str
    linked: bool


def is_inside(target: str, root: str) -> bool:
    try:
        return os.path.commonpath([target, root]) == root
    except ValueError:  # different drives (Windows)
        return False


def id_component(name: str) -> str:
    """A name as valid UTF-8 text (undecodable bytes as ``\\xNN``)."""
    try:
        name.encode("utf-8")
        return name
    except UnicodeEncodeError:
        return os.fsencode(name).decode("utf-8", "backslashreplace")


class Walker:
    """Collects the files with one of ``extensions`` under one or more start folders (see the module
    docstring); ``found`` and ``skipped`` (``(shown path, reason)``) accumulate over :meth:`walk` calls."""

    def __init__(
        self,
        root_real: str,
        extensions: frozenset[str],
        *,
        allowed: Sequence[str | os.PathLike[str]] = (),
        outside: str = "symlink pointing outside the drop: not followed",
        progress: Progress | None = None,
        max_files: int | None = MAX_FILES,
    ) -> None:
        self.roots = [root_real, *(os.path.realpath(a) for a in allowed)]
        self.extensions = extensions
        self.outside = outside
        self.found: list[Found] = []
        self.skipped: list[tuple[str, str]] = []
        self._visited: dict[str, str] = {}  # real folder -> the path it was shown by
        self._links: deque[tuple[Path, tuple[str, ...], str]] = deque()
        self._progress, self._max_files = progress, max_files
        self._folders = self._files = 0
        self._started = time.monotonic()
        self._reported = self._started

    def walk(self, folder: Path, rel: tuple[str, ...], folder_real: str, linked: bool = False) -> None:
        """Walk ``folder`` (shown as ``rel``), then every folder only links reach."""
        self._tree(folder, rel, folder_real, linked)
        while self._links:
            path, rel_link, target = self._links.popleft()
            shown = "/".join(rel_link)
            if target in self._visited:
                first = self._visited[target] or "the top folder"
                if is_inside(os.path.realpath(path.parent), target):
                    self.skipped.append((shown, f"symlink loop (back to {first}): not followed"))
                else:
                    self.skipped.append((shown, f"the same folder as {first}, reached again: counted once"))
                continue
            self._tree(path, rel_link, target, True)

    def _tree(self, folder: Path, rel: tuple[str, ...], folder_real: str, linked: bool) -> None:
        stack = [(folder, rel, folder_real)]
        while stack:
            path, rel_here, real = stack.pop()
            if real in self._visited:
                continue
            self._visited[real] = "/".join(rel_here)
            if any(is_inside(real, pseudo) for pseudo in PSEUDO_FILE_SYSTEMS):
                self.skipped.append(
                    ("/".join(rel_here) or ".", "a pseudo file system (/proc, /sys, /dev): not entered")
                )
                continue
            folders = self._entries(path, rel_here, real, linked)
            stack.extend(reversed(folders))

    def _entries(self, folder: Path, rel: tuple[str, ...], folder_real: str, linked: bool):
        """The folder's files (collected) and its sub-folders reached without a link (returned, sorted)."""
        try:
            with os.scandir(folder) as it:
                entries = sorted(it, key=lambda e: os.fsencode(e.name))
        except OSError as exc:
            self.skipped.append(("/".join(rel) or ".", f"unreadable folder: {exc.strerror or exc}"))
            return []
        self._folders += 1
        if self._folders % 256 == 0:
            self._tick()
        folders = []
        for entry in entries:
            name = entry.name
            if name.startswith("."):
                continue
            rel_entry = (*rel, id_component(name))
            shown = "/".join(rel_entry)
            path = Path(entry.path)
            target = os.path.join(folder_real, name)
            try:
                is_link = entry.is_symlink()
                if is_link:
                    target = os.path.realpath(path)
                    if not any(is_inside(target, root) for root in self.roots):
                        self.skipped.append((shown, self.outside))
                        continue
                    if not os.path.exists(target):
                        self.skipped.append((shown, "broken symlink"))
                        continue
                is_dir = entry.is_dir(follow_symlinks=True)
                is_file = not is_dir and entry.is_file(follow_symlinks=True)
            except OSError as exc:
                self.skipped.append((shown, f"unreadable entry: {exc.strerror or exc}"))
                continue
            if is_dir and is_link:
                self._links.append((path, rel_entry, target))
            elif is_dir:
                folders.append((path, rel_entry, target))
            elif is_file:
                self._count_file(folder)
                if os.path.splitext(name)[1].lower() in self.extensions:
                    self.found.append(Found(rel_entry, path, target, linked or is_link))
        return folders

    def _count_file(self, folder: Path) -> None:
        self._files += 1
        if self._max_files is not None and self._files > self._max_files:
            raise DropTooLargeError(
                f"{folder}: the walk passed {self._max_files:,} files, the most a drop may hold "
                "(TAC_MAX_DROP_FILES): split the drop, or raise the limit"
            )
        if self._files % 1024 == 0:
            self._tick()

    def _tick(self) -> None:
        if self._progress is None:
            return
        now = time.monotonic()
        if now - self._started >= PROGRESS_SECONDS and now - self._reported >= PROGRESS_SECONDS:
            self._reported = now
            self._progress(self._folders, self._files)
