"""Embedding stage: ``image_embeddings`` (per dataset) and ``wordnet_noun_embeddings`` (shared)."""

import json
import os
import socket
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, AssetsDefinition, Config, MaterializeResult, MetadataValue, asset
from pydantic import Field

from tac_pipeline.common.atomic import write_parquet_atomically
from tac_pipeline.common.messages import SHOWN_SKIPPED, listed_lines, more_row
from tac_pipeline.common.tables import column_matrix, embedding_array
from tac_pipeline.defs.assets.common import dataset_asset, previous_output
from tac_pipeline.defs.assets.run_settings import pinned_dataset_settings
from tac_pipeline.defs.checks import embeddings_check, embeddings_check_spec
from tac_pipeline.defs.names import embedding_code_version, noun_code_version
from tac_pipeline.defs.resources.compute import ComputeDeviceResource, gpu_step_tags
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.defs.resources.encoder import ClipEncoderResource
from tac_pipeline.drops.manifest import drop_manifest
from tac_pipeline.encoders.byo import BYO_EMBEDDINGS, read_byo_embeddings, read_byo_file
from tac_pipeline.encoders.images import DropListing, ImageRecord
from tac_pipeline.encoders.incremental import ReusePlan, content_hashes, plan_reuse
from tac_pipeline.encoders.wordnet import DEFAULT_VOCABULARY
from tac_pipeline.store.layout import skipped_files_report
from tac_pipeline.tac.validation import row_norms


class NounEmbeddingsConfig(Config):
    max_nouns: int | None = Field(
        default=None,
        description="Embed only the first N rows of the noun vocabulary (quick smoke runs). None: all of "
        "them (146,347 WordNet 3.0 lemmas with the default vocabulary).",
    )


def _utf8_path(path) -> str | None:
    """A drop-relative path as valid UTF-8 text naming one file (:func:`~tac_pipeline.encoders.path_text`)."""
    from tac_pipeline.encoders.images.discovery import path_text

    return None if path is None else path_text(path)


def image_table(
    image_ids, paths, content_hashes, labels, splits, embeddings: np.ndarray
) -> pa.Table:  # fmt: skip
    """The schema of ``image_embeddings`` (docs/METHOD.md §1)."""
    return pa.table(
        {
            "image_id": pa.array(image_ids, type=pa.string()),
            "path": pa.array([_utf8_path(p) for p in paths], type=pa.string()),
            "content_hash": pa.array(content_hashes, type=pa.string()),
            "label": pa.array(labels, type=pa.string()),
            "split": pa.array(splits, type=pa.string()),
            "embedding": embedding_array(embeddings),
        }
    )


def _skipped_markdown(skipped) -> str:
    lines = ["| file | reason |", "| --- | --- |"]
    lines += [f"| `{name}` | {reason} |" for name, reason in skipped[:50]]
    lines += more_row(len(skipped), 50)
    return "\n".join(lines)


def _worker_name() -> str:
    """Where this code runs: the Dask worker's address inside a Dask worker, else host and process id."""
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


@dataclass
class EmbeddedPart:
    """The embeddings of some of a drop's listed files (all of them, or one shard).

    ``positions``: int64 ``(n,)`` positions in the drop listing of the rows kept, ascending;
    ``content_hashes``: their sha256; ``embeddings``: float32 ``(n, d)``, L2-normalised.
    """

    positions: np.ndarray
    content_hashes: list[str]
    embeddings: np.ndarray
    reused: int
    skipped: list[tuple[str, str]]
    device: str
    images_per_second: float
    seconds: float
    worker: str

    @property
    def encoded(self) -> int:
        return len(self.positions) - self.reused

    _SUMMARY = ("reused", "skipped", "device", "images_per_second", "seconds", "worker")

    def to_table(self) -> pa.Table:
        """As Parquet-ready Arrow (rows plus a JSON summary in the schema metadata): no pickling."""
        table = pa.table(
            {
                "position": pa.array(self.positions, type=pa.int64()),
                "content_hash": pa.array(self.content_hashes, type=pa.string()),
                # an empty part has no width to speak of (Arrow refuses size-0 lists)
                "embedding": embedding_array(self.embeddings)
                if len(self.positions)
                else pa.array([], type=pa.list_(pa.float32(), 1)),
            }
        )
        summary = {name: getattr(self, name) for name in self._SUMMARY}
        return table.replace_schema_metadata({TAC_PART_KEY: json.dumps(summary)})

    @classmethod
    def from_table(cls, table: pa.Table) -> "EmbeddedPart":
        summary = json.loads(table.schema.metadata[TAC_PART_KEY.encode()])
        matrix = column_matrix(table, "embedding") if table.num_rows else np.zeros((0, 0), np.float32)
        summary["skipped"] = [tuple(item) for item in summary["skipped"]]
        return cls(
            positions=table["position"].to_numpy().astype(np.int64),
            content_hashes=table["content_hash"].to_pylist(),
            embeddings=matrix,
            **summary,
        )


