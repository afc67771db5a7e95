"""The definitions load and validate, in process and through workspace.yaml as `dagster dev` reads it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import Definitions, instance_for_test

REPO = Path(__file__).resolve().parents[1]


def test_definitions_load_and_validate():
    from tac_pipeline.definitions import defs

    # Loading reads the current instance's definitions state; a live test instance provides it (a test
    # before this one may leave a disposed instance behind in Dagster's context variable).
    with instance_for_test():
        Definitions.validate_loadable(defs)


def test_workspace_validates_with_the_dagster_cli(tmp_path):
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path), "TAC_DATA_DIR": str(tmp_path / "data")}
    dagster = Path(sys.executable).with_name("dagster")
    done = subprocess.run(
        [str(dagster), "definitions", "validate", "-w", str(REPO / "workspace.yaml")],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr


def _dg(tmp_path, *args: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path),
        "TAC_DATA_DIR": str(tmp_path / "data"),
        "VIRTUAL_ENV": str(Path(sys.executable).parent.parent),
    }
    dg = Path(sys.executable).with_name("dg")
    return subprocess.run(
        [str(dg), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_dg_check_defs_loads_the_project_from_pyproject(tmp_path):
    done = _dg(tmp_path, "check", "defs")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "All definitions loaded successfully" in done.stdout + done.stderr


def test_dg_list_defs_shows_the_graph_and_its_automation(tmp_path):
    import json

    done = _dg(tmp_path, "list", "defs", "--json")
    assert done.returncode == 0, done.stderr
    listed = json.loads(done.stdout)
    from tac_pipeline.defs.names import ASSET_NAMES

    assert sorted(a["asset_key"] for a in listed["assets"]) == sorted(ASSET_NAMES)
    assert {j["name"] for j in listed["jobs"]} == {"cluster_dataset", "assign_new_images", "refresh_drops"}
    assert [s["name"] for s in listed["sensors"]] == ["drops_sensor"]
    assert [s["name"] for s in listed["schedules"]] == ["recluster_changed_drops"]
