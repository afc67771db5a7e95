"""The Dagster UI in a real browser: launch a drop's materialization, wait for it, read the metrics table.

Starts ``dagster dev`` on 127.0.0.1 (a free port, a temporary ``DAGSTER_HOME``, a small drop, the offline
``tac-tiny`` encoder) and drives Debian's headless Chromium through Playwright; no browser is downloaded.
Skipped, with the reason, when no Chromium exists, unless ``TAC_REQUIRE_BROWSER`` is set (CI), where that
is a failure. The server's process group is always terminated.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter, materialize

from tac_pipeline.defs.assets import build_assets
from tac_pipeline.defs.checks import build_asset_checks
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import NOUN_ASSET, resources, tiny_encoder

REPO = Path(__file__).resolve().parents[2]
DATASET = "toy"
#: Few nouns: the UI run must not wait for 82k noun embeddings.
UI_NOUNS = 500
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]
SERVER_START_S = 120
#: One UI step (a page, a dialog, a button).
STEP_MS = 60_000
#: The whole run: eight assets (three with their checks inside) and image_embeddings' check, each step in
#: a process forked from the run's warm forkserver.
RUN_S = 300
METHODS = ["kmeans_image", "tac_no_train", "tac_image", "tac_text", "tac_mean"]


def find_chromium() -> str | None:
    """``$TAC_CHROMIUM``, else Debian's ``chromium`` (``apt-get install chromium``) or ``chromium-browser``."""
    candidates = [os.environ.get("TAC_CHROMIUM"), shutil.which("chromium"), shutil.which("chromium-browser")]
    candidates += ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
    return next((c for c in candidates if c and os.access(c, os.X_OK)), None)


@pytest.fixture(scope="module")
def chromium() -> str:
    reason = None
    executable = find_chromium()
    if executable is None:
        reason = "no Chromium found (apt-get install chromium, or set TAC_CHROMIUM); this test drives a real browser"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            reason = "the playwright package is missing (pip install -e '.[dev]')"
    if reason:
        if os.environ.get("TAC_REQUIRE_BROWSER"):
            pytest.fail(f"TAC_REQUIRE_BROWSER is set but {reason}")
        pytest.skip(reason)
    return executable


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_server(url: str, process: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"dagster dev exited with {process.returncode}:\n{tail(log)}")
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=5) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError(f"dagster dev did not answer within {SERVER_START_S} s:\n{tail(log)}")