#: Schema-metadata key of an :class:`EmbeddedPart` stored as Parquet.
TAC_PART_KEY = "tac/embedded_part"


def embed_part(
    records: Sequence[ImageRecord],
    positions: Sequence[int],
    previous: pa.Table | None,
    *,
    clip_encoder: ClipEncoderResource,
    compute_device: ComputeDeviceResource,
    log,
    resize: int | None = None,
    max_file_bytes: int | None = None,
) -> EmbeddedPart:
    """Embed ``records[positions]``, reusing the previous table's row of every unchanged file.

    Only new or changed files go through CLIP; the model is not even loaded when nothing changed.
    ``resize``: the drop's short side before the centre crop (None: the model's own). ``previous`` must come
    from the same encoder and resize (:func:`previous_embeddings`).
    """
    from tac_pipeline.encoders import encode_drop

    positions = [int(p) for p in positions]
    part = [records[p] for p in positions]
    hashes = content_hashes([r.path for r in part])
    plan = plan_reuse(hashes, previous)
    rows: dict[int, tuple[str, np.ndarray]] = {}  # listing position -> (content hash, embedding)
    if plan.reuse:
        old = column_matrix(previous, "embedding")
        # A previous table that failed its finite-and-unit-norm check is still stored: re-encode its bad rows.
        sound = row_norms(old).sound
        bad = [i for i, row in plan.reuse if not sound[row]]
        if bad:
            log.warning(f"{len(bad)} previous embedding(s) are not finite or not unit-norm: re-encoding them")
            plan = ReusePlan(
                reuse=[(i, row) for i, row in plan.reuse if sound[row]],
                encode=sorted([*plan.encode, *bad]),
                removed=plan.removed,
            )
        rows.update((positions[i], (hashes[i], old[row])) for i, row in plan.reuse)
    skipped: list[tuple[str, str]] = []
    device, rate, seconds = "none (all reused)", 0.0, 0.0
    if plan.encode:
        with compute_device.acquire(log) as device:
            encoder = clip_encoder.build(device)
            encoded = encode_drop(
                encoder,
                [part[i] for i in plan.encode],
                num_workers=clip_encoder.num_workers,
                logger=log,
                resize=resize,
                content_hashes=[hashes[i] for i in plan.encode],  # each file is hashed once per run
                progress_every=PROGRESS_SECONDS,  # "decoded n/N images": the command's progress bar
                max_file_bytes=max_file_bytes,
            )
        for j, index in enumerate(encoded.indices):
            rows[positions[plan.encode[int(index)]]] = (encoded.content_hashes[j], encoded.embeddings[j])
        skipped = list(encoded.skipped)
        rate, seconds = float(encoded.images_per_second), float(encoded.seconds)
    kept = sorted(rows)
    width = next(iter(rows.values()))[1].shape[0] if rows else 0
    return EmbeddedPart(
        positions=np.asarray(kept, dtype=np.int64),
        content_hashes=[rows[p][0] for p in kept],
        embeddings=np.stack([rows[p][1] for p in kept]).astype(np.float32, copy=False)
        if kept
        else np.zeros((0, width), dtype=np.float32),
        reused=len(plan.reuse),
        skipped=skipped,
        device=device,
        images_per_second=rate,
        seconds=seconds,
        worker=_worker_name(),
    )


