"""The refit policy: does a dataset's next run **fit** the model again, or **assign** its new images to the
fitted one? Written once here; ``make cluster``, the drops sensor, the schedule and the ``assign_new_images``
job all ask :func:`plan_dataset_run`.

A fit records what it was fitted on (:class:`FitRecord`, in the metadata of ``trained_heads``): its run, the
encoder, the nouns, the fit settings of ``dataset.toml``, and the drop's state (its images, saved by
``image_embeddings`` per drop digest, :func:`save_image_state`). ``dataset.toml``'s ``refit`` chooses:

* ``"always"`` -- every run fits;
* ``"never"`` -- every run assigns (unless there is no fit, or the encoder changed: then nothing fitted can
  take the new embeddings, and it fits);
* ``"auto"`` (default) -- it fits when there is no fit yet, the encoder, the nouns or a fit setting changed,
  the images added, changed or removed since the fit reach ``refit_changed_share`` of the fitted set (0.2), or
  the images assigned since the fit are novel in a share reaching ``refit_novel_share`` (0.3); otherwise it
  assigns. Removing images alone never refits: the fit still covers every image left.

``make cluster DATASET=x REFIT=1`` forces a fit. The decision and its reason are printed and travel with the
run as tags, which the assets record in their metadata.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from tac_pipeline.common.atomic import write_parquet_atomically
from tac_pipeline.common.tables import read_parquet
from tac_pipeline.defs.names import ASSIGN, FIT, FIT_RECORD_ASSET, LABELS_ASSET
from tac_pipeline.drops.nouns import noun_identity
from tac_pipeline.drops.settings import DatasetSettings, fit_settings, load_dataset_settings
from tac_pipeline.store.layout import image_state_path
from tac_pipeline.store.records import latest_materialization

#: Metadata entries: the fit record on ``trained_heads``; the fit and the assigned / novel counts on
#: ``cluster_labels``.
FIT_RECORD_ENTRY = "fit_record"
LABELS_FIT_ENTRY = "labels_from_fit"
ASSIGNED_ENTRY, NOVEL_ASSIGNED_ENTRY = "assigned_since_fit", "novel_assigned_since_fit"
#: The encoder of a drop that brings its own embeddings.
BYO_ENCODER = "none (bring your own)"


@dataclass(frozen=True)
class FitRecord:
    """What a fit was fitted on. ``at``: seconds since the epoch; ``drop_digest`` names its image state."""

    run_id: str
    at: float
    encoder: str
    nouns: str
    settings: dict[str, Any]
    drop_digest: str | None
    images: int

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> FitRecord | None:
        try:
            return cls(**json.loads(text))
        except (TypeError, ValueError):
            return None

    def describe(self) -> str:
        """``run 1a2b3c4d of 2026-12-07 14:02 UTC``."""
        return f"run {self.run_id[:8]} of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(self.at))}"


def stored_fit(instance, dataset: str) -> FitRecord | None:
    """The record of the dataset's latest fit, or None (never fitted, or fitted before fits were recorded)."""
    latest = latest_materialization(instance, FIT_RECORD_ASSET, dataset)
    text = latest.value(FIT_RECORD_ENTRY) if latest is not None else None
    if isinstance(text, dict):
        text = json.dumps(text)
    return FitRecord.from_json(text) if text else None


# ----------------------------------------------------------------------------------------------- image state
#: An image's state: ``(fingerprint, content)``. For image files the fingerprint is ``size:mtime_ns`` (cheap,
#: from the drop manifest) and the content their sha256 where known; for a drop's own embeddings both are a
#: digest of the vector.
State = dict[str, tuple[str, str | None]]
#: The manifest's prefix of files under a drop's ``[images]`` root.
IMAGES_PREFIX = "@images/"


def image_state(
    drop: Path, entries: Sequence[tuple[str, int, int]] | None, contents=None, own: pa.Table | None = None
) -> State:
    """The drop's images: for a drop with its own ``embeddings.parquet`` each ``image_id`` and a digest of its
    vector (``own``: that file as already read, else it is read here); otherwise each image file of the drop
    manifest's ``entries`` (its path) with its size and modification time, and its sha256 from ``contents``
    (``{path: sha256}``, the image table's) when given."""
    from tac_pipeline.encoders.byo import BYO_EMBEDDINGS
    from tac_pipeline.encoders.images.discovery import IMAGE_EXTENSIONS, path_text

    if (Path(drop) / BYO_EMBEDDINGS).exists():
        from tac_pipeline.common.tables import column_matrix, row_digests

        table = (
            own
            if own is not None
            else read_parquet(Path(drop) / BYO_EMBEDDINGS, columns=["image_id", "embedding"])
        )
        ids = [str(i) for i in table["image_id"].to_pylist()]
        return {i: (d, d) for i, d in zip(ids, row_digests(column_matrix(table, "embedding")), strict=True)}
    contents = contents or {}
    state: State = {}
    for path, size, mtime_ns in entries or ():
        if Path(path).suffix.lower() in IMAGE_EXTENSIONS:
            key = path_text(path)  # as the image table writes paths: valid UTF-8 naming exactly this file
            state[key] = (f"{size}:{mtime_ns}", contents.get(key.removeprefix(IMAGES_PREFIX)))
    return state


