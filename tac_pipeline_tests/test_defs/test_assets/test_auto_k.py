"""``n_clusters = "auto"`` through the Dagster graph: K chosen in ``counterparts``, shown, and carried on."""

from __future__ import annotations

import numpy as np
import pytest
from dagster import AssetKey, instance_for_test

from tac_pipeline.cli.cluster import chosen_k_summary
from tac_pipeline_tests.conftest import TOY_CLASSES, toy_image
from tac_pipeline_tests.test_defs.test_assets.helpers import (
    materialize_dataset,
    materialize_nouns,
    read_output,
    step_failure_messages,
)


def metadata_of(instance, asset: str) -> dict:
    event = instance.get_latest_materialization_event(AssetKey(asset))
    return {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def write_flat(drop, count: int, start: int = 0, seed: int = 1) -> None:
    """``count`` unlabelled toy images straight in the drop folder (no class folders), the classes in turn."""
    drop.mkdir(exist_ok=True)
    rng = np.random.default_rng(seed)
    colours = list(TOY_CLASSES.values())
    for i in range(start, start + count):
        background, stripe = colours[i % len(colours)]
        toy_image(rng, background, stripe).save(drop / f"img_{i:03d}.png")


def test_auto_chooses_k_shows_the_curve_and_carries_it(data_dir):
    drop = data_dir / "drops" / "holiday"
    write_flat(drop, 30)
    (drop / "dataset.toml").write_text('n_clusters = "auto"\nn_clusters_range = [2, 6]\n[tac]\nepochs = 3\n')
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        assert materialize_dataset(data_dir, instance, "holiday").success

        parts = metadata_of(instance, "counterparts")
        chosen = parts["n_clusters"]
        assert 2 <= chosen <= 6
        assert parts["n_clusters_range"] == [2, 6]
        assert list(parts["n_clusters_scores"]) == [str(k) for k in range(2, 7)]
        assert max(parts["n_clusters_scores"].values()) == parts["n_clusters_scores"][str(chosen)]
        assert "data:image/png;base64," in parts["n_clusters_scores_plot"]
        assert f"n_clusters = {chosen}" in parts["n_clusters_chosen"]  # how to pin it
        shell = chosen_k_summary(instance, "holiday")  # what make cluster prints under the metrics
        assert shell.startswith(f"Chosen K = {chosen} (best silhouette") and "**" not in shell
        assert f"n_clusters = {chosen}" in shell
        centres = metadata_of(instance, "semantic_centers")
        assert centres["n_centers"] == 18 and "upper end 6" in centres["rule"]  # 3 x the range's upper end

        heads = metadata_of(instance, "trained_heads")
        assert heads["n_clusters"] == chosen and heads["n_clusters_from"].startswith("auto")
        assert heads["settings"]["n_clusters"]["value"] == chosen
        labels = metadata_of(instance, "cluster_labels")
        assert labels["n_clusters"] == chosen and labels["n_clusters_from"].startswith("auto")
        assert read_output(data_dir, "cluster_labels", "holiday")["cluster"].to_numpy().max() < chosen
        metrics = metadata_of(instance, "metrics")
        assert metrics["n_clusters"] == chosen
        assert metrics["settings"]["n_clusters"]["from"].startswith("auto")

        # The drop grows: K is chosen again, ids are matched where they can be, and the turnover is reported.
        write_flat(drop, 15, start=30, seed=2)
        assert materialize_dataset(data_dir, instance, "holiday").success
        again = metadata_of(instance, "cluster_labels")
        k = again["n_clusters"]
        assert again["previous_n_clusters"] == chosen
        assert again["clusters_matched"] + again["clusters_new"] == k
        assert again["clusters_matched"] + again["clusters_gone"] == chosen
        assert again["clusters_matched"] >= 1


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('n_clusters = "Auto"', 'write it in lower case: n_clusters = "auto"'),
        ('n_clusters = "auto"\nn_clusters_range = [1, 5]', "must start at 2 or more"),
        ('n_clusters = "auto"\nn_clusters_range = [10, 5]', "upper end must exceed its lower end"),
        ('n_clusters = "auto"\nn_clusters_range = [2, 5.5]', "two integers"),
        ("n_clusters = 4\nn_clusters_range = [2, 5]", 'only used with n_clusters = "auto"'),
        ('n_clusters = "auto"\nn_clusters_range = [2, 40]', "reaches the number of images (30)"),
    ],
)
def test_bad_auto_settings_fail_naming_the_file_the_field_and_the_fix(data_dir, toml, message):
    drop = data_dir / "drops" / "bad"
    write_flat(drop, 30)
    (drop / "dataset.toml").write_text(toml + "\n")
    with instance_for_test() as instance:
        failed = materialize_dataset(data_dir, instance, "bad", raise_on_error=False)
    assert not failed.success
    messages = step_failure_messages(failed)
    assert message in messages and str(drop / "dataset.toml") in messages
    field = "n_clusters_range" if "range" in toml and "Auto" not in toml else "n_clusters"
    assert f"field '{field}'" in messages