#: How often a long embedding logs its progress (the command line draws its progress bar from these lines).
PROGRESS_SECONDS = 2.0


def _every(seconds: float, log):
    """``progress(done, total)`` that logs "embedded n/N nouns" at most every ``seconds`` (and at the end)."""
    last = [time.perf_counter()]

    def progress(done: int, total: int) -> None:
        now = time.perf_counter()
        if now - last[0] >= seconds or done == total:
            last[0] = now
            log.info(f"embedded {done:,}/{total:,} nouns")

    return progress


def resize_label(resize: int | None) -> str:
    """How the drop's images are resized before the crop, as recorded in the metadata (``preprocess``)."""
    return "model default" if resize is None else f"short side {resize}"


def previous_embeddings(
    context, encoder_identity: str, resize: int | None, asset_key=None
) -> pa.Table | None:
    """The previous ``image_embeddings`` of this partition when the same encoder and resize made it: only
    those rows may be reused (another resize gives other pixels, so every image is encoded again)."""
    previous = previous_output(
        context,
        code_version=embedding_code_version(encoder_identity),
        asset_key=asset_key,
        metadata={"preprocess": resize_label(resize)},
    )
    return previous


def removed_count(previous: pa.Table | None, kept_hashes: Sequence[str]) -> int:
    """Previous rows whose content no longer appears in the drop.

    The kept rows are enough to tell: a listed file whose content the previous table holds is always kept
    (its row is reused before any decoding), so a previous hash missing from them has left the drop.
    """
    if previous is None or "content_hash" not in previous.column_names:
        return 0
    present = set(kept_hashes)
    return sum(1 for h in set(previous["content_hash"].drop_null().to_pylist()) if h not in present)


def write_skipped_report(path: Path, skipped: Sequence[tuple[str, str]]) -> None:
    """Every skipped file with its reason as Parquet (``file``, ``reason``), replacing the last report."""
    table = pa.table(
        {
            "file": pa.array([name for name, _ in skipped], type=pa.string()),
            "reason": pa.array([reason for _, reason in skipped], type=pa.string()),
        }
    )
    write_parquet_atomically(table, path)


def assemble_image_table(
    drop: Path,
    listing: DropListing,
    parts: Sequence[EmbeddedPart],
    previous: pa.Table | None,
    report: Path | None = None,
    log=None,
) -> tuple[pa.Table, dict]:
    """``image_embeddings`` from the parts of one drop listing, in listing order, with its output metadata.

    ``report``: where the full list of skipped files is written (:func:`write_skipped_report`), also when no
    image could be read, so that the failure's reasons can be shown. The listing's notes on how its layout was
    read are logged as warnings to ``log`` and recorded (``layout_notes``).
    """
    records = listing.records
    for note in listing.notes:
        if log is not None:
            log.warning(f"drop {drop}: {note}")
    skipped = sorted(list(listing.skipped) + [s for part in parts for s in part.skipped])
    if report is not None:
        write_skipped_report(report, skipped)
    total = sum(len(part.positions) for part in parts)
    if not total:
        shown = "\n".join(
            listed_lines([f"{name}: {reason}" for name, reason in skipped], SHOWN_SKIPPED, indent="  ")
        )
        where = f"\nFull list: {report}" if report is not None else ""
        raise ValueError(
            f"drop {drop} has no readable images ({len(skipped)} skipped): add JPEG/PNG/WebP/BMP/TIFF/GIF "
            "files, in <class>/ folders for labels, or an embeddings.parquet"
            + (f"\nSkipped:\n{shown}{where}" if skipped else "")
        )
    positions = np.concatenate([part.positions for part in parts])
    order = np.argsort(positions, kind="stable")
    kept = positions[order]
    hashes = [h for part in parts for h in part.content_hashes]
    matrix = np.concatenate([part.embeddings for part in parts if len(part.positions)])[order]
    table = image_table(
        [records[i].image_id for i in kept],
        [records[i].path.relative_to(listing.root).as_posix() for i in kept],
        [hashes[i] for i in order],
        [records[i].label for i in kept],
        [records[i].split for i in kept],
        matrix,
    )
    encoding = [part for part in parts if part.encoded]
    seconds = max((part.seconds for part in encoding), default=0.0)
    metadata = {
        "images": len(kept),
        "encoded": sum(part.encoded for part in parts),
        "reused": sum(part.reused for part in parts),
        "removed": removed_count(previous, hashes),
        "skipped": len(skipped),
        "skipped_files": MetadataValue.md(_skipped_markdown(skipped) if skipped else "none"),
        **({"skipped_report": MetadataValue.path(str(report))} if report is not None else {}),
        "labelled": listing.has_labels,
        "splits": listing.has_splits,
        "layout": listing.layout,
        **(
            {"layout_notes": MetadataValue.md("\n".join(f"- {n}" for n in listing.notes))}
            if listing.notes
            else {}
        ),
        "device": ", ".join(sorted({part.device for part in parts})),
        # Parts run concurrently: the drop's rate is the sum of theirs, its time the slowest part's.
        "images_per_second": round(sum(part.images_per_second for part in encoding), 1),
        "seconds": round(seconds, 2),
    }
    return table, metadata


