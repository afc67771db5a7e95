"""Fit or assign: the refit policy through the graph, and what an assign run leaves of the fitted model."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import AssetKey, instance_for_test, materialize

from tac_pipeline.common.tables import column_matrix
from tac_pipeline.defs.assets import build_assets
from tac_pipeline.defs.assets.results import predict_rows
from tac_pipeline.defs.assets.training import FittedModel
from tac_pipeline.defs.checks import build_asset_checks
from tac_pipeline.defs.names import (
    ASSIGN,
    ASSIGN_ASSETS,
    DATASET_ASSETS,
    FIT,
    FIT_ASSETS,
    REFIT_REASON_TAG,
    RUN_KIND_TAG,
    embedding_code_version,
)
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline.drops.refit import plan_dataset_run
from tac_pipeline.store.records import latest_materialization
from tac_pipeline.tac import cluster_metrics
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import (
    materialize_nouns,
    read_output,
    resources,
    step_failure_messages,
    tiny_encoder,
)
from tac_pipeline_tests.test_tac.planted_data import planted_groups

FAST_TAC = """
[tac]
epochs = 40
batch_size = 64
n_neighbors = 10
kmeans_iter = 50
kmeans_restarts = 3
baseline_restarts = 3
"""


def recluster(data_dir, instance, key: str, *, force: bool = False, selection=None, raise_on_error=True):
    """What make cluster does after its noun run: ask the policy, then materialize the fit or the assign."""
    encoder = tiny_encoder()
    decision = plan_dataset_run(
        instance,
        key,
        data_dir / "drops" / key,
        image_code_version=embedding_code_version(encoder.identity()),
        data_dir=data_dir,
        roots=[data_dir],
        force=force,
    )
    if not instance.has_dynamic_partition(datasets_partitions.name, key):
        instance.add_dynamic_partitions(datasets_partitions.name, [key])
    chosen = DATASET_ASSETS if decision.kind == FIT else ASSIGN_ASSETS
    assets = build_assets(encoder.identity())
    tags = {RUN_KIND_TAG: decision.kind, REFIT_REASON_TAG: decision.reason}
    result = materialize(
        [*assets, *build_asset_checks(assets)],
        selection=[AssetKey(n) for n in (selection or chosen)],
        partition_key=key,
        resources=resources(data_dir, encoder),
        instance=instance,
        tags=tags if selection is None else None,
        raise_on_error=raise_on_error,
    )
    return decision, result


def fit_run(instance, key: str) -> str:
    return latest_materialization(instance, "trained_heads", key).run_id


def labels_metadata(instance, key: str, entry: str):
    return latest_materialization(instance, "cluster_labels", key).value(entry)


class Planted:
    """A bring-your-own drop of planted classes (4 groups of 2, 32 dimensions) with its own nouns."""

    def __init__(self, drop, seed: int = 0, n_per: int = 100, settings: str = ""):
        self.drop = drop
        self.v, nouns, self.y = planted_groups(seed, groups=4, group_size=2, n_per=n_per)
        self.ids = np.array([f"c{c}-{i:04d}" for i, c in enumerate(self.y)])
        drop.mkdir(parents=True)
        pq.write_table(
            pa.table({"noun": [f"noun{i}" for i in range(len(nouns))], "embedding": nouns.tolist()}),
            drop / "nouns.parquet",
        )
        (drop / "dataset.toml").write_text(f"n_clusters = 6\n{settings}\n{FAST_TAC}")

    def write(self, rows: np.ndarray) -> None:
        rows = np.sort(rows)
        table = pa.table(
            {
                "image_id": self.ids[rows].tolist(),
                "embedding": self.v[rows].tolist(),
                "label": [f"class{c}" for c in self.y[rows]],
            }
        )
        pq.write_table(table, self.drop / "embeddings.parquet")

    def known(self, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """Of the first six classes: ``share`` of each class's rows, and the rest."""
        rng = np.random.default_rng(seed)
        first, rest = [], []
        for c in range(6):
            rows = rng.permutation(np.flatnonzero(self.y == c))
            cut = int(round(share * len(rows)))
            first += rows[:cut].tolist()
            rest += rows[cut:].tolist()
        return np.sort(first), np.sort(rest)


