"""One run per dataset at a time; a stopped `make cluster` stops its run; a run whose process is gone fails.

The instance tests use the shipped ``tac_pipeline/dagster.yaml`` and Dagster's own run-queue and
run-monitoring code. The command tests start real ``python -m tac_pipeline.cli cluster`` processes (the
tiny model, 200 nouns, offline) and signal them.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from unittest import mock

import pyarrow.parquet as pq
import pytest
from dagster import DagsterInstance, DagsterRunStatus, RunsFilter
from dagster._core.events import EngineEventData
from dagster._core.instance.ref import InstanceRef
from dagster._core.remote_origin import RegisteredCodeLocationOrigin, RemoteJobOrigin, RemoteRepositoryOrigin
from dagster._core.test_utils import create_run_for_test
from dagster._daemon.monitoring.run_monitoring import monitor_started_run
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import QueuedRunCoordinatorDaemon

from tac_pipeline.defs.assets.lineage import lineage
from tac_pipeline.runs import dead, turn
from tac_pipeline.runs import home as run_home
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import byo_embeddings, byo_nouns

PARTITION = run_home.PARTITION_TAG


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    return run_home.dagster_home()


@pytest.fixture
def instance(home):
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        yield instance


def _run_with_process(instance, pid: int, dataset: str = "pets"):
    """A started run of ``dataset`` whose process recorded ``pid``, as a run worker does."""
    run = create_run_for_test(instance, status=DagsterRunStatus.STARTED, tags={PARTITION: dataset})
    instance.report_engine_event(
        f"Started process for run (pid: {pid}).", run, EngineEventData.in_process(pid)
    )
    return run


def _queued(instance, dataset: str | None):
    """A run waiting in the queue, as the UI, the sensor or the schedule submit one."""
    origin = RemoteJobOrigin(
        RemoteRepositoryOrigin(RegisteredCodeLocationOrigin("tac_pipeline"), "__repository__"), "__ASSET_JOB"
    )
    tags = {PARTITION: dataset} if dataset else None
    return create_run_for_test(instance, status=DagsterRunStatus.QUEUED, tags=tags, remote_job_origin=origin)


def _gone_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _status(instance, run) -> DagsterRunStatus:
    return instance.get_run_by_id(run.run_id).status


def test_shipped_dagster_yaml_lets_the_queue_launch_one_run_per_dataset(home, instance):
    assert (home / "dagster.yaml").read_bytes() == run_home.INSTANCE_CONFIG.read_bytes()
    assert run_home.missing_partition_limit(instance) is None
    assert isinstance(instance.run_launcher, dead.LocalRunLauncher) and instance.run_monitoring_enabled
    create_run_for_test(
        instance, status=DagsterRunStatus.STARTED, tags={PARTITION: "pets"}
    )  # e.g. make cluster
    same, other, twice = _queued(instance, "pets"), _queued(instance, "cars"), _queued(instance, "cars")
    nouns = _queued(instance, None)  # unpartitioned: no limit
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)  # what `make ui`'s daemon runs, one iteration
    picked = daemon._get_runs_to_dequeue(
        instance, instance.get_concurrency_config(), fixed_iteration_time=None
    )
    assert {r.run_id for r in picked} == {other.run_id, nouns.run_id}
    assert same.run_id not in {r.run_id for r in picked} and twice.run_id not in {r.run_id for r in picked}


@pytest.mark.parametrize("running, queued", [("fit", "assign"), ("assign", "fit"), ("assign", "assign")])
def test_a_fit_and_an_assign_of_one_dataset_never_run_at_once(home, instance, running, queued):
    create_run_for_test(
        instance, status=DagsterRunStatus.STARTED, tags={PARTITION: "pets", "tac/run_kind": running}
    )
    waiting = _queued(instance, "pets")
    instance.add_run_tags(waiting.run_id, {"tac/run_kind": queued})
    other = _queued(instance, "cars")
    daemon = QueuedRunCoordinatorDaemon(interval_seconds=1)
    picked = daemon._get_runs_to_dequeue(
        instance, instance.get_concurrency_config(), fixed_iteration_time=None
    )
    assert {r.run_id for r in picked} == {other.run_id}


def test_a_dagster_yaml_already_there_is_kept_and_a_missing_limit_is_named(tmp_path, monkeypatch):
    own = tmp_path / "home" / "dagster.yaml"
    own.parent.mkdir()
    own.write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(own.parent))
    run_home.dagster_home()
    assert own.read_text() == "telemetry:\n  enabled: false\n"
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(own.parent))) as instance:
        problem = run_home.missing_partition_limit(instance)
    assert str(own) in problem and "concurrency" in problem and str(run_home.INSTANCE_CONFIG) in problem


def test_commands_starting_at_once_on_a_fresh_home_create_its_storage_once(tmp_path):
    home = tmp_path / "fresh"
    opener = "from tac_pipeline.runs import home\nwith home.open_instance() as i: print(len(i.get_runs()))"
    env = {**os.environ, "DAGSTER_HOME": str(home)}
    starts = [subprocess.Popen([sys.executable, "-c", opener], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]  # fmt: skip
    for process in starts:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err[-2000:]  # without the lock: "more than one head present"
        assert out.strip() == "0"
    with mock.patch.dict(os.environ, {"DAGSTER_HOME": str(home)}), run_home.open_instance() as instance:
        assert instance.get_runs() == []


def test_a_run_whose_process_is_gone_is_marked_failed_by_the_cli_check_and_by_run_monitoring(instance):
    live = _run_with_process(instance, os.getpid())
    for_cli = _run_with_process(instance, _gone_pid())
    for_daemon = _run_with_process(instance, _gone_pid(), dataset="cars")

    health = instance.run_launcher.check_run_worker_health(for_daemon)
    assert health.status.value == "FAILED" and "is gone" in health.msg
    assert instance.run_launcher.check_run_worker_health(live).status.value == "RUNNING"
    record = instance.get_run_record_by_id(for_daemon.run_id)
    monitor_started_run(instance, None, record, logging.getLogger("test"))  # the daemon's run monitoring
    assert _status(instance, for_daemon) == DagsterRunStatus.FAILURE

    assert dead.mark_dead_runs_failed(instance) == [for_cli.run_id]  # what make cluster / make ui do first
    assert _status(instance, for_cli) == DagsterRunStatus.FAILURE
    failure = instance.get_records_for_run(for_cli.run_id).records[-1].event_log_entry
    assert "is gone" in failure.message and "make cluster DATASET=pets" in failure.message
    assert _status(instance, live) == DagsterRunStatus.STARTED


def test_a_reused_pid_is_not_taken_for_the_run():
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        time.sleep(0.5)
        assert dead.process_alive(process.pid, time.time())
        assert not dead.process_alive(process.pid, time.time() - 60)  # it started after the run recorded it
    finally:
        process.kill()
        process.wait()
    assert not dead.process_alive(process.pid, time.time())


def test_the_cli_waits_for_a_run_in_progress_and_takes_over_from_one_whose_process_died(instance):
    worker = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run = _run_with_process(instance, worker.pid)
    said: list[str] = []
    waiting = threading.Thread(
        target=turn.wait_for_partition,
        args=(instance, "pets"),
        kwargs={"say": said.append, "poll_seconds": 0.1},
    )
    waiting.start()
    try:
        time.sleep(1.5)
        assert waiting.is_alive()
        assert run.run_id in said[0] and "waiting for it to finish" in said[0]
        turn.wait_for_partition(instance, "cars", say=said.append)  # another dataset does not wait
    finally:
        worker.kill()
        worker.wait()
    waiting.join(15)
    assert not waiting.is_alive()
    assert _status(instance, run) == DagsterRunStatus.FAILURE


# --------------------------------------------------------------------------------------------------------
# real make cluster processes
# --------------------------------------------------------------------------------------------------------


def _start_cli(dataset, data_dir, home, log, **extra_env) -> subprocess.Popen:
    env = {**os.environ, "TAC_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home), "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "tac_pipeline.cli", "cluster", dataset, "--model", "tac-tiny"]
    with open(log, "w") as handle:  # a file, not a pipe: Dagster's log would fill a pipe and block
        return subprocess.Popen(
            [*command, "--max-nouns", "200"], env={**env, **extra_env}, stdout=handle, stderr=handle
        )


def _wait_for(predicate, seconds=300.0, what="condition"):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


def _dataset_runs(home, dataset):
    # Opened as the commands open it: never creating its storage while a command creates it too.
    with mock.patch.dict(os.environ, {"DAGSTER_HOME": str(home)}), run_home.open_instance() as instance:
        return list(reversed(instance.get_run_records(RunsFilter(tags={PARTITION: dataset}))))


def _group_gone(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    return False


def _store_state(data_dir) -> dict:
    return {p: p.stat().st_mtime_ns for p in (data_dir / "store").rglob("*.parquet")}


def test_two_cli_runs_of_one_dataset_never_interleave(data_dir, tmp_path):
    home = tmp_path / "home"
    drop = data_dir / "drops" / "pets"
    write_toy_drop(drop, train=4, test=2)
    (drop / "dataset.toml").write_text("[tac]\nepochs = 40\n")
    first = _start_cli("pets", data_dir, home, tmp_path / "first.log", TAC_EXECUTOR="in_process")
    _wait_for(lambda: any(r.dagster_run.status == DagsterRunStatus.STARTED for r in _dataset_runs(home, "pets"))
              if home.joinpath("history").exists() else None, what="the first run to start")  # fmt: skip
    write_toy_drop(drop / "incoming", train=2, test=0, seed=5)  # the drop changes between the two commands
    for image in (drop / "incoming").rglob("*.png"):
        image.rename(drop / "train" / image.parent.name / f"late_{image.name}")
    second = _start_cli("pets", data_dir, home, tmp_path / "second.log", TAC_EXECUTOR="in_process")
    assert first.wait(600) == 0, (tmp_path / "first.log").read_text()[-3000:]
    assert second.wait(600) == 0, (tmp_path / "second.log").read_text()[-3000:]

    assert "another command is clustering 'pets'" in (tmp_path / "second.log").read_text()
    records = _dataset_runs(home, "pets")
    assert [r.dagster_run.status for r in records] == [DagsterRunStatus.SUCCESS] * 2
    assert records[0].end_time <= records[1].start_time  # one after the other, never at once
    tables = {a: pq.read_table(data_dir / "store" / a / "pets.parquet") for a in ("image_embeddings", "cluster_labels", "trained_heads")}  # fmt: skip
    assert (
        tables["image_embeddings"].num_rows == tables["cluster_labels"].num_rows == 24
    )  # the drop's new state
    images = lineage(tables["image_embeddings"])["token"]
    assert lineage(tables["trained_heads"])["from"]["image_embeddings"] == images


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_make_cluster_stops_its_run_and_nothing_is_written_after(data_dir, tmp_path, how):
    home = tmp_path / "home"
    drop = data_dir / "drops" / "slow"
    write_toy_drop(drop, train=4, test=2)
    (drop / "dataset.toml").write_text("[tac]\nepochs = 10000\n")  # training takes minutes
    log = tmp_path / "cli.log"
    # The multiprocess executor (steps in processes of their own); VERBOSE=1: Dagster's log on the terminal.
    cli = _start_cli("slow", data_dir, home, log, VERBOSE="1")
    _wait_for(lambda: "epoch 2/10000" in log.read_text(), what="training to start")
    [record] = _dataset_runs(home, "slow")
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        child, _ = dead.run_process(instance, record.dagster_run.run_id)  # the run's process (cli/launch.py)

    cli.send_signal(getattr(signal, how))
    code = cli.wait(120)
    if how == "SIGTERM":
        assert code == 1
        assert "stopped by SIGTERM" in log.read_text() and record.dagster_run.run_id in log.read_text()
        assert _group_gone(child)  # the child and its step processes are gone when the command returns
    else:  # the command cannot act: the kernel signals the child (PR_SET_PDEATHSIG), which stops the run
        assert code == -signal.SIGKILL
        _wait_for(lambda: _group_gone(child), seconds=120, what="the child to stop")
    after_exit = _store_state(data_dir)
    time.sleep(3)
    assert _store_state(data_dir) == after_exit  # nothing writes after the command ended
    assert not (data_dir / "store" / "trained_heads" / "slow.parquet").exists()
    [record] = _dataset_runs(home, "slow")
    assert record.dagster_run.status == DagsterRunStatus.FAILURE


REPO = Path(__file__).resolve().parents[2]


def _byo_slow_drop(data_dir) -> None:
    """A drop with its own embeddings and nouns (no encoder, no WordNet) whose training takes minutes."""
    drop = data_dir / "drops" / "slow"
    drop.mkdir(parents=True)
    directions = byo_embeddings(drop / "embeddings.parquet", 12, 16)
    byo_nouns(drop / "nouns.parquet", directions)
    (drop / "dataset.toml").write_text("[tac]\nepochs = 10000\n")


def _default_termination_signals() -> None:
    """make as a shell starts it. A Dagster run executed in this test process maps SIGTERM to SIGINT's
    handler; under a runner that ignores SIGINT (a background job) SIGTERM is then ignored too, and make, which
    keeps an ignored SIGTERM ignored, would inherit that and never hear the signal this test sends."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize("how", ["SIGTERM", "SIGKILL"])