def save_image_state(dataset: str, drop_digest: str, state: State, data_dir) -> Path:
    """Write the state a run saw under its drop digest (atomically; an existing one is the same state)."""
    path = image_state_path(dataset, drop_digest, data_dir)
    if not path.exists():
        table = pa.table(
            {
                "key": pa.array(list(state), pa.string()),
                "fingerprint": pa.array([f for f, _ in state.values()], pa.string()),
                "content": pa.array([c for _, c in state.values()], pa.string()),
            }
        )
        write_parquet_atomically(table, path)
    return path


def load_image_state(dataset: str, drop_digest: str | None, data_dir) -> State | None:
    if not drop_digest:
        return None
    path = image_state_path(dataset, drop_digest, data_dir)
    try:
        table = read_parquet(path)
    except (OSError, pa.ArrowException):
        return None
    return {
        k: (f, c)
        for k, f, c in zip(
            table["key"].to_pylist(),
            table["fingerprint"].to_pylist(),
            table["content"].to_pylist(),
            strict=True,
        )
    }


def forget_image_states(dataset: str, keep: set[str], data_dir) -> None:
    """Remove the saved states of the dataset other than the digests in ``keep``."""
    folder = image_state_path(dataset, "0", data_dir).parent
    for path in folder.glob("*.parquet") if folder.is_dir() else ():
        if path.stem not in keep:
            path.unlink(missing_ok=True)


@dataclass(frozen=True)
class Changes:
    """Images since the fit: ``added`` (new keys), ``changed`` (same key, other content), ``removed``."""

    added: int
    changed: int
    removed: int
    fitted: int

    @property
    def share(self) -> float:
        """(added + changed + removed) / fitted images."""
        return (self.added + self.changed + self.removed) / max(self.fitted, 1)

    @property
    def only_removed(self) -> bool:
        return self.added == 0 and self.changed == 0


def compare(fitted: State, now: State, content_of=None) -> Changes:
    """What changed from ``fitted`` to ``now``. A file whose size or modification time differs is changed only
    when its content differs too: ``content_of(key)`` hashes it now (only such files are read), and a file
    touched or copied with its bytes intact counts as unchanged."""
    added = changed = 0
    for key, (fingerprint, content) in now.items():
        if key not in fitted:
            added += 1
            continue
        old_fingerprint, old_content = fitted[key]
        if fingerprint == old_fingerprint:
            continue
        current = content if content is not None else (content_of(key) if content_of else None)
        if current is None or old_content is None or current != old_content:
            changed += 1
    removed = sum(1 for key in fitted if key not in now)
    return Changes(added=added, changed=changed, removed=removed, fitted=len(fitted))


def _file_content(drop: Path, settings: DatasetSettings):
    """``key -> sha256`` of a file named by a manifest key (under the drop or its ``[images]`` root)."""
    from tac_pipeline.encoders.images.discovery import text_path
    from tac_pipeline.encoders.incremental import file_sha256

    root = Path(settings.images.root) if settings.images is not None else None

    def content(key: str) -> str | None:
        if key.startswith(IMAGES_PREFIX):
            return (
                file_sha256(root / text_path(key.removeprefix(IMAGES_PREFIX))) if root is not None else None
            )
        return file_sha256(Path(drop) / text_path(key))

    return content


# ----------------------------------------------------------------------------------------------- the decision
@dataclass(frozen=True)
class DropNow:
    """The dataset as it is now, in the terms of a :class:`FitRecord`."""

    encoder: str
    nouns: str
    settings: DatasetSettings
    images: State
    drop: Path | None = None


@dataclass(frozen=True)
class RefitDecision:
    kind: str  # "fit" or "assign"
    reason: str
    fit: FitRecord | None = None
    changes: Changes | None = None

    @property
    def line(self) -> str:
        """What ``make cluster`` prints and the run's tags carry."""
        return self.reason


def _pct(x: float) -> str:
    return f"{100 * x:.0f} %"


def _settings_changed(record: FitRecord, now: DatasetSettings) -> list[str]:
    current = fit_settings(now)
    names = sorted(set(current) | set(record.settings))
    return [name for name in names if current.get(name) != record.settings.get(name)]


