"""``image_embeddings`` as sharded steps: one plan, N embedding shards that workers compute at once, one concat.

Selected by ``TAC_EMBED_SHARDS=N`` (see :mod:`tac_pipeline.config`). The asset keeps its key, table,
code version and incremental reuse, so the rest of the graph does not change; only the steps inside it do:

    plan_image_shards ──► embed_image_shard_0 ──┐
                     ├──► embed_image_shard_1 ──┼──► concat_image_shards  (the asset's table)
                     └──► …                   ──┘

The plan walks the drop once, so every shard sees the same listing; shard i takes the i-th contiguous slice
of it, hashes its own files (reusing the previous embeddings of unchanged ones) and encodes the rest. The
hand-offs go through ``shard_io_manager`` (Parquet under ``<store>/intermediate/<run id>/``, never pickles;
a shared filesystem when workers run on several machines) and are removed once the concatenated table exists.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from dagster import (
    AssetsDefinition,
    ConfigurableIOManagerFactory,
    In,
    InputContext,
    MetadataValue,
    OpExecutionContext,
    Out,
    OutputContext,
    ResourceParam,
    UPathIOManager,
    graph_asset,
    op,
)
from pydantic import Field
from upath import UPath

from tac_pipeline.common.atomic import write_parquet_atomically
from tac_pipeline.common.tables import read_parquet
from tac_pipeline.defs.assets.embeddings import (
    TAC_PART_KEY,
    EmbeddedPart,
    assemble_image_table,
    byo_table,
    embed_part,
    previous_embeddings,
    record_drop_state,
    resize_label,
)
from tac_pipeline.defs.assets.lineage import lineage_metadata, stamp
from tac_pipeline.defs.assets.run_settings import pinned_dataset_settings
from tac_pipeline.defs.io_managers import remove_tree
from tac_pipeline.defs.names import embedding_code_version
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline.defs.resources.compute import ComputeDeviceResource, gpu_step_tags
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.defs.resources.encoder import ClipEncoderResource
from tac_pipeline.drops.manifest import drop_manifest
from tac_pipeline.encoders.images import DropListing, ImageRecord
from tac_pipeline.store.layout import intermediate_dir, skipped_files_report

SHARD_IO_MANAGER = "shard_io_manager"
#: Schema-metadata key of a :class:`ShardPlan` stored as Parquet.
TAC_PLAN_KEY = "tac/shard_plan"


@dataclass
class ShardPlan:
    """One drop listing and the contiguous ``[start, stop)`` slice of it that each shard embeds."""

    drop: Path
    listing: DropListing | None  # None: the drop brings its own embeddings.parquet
    slices: list[tuple[int, int]]
    drop_digest: str | None
    resize: int | None = None  # the drop's short side before the crop (None: the model's own)

    def to_table(self) -> pa.Table:
        """The listing as Arrow rows (paths as raw bytes: any file name survives) plus a JSON summary."""
        records = self.listing.records if self.listing is not None else []
        table = pa.table(
            {
                "image_id": pa.array([r.image_id for r in records], type=pa.string()),
                "path": pa.array([os.fsencode(r.path) for r in records], type=pa.binary()),
                "label": pa.array([r.label for r in records], type=pa.string()),
                "split": pa.array([r.split for r in records], type=pa.string()),
            }
        )
        summary = {
            "drop": os.fsencode(self.drop).hex(),
            "slices": self.slices,
            "drop_digest": self.drop_digest,
            "resize": self.resize,
            "listing": None
            if self.listing is None
            else {
                "root": os.fsencode(self.listing.root).hex(),
                "has_labels": self.listing.has_labels,
                "has_splits": self.listing.has_splits,
                "label_names": self.listing.label_names,
                "layout": self.listing.layout,
                "split_names": self.listing.split_names,
                "skipped": self.listing.skipped,
                "notes": self.listing.notes,
            },
        }
        return table.replace_schema_metadata({TAC_PLAN_KEY: json.dumps(summary)})

    @classmethod
    def from_table(cls, table: pa.Table) -> "ShardPlan":
        summary = json.loads(table.schema.metadata[TAC_PLAN_KEY.encode()])
        drop = Path(os.fsdecode(bytes.fromhex(summary["drop"])))
        listing = None
        if summary["listing"] is not None:
            records = [
                ImageRecord(image_id=i, path=Path(os.fsdecode(p)), label=label, split=split)
                for i, p, label, split in zip(
                    table["image_id"].to_pylist(),
                    table["path"].to_pylist(),
                    table["label"].to_pylist(),
                    table["split"].to_pylist(),
                    strict=True,
                )
            ]
            attributes = summary["listing"]
            attributes["skipped"] = [tuple(item) for item in attributes["skipped"]]
            root = Path(os.fsdecode(bytes.fromhex(attributes.pop("root"))))
            listing = DropListing(root=root, records=records, **attributes)
        slices = [tuple(pair) for pair in summary["slices"]]
        return cls(
            drop=drop,
            listing=listing,
            slices=slices,
            drop_digest=summary["drop_digest"],
            resize=summary.get("resize"),
        )


_HANDOFF_TYPES = {TAC_PLAN_KEY: ShardPlan, TAC_PART_KEY: EmbeddedPart}


class ShardHandoffIOManager(UPathIOManager):
    """Plans and embedded parts as Parquet files (never pickles), one per step output of a run, under
    ``<base>/<run id>/``; :meth:`remove_run` deletes a run's hand-offs (local disk or any fsspec store)."""

    extension = ".parquet"

    def run_dir(self, run_id: str) -> UPath:
        return self._base_path / run_id

    def remove_run(self, run_id: str) -> None:
        """Delete every hand-off this IO manager wrote for ``run_id``."""
        remove_tree(self.run_dir(run_id))

    def dump_to_path(self, context: OutputContext, obj, path: UPath) -> None:
        write_parquet_atomically(obj.to_table(), path)

    def load_from_path(self, context: InputContext, path: UPath):
        if not path.exists():
            raise FileNotFoundError(
                f"{path} does not exist: re-execute the run's plan_image_shards step first"
            )
        with path.open("rb") as handle:
            table = read_parquet(handle)
        kinds = [key for key in _HANDOFF_TYPES if key.encode() in (table.schema.metadata or {})]
        if len(kinds) != 1:
            raise ValueError(f"{path} is not a shard plan or an embedded part written by this pipeline")
        return _HANDOFF_TYPES[kinds[0]].from_table(table)


