"""The drops sensor and the nightly re-clustering schedule.

Both request runs explicitly (``RunRequest`` per partition) rather than through declarative automation: the
trigger is a folder on disk that Dagster cannot observe by itself, the decision ("did this drop change?")
needs the manifest digest, and explicit run keys make every request traceable in the UI.

Each dataset run is a fit or an assign, as the refit policy decides (:mod:`tac_pipeline.drops.refit`): its
request selects the whole graph or :data:`~tac_pipeline.defs.names.ASSIGN_ASSETS`, and carries the decision and
its reason as tags (``tac/run_kind``, ``tac/refit_reason``); the run key names the kind.

- The **sensor** reacts within its interval: a new folder adds its partition and requests a run; a known
  drop whose manifest digest differs from the one in the sensor's cursor requests a run for that partition
  only; an unchanged drop never triggers; a drop still being copied (a file or folder modified within the
  settle interval) waits for a later tick. A drop none of whose folders changed since the last tick is not
  walked again (:func:`tac_pipeline.drops.manifest.watched_drop_manifest`: files rewritten in place are
  left to the schedule).
- The **schedule** (nightly by default) re-clusters every partition whose drop differs from the digest its
  last ``image_embeddings`` materialization recorded, and nothing else — a safety net for operators who keep
  the sensor off, or for drops changed while it was.

A drop that takes the shared noun embeddings (no ``nouns.parquet`` of its own) needs them made by the
configured encoder: while they are missing or stale, both request the noun run and leave those drops for a
later tick (:func:`~tac_pipeline.store.records.waiting_for_shared_nouns`); drops with their own nouns run at
once.

Both target :data:`tac_pipeline.defs.jobs.drops_job` and read the data root from the ``tac_data`` resource; the
encoder they compare against is the one the loaded definitions give the noun embeddings (their code version).
No asset module is imported here.
"""

from __future__ import annotations

import json

from dagster import (
    AssetKey,
    DagsterInstance,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    schedule,
    sensor,
)

from tac_pipeline.config import DEFAULT_CRON
from tac_pipeline.defs.jobs import drops_job
from tac_pipeline.defs.names import (
    ASSIGN_ASSETS,
    DATASET_ASSET_KEYS,
    FIT,
    IMAGE_ASSET_KEY,
    NOUN_ASSET_KEY,
    REFIT_REASON_TAG,
    RUN_KIND_TAG,
)
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline.defs.resources.data import TacDataResource
from tac_pipeline.drops.listing import discover_dataset_keys
from tac_pipeline.drops.manifest import drop_manifest, watched_drop_manifest
from tac_pipeline.drops.nouns import waiting_for_shared_nouns
from tac_pipeline.drops.refit import RefitDecision, plan_dataset_run
from tac_pipeline.store.layout import drops_dir, drops_sensor_state
from tac_pipeline.store.records import latest_materialization

NOUN_ASSET = NOUN_ASSET_KEY
IMAGE_ASSET = IMAGE_ASSET_KEY
DATASET_ASSETS = list(DATASET_ASSET_KEYS)
ASSIGN_KEYS = [AssetKey(name) for name in ASSIGN_ASSETS]

#: A drop whose newest file or folder is younger than this is still being copied.
DEFAULT_SETTLE_SECONDS = 60.0


def _dataset_run_request(
    key: str,
    digest: str,
    trigger: str,
    decision: RefitDecision,
    stamp: str | None = None,
    assign_config: dict | None = None,
) -> RunRequest:
    """A fit or an assign (as the refit policy decided) for one drop state; the run key dedupes it (per
    ``stamp`` when given). An assign runs with ``assign_config``."""
    fit = decision.kind == FIT
    return RunRequest(
        partition_key=key,
        run_config=None if fit else assign_config,
        run_key=f"{key}:{digest[:16]}:{decision.kind}" + (f":{stamp}" if stamp else ""),
        asset_selection=DATASET_ASSETS if fit else ASSIGN_KEYS,
        tags={
            "tac/trigger": trigger,
            "tac/drop_digest": digest,
            RUN_KIND_TAG: decision.kind,
            REFIT_REASON_TAG: decision.reason,
        },
    )


def _decide(context, tac_data: TacDataResource, key: str) -> RefitDecision:
    """The refit policy's choice for the dataset's next run (:mod:`tac_pipeline.drops.refit`)."""
    decision = plan_dataset_run(
        context.instance,
        key,
        drops_dir(tac_data.root) / key,
        image_code_version=loaded_code_version(context, IMAGE_ASSET),
        data_dir=tac_data.root,
        roots=tac_data.roots,
    )
    context.log.info(f"{key}: {decision.reason}")
    return decision


def recorded_drop_digest(instance: DagsterInstance, dataset: str) -> str | None:
    """The drop digest that the partition's last ``image_embeddings`` materialization recorded."""
    latest = latest_materialization(instance, IMAGE_ASSET, dataset)
    return latest.value("drop_digest") if latest is not None else None


def _noun_request(noun_code_version: str) -> RunRequest:
    return RunRequest(
        run_key=f"nouns:{noun_code_version}", asset_selection=[NOUN_ASSET], tags={"tac/trigger": "nouns"}
    )


def loaded_code_version(context: SensorEvaluationContext | ScheduleEvaluationContext, asset) -> str:
    """The code version the loaded definitions give an embedding asset (i.e. their encoder)."""
    repository = context.repository_def
    if repository is None:
        raise RuntimeError(
            "the drops automation needs the loaded definitions to know the embeddings' code version: "
            "evaluate it with repository_def= (or definitions=) in its context"
        )
    return repository.asset_graph.get(asset).code_version or ""


