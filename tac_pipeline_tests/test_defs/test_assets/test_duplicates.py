"""Near-duplicates in cluster_labels: from the fit's kNN graph, and new images checked against the stored ones."""

import numpy as np
import pyarrow.parquet as pq
from dagster import instance_for_test

from tac_pipeline.store.records import latest_materialization
from tac_pipeline_tests.test_defs.test_assets.helpers import read_output
from tac_pipeline_tests.test_defs.test_assets.test_refit import Planted, recluster


def test_copies_are_grouped_in_a_fit_and_when_they_arrive_later(data_dir):
    planted = Planted(data_dir / "drops" / "pets", n_per=60)
    toml = planted.drop / "dataset.toml"  # planted classes hold images 0.95 alike: copies are closer still
    toml.write_text("duplicate_threshold = 0.99\n" + toml.read_text())
    rows = np.flatnonzero(planted.y < 6)
    rng = np.random.default_rng(0)
    # Two near copies of image rows[0] and one exact copy of rows[1], as extra rows with their own ids.
    planted.v = np.concatenate([planted.v, planted.v[[rows[0], rows[0], rows[1]]]])
    planted.v[-3:-1] += 0.01 * rng.normal(size=(2, planted.v.shape[1]))
    planted.v[-3:-1] /= np.linalg.norm(planted.v[-3:-1], axis=1, keepdims=True)
    planted.y = np.concatenate([planted.y, planted.y[[rows[0], rows[0], rows[1]]]])
    planted.ids = np.concatenate([planted.ids, ["copy-a", "copy-b", "copy-c"]])
    n = len(planted.v)
    planted.write(np.concatenate([rows, [n - 3, n - 2]]))
    with instance_for_test() as instance:
        recluster(data_dir, instance, "pets")
        labels = read_output(data_dir, "cluster_labels", "pets").to_pandas().set_index("image_id")
        first = planted.ids[rows[0]]
        group = labels.loc[first, "duplicate_group"]
        assert (
            group == labels.loc["copy-a", "duplicate_group"] == labels.loc["copy-b", "duplicate_group"] == 0
        )
        assert labels["duplicate_group"].notna().sum() == 3
        latest = latest_materialization(instance, "cluster_labels", "pets")
        assert latest.value("duplicate_groups") == 1 and latest.value("images_in_duplicate_groups") == 3
        assert latest.value("duplicate_threshold") == {"value": 0.99, "from": "dataset.toml"}

        planted.write(np.concatenate([rows, [n - 3, n - 2, n - 1]]))  # the exact copy arrives: an assign
        decision, _ = recluster(data_dir, instance, "pets")
        assert decision.kind == "assign"
        labels = read_output(data_dir, "cluster_labels", "pets").to_pandas().set_index("image_id")
        second = planted.ids[rows[1]]
        assert labels.loc["copy-c", "assigned"]
        assert labels.loc["copy-c", "duplicate_group"] == labels.loc[second, "duplicate_group"] == 1
        assert labels["duplicate_group"].notna().sum() == 5
    assert pq.read_table(planted.drop / "embeddings.parquet").num_rows == len(rows) + 3
