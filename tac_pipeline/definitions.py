"""Everything Dagster loads for this project, composed from one configuration (:class:`~tac_pipeline.config.TacConfig`).

The Dagster objects live in :mod:`tac_pipeline.defs`, one kind per module; this module only puts them together.
``dagster dev -w workspace.yaml``, ``dg dev``, ``dg check defs`` and the forkserver all load :data:`defs`.
"""

from __future__ import annotations

import os

from dagster import Definitions

from tac_pipeline.config import Deployment, TacConfig
from tac_pipeline.defs.assets import build_assets
from tac_pipeline.defs.automation import build_drops_sensor, build_recluster_schedule
from tac_pipeline.defs.checks import build_asset_checks
from tac_pipeline.defs.executors.local import assign_run_config, gpu_aware_executor
from tac_pipeline.defs.io_managers import ParquetIOManager
from tac_pipeline.defs.jobs import JOBS
from tac_pipeline.defs.resources.compute import ComputeDeviceResource
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.defs.resources.encoder import ClipEncoderResource, encoder_resource
from tac_pipeline.store.layout import data_root, store_dir


def build_definitions(
    config: TacConfig | None = None,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    encoder: ClipEncoderResource | None = None,
    device: str | None = None,
    deployment: Deployment | None = None,
    noun_vocabulary: str | None = None,
) -> Definitions:
    """The project's Definitions for ``config`` (default: :meth:`TacConfig.from_env`).

    The keyword arguments replace one part of the configuration (tests and embedding applications use them).
    """
    config = config or TacConfig.from_env()
    data_dir = data_root(config.data_dir if data_dir is None else data_dir)
    encoder = encoder or encoder_resource(config.encoder)
    deployment = deployment or config.deployment
    assets = build_assets(
        encoder.identity(),
        embed_shards=deployment.embed_shards,
        noun_vocabulary=noun_vocabulary or config.noun_vocabulary,
    )
    resources = {
        "io_manager": ParquetIOManager(base_dir=str(store_dir(data_dir))),
        "tac_data": TacDataResource(
            data_dir=str(data_dir),
            wordnet_dir=str(config.wordnet_dir) if config.wordnet_dir else None,
            nltk_data=[str(d) for d in config.nltk_data],
            max_image_mb=config.max_image_mb,
            image_roots=[str(r) for r in config.image_roots],
            max_drop_files=config.max_drop_files,
        ),
        "clip_encoder": encoder,
        "compute_device": ComputeDeviceResource(device=device or config.device),
    }
    if deployment.sharded:
        from tac_pipeline.defs.assets.sharded import SHARD_IO_MANAGER, shard_io_manager

        resources[SHARD_IO_MANAGER] = shard_io_manager(data_dir)
    if deployment.executor == "dask":
        from tac_pipeline.defs.executors.dask_cluster import dask_executor_for

        executor = dask_executor_for(deployment)
    else:
        executor = gpu_aware_executor(mode="in_process" if deployment.executor == "in_process" else None)
    assign_config = assign_run_config(deployment.executor)
    return Definitions(
        assets=assets,
        asset_checks=build_asset_checks(assets),
        sensors=[build_drops_sensor(assign_config=assign_config)],
        schedules=[
            build_recluster_schedule(assign_config=assign_config, cron_schedule=config.recluster_cron)
        ],
        jobs=list(JOBS),
        resources=resources,
        executor=executor,
    )


defs = build_definitions()
