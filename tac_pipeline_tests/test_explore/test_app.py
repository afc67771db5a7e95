"""``make explore`` in a real browser: the command clusters nothing, builds the FiftyOne dataset from the store,
serves the App on 127.0.0.1 and prints its address; Debian's Chromium (through Playwright, no browser download)
shows the drop's samples and a saved view per cluster. A screenshot of the grid is kept with the test's files.

Needs the ``explore`` extra and Chromium: skipped with the reason without them, unless ``TAC_REQUIRE_EXPLORE``
or ``TAC_REQUIRE_BROWSER`` is set (CI), where that is a failure. The command's process group is always stopped.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import byo_embeddings, byo_nouns
from tac_pipeline_tests.test_ui.test_browser import (
    CHROMIUM_ARGS,
    REPO,
    free_port,
    stop_process_group,
    tail,
)

APP_START_S = 180
STEP_MS = 90_000


def _command(*args: str, env: dict, log: Path | None = None, **kwargs):
    command = [sys.executable, "-m", "tac_pipeline.cli", *args]
    if log is None:
        return subprocess.run(command, env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    return subprocess.Popen(
        command, env=env, cwd=REPO, stdout=log.open("w"), stderr=subprocess.STDOUT, process_group=0, **kwargs
    )


def _wait_for_address(process: subprocess.Popen, log: Path) -> str:
    deadline = time.monotonic() + APP_START_S
    while time.monotonic() < deadline:
        found = re.search(r"FiftyOne App: (http://127\.0\.0\.1:\d+)", log.read_text(errors="replace"))
        if found:
            url = found.group(1)
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        return url
            except OSError:
                pass
        if process.poll() is not None:
            raise AssertionError(f"make explore exited with {process.returncode}:\n{tail(log)}")
        time.sleep(1)
    raise AssertionError(f"the FiftyOne App did not answer within {APP_START_S} s:\n{tail(log)}")


def test_make_explore_serves_the_clusters_in_the_fiftyone_app(explore_extra, chromium, tmp_path):
    from playwright.sync_api import sync_playwright

    drop = tmp_path / "data" / "drops" / "toy"
    count = write_toy_drop(drop, train=8, test=2)
    # The drop's own nouns (random directions of the smoke model's width): no WordNet, no noun run.
    rng = np.random.default_rng(0)
    nouns = rng.normal(size=(12, 64))
    pq.write_table(
        pa.table({"noun": [f"noun {i}" for i in range(12)], "embedding": nouns.tolist()}),
        drop / "nouns.parquet",
    )
    (drop / "dataset.toml").write_text("n_clusters = 3\n[tac]\nepochs = 5\n")
    env = {
        **os.environ,
        "TAC_DATA_DIR": str(tmp_path / "data"),
        "DAGSTER_HOME": str(tmp_path / "home"),
        "TAC_MODEL": "tac-tiny",
        "PYTHONPATH": str(REPO),
    }
    (tmp_path / "home").mkdir()
    clustered = _command("cluster", "toy", "--model", "tac-tiny", env=env)
    assert clustered.returncode == 0, clustered.stdout[-3000:] + clustered.stderr[-3000:]
    port = free_port()
    log = tmp_path / "explore.log"
    process = _command("explore", "toy", "--port", str(port), env=env, log=log)
    try:
        url = _wait_for_address(process, log)
        assert url == f"http://127.0.0.1:{port}"
        printed = log.read_text()
        views = re.search(rf"FiftyOne dataset 'toy': {count} images, (\d+) saved views", printed)
        assert views and int(views.group(1)) >= 1, printed
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=chromium, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{url}/datasets/toy", timeout=STEP_MS)
                # The grid's sample count, the per-method cluster fields in the sidebar, the saved views.
                page.get_by_text(re.compile(rf"\b{count}\b samples", re.I)).first.wait_for(timeout=STEP_MS)
                for field in ("tac_image", "kmeans_image", "top_nouns", "duplicate_group"):
                    page.get_by_text(field, exact=True).first.wait_for(timeout=STEP_MS)
                page.wait_for_timeout(3000)  # thumbnails
                shot = tmp_path / "fiftyone_app.png"
                page.screenshot(path=str(shot))
                assert shot.stat().st_size > 10_000
            finally:
                browser.close()
    finally:
        stop_process_group(process)
    # A drop with its own embeddings: the dataset is built, and the command says there are no thumbnails.
    blobs = tmp_path / "data" / "drops" / "blobs"
    blobs.mkdir()
    directions = byo_embeddings(blobs / "embeddings.parquet", 10, 16)
    byo_nouns(blobs / "nouns.parquet", directions)
    (blobs / "dataset.toml").write_text("n_clusters = 3\n[tac]\nepochs = 5\n")
    assert _command("cluster", "blobs", env=env).returncode == 0
    built = _command("explore", "blobs", "--no-app", env=env)
    assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
    assert "FiftyOne dataset 'blobs': 30 images" in built.stdout
    assert "there are no image files, so the App shows no thumbnails" in built.stdout