def record_drop_state(
    context, tac_data: TacDataResource, drop: Path, table: pa.Table, manifest=None, digest=None, own=None
) -> dict:
    """Save the drop's images as this run sees them (``table`` gives each file's sha256; ``own``: the drop's
    own embeddings as read, :class:`OwnEmbeddings`), under the drop digest, for the refit policy
    (:mod:`tac_pipeline.drops.refit`); keep only that state and the one the latest fit was made from. Returns
    the metadata that names it (``drop_digest``)."""
    from tac_pipeline.drops.refit import forget_image_states, image_state, save_image_state, stored_fit

    key = context.partition_key
    manifest = manifest if manifest is not None else drop_manifest(drop, tac_data.roots)
    digest = digest or manifest.digest
    contents = dict(zip(table["path"].to_pylist(), table["content_hash"].to_pylist(), strict=True))
    raw = own.raw if own is not None else None
    save_image_state(key, digest, image_state(drop, manifest.entries, contents, raw), tac_data.root)
    fit = stored_fit(context.instance, key)
    forget_image_states(
        key, {digest} | ({fit.drop_digest} if fit and fit.drop_digest else set()), tac_data.root
    )
    return {"drop_digest": digest}


class OwnEmbeddings(NamedTuple):
    """A drop's own ``embeddings.parquet``: in the ``image_embeddings`` schema, its metadata, and the file as
    read (its raw vectors identify the images for the refit policy)."""

    table: pa.Table
    metadata: dict
    raw: pa.Table


def byo_table(drop: Path) -> OwnEmbeddings | None:
    """A drop's own ``embeddings.parquet`` (read once), when it has one."""
    if not (drop / BYO_EMBEDDINGS).exists():
        return None
    raw = read_byo_file(drop / BYO_EMBEDDINGS)
    table = read_byo_embeddings(drop / BYO_EMBEDDINGS, raw)
    metadata = {
        "source": str(drop / BYO_EMBEDDINGS),
        "images": table.num_rows,
        "encoder": "none (bring your own)",
    }
    return OwnEmbeddings(table, metadata, raw)


