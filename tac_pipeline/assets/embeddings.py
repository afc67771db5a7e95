"""Embedding stage: ``image_embeddings`` (per dataset) and ``wordnet_noun_embeddings`` (shared)."""

import time

import numpy as np
import pyarrow as pa
from dagster import AssetExecutionContext, AssetsDefinition, Config, MetadataValue, asset
from pydantic import Field

from tac_pipeline.encoders.byo import BYO_EMBEDDINGS, read_byo_embeddings
from tac_pipeline.partitions import datasets_partitions
from tac_pipeline.resources.compute import GPU_TAG, ClipEncoderResource, ComputeDeviceResource
from tac_pipeline.resources.data import TacDataResource
from tac_pipeline.tables import embedding_array

#: Bump when the asset's computation changes; the encoder identity is appended at definition time.
CODE_VERSION = "1"


class NounEmbeddingsConfig(Config):
    max_nouns: int | None = Field(
        default=None,
        description="Embed only the first N WordNet nouns (quick smoke runs). None: all 82,115 (the spec).",
    )


def image_table(
    image_ids, paths, content_hashes, labels, splits, embeddings: np.ndarray
) -> pa.Table:  # fmt: skip
    """The schema of ``image_embeddings`` (TAC_SPEC §1)."""
    return pa.table(
        {
            "image_id": pa.array(image_ids, type=pa.string()),
            "path": pa.array(paths, type=pa.string()),
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
        code_version=f"{CODE_VERSION}+{encoder_identity}",
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
        with compute_device.acquire(context.log) as device:
            encoder = clip_encoder.build(device)
            encoded = encode_drop(
                encoder, listing.records, num_workers=clip_encoder.num_workers, logger=context.log
            )
        skipped = list(getattr(listing, "skipped", [])) + list(encoded.skipped)
        if len(encoded.image_ids) == 0:
            raise ValueError(
                f"drop {drop} has no readable images ({len(skipped)} skipped): add JPEG/PNG/WebP/BMP/TIFF/GIF "
                "files, in <class>/ folders for labels, or an embeddings.parquet"
            )
        paths = [str(r.path.relative_to(drop)) for r in listing.records]
        path_of = dict(zip((r.image_id for r in listing.records), paths, strict=True))
        table = image_table(
            encoded.image_ids,
            [path_of.get(i, i) for i in encoded.image_ids],
            encoded.content_hashes,
            encoded.labels,
            encoded.splits,
            encoded.embeddings,
        )
        context.add_output_metadata(
            {
                "images": len(encoded.image_ids),
                "skipped": len(skipped),
                "skipped_files": MetadataValue.md(_skipped_markdown(skipped) if skipped else "none"),
                "labelled": listing.has_labels,
                "splits": listing.has_splits,
                "model": clip_encoder.identity(),
                "device": device,
                "images_per_second": round(float(encoded.images_per_second), 1),
                "seconds": round(float(encoded.seconds), 2),
            }
        )
        return table

    @asset(
        group_name="embeddings",
        code_version=f"{CODE_VERSION}+{encoder_identity}",
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