@pytest.fixture
def instance():
    with instance_for_test() as instance:
        yield instance


def test_an_assign_reuses_the_fit_and_labels_new_images_with_its_ids(data_dir, instance):
    planted = Planted(data_dir / "drops" / "pets")
    fitted, later = planted.known(0.9)
    planted.write(fitted)
    decision, _ = recluster(data_dir, instance, "pets")
    assert decision.kind == FIT and "no fit yet" in decision.reason
    fit_id = fit_run(instance, "pets")
    stored = {a: latest_materialization(instance, a, "pets").storage_id for a in FIT_ASSETS}
    first = read_output(data_dir, "cluster_labels", "pets")

    # The assign path on the fitted images themselves gives exactly the fit's labels and confidences.
    model = FittedModel.from_table(read_output(data_dir, "trained_heads", "pets"))
    images = column_matrix(read_output(data_dir, "image_embeddings", "pets"), "embedding")
    parts = read_output(data_dir, "counterparts", "pets")
    again = predict_rows(model, images, column_matrix(parts, "counterpart"), "cpu")
    import json

    mapping = json.loads(first.schema.metadata[b"tac_pipeline.cluster_ids"])
    for column, ids in mapping.items():
        assert (np.asarray(ids)[again[column]] == first[column].to_numpy()).all(), column
    assert (again["confidence"] == first["confidence"].to_numpy()).all()

    planted.write(np.concatenate([fitted, later[:5]]))  # 5 new images: 1 % of the fitted set
    decision, result = recluster(data_dir, instance, "pets")
    assert decision.kind == ASSIGN
    assert (
        decision.reason.startswith("assigned 5 new images to the fit of run ") and "novel" in decision.reason
    )
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == set(ASSIGN_ASSETS)
    assert {a: latest_materialization(instance, a, "pets").storage_id for a in FIT_ASSETS} == stored
    labels = read_output(data_dir, "cluster_labels", "pets")
    old = {i: r for r, i in enumerate(labels["image_id"].to_pylist())}
    keep = [old[i] for i in first["image_id"].to_pylist()]
    for column in (
        "cluster",
        "cluster_text",
        "cluster_mean",
        "cluster_no_train",
        "cluster_kmeans",
        "confidence",
    ):
        assert (labels[column].to_numpy()[keep] == first[column].to_numpy()).all(), column
    assigned = labels["assigned"].to_numpy(zero_copy_only=False)
    assert assigned.sum() == 5 and not assigned[keep].any()
    new_ids = set(planted.ids[later[:5]])
    assert {i for i, a in zip(labels["image_id"].to_pylist(), assigned, strict=True) if a} == new_ids
    assert labels_metadata(instance, "pets", "labels_from_fit") == fit_id
    assert labels_metadata(instance, "pets", "run_kind") == "assign"
    assert "assigned 5 new images" in labels_metadata(instance, "pets", "refit_decision")
    parts = latest_materialization(instance, "counterparts", "pets")
    assert parts.value("computed") == 5 and parts.value("reused") == len(fitted)


