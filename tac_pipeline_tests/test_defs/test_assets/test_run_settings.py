"""Settings are resolved once per run: an edit of ``dataset.toml`` mid-run changes nothing in that run, run
config obeys the same ranges as ``dataset.toml``, and every step records what it used and where it came from."""

from __future__ import annotations

import pytest
from dagster import AssetKey, instance_for_test

from tac_pipeline import tac
from tac_pipeline.defs.assets.training import heads_from_table
from tac_pipeline.drops.settings import RunConfigError
from tac_pipeline.store.layout import run_settings_dir
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import (
    materialize_dataset,
    materialize_nouns,
    read_output,
)


def settings_of(instance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(AssetKey(asset))
    return event.asset_materialization.metadata["settings"].value


def test_an_edit_of_dataset_toml_mid_run_changes_nothing_in_that_run(data_dir, monkeypatch):
    drop = data_dir / "drops" / "toy"
    write_toy_drop(drop)
    toml = drop / "dataset.toml"
    toml.write_text("n_clusters = 3\nseed = 0\n[tac]\ngamma = 3\nn_neighbors = 8\n")
    train_heads = tac.train_heads

    def train_then_edit(*args, **kwargs):  # the user edits dataset.toml while the heads train
        result = train_heads(*args, **kwargs)
        toml.write_text("n_clusters = 5\nseed = 7\n[tac]\ngamma = 3\nn_neighbors = 4\n")
        return result

    monkeypatch.setattr(tac, "train_heads", train_then_edit)
    run_config = {"ops": {"text_space": {"config": {"gamma": 2}}}}
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        first = materialize_dataset(data_dir, instance, "toy", run_config=run_config)
        assert first.success
        image_head, _, _ = heads_from_table(read_output(data_dir, "trained_heads", "toy"))
        assert image_head.n_clusters == 3
        metrics = read_output(data_dir, "metrics", "toy").to_pandas()
        assert set(metrics["seed"]) == {0}  # not the 7 written mid-run
        assert read_output(data_dir, "cluster_labels", "toy")["cluster"].to_numpy().max() < 3
        for asset in ("semantic_centers", "counterparts", "trained_heads", "metrics"):
            assert settings_of(instance, asset)["n_clusters"] == {"value": 3, "from": "dataset.toml"}, asset
            assert settings_of(instance, asset)["seed"] == {"value": 0, "from": "dataset.toml"}, asset
        # precedence: the step's run config over dataset.toml over the defaults, each recorded with its source
        assert settings_of(instance, "text_space")["gamma"] == {"value": 2, "from": "run config"}
        assert settings_of(instance, "knn_graphs")["n_neighbors"] == {"value": 8, "from": "dataset.toml"}
        assert settings_of(instance, "trained_heads")["epochs"] == {"value": 20, "from": "default"}
        assert settings_of(instance, "counterparts")["retrieval_temperature"] == {
            "value": 0.005,
            "from": "default",
        }

        monkeypatch.setattr(tac, "train_heads", train_heads)
        second = materialize_dataset(data_dir, instance, "toy")  # the next run reads the edited file
        assert second.success
        image_head, _, _ = heads_from_table(read_output(data_dir, "trained_heads", "toy"))
        assert image_head.n_clusters == 5
        assert set(read_output(data_dir, "metrics", "toy")["seed"].to_pylist()) == {7}
        assert settings_of(instance, "metrics")["n_clusters"]["value"] == 5
        assert settings_of(instance, "knn_graphs")["n_neighbors"] == {"value": 4, "from": "dataset.toml"}
    # the finished first run's pinned settings were removed by the second run; the second run's remain
    assert [p.stem for p in run_settings_dir("toy", data_dir).glob("*.json")] == [second.run_id]


@pytest.mark.parametrize(
    ("op", "field", "value"),
    [
        ("trained_heads", "lr", 1e30),
        ("trained_heads", "tau", 1e-300),
        ("counterparts", "retrieval_temperature", 0.0),
    ],
)
def test_run_config_out_of_range_fails_the_run_before_anything_is_computed(data_dir, op, field, value):
    write_toy_drop(data_dir / "drops" / "toy")
    with instance_for_test() as instance:
        run_config = {"ops": {op: {"config": {field: value}}}}
        result = materialize_dataset(data_dir, instance, "toy", raise_on_error=False, run_config=run_config)
        assert not result.success
        (failure,) = [e for e in result.all_events if e.is_step_failure]
        assert failure.step_key == "image_embeddings"  # the run's first step, before any embedding
        error = failure.step_failure_data.error
        assert error.cause.cls_name == RunConfigError.__name__
        assert f"run config ops.{op}.config: field '{field}'" in error.cause.message
    assert not (data_dir / "store" / "image_embeddings").exists()


def test_a_long_training_logs_its_progress_and_expected_time_without_an_entry_per_epoch(
    data_dir, monkeypatch
):
    from tac_pipeline.defs.assets import training

    monkeypatch.setattr(training, "PROGRESS_SECONDS", 3600.0)  # no time-based entry in between
    write_toy_drop(data_dir / "drops" / "toy")
    (data_dir / "drops" / "toy" / "dataset.toml").write_text("[tac]\nepochs = 30\n")
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        result = materialize_dataset(data_dir, instance, "toy")
        messages = [
            r.user_message for r in instance.all_logs(result.run_id) if r.user_message.startswith("epoch ")
        ]
    assert [m.split(":")[0] for m in messages] == ["epoch 1/30", "epoch 2/30", "epoch 3/30", "epoch 30/30"]
    assert all(" s per epoch, about " in m and m.endswith(" s left)") for m in messages)
    assert messages[-1].endswith("about 0 s left)")
