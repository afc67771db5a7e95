"""A run-config override of the encoder never mixes two encoders in one stored table.

The embedding assets' code version and row reuse follow the encoder the definitions were loaded with. An
override of ``clip_encoder``'s model, tag or checkpoint in a run's config (the launchpad allows it) is refused
before anything is computed, with the setting to use instead; the stored table stays as it was. Overrides
that do not change the embeddings (batch size, workers) run and reuse every row.
"""

from __future__ import annotations

import pytest
import torch
from dagster import AssetKey, DagsterInstance, instance_for_test

from tac_pipeline.definitions import build_definitions
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import tiny_encoder

KEY = "toy"


def _run_embeddings(defs, instance: DagsterInstance, encoder_config: dict | None = None):
    job = defs.get_implicit_global_asset_job_def()
    run_config = {"resources": {"clip_encoder": {"config": encoder_config}}} if encoder_config else None
    return job.execute_in_process(
        run_config=run_config,
        instance=instance,
        partition_key=KEY,
        asset_selection=[AssetKey("image_embeddings")],
        raise_on_error=False,
    )


def _failure_text(result) -> str:
    return "\n".join(
        str(event.step_failure_data.error) for event in result.all_events if event.is_step_failure
    )


@pytest.fixture
def materialized(data_dir):
    write_toy_drop(data_dir / "drops" / KEY, train=3, test=1)
    defs = build_definitions(data_dir=data_dir, encoder=tiny_encoder(), device="cpu")
    with instance_for_test() as instance:
        instance.add_dynamic_partitions(datasets_partitions.name, [KEY])
        assert _run_embeddings(defs, instance).success
        stored = data_dir / "store" / "image_embeddings" / f"{KEY}.parquet"
        yield defs, instance, stored


def _assert_refused(result, stored, before: bytes, *needles: str) -> None:
    assert not result.success
    message = _failure_text(result)
    assert "overrides the clip_encoder resource" in message
    for needle in needles:
        assert needle in message, message
    assert stored.read_bytes() == before  # the materialized table is untouched


def test_override_with_an_encoder_of_the_same_width_is_refused(materialized, tmp_path):
    defs, instance, stored = materialized
    import open_clip

    from tac_pipeline.encoders import register_model_configs

    register_model_configs()
    torch.manual_seed(123)  # other weights, same 64-wide tac-tiny architecture
    checkpoint = tmp_path / "other-tiny.pt"
    torch.save(open_clip.create_model("tac-tiny").state_dict(), checkpoint)
    before = stored.read_bytes()
    result = _run_embeddings(defs, instance, {"model_name": "tac-tiny", "checkpoint": str(checkpoint)})
    _assert_refused(result, stored, before, f"TAC_CLIP_CHECKPOINT={checkpoint}")


def test_override_with_an_encoder_of_another_width_is_refused(materialized):
    defs, instance, stored = materialized
    before = stored.read_bytes()
    result = _run_embeddings(defs, instance, {"model_name": "ViT-B-32", "pretrained": None})
    _assert_refused(result, stored, before, "TAC_CLIP_MODEL=ViT-B-32", "TAC_CLIP_PRETRAINED=none")


def test_override_that_keeps_the_embeddings_runs_and_reuses_every_row(materialized):
    defs, instance, _ = materialized
    result = _run_embeddings(defs, instance, {"model_name": "tac-tiny", "pretrained": None, "batch_size": 7})
    assert result.success
    event = instance.get_latest_materialization_event(AssetKey("image_embeddings"))
    metadata = event.asset_materialization.metadata
    assert metadata["encoded"].value == 0 and metadata["reused"].value == 12