def loaded_noun_code_version(context: SensorEvaluationContext | ScheduleEvaluationContext) -> str:
    """The code version the loaded definitions give ``wordnet_noun_embeddings`` (i.e. their encoder)."""
    return loaded_code_version(context, NOUN_ASSET)


def build_drops_sensor(
    *,
    assign_config: dict | None = None,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    minimum_interval_seconds: int = 30,
    default_status: DefaultSensorStatus = DefaultSensorStatus.STOPPED,
):
    """A sensor over ``<data root>/drops/`` (see the module docstring); the root is ``tac_data``'s. Assign runs
    take ``assign_config`` as their run config (:func:`~tac_pipeline.defs.executors.local.assign_run_config`)."""

    @sensor(
        name="drops_sensor",
        minimum_interval_seconds=minimum_interval_seconds,
        default_status=default_status,
        description="Registers new drop folders as partitions and re-clusters drops whose files changed.",
        job=drops_job,
    )
    def drops_sensor(context: SensorEvaluationContext, tac_data: TacDataResource):
        data_dir = tac_data.root
        keys, rejected = discover_dataset_keys(data_dir)
        for name in rejected:
            context.log.warning(f"ignoring drop folder {name!r}: not a valid dataset name")
        known = set(context.instance.get_dynamic_partitions(datasets_partitions.name))
        new_keys = [k for k in keys if k not in known]
        partition_requests = [datasets_partitions.build_add_request(new_keys)] if new_keys else []
        cursor = json.loads(context.cursor) if context.cursor else {}
        if not keys:
            return SensorResult(skip_reason=SkipReason(f"no drop folders in {drops_dir(data_dir)}"))
        changed, waiting = {}, []
        for key in keys:
            # Only a drop whose folders changed (or that was still settling) is walked file by file.
            state = drops_sensor_state(key, data_dir)
            manifest = watched_drop_manifest(
                drops_dir(data_dir) / key, state, settle_seconds, roots=tac_data.roots
            )
            if manifest.settling(settle_seconds):
                waiting.append(key)
            elif cursor.get(key) != manifest.digest:
                changed[key] = manifest.digest
        # Drops that take the shared nouns wait (cursor untouched) while those are requested.
        noun_code_version = loaded_noun_code_version(context)
        blocked = waiting_for_shared_nouns(
            context.instance, noun_code_version, {key: drops_dir(data_dir) / key for key in changed}
        )
        requests = [_noun_request(noun_code_version)] if blocked else []
        for key, digest in changed.items():
            if key not in blocked:
                decision = _decide(context, tac_data, key)
                requests.append(
                    _dataset_run_request(key, digest, "drops_sensor", decision, assign_config=assign_config)
                )
                cursor[key] = digest
        for gone in set(cursor) - set(keys):
            del cursor[gone]  # a removed drop's stored results stay; a re-created one runs again
        if waiting:
            context.log.info(f"still being copied, waiting: {', '.join(waiting)}")
        return SensorResult(
            run_requests=requests,
            dynamic_partitions_requests=partition_requests,
            cursor=json.dumps(cursor, sort_keys=True),
            skip_reason=None if requests or partition_requests else SkipReason("no drop changed"),
        )

    return drops_sensor


def build_recluster_schedule(
    *,
    assign_config: dict | None = None,
    cron_schedule: str | None = None,
    settle_seconds: float = DEFAULT_SETTLE_SECONDS,
    default_status: DefaultScheduleStatus = DefaultScheduleStatus.STOPPED,
):
    """The re-clustering schedule; ``cron_schedule`` defaults to 02:00 nightly (the definitions pass
    ``$TAC_RECLUSTER_CRON``, :attr:`tac_pipeline.config.TacConfig.recluster_cron`); assign runs take
    ``assign_config``."""

    @schedule(
        name="recluster_changed_drops",
        cron_schedule=cron_schedule or DEFAULT_CRON,
        job=drops_job,
        default_status=default_status,
        description="Re-clusters every dataset whose drop changed since its last materialization.",
    )
    def recluster_changed_drops(context: ScheduleEvaluationContext, tac_data: TacDataResource):
        keys, _ = discover_dataset_keys(tac_data.root)
        known = set(context.instance.get_dynamic_partitions(datasets_partitions.name))
        keys = [k for k in keys if k in known]  # registering folders is the sensor's (or make cluster's) job
        stamp = context.scheduled_execution_time.isoformat() if context.scheduled_execution_time else "now"
        changed = {}
        for key in keys:
            manifest = drop_manifest(drops_dir(tac_data.root) / key, tac_data.roots)
            if not (
                manifest.settling(settle_seconds)
                or recorded_drop_digest(context.instance, key) == manifest.digest
            ):
                changed[key] = manifest.digest
        noun_code_version = loaded_noun_code_version(context)
        blocked = waiting_for_shared_nouns(
            context.instance, noun_code_version, {key: drops_dir(tac_data.root) / key for key in changed}
        )
        requests = [_noun_request(noun_code_version)] if blocked else []
        requests += [
            _dataset_run_request(
                key, digest, "recluster_schedule", _decide(context, tac_data, key), stamp, assign_config
            )
            for key, digest in changed.items()
            if key not in blocked
        ]
        return requests or SkipReason("no drop changed since its last materialization")

    return recluster_changed_drops
