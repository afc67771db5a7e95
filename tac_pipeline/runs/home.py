"""The Dagster instance's home: ``$DAGSTER_HOME`` with the project's ``dagster.yaml``, opened once per command.

The shipped settings (:data:`INSTANCE_CONFIG`) give the run queue a limit of one run per value of the
``dagster/partition`` tag (one run per dataset at a time) and turn on run monitoring through
:class:`~tac_pipeline.runs.dead.LocalRunLauncher`.
"""

from __future__ import annotations

import fcntl
import sys
from collections.abc import Callable
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus

from tac_pipeline.common.atomic import atomic_write
from tac_pipeline.config import dagster_home_from_env, use_dagster_home
from tac_pipeline.store.layout import locks_dir

#: The tag Dagster gives every run of one partition; the run queue's per-dataset limit is on it.
PARTITION_TAG = "dagster/partition"


#: The statuses the run queue counts as holding a slot (Dagster's ``ACTIVE_RUN_STATUSES``).
ACTIVE_STATUSES = (DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING)


#: The instance settings shipped with the project (run queue limit, run monitoring, this launcher).
INSTANCE_CONFIG = Path(__file__).resolve().parent.parent / "dagster.yaml"


Say = Callable[[str], None]


def say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def dagster_home() -> Path:
    """``$DAGSTER_HOME`` (default ``./.dagster_home``, then exported), created, holding a ``dagster.yaml``:
    the shipped :data:`INSTANCE_CONFIG` when it had none (one already there is never replaced)."""
    home = dagster_home_from_env()
    home.mkdir(parents=True, exist_ok=True)
    use_dagster_home(home)
    target = home / "dagster.yaml"
    if not target.exists():
        shipped = INSTANCE_CONFIG.read_bytes()
        atomic_write(target, lambda handle: handle.write(shipped))
    return home


def open_instance() -> DagsterInstance:
    """The instance at :func:`dagster_home`, its storage created while holding ``locks/instance.lock``.

    Two commands started at once on a fresh home would otherwise both create the SQLite tables, and each
    stamps its own schema revision: the instance then refuses to open ("more than one head present")
    until its ``history``, ``schedules`` and ``storage`` folders are deleted.
    """
    with open(locks_dir(dagster_home()) / "instance.lock", "a", encoding="utf-8") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes (or the process ends)
        return DagsterInstance.get()


def missing_partition_limit(instance: DagsterInstance) -> str | None:
    """Why the instance's run queue does not keep runs of one dataset apart, or None when it does."""
    queue = instance.get_concurrency_config().run_queue_config
    for limit in (queue.tag_concurrency_limits if queue else None) or []:
        per_value = limit.get("value") == {"applyLimitPerUniqueValue": True}
        if limit.get("key") == PARTITION_TAG and per_value and limit.get("limit") == 1:
            return None
    return (
        f"{Path(instance.root_directory) / 'dagster.yaml'} sets no run limit of 1 per dataset, so runs of one "
        "dataset started from the UI, the sensor or the schedule may interleave: copy the 'concurrency' "
        f"section of {INSTANCE_CONFIG} into it"
    )
