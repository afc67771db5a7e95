"""The jobs and asset keys are defined once, and the automation neither imports an asset module nor torch.

The static check follows every ``import`` of the package (lazy ones inside functions included), so an import
that would close a cycle between the automation and the assets fails here by name, before it can slow every
sensor tick down or deadlock an import.
"""

from __future__ import annotations

import json
import subprocess
import sys

from tac_pipeline.defs.jobs import JOBS, cluster_dataset_job, drops_job
from tac_pipeline.defs.names import ASSET_NAMES, DATASET_ASSETS, NOUN_ASSET
from tac_pipeline_tests.test_architecture import package_imports, reachable


def test_automation_and_jobs_reach_no_asset_module_statically():
    graph = package_imports()
    roots = [m for m in graph if m.startswith("tac_pipeline.defs.automation")] + ["tac_pipeline.defs.jobs"]
    assert len(roots) > 1
    for root in roots:
        assets = sorted(m for m in reachable(graph, root) if m.startswith("tac_pipeline.defs.assets"))
        assert not assets, f"{root} imports {assets} (directly or through other modules)"


def test_no_import_cycle_between_automation_and_assets():
    graph = package_imports()
    for module in (m for m in graph if m.startswith("tac_pipeline.defs.assets")):
        assert module not in reachable(graph, "tac_pipeline.defs.automation"), module
    for module in (m for m in graph if m.startswith("tac_pipeline.defs.automation")):
        assert module not in reachable(graph, "tac_pipeline.defs.assets"), module


def test_importing_the_automation_loads_no_asset_module_and_no_torch():
    code = (
        "import json, sys\n"
        "import tac_pipeline.defs.automation, tac_pipeline.defs.jobs\n"
        "print(json.dumps(sorted(m for m in sys.modules if m == 'torch' or m.startswith('tac_pipeline.defs.assets'))))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []


def test_the_jobs_name_the_assets_the_graph_defines():
    from tac_pipeline.defs.assets import build_assets

    assets = build_assets("tac-tiny/none")
    keys = [key.to_user_string() for a in assets for key in a.keys]
    assert sorted(keys) == sorted(ASSET_NAMES)
    partitioned = {k.to_user_string() for a in assets if a.partitions_def is not None for k in a.keys}
    assert partitioned == set(DATASET_ASSETS) and NOUN_ASSET not in partitioned
    assert {job.name for job in JOBS} == {"cluster_dataset", "assign_new_images", "refresh_drops"}
    from tac_pipeline.defs.names import ASSIGN_ASSETS, FIT_ASSETS

    assert set(ASSIGN_ASSETS) | set(FIT_ASSETS) == set(DATASET_ASSETS) and not set(ASSIGN_ASSETS) & set(
        FIT_ASSETS
    )


def test_sensor_and_schedule_target_the_shared_job_and_take_the_data_root_as_a_resource():
    from tac_pipeline.definitions import build_definitions

    defs = build_definitions()
    sensor = defs.get_sensor_def("drops_sensor")
    schedule = defs.get_schedule_def("recluster_changed_drops")
    assert sensor.job_name == schedule.job_name == drops_job.name
    assert "tac_data" in sensor.required_resource_keys
    assert "tac_data" in schedule.required_resource_keys
    job = defs.resolve_job_def(cluster_dataset_job.name)
    assert {k.to_user_string() for k in job.asset_layer.executable_asset_keys} == set(DATASET_ASSETS)