def test_stopping_make_stops_the_command_and_its_run(data_dir, tmp_path, how):
    """``make cluster`` itself signalled, as a user or a supervisor does: the command (exec'd by the recipe)
    stops with make, its run stops, nothing is written afterwards, and the next command proceeds."""
    _byo_slow_drop(data_dir)
    home, log = tmp_path / "home", tmp_path / "make.log"
    stamp = tmp_path / "installed"
    stamp.touch()  # newer than pyproject.toml: make installs nothing
    env = {**os.environ, "TAC_DATA_DIR": str(data_dir), "DAGSTER_HOME": str(home), "VERBOSE": "1"}
    command = ["make", "--no-print-directory", "-C", str(REPO), "cluster", "DATASET=slow"]
    command += [f"PY={sys.executable}", f"STAMP={stamp}"]
    with open(log, "w") as handle:
        make = subprocess.Popen(
            command, env=env, stdout=handle, stderr=handle, preexec_fn=_default_termination_signals
        )
    _wait_for(lambda: "epoch 2/10000" in log.read_text(), what="training to start")
    [record] = _dataset_runs(home, "slow")
    with DagsterInstance.from_ref(InstanceRef.from_dir(str(home))) as instance:
        child, _ = dead.run_process(instance, record.dagster_run.run_id)

    make.send_signal(getattr(signal, how))
    make.wait(60)
    _wait_for(lambda: _group_gone(child), seconds=120, what="the run's processes to stop")
    after_exit = _store_state(data_dir)
    time.sleep(3)
    assert _store_state(data_dir) == after_exit  # nothing writes after make was stopped
    assert not (data_dir / "store" / "trained_heads" / "slow.parquet").exists()
    if how == "SIGKILL":  # nobody was left to record the end: the next command finds the run's process gone
        with mock.patch.dict(os.environ, {"DAGSTER_HOME": str(home)}), run_home.open_instance() as instance:
            dead.mark_dead_runs_failed(instance, "slow")
    _wait_for(
        lambda: _dataset_runs(home, "slow")[0].dagster_run.status == DagsterRunStatus.FAILURE,
        seconds=60,
        what="the run to be recorded failed",
    )