def build_embedding_assets(
    encoder_identity: str, noun_vocabulary: str = DEFAULT_VOCABULARY
) -> list[AssetsDefinition]:
    """The two embedding assets, versioned by the encoder (and the nouns by their vocabulary) so that
    changing either makes them stale."""

    @dataset_asset(
        "embeddings",
        "CLIP image embeddings of a drop (or its embeddings.parquet), L2-normalised, one row per image.",
        gpu=True,
        code_version=embedding_code_version(encoder_identity),
        check_specs=[embeddings_check_spec("image_embeddings")],
    )
    # No return annotation: `-> MaterializeResult` would make Dagster skip the Parquet IO manager.
    def image_embeddings(
        context: AssetExecutionContext,
        tac_data: TacDataResource,
        clip_encoder: ClipEncoderResource,
        compute_device: ComputeDeviceResource,
    ):
        drop = tac_data.drop_dir(context.partition_key)
        own = byo_table(drop)
        if own is not None:
            state = record_drop_state(context, tac_data, drop, own.table, own=own)
            return MaterializeResult(
                value=own.table,
                metadata={**own.metadata, **state},
                check_results=[embeddings_check(own.table)],
            )

        clip_encoder.require_identity(encoder_identity, "image_embeddings")
        settings = pinned_dataset_settings(context, tac_data)  # this run's dataset.toml, read once
        listing = tac_data.list_images(context.partition_key, settings, log=context.log)
        manifest = drop_manifest(drop, tac_data.roots)
        previous = previous_embeddings(context, encoder_identity, settings.resize)
        part = embed_part(
            listing.records,
            range(len(listing.records)),
            previous,
            clip_encoder=clip_encoder,
            compute_device=compute_device,
            log=context.log,
            resize=settings.resize,
            max_file_bytes=tac_data.max_image_bytes,
        )
        report = skipped_files_report(context.partition_key, tac_data.root)
        table, metadata = assemble_image_table(drop, listing, [part], previous, report, context.log)
        return MaterializeResult(
            value=table,
            metadata={
                **metadata,
                "model": clip_encoder.identity(),
                "preprocess": resize_label(settings.resize),
                **record_drop_state(context, tac_data, drop, table, manifest),
            },
            check_results=[embeddings_check(table)],
        )

    @asset(
        group_name="embeddings",
        code_version=noun_code_version(encoder_identity, noun_vocabulary),
        op_tags=gpu_step_tags(),
        description=f"The WordNet 3.0 noun vocabulary '{noun_vocabulary}' embedded by the same CLIP with the "
        "7-template prompt ensemble.",
        check_specs=[embeddings_check_spec("wordnet_noun_embeddings")],
    )
    def wordnet_noun_embeddings(
        context: AssetExecutionContext,
        config: NounEmbeddingsConfig,
        tac_data: TacDataResource,
        clip_encoder: ClipEncoderResource,
        compute_device: ComputeDeviceResource,
    ):
        from tac_pipeline.encoders import NOUN_TEMPLATES

        clip_encoder.require_identity(encoder_identity, "wordnet_noun_embeddings")
        vocabulary = tac_data.noun_vocabulary(noun_vocabulary, logger=context.log)
        if config.max_nouns is not None:
            vocabulary = vocabulary.iloc[: config.max_nouns]
        # 146,347 lemmas are 119,034 distinct words: embed each word once and copy it to its rows (exact).
        texts, inverse = np.unique(vocabulary["noun"].to_numpy(dtype=object), return_inverse=True)
        start = time.perf_counter()
        with compute_device.acquire(context.log) as device:
            encoder = clip_encoder.build(device)
            unique_embeddings = encoder.encode_nouns(
                list(texts), progress=_every(PROGRESS_SECONDS, context.log)
            )
        seconds = time.perf_counter() - start
        table = pa.table(
            {
                "noun": pa.array(vocabulary["noun"], type=pa.string()),
                "synset": pa.array(vocabulary["synset"], type=pa.string()),
                "gloss": pa.array(vocabulary["gloss"], type=pa.string()),
                "embedding": embedding_array(unique_embeddings[inverse]),
            }
        )
        metadata = {
            "vocabulary": noun_vocabulary,
            "nouns": table.num_rows,
            "distinct_texts": len(texts),
            "templates": MetadataValue.md("\n".join(f"- `{t}`" for t in NOUN_TEMPLATES)),
            "model": clip_encoder.identity(),
            "device": device,
            "seconds": round(seconds, 2),
        }
        return MaterializeResult(value=table, metadata=metadata, check_results=[embeddings_check(table)])

    return [image_embeddings, wordnet_noun_embeddings]
