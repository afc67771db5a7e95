"""`make cluster` through Dagster's CLI: a failing step makes it exit non-zero with that step's message."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np

from tac_pipeline_tests.conftest import TOY_CLASSES, toy_image

#: Runs the command as ``python -m tac_pipeline.cli`` does and prints, as it exits (through ``os._exit``, the
#: command's only way out), which heavy libraries the command's own process loaded (its runs' processes do the
#: computing).
_CLI = (
    "import os, runpy, sys\n"
    "heavy = ('torch', 'faiss', 'sklearn', 'scipy', 'open_clip')\n"
    "leave = os._exit\n"
    "def report(code):\n"
    "    print('loaded:', sorted(m for m in heavy if m in sys.modules), file=sys.stderr, flush=True)\n"
    "    leave(code)\n"
    "os._exit = report\n"
    "runpy.run_module('tac_pipeline.cli', run_name='__main__', alter_sys=True)\n"
)


def _tiny_cluster(dataset: str, data_dir, home, **extra_env) -> subprocess.CompletedProcess:
    """``make cluster DATASET=<dataset> MODEL=tac-tiny`` with a 200-noun vocabulary, offline."""
    env = {**os.environ, "TAC_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    home.mkdir(exist_ok=True)
    return subprocess.run(
        [sys.executable, "-c", _CLI, "cluster", dataset, "--model", "tac-tiny", "--max-nouns", "200"],
        env={**env, **extra_env}, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip


def test_cluster_reports_the_failing_step_and_exits_non_zero(data_dir, tmp_path):
    drop = data_dir / "drops" / "flat"
    drop.mkdir()
    rng = np.random.default_rng(0)
    for i, (background, stripe) in enumerate(list(TOY_CLASSES.values()) * 4):
        toy_image(rng, background, stripe).save(drop / f"img_{i:02d}.png")
    done = _tiny_cluster("flat", data_dir, tmp_path / "home")
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


def _bad_files(folder, n):
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        (folder / f"broken_{i:02d}.png").write_bytes(b"not a png at all")


def test_cluster_lists_the_skipped_files_with_their_reasons(data_dir, tmp_path):
    import pandas as pd

    from tac_pipeline_tests.conftest import write_toy_drop

    drop = data_dir / "drops" / "messy"
    write_toy_drop(drop, train=4, test=2)
    _bad_files(drop / "train" / "red", 25)
    done = _tiny_cluster("messy", data_dir, tmp_path / "home", TAC_EXECUTOR="in_process")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    # The command only starts runs and reads their results: no torch, faiss or OpenMP runtime of its own,
    # whose threads could abort its exit after the work is done.
    assert done.stderr.splitlines()[-1] == "loaded: []"
    assert "25 file(s) of 'messy' were skipped:" in done.stderr
    listed = [line for line in done.stderr.splitlines() if line.startswith("  train/red/broken_")]
    assert len(listed) == 20 and all(": " in line for line in listed)
    assert "… and 5 more" in done.stderr
    report = data_dir / "store" / "reports" / "messy" / "skipped_files.parquet"
    assert f"Full list: {report}" in done.stderr
    frame = pd.read_parquet(report)
    assert list(frame.columns) == ["file", "reason"] and len(frame) == 25
    assert frame["file"].str.startswith("train/red/broken_").all() and frame["reason"].str.len().gt(0).all()


def test_an_all_bad_drop_fails_with_the_reasons_and_records_them(data_dir):
    from dagster import instance_for_test

    from tac_pipeline_tests.test_defs.test_assets.helpers import materialize_dataset

    _bad_files(data_dir / "drops" / "allbad" / "cat", 3)
    with instance_for_test() as instance:
        result = materialize_dataset(data_dir, instance, "allbad", raise_on_error=False)
    assert not result.success
    failure = "\n".join(str(e.step_failure_data.error) for e in result.all_events if e.is_step_failure)
    assert "no readable images (3 skipped)" in failure
    assert "cat/broken_00.png: " in failure and "Full list:" in failure
    import pandas as pd

    frame = pd.read_parquet(data_dir / "store" / "reports" / "allbad" / "skipped_files.parquet")
    assert sorted(frame["file"]) == [f"cat/broken_{i:02d}.png" for i in range(3)]


def test_a_drop_with_its_own_nouns_clusters_with_the_default_model_unreachable(tmp_path):
    """``make cluster`` on a drop holding embeddings.parquet and nouns.parquet: the default ViT-B-32 weights
    cannot be had (offline, empty cache) and the data root has no WordNet, yet it clusters, and the shared
    noun embeddings are never made."""
    from tac_pipeline_tests.test_defs.test_assets.helpers import byo_embeddings, byo_nouns

    data = tmp_path / "data"
    drop = data / "drops" / "planted"
    drop.mkdir(parents=True)
    byo_nouns(drop / "nouns.parquet", byo_embeddings(drop / "embeddings.parquet", 30, 16))
    (drop / "dataset.toml").write_text("n_clusters = 3\n[tac]\nepochs = 20\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("TAC_CLIP_")}
    env.update(
        TAC_DATA_DIR=str(data), DAGSTER_HOME=str(tmp_path / "home"), HF_HUB_OFFLINE="1",
        TAC_CLIP_CACHE_DIR=str(tmp_path / "no-weights"), TAC_EXECUTOR="in_process",
    )  # fmt: skip
    (tmp_path / "home").mkdir()
    done = subprocess.run(
        [sys.executable, "-m", "tac_pipeline.cli", "cluster", "planted"],
        env=env, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "Metrics for 'planted'" in done.stdout and "tac_image" in done.stdout
    assert not (data / "store" / "wordnet_noun_embeddings.parquet").exists()
    assert not (data / "cache").exists() and not (data / "nltk_data").exists()  # WordNet never looked for


def test_demo_offline_falls_back_to_the_smoke_model_and_cluster_does_not(
    data_dir, tmp_path, monkeypatch, capsys
):
    """``make demo`` where the default weights cannot be downloaded (network probe answering "unreachable",
    empty weights cache): one line says so, the smoke model clusters the digits, and a banner above and below
    the metrics says they mean nothing. ``make cluster`` on the same drop fails clearly instead."""
    from tac_pipeline.cli import commands, provision
    from tac_pipeline.config import ENCODER_VARIABLES
    from tac_pipeline.encoders.clip import weights

    def unreachable(url, timeout):
        return False, "simulated: no network"

    monkeypatch.setattr(weights, "reachable", unreachable)
    monkeypatch.setattr("huggingface_hub.constants.HF_HUB_OFFLINE", False)  # read once, at import
    monkeypatch.setattr(provision, "reachable", unreachable)
    for name in ("HF_HUB_OFFLINE", *ENCODER_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TAC_DATA_DIR", str(data_dir))
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("TAC_CLIP_CACHE_DIR", str(tmp_path / "no-weights"))
    monkeypatch.setenv("TAC_EXECUTOR", "in_process")
    (tmp_path / "home").mkdir()
    assert commands.main(["demo", "--max-nouns", "200"]) == 0
    out, err = capsys.readouterr()
    # A terminal a person can read: one line per step, then the metrics, at most 40 lines in all.
    assert len(out.splitlines()) + len(err.splitlines()) <= 40, out + err
    steps = [line for line in out.splitlines() if line.startswith(("image_embeddings ", "metrics "))]
    assert len(steps) == 2 and "1,797 images, 1,797 encoded, 0 skipped" in steps[0]
    assert (
        "DEBUG" not in out + err and "SupersessionWarning" not in out + err and "Telemetry" not in out + err
    )
    notice = [line for line in out.splitlines() if "continuing with the smoke model tac-tiny" in line]
    assert len(notice) == 1 and "cannot be reached (simulated: no network)" in notice[0]
    banner = provision.random_weights_banner()
    above, results, below = out.split(banner)[-3:]
    assert out.count(banner) == 2 and "Metrics for 'digits'" in results and "tac_image" in results
    assert "RANDOM WEIGHTS" in banner and "TAC_CLIP_CHECKPOINT=" in banner and "make demo" in banner
    assert "Wrote 1797 digit images" in above and "make ui" in below
    assert (data_dir / "store" / "metrics" / "digits.parquet").is_file()

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the Dagster step processes cannot be monkeypatched
    assert commands.main(["cluster", "digits"]) == 1
    captured = capsys.readouterr()
    assert "CLIP encoder unavailable: model 'ViT-B-32'" in captured.err and "tac-tiny" in captured.err
    assert banner not in captured.out and "smoke model" not in captured.out
