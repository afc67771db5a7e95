"""Which kind of dataset run a step belongs to: a **fit** or an **assign** (docs/AUTOMATION.md).

A fit computes the whole graph. An assign materializes :data:`~tac_pipeline.defs.names.ASSIGN_ASSETS` only:
new images are embedded, retrieved from the fitted text space and labelled by the fitted heads and centres;
the fitted model (:data:`~tac_pipeline.defs.names.FIT_ASSETS`) is read from the store, never recomputed.

The kind is the run's ``tac/run_kind`` tag when the refit policy launched it (``make cluster``, the sensor,
the schedule); otherwise the run's selection decides: a run that materializes any fitted asset is a fit, one
that materializes none of them (the ``assign_new_images`` job, or ``cluster_labels`` alone from the UI) is an
assign.
"""

from __future__ import annotations

from dagster import AssetKey, DagsterError

from tac_pipeline.defs.names import ASSIGN, FIT, FIT_ASSETS, IMAGE_ASSET, REFIT_REASON_TAG, RUN_KIND_TAG

_FITTED_KEYS = frozenset(AssetKey(name) for name in FIT_ASSETS)


def run_kind(context) -> str:
    """``"fit"`` or ``"assign"`` for the run of ``context`` (a step invoked outside a run is a fit)."""
    try:
        run = context.run
    except (DagsterError, AttributeError):
        return FIT
    tagged = (run.tags or {}).get(RUN_KIND_TAG)
    if tagged in (FIT, ASSIGN):
        return tagged
    # What the run materializes: its asset selection, or (a whole job, an in-process materialize) its job's.
    selection = run.asset_selection or context.job_def.asset_layer.selected_asset_keys
    return FIT if not selection or selection & _FITTED_KEYS else ASSIGN


def run_reason(context) -> str:
    """Why this run is a fit or an assign: the policy's reason, or how the run was launched."""
    try:
        tags = context.run.tags or {}
    except (DagsterError, AttributeError):
        return "materialized directly"
    if REFIT_REASON_TAG in tags:
        return tags[REFIT_REASON_TAG]
    kind = run_kind(context)
    return (
        "a fit was requested (the run selects the fitted assets)"
        if kind == FIT
        else ("an assign was requested (the run selects none of the fitted assets)")
    )


class RefitNeededError(RuntimeError):
    """An assign was launched by hand while the refit policy asks for a fit."""


def check_assign_allowed(context, tac_data) -> None:
    """In an assign launched without the policy's decision (the ``assign_new_images`` job from the UI), ask
    the policy now and refuse, before anything is assigned, when it asks for a fit."""
    from tac_pipeline.drops.refit import plan_dataset_run
    from tac_pipeline.store.records import latest_materialization

    if RUN_KIND_TAG in (context.run.tags or {}):
        return  # make cluster, the sensor or the schedule asked the policy already
    key = context.partition_key
    images = latest_materialization(context.instance, IMAGE_ASSET, key)
    decision = plan_dataset_run(
        context.instance,
        key,
        tac_data.drop_dir(key),
        image_code_version=(images.code_version if images is not None else None) or "",
        data_dir=tac_data.root,
        roots=tac_data.roots,
    )
    context.log.info(f"refit policy: {decision.reason}")
    if decision.kind == FIT:
        raise RefitNeededError(
            f"the refit policy asks for a fit of '{key}', not an assign: {decision.reason.removeprefix('refitted: ')}. "
            f"Nothing was assigned. Launch the cluster_dataset job for '{key}' (or make cluster DATASET={key}), "
            'or set refit = "never" in its dataset.toml to assign anyway.'
        )
