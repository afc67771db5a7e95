"""Faults: a process killed mid-write, a run killed and re-run, two writers at once, a missing model or
WordNet at run time. The store must always hold complete files, and a failure must not cost stored work.

The store is last-writer-wins with atomic rename (no lock): every writer writes a hidden temporary sibling,
fsyncs it and renames it over the target, so readers see one complete version or the next, never a mix.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.instance.ref import InstanceRef

from tac_pipeline.common.atomic import write_parquet_atomically
from tac_pipeline.defs.resources.encoder import ClipEncoderResource
from tac_pipeline.encoders import wordnet
from tac_pipeline_tests.test_encoders.oddfiles import noise
from tac_pipeline_tests.test_reliability.conftest import IDENTICAL
from tac_pipeline_tests.test_reliability.helpers import (
    NOUN_ASSET,
    REPO,
    new_data_root,
    run_assets,
    snapshot,
    step_failures,
    stored,
)
from tac_pipeline_tests.test_reliability.procs import version_table

PARTITIONED = (
    "image_embeddings", "semantic_centers", "text_space", "counterparts",
    "knn_graphs", "trained_heads", "cluster_labels", "metrics",
)  # fmt: skip


def _child(*args: str, **popen) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "tac_pipeline_tests.test_reliability.procs", *args],
        cwd=REPO, env=env, text=True, **popen,
    )  # fmt: skip


def _temporaries(folder: Path, name: str) -> list[Path]:
    return sorted(folder.glob(f".{name}.*.tmp"))


# ------------------------------------------------------------------------------------------------------------
# a process killed during a Parquet write
# ------------------------------------------------------------------------------------------------------------


def test_process_killed_mid_write_leaves_the_previous_file_readable(tmp_path):
    target = tmp_path / "store" / "image_embeddings" / "big.parquet"
    previous = version_table(writer=0, seq=0, rows=1000)
    write_parquet_atomically(previous, target)

    child = _child("big-write", str(target), "12000000", stdout=subprocess.PIPE)
    assert child.stdout.readline().strip() == "writing"
    deadline = time.monotonic() + 60
    partial = []
    while not partial and child.poll() is None and time.monotonic() < deadline:
        partial = [p for p in _temporaries(target.parent, target.name) if p.stat().st_size > 1 << 20]
    child.send_signal(signal.SIGKILL)
    child.wait(30)
    assert partial, "the write finished before it could be killed"
    assert child.returncode == -signal.SIGKILL

    assert pq.read_table(target).equals(previous)  # the previous materialization, whole
    # what the killed process left: a hidden, partial temporary that nothing reads
    leftovers = _temporaries(target.parent, target.name)
    assert leftovers == partial[:1] and leftovers[0].stat().st_size < 12_000_000 * 16

    # re-running after the crash completes and publishes the new version
    again = version_table(writer=1, seq=0, rows=2000)
    write_parquet_atomically(again, target)
    assert pq.read_table(target).equals(again)


def test_run_killed_while_writing_then_rerun_completes(tmp_path):
    root = new_data_root(tmp_path, vocabulary=False)
    drop = root / "drops" / "pets"
    for label in ("a", "b"):
        (drop / label).mkdir(parents=True)
        for i in range(3):
            noise((12, 12), seed=10 * len(label) + i).save(drop / label / f"{i}.png")
    home = tmp_path / "dagster_home"
    home.mkdir()
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        assert run_assets(root, instance, "pets", ["image_embeddings"]).success
    first = pq.read_table(stored(root, "image_embeddings", "pets"))
    for label in ("a", "b"):
        for i in range(3, 6):
            noise((12, 12), seed=100 + 10 * len(label) + i).save(drop / label / f"{i}.png")

    child = _child(
        "materialize", str(root), str(home), "pets", stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    seen = []
    for line in child.stdout:
        seen.append(line)
        if "Writing file at" in line:  # the IO manager's last log line before it writes
            child.send_signal(signal.SIGKILL)
            break
    child.wait(60)
    assert child.returncode == -signal.SIGKILL, "".join(seen[-20:])

    # whatever instant the kill hit, the stored file is one complete version
    after_kill = pq.read_table(stored(root, "image_embeddings", "pets"))
    assert after_kill.num_rows in (first.num_rows, 12)
    if after_kill.num_rows == first.num_rows:
        assert after_kill.equals(first)
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        killed = instance.get_runs(limit=1)[0]
        assert killed.status != DagsterRunStatus.SUCCESS  # recorded as started, never finished
        rerun = run_assets(root, instance, "pets", ["image_embeddings"])
        assert rerun.success
        assert (
            instance.get_latest_materialization_event(
                rerun.asset_materializations_for_node("image_embeddings")[0].asset_key
            ).run_id
            == rerun.run_id
        )
    final = pq.read_table(stored(root, "image_embeddings", "pets"))
    assert final.num_rows == 12 and first["image_id"].to_pylist()[0] in final["image_id"].to_pylist()


# ------------------------------------------------------------------------------------------------------------
# two writers for the same partition at once
# ------------------------------------------------------------------------------------------------------------


def _complete_version(table: pa.Table, rows: int) -> tuple[int, int]:
    """(writer, seq) of a table that is exactly one version; fails on any mixture or truncation."""
    assert table.num_rows == rows
    writers, seqs = np.unique(table["writer"].to_numpy()), np.unique(table["seq"].to_numpy())
    assert len(writers) == 1 and len(seqs) == 1
    assert np.array_equal(table["x"].to_numpy(), np.arange(rows))
    return int(writers[0]), int(seqs[0])


def test_two_concurrent_writers_never_leave_a_corrupt_file(tmp_path):
    target = tmp_path / "store" / "cluster_labels" / "pets.parquet"
    rows = 200_000
    write_parquet_atomically(version_table(writer=0, seq=0, rows=rows), target)
    children = [
        _child("writer", str(target), str(w), str(rows), "2.5", stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        for w in (1, 2)
    ]
    for child in children:  # both have imported everything ...
        assert child.stdout.readline().strip() == "ready"
    start = time.time() + 0.2
    for child in children:  # ... and start writing at the same moment
        child.stdin.write(f"{start}\n")
        child.stdin.close()
    reads = set()
    while any(c.poll() is None for c in children):
        reads.add(_complete_version(pq.read_table(target), rows))  # a reader alongside never sees a mix
    intervals = []
    for child in children:
        out = child.stdout.read()
        child.wait(60)
        assert child.returncode == 0
        intervals.append([json.loads(line) for line in out.splitlines()])
    assert all(len(i) >= 3 for i in intervals)
    overlapping = sum(a0 < b1 and b0 < a1 for a0, a1 in intervals[0] for b0, b1 in intervals[1])
    assert overlapping > 0, "the two writers never wrote at the same time"
    assert {w for w, _ in reads} >= {1, 2}

    # last writer wins: the final file is one complete version, the last one some writer published
    writer, seq = _complete_version(pq.read_table(target), rows)
    assert writer in (1, 2) and seq == len(intervals[writer - 1]) - 1
    assert _temporaries(target.parent, target.name) == []  # nothing left behind


# ------------------------------------------------------------------------------------------------------------
# a missing model or WordNet at run time
# ------------------------------------------------------------------------------------------------------------


def _everything() -> dict:
    return {NOUN_ASSET: None, **dict.fromkeys(PARTITIONED, IDENTICAL)}


def test_missing_model_fails_the_step_clearly_and_keeps_what_is_stored(world, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    cache = tmp_path / "empty_hf_cache"
    cache.mkdir()
    encoder = ClipEncoderResource(
        model_name="ViT-B-32", pretrained="openai", cache_dir=str(cache), num_workers=0
    )
    before = snapshot(world.root, world.instance, _everything())
    started = time.monotonic()
    failed = run_assets(world.root, world.instance, IDENTICAL, encoder=encoder)
    assert time.monotonic() - started < 60
    failures = step_failures(failed)
    assert set(failures) == {"image_embeddings"}  # the rest is skipped, not failed
    message = failures["image_embeddings"]
    assert "EncoderUnavailableError" in message and "'ViT-B-32'" in message and "'openai'" in message
    assert "HF_HUB_OFFLINE" in message and str(cache) in message
    assert "checkpoint=" in message and "'tac-tiny'" in message  # the two ways out
    assert snapshot(world.root, world.instance, _everything()) == before
    assert list(cache.iterdir()) == []


def test_missing_wordnet_fails_the_step_clearly_and_keeps_what_is_stored(world, tmp_path, monkeypatch):
    cache = world.root / "cache" / wordnet.CACHE_FILE
    hidden = cache.with_name("hidden-" + cache.name)
    monkeypatch.setattr(wordnet, "default_nltk_paths", lambda: [str(tmp_path / "no_nltk_data")])
    monkeypatch.setattr(wordnet, "_nltk_download", lambda folder, timeout: "simulated: network unreachable")
    monkeypatch.setattr(wordnet, "system_wordnet_dirs", lambda: [tmp_path / "no_wordnet"])
    before = snapshot(world.root, world.instance, _everything())
    os.replace(cache, hidden)
    try:
        failed = run_assets(world.root, world.instance, None, [NOUN_ASSET])
    finally:
        os.replace(hidden, cache)
    message = step_failures(failed)[NOUN_ASSET]
    assert "WordNetUnavailableError" in message and "WordNet is not available" in message
    assert "simulated: network unreachable" in message
    assert "apt-get install wordnet-base wordnet-sense-index" in message and "NLTK_DATA" in message
    assert snapshot(world.root, world.instance, _everything()) == before