def tail(log: Path, lines: int = 60) -> str:
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def stop_process_group(process: subprocess.Popen) -> None:
    """SIGTERM the server's process group (webserver, daemon, code server, runs), then SIGKILL stragglers."""
    for sig, wait in ((signal.SIGTERM, 30), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            return
        try:
            process.wait(timeout=wait)
        except subprocess.TimeoutExpired:
            continue
        # dagster dev has exited; its children share the group and must go too
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        return


@pytest.fixture
def dagster_ui(chromium, tmp_path, data_dir):
    """A running ``dagster dev`` whose instance already holds the noun embeddings and the drop's partition."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    write_toy_drop(data_dir / "drops" / DATASET, train=4, test=2)
    encoder = tiny_encoder()
    graph = build_assets(encoder.identity())
    with DagsterInstance.from_config(str(home)) as instance:
        done = materialize(
            [*graph, *build_asset_checks(graph)],
            selection=[NOUN_ASSET],
            resources=resources(data_dir, encoder),
            instance=instance,
            run_config={"ops": {NOUN_ASSET: {"config": {"max_nouns": UI_NOUNS}}}},
        )
        assert done.success
        instance.add_dynamic_partitions(datasets_partitions.name, [DATASET])

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "TAC_DATA_DIR": str(data_dir),
        "TAC_CLIP_MODEL": "tac-tiny",
        "TAC_CLIP_PRETRAINED": "none",
        "TAC_DEVICE": "cpu",
        "HF_HUB_OFFLINE": "1",
    }
    log = tmp_path / "dagster_dev.log"
    dagster = Path(sys.executable).with_name("dagster")
    with open(log, "wb") as out:
        process = subprocess.Popen(
            [str(dagster), "dev", "-h", "127.0.0.1", "-p", str(port), "-w", str(REPO / "workspace.yaml")],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    try:
        wait_for_server(url, process, log)
        yield {"url": url, "home": home, "data": data_dir, "log": log, "chromium": chromium}
    finally:
        stop_process_group(process)


def _partition_runs(home: Path):
    with DagsterInstance.from_config(str(home)) as instance:
        return instance.get_runs(RunsFilter(tags={"dagster/partition": DATASET}), limit=1)


def run_status(home: Path) -> DagsterRunStatus | None:
    """The status of the drop's run, read from the instance the server writes to."""
    runs = _partition_runs(home)
    return runs[0].status if runs else None


def launched_run_id(home: Path) -> str:
    """The id of the run the UI just launched for the drop's partition."""
    deadline = time.monotonic() + STEP_MS / 1000
    while not (runs := _partition_runs(home)):
        assert time.monotonic() < deadline, "the UI launched no run for the partition"
        time.sleep(0.5)
    return runs[0].run_id


def test_materialize_a_drop_from_the_ui_and_read_its_metrics(dagster_ui, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    url, home, log = dagster_ui["url"], dagster_ui["home"], dagster_ui["log"]
    expect.set_options(timeout=STEP_MS)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=dagster_ui["chromium"], args=CHROMIUM_ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1400, "height": 1000})
        page.set_default_timeout(STEP_MS)
        # A fresh instance greets with a community dialog: dismiss it whenever it shows up.
        page.add_locator_handler(
            page.get_by_text("Join the Dagster community"),
            lambda _: page.get_by_role("button", name="Skip").click(),
        )
        try:
            # 1. The asset graph shows the lineage: the four stages, as groups.
            page.goto(f"{url}/asset-groups", wait_until="domcontentloaded")
            expect(page.get_by_text("Global asset lineage")).to_be_visible()
            for group in ("embeddings", "text", "training", "results"):
                expect(page.get_by_text(group, exact=True).first).to_be_visible()

            # 2. The job over the partitioned assets: materialize all, for the drop's partition.
            page.get_by_role("link", name="Jobs").first.click()
            page.get_by_role("link", name="cluster_dataset").first.click()
            page.get_by_role("button", name="Materialize all…").click()
            dialog = page.get_by_role("dialog").filter(has_text="Partition selection")
            expect(dialog).to_be_visible()
            dialog.get_by_text("Select a partition or create one").click()
            page.get_by_role("menuitem").filter(has=page.get_by_text(DATASET, exact=True)).first.click()
            launch = dialog.get_by_role("button", name="Launch 1 run")
            expect(launch).to_be_enabled()
            launch.click()
            expect(dialog).to_be_hidden()

            # 3. The run: found in the runs list, followed on its page until it succeeds.
            run_id = launched_run_id(home)
            page.goto(f"{url}/runs", wait_until="domcontentloaded")
            page.get_by_role("link", name=run_id[:8]).first.click()
            expect(page).to_have_url(re.compile(rf"/runs/{run_id}"))
            success, failure = (
                page.get_by_text("Success", exact=True),
                page.get_by_text("Failure", exact=True),
            )
            expect(success.or_(failure).first).to_be_visible(timeout=RUN_S * 1000)
            assert not failure.first.is_visible(), f"the run failed:\n{tail(log)}"
            assert run_status(home) == DagsterRunStatus.SUCCESS
            page.screenshot(path=str(tmp_path / "run.png"))

            # 4. The metrics asset page shows the metrics table, as stored in Parquet.
            page.goto(f"{url}/assets/metrics", wait_until="domcontentloaded")
            # the innermost table holding the methods and the balance: the `metrics` markdown entry
            table = (
                page.get_by_role("table")
                .filter(has_text="balance")
                .filter(has_text="tac_image")
                .filter(has_not=page.get_by_role("table"))
                .first
            )
            expect(table).to_be_visible()
            rows = [r.inner_text().split("\t") for r in table.get_by_role("row").all()]
            header, body = [c.strip() for c in rows[0]], [[c.strip() for c in r] for r in rows[1:]]
            assert header[:4] == ["method", "NMI", "ACC", "ARI"] and "balance" in header
            stored = pq.read_table(
                dagster_ui["data"] / "store" / "metrics" / f"{DATASET}.parquet"
            ).to_pylist()
            assert [r[0] for r in body] == [s["method"] for s in stored] == METHODS
            for shown, truth in zip(body, stored, strict=True):
                assert shown[1:4] == [f"{truth[k]:.1f}" for k in ("nmi", "acc", "ari")]
                assert shown[header.index("balance")] == f"{truth['cluster_size_ratio']:.2f}"
            table.scroll_into_view_if_needed()
            page.screenshot(path=str(tmp_path / "metrics.png"))

            # 5. The metrics asset's Checks tab: its check, evaluated inside the asset's step, passed.
            page.goto(f"{url}/assets/metrics?view=checks", wait_until="domcontentloaded")
            expect(page.get_by_text("metrics_present").first).to_be_visible()
            expect(page.get_by_text("Succeeded", exact=True).first).to_be_visible()
            expect(page.get_by_text("Passed", exact=True).first).to_be_visible()
            page.screenshot(path=str(tmp_path / "checks.png"))

            # 6. The gallery of cluster_labels opens as an image.
            page.goto(f"{url}/assets/cluster_labels", wait_until="domcontentloaded")
            gallery = page.get_by_role("row").filter(has=page.get_by_text("gallery", exact=True))
            gallery.get_by_text("[Show Markdown]").click()
            image = page.locator('img[src^="data:image/png"]').first
            expect(image).to_be_visible()
            assert image.evaluate("e => e.naturalWidth") > 100
            page.screenshot(path=str(tmp_path / "gallery.png"))
        except Exception:
            page.screenshot(path=str(tmp_path / "failure.png"))
            print(f"screenshot: {tmp_path / 'failure.png'}\ndagster dev log:\n{tail(log)}")
            raise
        finally:
            browser.close()
    assert (tmp_path / "metrics.png").stat().st_size > 10_000