def decide(
    record: FitRecord | None,
    now: DropNow,
    fitted_images: State | None,
    novel: tuple[int, int] | None = None,
    *,
    force: bool = False,
) -> RefitDecision:
    """The policy (module docstring) as one pure function.

    Args:
        record: the latest fit, or None.
        now: the dataset now.
        fitted_images: the image state the fit was made from (None: not stored).
        novel: (images assigned since the fit, how many of them are novel), from the latest labels of that fit.
        force: a fit was asked for (``REFIT=1``).
    """
    mode = now.settings.refit

    def fit(reason: str, changes: Changes | None = None) -> RefitDecision:
        return RefitDecision(FIT, f"refitted: {reason}", record, changes)

    if force:
        return fit("a fit was asked for (REFIT=1)")
    if record is None:
        return fit("there is no fit yet")
    if mode == "always":
        return fit('refit = "always" in dataset.toml')
    if record.encoder != now.encoder:
        return fit(f"the encoder changed since the fit ({record.encoder} -> {now.encoder})")
    content_of = _file_content(now.drop, now.settings) if now.drop is not None else None
    changes = compare(fitted_images, now.images, content_of) if fitted_images is not None else None
    assigned, novel_count = novel or (0, 0)
    novel_share = novel_count / assigned if assigned else 0.0
    if mode == "auto":
        if record.nouns != now.nouns:
            return fit(f"the nouns changed since the fit ({record.nouns} -> {now.nouns})")
        changed = _settings_changed(record, now.settings)
        if changed:
            return fit(f"dataset.toml changed since the fit ({', '.join(changed)})")
        if changes is None:
            return fit("the images the fit was made from are not on record")
        if not changes.only_removed and changes.share >= now.settings.refit_changed_share:
            return fit(
                f"{_pct(changes.share)} of the images are new, changed or removed since the last fit "
                f"({changes.added} added, {changes.changed} changed, {changes.removed} removed of "
                f"{changes.fitted}; refit_changed_share = {now.settings.refit_changed_share:g})",
                changes,
            )
        if novel_share >= now.settings.refit_novel_share:
            return fit(
                f"{_pct(novel_share)} of the {assigned} images assigned since the last fit are novel "
                f"(refit_novel_share = {now.settings.refit_novel_share:g})",
                changes,
            )
    new = (changes.added + changes.changed) if changes is not None else None
    what = f"{new} new images" if new is not None else "the new images"
    since = f"{_pct(changes.share)} of the fitted set changed since; " if changes is not None else ""
    never = ' (refit = "never")' if mode == "never" else ""
    return RefitDecision(
        ASSIGN,
        f"assigned {what} to the fit of {record.describe()}{never} ({since}novel {_pct(novel_share)})",
        record,
        changes,
    )


def assigned_novel(instance, dataset: str, record: FitRecord | None) -> tuple[int, int] | None:
    """(assigned since the fit, novel among them) from the dataset's latest labels, when made from ``record``."""
    if record is None:
        return None
    latest = latest_materialization(instance, LABELS_ASSET, dataset)
    if latest is None or latest.value(LABELS_FIT_ENTRY) != record.run_id:
        return None
    assigned, novel = latest.value(ASSIGNED_ENTRY), latest.value(NOVEL_ASSIGNED_ENTRY)
    if assigned is None or novel is None:
        return None
    return int(assigned), int(novel)


def encoder_of(drop: Path, image_code_version: str) -> str:
    """The encoder a drop's embeddings come from: its own ``embeddings.parquet`` or the configured one."""
    from tac_pipeline.encoders.byo import BYO_EMBEDDINGS

    return BYO_ENCODER if (Path(drop) / BYO_EMBEDDINGS).exists() else image_code_version


def plan_dataset_run(
    instance,
    dataset: str,
    drop: Path,
    *,
    image_code_version: str,
    data_dir,
    roots: Sequence[str] | None = None,
    force: bool = False,
) -> RefitDecision:
    """Fit or assign for the dataset's next run, read from the store and the drop as they are now.

    ``image_code_version`` is the code version the loaded definitions give ``image_embeddings`` (its encoder).
    A ``dataset.toml`` that does not parse makes a fit (whose first step reports the error).
    """
    from tac_pipeline.drops.manifest import drop_manifest
    from tac_pipeline.drops.settings import DatasetSettingsError

    try:
        settings = load_dataset_settings(drop)
    except DatasetSettingsError as exc:
        return RefitDecision(FIT, f"refitted: dataset.toml does not read ({exc})")
    record = stored_fit(instance, dataset)
    if force or record is None or settings.refit == "always":
        return decide(record, DropNow("", "", settings, {}), None, force=force)
    manifest = drop_manifest(drop, roots)
    now = DropNow(
        encoder=encoder_of(drop, image_code_version),
        nouns=noun_identity(instance, drop),
        settings=settings,
        images=image_state(drop, manifest.entries),
        drop=drop,
    )
    fitted = load_image_state(dataset, record.drop_digest, data_dir)
    return decide(record, now, fitted, assigned_novel(instance, dataset, record), force=force)
