"""`make cluster` through Dagster's CLI: a failing step makes it exit non-zero with that step's message."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tac_pipeline_tests.conftest import TOY_CLASSES, toy_image


def test_cluster_reports_the_failing_step_and_exits_non_zero(data_dir, tmp_path):
    drop = data_dir / "drops" / "flat"
    drop.mkdir()
    rng = np.random.default_rng(0)
    for i, (background, stripe) in enumerate(list(TOY_CLASSES.values()) * 4):
        toy_image(rng, background, stripe).save(drop / f"img_{i:02d}.png")
    env = {
        **os.environ,
        "TAC_DATA_DIR": str(data_dir),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "HF_HUB_OFFLINE": "1",
    }
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tac_pipeline.cli", "cluster", "flat", "--model", "tac-tiny", "--max-nouns", "200"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    assert "step semantic_centers failed" in done.stderr
    assert "set n_clusters" in done.stderr and "dataset.toml" in done.stderr
    # the run is in the instance's history (what the UI shows), and the embeddings it did write are kept
    assert (data_dir / "store" / "image_embeddings" / "flat.parquet").is_file()
    assert list((tmp_path / "home").iterdir())


def test_cluster_rejects_an_unsafe_dataset_name(tmp_path):
    env = {**os.environ, "TAC_DATA_DIR": str(tmp_path), "DAGSTER_HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "tac_pipeline.cli", "cluster", "../etc"],
        env=env, capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert "not a valid dataset name" in done.stderr and "[A-Za-z0-9]" in done.stderr
