"""Embedding stage: ``image_embeddings`` (per dataset) and ``wordnet_noun_embeddings`` (shared)."""

import os
import time

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, AssetsDefinition, Config, MetadataValue, asset
from pydantic import Field

from tac_pipeline.assets.common import previous_output
from tac_pipeline.automation.manifest import drop_manifest
from tac_pipeline.encoders.byo import BYO_EMBEDDINGS, read_byo_embeddings
from tac_pipeline.encoders.incremental import content_hashes, plan_reuse
from tac_pipeline.partitions import datasets_partitions
from tac_pipeline.resources.compute import GPU_TAG, ClipEncoderResource, ComputeDeviceResource
from tac_pipeline.resources.data import TacDataResource
from tac_pipeline.tables import column_matrix, embedding_array

#: Bump when the asset's computation changes; the encoder identity is appended at definition time.
CODE_VERSION = "1"


def embedding_code_version(encoder_identity: str) -> str:
    """The code version of both embedding assets: changing the encoder makes them (only them) stale."""
    return f"{CODE_VERSION}+{encoder_identity}"


class NounEmbeddingsConfig(Config):
    max_nouns: int | None = Field(
        default=None,
        description="Embed only the first N WordNet nouns (quick smoke runs). None: all 82,115 (the spec).",
    )


def _utf8_path(path) -> str | None:
    """A drop-relative path as valid UTF-8 text: bytes of a non-UTF-8 file name as ``\\xNN`` (like image_id)."""
    return None if path is None else os.fsencode(path).decode("utf-8", "backslashreplace")


def image_table(
    image_ids, paths, content_hashes, labels, splits, embeddings: np.ndarray
) -> pa.Table:  # fmt: skip
    """The schema of ``image_embeddings`` (TAC_SPEC §1)."""
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
    if len(skipped) > 50:
        lines.append(f"| … | {len(skipped) - 50} more |")
    return "\n".join(lines)


def build_embedding_assets(encoder_identity: str) -> list[AssetsDefinition]:
    """The two embedding assets, versioned by the encoder so that changing it makes them stale."""

    @asset(
        partitions_def=datasets_partitions,
        group_name="embeddings",
        code_version=embedding_code_version(encoder_identity),
        op_tags={GPU_TAG: "true"},
        description="CLIP image embeddings of a drop (or its embeddings.parquet), L2-normalised, one row per image.",
    )
    def image_embeddings(
        context: AssetExecutionContext,
        tac_data: TacDataResource,
        clip_encoder: ClipEncoderResource,
        compute_device: ComputeDeviceResource,
    ) -> pa.Table:
        drop = tac_data.drop_dir(context.partition_key)
        if (drop / BYO_EMBEDDINGS).exists():
            table = read_byo_embeddings(drop / BYO_EMBEDDINGS)
            context.add_output_metadata(
                {
                    "source": str(drop / BYO_EMBEDDINGS),
                    "images": table.num_rows,
                    "encoder": "none (bring your own)",
                }
            )
            return table

        from tac_pipeline.encoders import discover_images, encode_drop

        listing = discover_images(drop)
        records = listing.records
        manifest = drop_manifest(drop)
        previous = previous_output(context, code_version=embedding_code_version(encoder_identity))
        hashes = content_hashes([r.path for r in records])
        plan = plan_reuse(hashes, previous)
        rows: dict[int, tuple[str, np.ndarray]] = {}  # listing position -> (content hash, embedding)
        if plan.reuse:
            old = column_matrix(previous, "embedding")
            rows.update((pos, (hashes[pos], old[row])) for pos, row in plan.reuse)
        skipped = list(listing.skipped)
        device, rate, seconds = "none (all reused)", 0.0, 0.0
        if plan.encode:
            # Only new or changed files go through CLIP; the model is not even loaded otherwise.
            with compute_device.acquire(context.log) as device:
                encoder = clip_encoder.build(device)
                encoded = encode_drop(
                    encoder,
                    [records[i] for i in plan.encode],
                    num_workers=clip_encoder.num_workers,
                    logger=context.log,
                )
            for j, index in enumerate(encoded.indices):
                rows[plan.encode[int(index)]] = (encoded.content_hashes[j], encoded.embeddings[j])
            skipped += list(encoded.skipped)
            rate, seconds = float(encoded.images_per_second), float(encoded.seconds)
        if not rows:
            raise ValueError(
                f"drop {drop} has no readable images ({len(skipped)} skipped): add JPEG/PNG/WebP/BMP/TIFF/GIF "
                "files, in <class>/ folders for labels, or an embeddings.parquet"
            )
        kept = sorted(rows)
        table = image_table(
            [records[i].image_id for i in kept],
            [records[i].path.relative_to(drop).as_posix() for i in kept],
            [rows[i][0] for i in kept],
            [records[i].label for i in kept],
            [records[i].split for i in kept],
            np.stack([rows[i][1] for i in kept]),
        )
        context.add_output_metadata(
            {
                "images": len(kept),
                "encoded": len(kept) - len(plan.reuse),
                "reused": len(plan.reuse),
                "removed": plan.removed,
                "skipped": len(skipped),
                "skipped_files": MetadataValue.md(_skipped_markdown(skipped) if skipped else "none"),
                "labelled": listing.has_labels,
                "splits": listing.has_splits,
                "model": clip_encoder.identity(),
                "device": device,
                "images_per_second": round(rate, 1),
                "seconds": round(seconds, 2),
                "drop_digest": manifest.digest,
            }
        )
        return table

    @asset(
        group_name="embeddings",
        code_version=embedding_code_version(encoder_identity),
        op_tags={GPU_TAG: "true"},
        description="Every WordNet 3.0 noun embedded by the same CLIP with the 7-template prompt ensemble.",
    )
    def wordnet_noun_embeddings(
        context: AssetExecutionContext,
        config: NounEmbeddingsConfig,
        tac_data: TacDataResource,
        clip_encoder: ClipEncoderResource,
        compute_device: ComputeDeviceResource,
    ) -> pa.Table:
        from tac_pipeline.encoders import NOUN_TEMPLATES
        from tac_pipeline.encoders.wordnet import load_noun_vocabulary

        vocabulary = load_noun_vocabulary(tac_data.root, logger=context.log)
        if config.max_nouns is not None:
            vocabulary = vocabulary.iloc[: config.max_nouns]
        # 82,115 synsets share 67,893 texts: embed each text once and spread it back.
        texts, inverse = np.unique(vocabulary["noun"].to_numpy(dtype=object), return_inverse=True)
        start = time.perf_counter()
        with compute_device.acquire(context.log) as device:
            encoder = clip_encoder.build(device)
            unique_embeddings = encoder.encode_nouns(list(texts))
        seconds = time.perf_counter() - start
        table = pa.table(
            {
                "noun": pa.array(vocabulary["noun"], type=pa.string()),
                "synset": pa.array(vocabulary["synset"], type=pa.string()),
                "gloss": pa.array(vocabulary["gloss"], type=pa.string()),
                "embedding": embedding_array(unique_embeddings[inverse]),
            }
        )
        context.add_output_metadata(
            {
                "nouns": table.num_rows,
                "distinct_texts": len(texts),
                "templates": MetadataValue.md("\n".join(f"- `{t}`" for t in NOUN_TEMPLATES)),
                "model": clip_encoder.identity(),
                "device": device,
                "seconds": round(seconds, 2),
            }
        )
        return table

    return [image_embeddings, wordnet_noun_embeddings]