def test_known_classes_are_assigned_as_well_as_the_fit_and_rarely_novel(data_dir, instance):
    planted = Planted(data_dir / "drops" / "pets", seed=1, settings='refit = "never"')
    fitted, later = planted.known(0.7, seed=1)
    planted.write(fitted)
    recluster(data_dir, instance, "pets")
    fit_labels = read_output(data_dir, "cluster_labels", "pets")
    truth = np.array([int(s.split("-")[0][1:]) for s in fit_labels["image_id"].to_pylist()])
    fit_acc = cluster_metrics(truth, fit_labels["cluster"].to_numpy())["acc"]

    planted.write(np.concatenate([fitted, later]))
    decision, _ = recluster(data_dir, instance, "pets")
    assert decision.kind == ASSIGN and 'refit = "never"' in decision.reason
    labels = read_output(data_dir, "cluster_labels", "pets")
    truth = np.array([int(s.split("-")[0][1:]) for s in labels["image_id"].to_pylist()])
    assigned = labels["assigned"].to_numpy(zero_copy_only=False)
    clusters = labels["cluster"].to_numpy()
    # The new images scored under the whole table's best matching of clusters to classes.
    all_acc = cluster_metrics(truth, clusters)["acc"]
    new_acc = (all_acc * len(truth) - fit_acc * (~assigned).sum()) / assigned.sum()
    print(f"fit ACC {fit_acc:.2f}; assigned ACC {new_acc:.2f}")
    assert new_acc >= fit_acc - 2.0
    novel = labels["novel"].to_numpy(zero_copy_only=False)[assigned].mean()
    assert novel < 0.10


def test_new_classes_are_novel_and_their_share_makes_the_next_run_refit(data_dir, instance):
    planted = Planted(data_dir / "drops" / "pets")
    known = np.flatnonzero(planted.y < 6)
    unseen = np.flatnonzero(planted.y >= 6)[::2]  # 100 images of two new classes: 17 % of the fitted 600
    planted.write(known)
    recluster(data_dir, instance, "pets")
    planted.write(np.concatenate([known, unseen]))
    decision, result = recluster(data_dir, instance, "pets")
    assert decision.kind == ASSIGN
    labels = read_output(data_dir, "cluster_labels", "pets")
    assigned = labels["assigned"].to_numpy(zero_copy_only=False)
    novel = labels["novel"].to_numpy(zero_copy_only=False)
    assert assigned.sum() == len(unseen)
    print(f"novel among unseen-class images: {100 * novel[assigned].mean():.1f} %")
    assert novel[assigned].mean() >= 0.80
    checks = {e.asset_check_key.name: e for e in result.get_asset_check_evaluations()}
    assert not checks["novel_share_below_refit_threshold"].passed  # a warning in the UI

    decision, _ = recluster(data_dir, instance, "pets")  # nothing changed in the drop, but the fit is stale
    assert decision.kind == FIT
    assert "of the 100 images assigned since the last fit are novel" in decision.reason
    assert labels_metadata(instance, "pets", "refit_decision") == decision.reason
    assert not any(read_output(data_dir, "cluster_labels", "pets")["assigned"].to_pylist())


def _fitted(data_dir, instance, settings: str = ""):
    planted = Planted(data_dir / "drops" / "pets", n_per=60, settings=settings)
    rows = np.flatnonzero(planted.y < 6)
    planted.write(rows)
    recluster(data_dir, instance, "pets")
    return planted, rows


@pytest.mark.parametrize(
    "change, expected",
    [
        ("share", "of the images are new, changed or removed since the last fit"),
        ("settings", "dataset.toml changed since the fit (tac)"),
        ("nouns", "the nouns changed since the fit"),
        ("always", 'refit = "always"'),
        ("force", "a fit was asked for (REFIT=1)"),
        ("never", None),
        ("removed", None),
    ],
)
def test_each_trigger_of_the_policy_through_the_graph(data_dir, instance, change, expected):
    planted, rows = _fitted(data_dir, instance)
    first_fit = fit_run(instance, "pets")
    extra = np.flatnonzero(planted.y >= 6)
    toml = planted.drop / "dataset.toml"
    if change == "share":  # 90 new images: 25 % of the fitted 360
        planted.write(np.concatenate([rows, extra[:90]]))
    elif change == "settings":
        toml.write_text(toml.read_text().replace("epochs = 40", "epochs = 41"))
    elif change == "nouns":
        nouns = pq.read_table(planted.drop / "nouns.parquet")
        pq.write_table(nouns.slice(0, nouns.num_rows - 1), planted.drop / "nouns.parquet")
    elif change == "always":
        toml.write_text('refit = "always"\n' + toml.read_text())
    elif change == "never":  # 50 % new, but the policy says never
        toml.write_text('refit = "never"\n' + toml.read_text())
        planted.write(np.concatenate([rows, extra]))
    elif change == "removed":  # a third of the images gone, nothing added
        planted.write(rows[::3])
    decision, result = recluster(data_dir, instance, "pets", force=change == "force")
    assert result.success
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    if expected is None:
        assert decision.kind == ASSIGN, decision.reason
        assert materialized == set(ASSIGN_ASSETS) and fit_run(instance, "pets") == first_fit
        labels = read_output(data_dir, "cluster_labels", "pets")
        if change == "removed":
            assert labels.num_rows == len(rows[::3]) and not any(labels["assigned"].to_pylist())
    else:
        assert decision.kind == FIT and expected in decision.reason, decision.reason
        assert materialized == set(DATASET_ASSETS) and fit_run(instance, "pets") != first_fit
        assert labels_metadata(instance, "pets", "refit_decision") == decision.reason