class ShardIOManager(ConfigurableIOManagerFactory):
    """Hand-offs between the shard steps: ``<base_dir>/<run id>/<step>/<output>.parquet``."""

    base_dir: str = Field(
        description="Folder (or fsspec URL) for per-run hand-offs, on storage every worker sees."
    )

    def create_io_manager(self, context) -> ShardHandoffIOManager:
        return ShardHandoffIOManager(base_path=UPath(self.base_dir))


def shard_io_manager(data_dir: str | Path | None = None) -> ShardIOManager:
    """Where the shard steps hand their results over: ``<store>/intermediate/<run id>/<step>/<output>.parquet``."""
    return ShardIOManager(base_dir=str(intermediate_dir(data_dir)))


def shard_slices(n_images: int, n_shards: int) -> list[tuple[int, int]]:
    """``n_shards`` contiguous slices covering ``range(n_images)``, sizes differing by at most one."""
    bounds = np.linspace(0, n_images, n_shards + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def _shards_markdown(parts: list[EmbeddedPart]) -> str:
    lines = [
        "| shard | images | encoded | reused | worker | seconds | images/s |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| {i} | {len(p.positions)} | {p.encoded} | {p.reused} | `{p.worker}` | {p.seconds:.2f} "
        f"| {p.images_per_second:.0f} |"
        for i, p in enumerate(parts)
    ]
    return "\n".join(lines)


def build_sharded_image_embeddings(encoder_identity: str, n_shards: int) -> AssetsDefinition:
    """``image_embeddings`` as a graph of ``n_shards`` embedding steps (see the module docstring)."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, not {n_shards}")
    version = embedding_code_version(encoder_identity)

    @op(out=Out(io_manager_key=SHARD_IO_MANAGER), description="List the drop once and cut it into shards.")
    def plan_image_shards(context: OpExecutionContext, tac_data: TacDataResource) -> ShardPlan:
        drop = tac_data.drop_dir(context.partition_key)
        if byo_table(drop) is not None:
            return ShardPlan(drop=drop, listing=None, slices=[(0, 0)] * n_shards, drop_digest=None)
        settings = pinned_dataset_settings(context, tac_data)  # this run's dataset.toml, read once
        listing = tac_data.list_images(context.partition_key, settings, log=context.log)
        slices = shard_slices(len(listing.records), n_shards)
        context.log.info(
            f"{len(listing.records)} images in {n_shards} shards of {slices[0][1] - slices[0][0]}"
        )
        return ShardPlan(
            drop=drop,
            listing=listing,
            slices=slices,
            drop_digest=drop_manifest(drop, tac_data.roots).digest,
            resize=settings.resize,
        )

    def shard_op(index: int):
        @op(
            name=f"embed_image_shard_{index}",
            tags=gpu_step_tags(),
            out=Out(io_manager_key=SHARD_IO_MANAGER),
            description=f"Embed slice {index} of the drop listing (reusing unchanged files' rows).",
        )
        def embed_image_shard(
            context: OpExecutionContext,
            plan: ShardPlan,
            clip_encoder: ClipEncoderResource,
            compute_device: ComputeDeviceResource,
            tac_data: TacDataResource,
        ) -> EmbeddedPart:
            start, stop = plan.slices[index]
            records = plan.listing.records if plan.listing is not None else []
            if records:
                clip_encoder.require_identity(encoder_identity, "image_embeddings")
            previous = None
            if stop > start:
                previous = previous_embeddings(context, encoder_identity, plan.resize, "image_embeddings")
            part = embed_part(
                records,
                range(start, stop),
                previous,
                clip_encoder=clip_encoder,
                compute_device=compute_device,
                log=context.log,
                resize=plan.resize,
                max_file_bytes=tac_data.max_image_bytes,
            )
            context.add_output_metadata(
                {
                    "images": len(part.positions),
                    "encoded": part.encoded,
                    "reused": part.reused,
                    "worker": part.worker,
                }
            )
            return part

        return embed_image_shard

    shard_ops = [shard_op(i) for i in range(n_shards)]

    @op(
        ins={"plan": In(ShardPlan), "parts": In(list)},
        description="Concatenate the shards, in drop-listing order, into the image_embeddings table.",
    )
    def concat_image_shards(
        context: OpExecutionContext,
        tac_data: TacDataResource,
        clip_encoder: ClipEncoderResource,
        shard_io_manager: ResourceParam[ShardHandoffIOManager],
        plan,
        parts,
    ) -> pa.Table:
        own = byo_table(plan.drop)
        if own is not None:
            table = own.table
            metadata = {**own.metadata, **record_drop_state(context, tac_data, plan.drop, table, own=own)}
        else:
            previous = previous_embeddings(context, encoder_identity, plan.resize, "image_embeddings")
            report = skipped_files_report(context.partition_key, tac_data.root)
            table, metadata = assemble_image_table(
                plan.drop, plan.listing, parts, previous, report, context.log
            )
            metadata = {
                **metadata,
                "model": clip_encoder.identity(),
                "preprocess": resize_label(plan.resize),
                **record_drop_state(context, tac_data, plan.drop, table, digest=plan.drop_digest),
                "shards": MetadataValue.md(_shards_markdown(parts)),
                "shard_workers": MetadataValue.json([p.worker for p in parts]),
            }
        table = stamp(table, {})  # the root of the dataset's lineage, as in the unsharded asset
        context.add_output_metadata({**metadata, **lineage_metadata(table)})
        # The table is complete in memory; the run's hand-offs (a copy of every embedding) can go, removed
        # by the IO manager that wrote them (wherever it keeps them).
        shard_io_manager.remove_run(context.run_id)
        return table

    @graph_asset(
        name="image_embeddings",
        partitions_def=datasets_partitions,
        group_name="embeddings",
        code_version=version,
        description=(
            f"CLIP image embeddings of a drop (or its embeddings.parquet), L2-normalised, one row per image; "
            f"computed in {n_shards} shards."
        ),
    )
    def image_embeddings():
        plan = plan_image_shards()
        return concat_image_shards(plan, [embed(plan) for embed in shard_ops])

    return image_embeddings
