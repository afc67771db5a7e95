"""Images without a label never make the scores vanish: the labelled ones are scored, the others counted."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetKey, instance_for_test

from tac_pipeline_tests.conftest import TOY_CLASSES, toy_image
from tac_pipeline_tests.test_defs.test_assets.helpers import (
    materialize_dataset,
    materialize_nouns,
    read_output,
)
from tac_pipeline_tests.test_defs.test_assets.test_graph import TINY_WIDTH


def cluster_and_read_metrics_metadata(data_dir, key: str):
    """Materialize the nouns and the dataset's graph; the run's result and the metrics' metadata values."""
    with instance_for_test() as instance:
        materialize_nouns(data_dir, instance)
        result = materialize_dataset(data_dir, instance, key)
        assert result.success
        event = instance.get_latest_materialization_event(AssetKey("metrics"))
        return result, {k: getattr(v, "value", v) for k, v in event.asset_materialization.metadata.items()}


def test_a_stray_image_beside_the_class_folders_is_counted_not_scored(data_dir):
    drop = data_dir / "drops" / "stray"
    rng = np.random.default_rng(0)
    for name, (background, stripe) in TOY_CLASSES.items():
        (drop / name).mkdir(parents=True)
        for i in range(10):
            toy_image(rng, background, stripe).save(drop / name / f"{i}.png")
    toy_image(rng, (0, 0, 0), (255, 255, 255)).save(drop / "cover.png")  # no class folder: no label
    result, metadata = cluster_and_read_metrics_metadata(data_dir, "stray")
    assert (metadata["scored_images"], metadata["unlabelled_images"]) == (30, 1)
    metrics = read_output(data_dir, "metrics", "stray").to_pandas()
    assert metrics[["nmi", "acc", "ari"]].notna().all().all()
    assert set(metrics["n_images"]) == {31}
    (check,) = [c for c in result.get_asset_check_evaluations() if c.check_name == "metrics_present"]
    assert check.passed and "1 unlabelled image(s) not scored" in check.description


def test_a_null_label_in_bring_your_own_embeddings_is_counted_not_scored(data_dir):
    drop = data_dir / "drops" / "byo_partial"
    drop.mkdir()
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, TINY_WIDTH))
    rows = [directions[i % 3] + 0.2 * rng.normal(size=TINY_WIDTH) for i in range(60)]
    labels = [None if i == 17 else f"class{i % 3}" for i in range(60)]
    pq.write_table(
        pa.table(
            {
                "image_id": [f"r{i}" for i in range(60)],
                "embedding": [r.tolist() for r in rows],
                "label": labels,
            }
        ),
        drop / "embeddings.parquet",
    )
    _, metadata = cluster_and_read_metrics_metadata(data_dir, "byo_partial")
    assert (metadata["scored_images"], metadata["unlabelled_images"]) == (59, 1)
    assert metadata["settings"]["n_clusters"] == {"value": 3, "from": "labels"}
    metrics = read_output(data_dir, "metrics", "byo_partial").to_pandas()
    assert metrics[["nmi", "acc", "ari"]].notna().all().all()
