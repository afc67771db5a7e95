"""Everything Dagster loads for this project, composed in one place."""

from __future__ import annotations

import os

from dagster import Definitions, define_asset_job, multiprocess_executor

from tac_pipeline.assets import build_assets
from tac_pipeline.assets.checks import build_asset_checks
from tac_pipeline.assets.embeddings import embedding_code_version
from tac_pipeline.automation.sensors import build_drops_sensor, build_recluster_schedule
from tac_pipeline.paths import data_root, store_dir
from tac_pipeline.resources.compute import (
    GPU_TAG,
    ClipEncoderResource,
    ComputeDeviceResource,
    encoder_from_env,
    visible_gpu_count,
)
from tac_pipeline.resources.data import TacDataResource
from tac_pipeline.resources.io_manager import ParquetIOManager


def gpu_aware_executor(n_gpus: int | None = None):
    """Steps in separate processes; at most one ``tac/gpu`` step per visible GPU (one at a time on CPU)."""
    n_gpus = visible_gpu_count() if n_gpus is None else n_gpus
    return multiprocess_executor.configured(
        {"tag_concurrency_limits": [{"key": GPU_TAG, "value": "true", "limit": max(1, n_gpus)}]},
        name="gpu_aware_executor",
    )


def build_definitions(
    data_dir: str | os.PathLike[str] | None = None,
    encoder: ClipEncoderResource | None = None,
    device: str | None = None,
) -> Definitions:
    """The project's Definitions for a data root and encoder (defaults: ``$TAC_DATA_DIR``, ``$TAC_CLIP_*``)."""
    encoder = encoder or encoder_from_env()
    assets = build_assets(encoder.identity())
    noun_version = embedding_code_version(encoder.identity())
    return Definitions(
        assets=assets,
        asset_checks=build_asset_checks(),
        sensors=[build_drops_sensor(data_dir, noun_version)],
        schedules=[build_recluster_schedule(data_dir, noun_version)],
        jobs=[
            define_asset_job(
                "cluster_dataset",
                selection=[a.key for a in assets if a.partitions_def is not None],
                description="Cluster one dataset partition (its noun embeddings must exist).",
            )
        ],
        resources={
            "io_manager": ParquetIOManager(base_dir=str(store_dir(data_dir))),
            "tac_data": TacDataResource(data_dir=str(data_root(data_dir))),
            "clip_encoder": encoder,
            "compute_device": ComputeDeviceResource(device=device or os.environ.get("TAC_DEVICE", "auto")),
        },
        executor=gpu_aware_executor(),
    )


defs = build_definitions()
