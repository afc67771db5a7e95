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