def test_a_command_reports_only_the_failures_of_its_own_run(tmp_path):
    """Two commands of two datasets failing at the same time: each message names its own run's step only."""
    from dagster import asset, materialize

    from tac_pipeline.cli.cluster import _failure_message

    @asset
    def counterparts():
        raise ValueError("dataset 'cats' asks for 12 clusters but has only 10 images")

    @asset
    def semantic_centers():
        raise ValueError("dataset 'dogs' has no readable image")

    with DagsterInstance.ephemeral() as instance:
        cats = materialize([counterparts], instance=instance, raise_on_error=False, tags={PARTITION: "cats"})
        dogs = materialize(
            [semantic_centers], instance=instance, raise_on_error=False, tags={PARTITION: "dogs"}
        )
        assert "'cats'" in _failure_message(instance, cats.run_id)
        assert "'dogs'" not in _failure_message(instance, cats.run_id)
        assert "'dogs'" in _failure_message(instance, dogs.run_id)
        assert "'cats'" not in _failure_message(instance, dogs.run_id)


def test_the_command_starts_its_run_process_before_it_imports_dagster(tmp_path):
    """``make cluster`` starts its run's process first, which loads the definitions while the command decides:
    the command's own imports up to that point stay free of Dagster, pandas and torch."""
    code = (
        "import sys; import tac_pipeline.cli.commands, tac_pipeline.cli.cluster, tac_pipeline.runs.child; "
        "print(sorted(m for m in ('dagster', 'pandas', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_a_prepared_run_process_that_gets_no_request_ends_with_the_command(tmp_path, monkeypatch):
    from tac_pipeline.cli.cluster import start_run_process

    env = {**os.environ, "PYTHONPATH": str(REPO), "DAGSTER_HOME": str(tmp_path / "home")}
    env["TAC_DATA_DIR"] = str(tmp_path / "data")
    with start_run_process(env, tmp_path / "home") as prepared:
        pid = prepared.child.pid
        time.sleep(0.5)
        assert not _group_gone(pid)  # it is loading the definitions, waiting for its arguments
    assert _group_gone(pid)  # the block left without sending anything: the process and its group are gone
    assert prepared.child.process.returncode is not None

    # Sent nothing but an empty line after loading, it leaves by itself, successfully, and runs nothing.
    with start_run_process(env, tmp_path / "home") as prepared:
        prepared.child.send("")
        assert prepared.child.wait() == 0
    assert not list(tmp_path.rglob("*.db"))  # no instance storage was even created
