"""Settings resolved once per run, and recorded where the UI shows them.

Dagster runs every step in a process of its own, and ``dataset.toml`` may be edited while a run is under way.
The first step of a run that needs a dataset's settings reads ``dataset.toml`` once, checks every TAC setting
in the run's config against its range (so a bad value fails the run before anything is computed), and pins
what it read in ``<store>/run_settings/<dataset>/<run id>.json``. The file is created exclusively: of steps
racing for it one wins, and every step reads the winner's file. Later steps of the run read that file, never
``dataset.toml``, so K, the seed and the overrides cannot change halfway through a run; the next run reads
``dataset.toml`` afresh.

Each step then applies the precedence, run config > ``dataset.toml`` > ``TacParams``'s defaults, to the
settings it uses, and records them with their source in its materialization's ``settings`` metadata.
"""

from __future__ import annotations

import json
import time
from typing import Any

from dagster import AssetExecutionContext, Config, DagsterError, DagsterInstance, OpExecutionContext

from tac_pipeline.common.atomic import atomic_create
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.drops.settings import DatasetSettings, ResolvedParams, resolve_params, run_config_overrides
from tac_pipeline.store.layout import run_settings_dir, run_settings_path

#: A pinned file whose run this instance does not know (another instance's) is removed after this long.
FORGET_UNKNOWN_RUNS_AFTER_S = 30 * 24 * 3600


def pinned_dataset_settings(
    context: AssetExecutionContext | OpExecutionContext, tac_data: TacDataResource
) -> DatasetSettings:
    """The partition's ``dataset.toml`` as this run first read it (read and pinned now by the first step)."""
    key = context.partition_key
    try:
        run = context.run
    except DagsterError:  # invoked directly, outside a run (unit tests): nothing to pin
        return tac_data.settings(key)
    path = run_settings_path(key, run.run_id, tac_data.root)
    if not path.exists():
        settings = tac_data.settings(key)
        check_run_config(run.run_config)
        record = {
            "dataset": key,
            "run_id": run.run_id,
            "read_from": str(tac_data.drop_dir(key) / "dataset.toml"),
            "settings": settings.model_dump(mode="json", exclude_unset=True),
        }
        if atomic_create(path, lambda handle: handle.write(json.dumps(record, indent=2).encode())):
            context.log.info(f"settings of '{key}' pinned for this run in {path}: {record['settings']}")
            _forget_finished_runs(context.instance, key, tac_data, keep=run.run_id)
    pinned = json.loads(path.read_text(encoding="utf-8"))
    return DatasetSettings.model_validate(pinned["settings"])


def check_run_config(run_config: dict[str, Any]) -> None:
    """Range-check the TAC settings of every asset in a run's config (``RunConfigError`` names the field)."""
    for op_name, entry in (run_config.get("ops") or {}).items():
        run_config_overrides((entry or {}).get("config") or {}, f"ops.{op_name}.config")


def step_params(
    context: AssetExecutionContext, settings: DatasetSettings, config: Config | None
) -> ResolvedParams:
    """This step's TAC settings: its run config over the pinned ``dataset.toml`` over the defaults."""
    where = f"ops.{context.asset_key.to_user_string()}.config"
    overrides = run_config_overrides(config.model_dump() if config is not None else {}, where)
    return resolve_params(settings, overrides)


def _forget_finished_runs(instance: DagsterInstance, key: str, tac_data: TacDataResource, keep: str) -> None:
    """Remove the pinned settings of the dataset's finished runs (and of unknown runs a month old)."""
    for path in run_settings_dir(key, tac_data.root).glob("*.json"):
        if path.stem == keep:
            continue
        run = instance.get_run_by_id(path.stem)
        try:
            age = time.time() - path.stat().st_mtime
        except OSError:  # removed meanwhile by another run's clean-up
            continue
        if run.is_finished if run is not None else age > FORGET_UNKNOWN_RUNS_AFTER_S:
            path.unlink(missing_ok=True)