def test_an_encoder_change_refits_even_under_never(data_dir, instance):
    write_toy_drop(data_dir / "drops" / "toy")
    materialize_nouns(data_dir, instance)
    recluster(data_dir, instance, "toy")
    first_fit = fit_run(instance, "toy")
    drop = data_dir / "drops" / "toy"
    (drop / "dataset.toml").write_text('refit = "never"\n')
    # The drop now brings its own embeddings (of the same width): another encoder for the same images.
    images = read_output(data_dir, "image_embeddings", "toy")
    rng = np.random.default_rng(0)
    vectors = column_matrix(images, "embedding") + 0.05 * rng.normal(size=(images.num_rows, 64))
    pq.write_table(
        pa.table({"image_id": images["image_id"], "embedding": vectors.tolist(), "label": images["label"]}),
        drop / "embeddings.parquet",
    )
    decision, _ = recluster(data_dir, instance, "toy")
    assert decision.kind == FIT and "the encoder changed since the fit" in decision.reason
    assert "none (bring your own)" in decision.reason and fit_run(instance, "toy") != first_fit


def test_the_assign_job_refuses_when_the_policy_asks_for_a_fit(data_dir, instance):
    planted, rows = _fitted(data_dir, instance)
    planted.write(np.concatenate([rows, np.flatnonzero(planted.y >= 6)]))  # +33 %
    _, result = recluster(data_dir, instance, "pets", selection=ASSIGN_ASSETS, raise_on_error=False)
    assert not result.success
    message = step_failure_messages(result)
    assert "the refit policy asks for a fit of 'pets', not an assign" in message
    assert "Launch the cluster_dataset job" in message
    assert read_output(data_dir, "cluster_labels", "pets").num_rows == len(rows)  # nothing assigned


def test_an_image_drop_assigns_a_new_file_and_ignores_touched_ones(data_dir, instance):
    import os

    from tac_pipeline_tests.conftest import TOY_CLASSES, toy_image

    drop = data_dir / "drops" / "toy"
    write_toy_drop(drop)
    materialize_nouns(data_dir, instance)
    recluster(data_dir, instance, "toy")
    for folder, _, files in os.walk(drop):  # copied without keeping times: every file looks new
        for name in files:
            os.utime(os.path.join(folder, name), (1_700_000_000, 1_700_000_000))
    toy_image(np.random.default_rng(3), *TOY_CLASSES["red"]).save(drop / "train" / "red" / "new.png")
    decision, result = recluster(data_dir, instance, "toy")
    assert decision.kind == ASSIGN and decision.reason.startswith("assigned 1 new images"), decision.reason
    embedded = latest_materialization(instance, "image_embeddings", "toy")
    assert embedded.value("encoded") == 1
    labels = read_output(data_dir, "cluster_labels", "toy")
    assert labels["assigned"].to_pylist().count(True) == 1
