"""What each stage shows in the UI: metadata, figures and asset checks after an in-process materialization."""

from __future__ import annotations

import base64
import io
import re
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dagster import (
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    MaterializeResult,
    instance_for_test,
    materialize,
)
from dagster import asset as dagster_asset
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus
from PIL import Image

from tac_pipeline.common.tables import embedding_array
from tac_pipeline.defs.assets import DATASET_ASSETS, build_assets
from tac_pipeline.defs.assets.figures import MAX_FIGURE_BYTES
from tac_pipeline.defs.checks import (
    EMBEDDINGS_CHECK,
    allowed_empty_clusters,
    build_asset_checks,
    embeddings_check,
    embeddings_check_spec,
    empty_clusters_check,
    metrics_check,
    nouns_per_center_check,
)
from tac_pipeline.defs.io_managers import ParquetIOManager
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline.store.layout import store_dir
from tac_pipeline.tac.naming import EMPTY_NAME, UNNAMED, cluster_names
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_defs.test_assets.helpers import (
    materialize_dataset,
    materialize_nouns,
    read_output,
    resources,
    tiny_encoder,
)

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
FIGURES = {
    "semantic_centers": ["center_sizes_plot"],
    "trained_heads": ["loss_curves"],
    "cluster_labels": ["cluster_map", "gallery"],
}
PARTITIONED_ASSETS = DATASET_ASSETS
#: Checks evaluated inside their asset's step (``check_specs`` on the asset), not as steps of their own.
IN_ASSET_CHECKS = {
    ("text_space", "noun_for_every_center"),
    ("cluster_labels", "no_empty_clusters"),
    ("metrics", "metrics_present"),
}
DATA_URI = re.compile(r"!\[[^\]]*\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)")


@pytest.fixture(scope="module")
def lineage(tmp_path_factory, wordnet_cache):
    """One data root and instance: the nouns, a toy image drop and a bring-your-own drop, materialized once."""
    from tac_pipeline.encoders import wordnet

    root = tmp_path_factory.mktemp("lineage") / "data"
    (root / "cache").mkdir(parents=True)
    shutil.copyfile(wordnet_cache, root / "cache" / wordnet.CACHE_FILE)
    write_toy_drop(root / "drops" / "toy", train=8, test=4)
    byo = root / "drops" / "byo"
    byo.mkdir(parents=True)
    rng = np.random.default_rng(0)
    directions = rng.normal(size=(3, 64))
    rows = np.concatenate([d + 0.2 * rng.normal(size=(20, 64)) for d in directions])
    pq.write_table(
        pa.table({"image_id": [f"b{i:03d}" for i in range(60)], "embedding": rows.tolist()}),
        byo / "embeddings.parquet",
    )
    (byo / "dataset.toml").write_text("n_clusters = 3\n[tac]\nepochs = 60\n")
    # The same images with a vocabulary of two nouns: most semantic centres cannot receive one.
    few = root / "drops" / "few_nouns"
    shutil.copytree(byo, few)
    (few / "dataset.toml").write_text("n_clusters = 3\n[tac]\nepochs = 2\n")
    pq.write_table(
        pa.table({"noun": ["north", "south"], "embedding": [[1.0] + [0.0] * 63, [-1.0] + [0.0] * 63]}),
        few / "nouns.parquet",
    )
    with instance_for_test() as instance:
        nouns = materialize_nouns(root, instance)
        results = {key: materialize_dataset(root, instance, key) for key in ("toy", "byo", "few_nouns")}
        yield root, instance, nouns, results


def latest_metadata(instance, asset: str, partition: str | None = None) -> dict:
    records = instance.fetch_materializations(
        AssetRecordsFilter(AssetKey(asset), asset_partitions=None if partition is None else [partition]),
        limit=1,
    ).records
    return {k: v.value for k, v in records[0].asset_materialization.metadata.items()}


def test_every_stage_tells_its_story(lineage):
    _, instance, _, _ = lineage
    md = {asset: latest_metadata(instance, asset, "toy") for asset in PARTITIONED_ASSETS}
    nouns = latest_metadata(instance, "wordnet_noun_embeddings")

    images = md["image_embeddings"]
    assert images["images"] == 36 and images["skipped"] == 0
    assert "tac-tiny" in images["model"] and images["device"] == "cpu" and images["images_per_second"] > 0

    assert nouns["nouns"] == 3000 and "tac-tiny" in nouns["model"] and nouns["seconds"] > 0
    assert nouns["templates"].count("- `") == 7

    centres = md["semantic_centers"]
    assert centres["n_centers"] == 9 and "3·K" in centres["rule"]
    assert sum(centres["center_sizes"]) == 24 and len(centres["center_sizes"]) == 9

    table = md["text_space"]["nouns_by_center"]
    assert table.startswith("| centre | noun | gloss | confidence |")
    assert table.count("\n") >= 2
    # Which nouns each dataset used: the shared WordNet embeddings (file, rows, encoder) or the drop's own file.
    for key in ("toy", "byo"):
        shared = latest_metadata(instance, "text_space", key)
        assert shared["nouns_source"] == "wordnet_noun_embeddings" and shared["nouns_rows"] == 3000
        assert shared["nouns_encoder"] == nouns["model"] and shared["nouns_vocabulary"] == "lemmas"
        assert shared["nouns_file"].endswith("wordnet_noun_embeddings.parquet")
    own = latest_metadata(instance, "text_space", "few_nouns")
    assert own["nouns_source"] == "drop" and own["nouns_rows"] == 2 and len(own["nouns_sha256"]) == 64
    assert own["nouns_file"].endswith("few_nouns/nouns.parquet") and "nouns_vocabulary" not in own

    assert md["counterparts"]["most_retrieved_nouns"].startswith("| noun | images |")
    assert md["knn_graphs"]["n_neighbors"] == 23 and 0 <= md["knn_graphs"]["image_text_agreement"] <= 1

    heads = md["trained_heads"]
    assert heads["device"] == "cpu" and heads["training_seconds"] > 0
    assert heads["losses_per_epoch"].count("\n") == 20 + 1  # header, rule, 20 epochs

    labels = md["cluster_labels"]
    lines = labels["cluster_names"].splitlines()
    assert lines[0] == "| cluster | name | size | top nouns (images) |" and len(lines) == 2 + 3
    parts = read_output(lineage[0], "counterparts", "toy")
    clusters = read_output(lineage[0], "cluster_labels", "toy")["cluster"].to_numpy()
    expected = cluster_names(clusters, parts["top_noun"].to_pylist(), 3)
    for k, line in enumerate(lines[2:]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert cells[:3] == [str(k), expected[k], str(int((clusters == k).sum()))]

    metrics = md["metrics"]
    assert metrics["labelled"] is True
    assert metrics["metrics"].splitlines()[0].startswith("| method | NMI | ACC | ARI | balance")
    assert "tac_image" in metrics["metrics"]


def figure_path(root, asset: str, partition: str, name: str):
    """Where the project's IO manager over ``<root>/store`` keeps a figure."""
    return (
        ParquetIOManager(base_dir=str(root / "store"))
        .create_io_manager(None)
        .figure_path(asset, partition, name)
    )


def test_figures_are_small_pngs_written_beside_the_store_and_shown_inline(lineage):
    root, instance, _, _ = lineage
    for asset, names in FIGURES.items():
        md = latest_metadata(instance, asset, "toy")
        for name in names:
            path = figure_path(root, asset, "toy", name)
            assert path == root / "store" / "figures" / asset / "toy" / f"{name}.png"
            assert md[f"{name}_path"] == str(path)
            data = path.read_bytes()
            assert data.startswith(PNG_SIGNATURE) and 1_000 < len(data) <= MAX_FIGURE_BYTES < 200_000
            with Image.open(io.BytesIO(data)) as image:
                image.verify()
            with Image.open(io.BytesIO(data)) as image:
                assert image.width >= 200 and image.height >= 100
            inline = DATA_URI.fullmatch(md[name])
            assert inline and base64.b64decode(inline.group(1)) == data
    # no temporary file is left behind by the atomic writes
    assert not [p for p in (root / "store" / "figures").rglob("*") if p.name.endswith(".tmp")]


def test_bring_your_own_drop_has_no_gallery_but_a_map(lineage):
    root, instance, _, _ = lineage
    md = latest_metadata(instance, "cluster_labels", "byo")
    assert "no gallery" in md["gallery"] and "gallery_path" not in md
    assert figure_path(root, "cluster_labels", "byo", "cluster_map").is_file()
    assert not figure_path(root, "cluster_labels", "byo", "gallery").exists()


def materialize_assets(root, instance, assets: list[str], partition: str):
    """Materialize some assets of a partition in process; their checks are selected with them."""
    encoder = tiny_encoder()
    graph = build_assets(encoder.identity())
    return materialize(
        [*graph, *build_asset_checks(graph)],
        selection=assets,
        partition_key=partition,
        resources=resources(root, encoder),
        instance=instance,
    )


def _evaluations(result) -> dict:
    return {(e.asset_key.to_user_string(), e.check_name): e for e in result.get_asset_check_evaluations()}


def test_checks_run_with_the_materialization_and_pass_on_good_data(lineage):
    _, _, nouns, results = lineage
    assert _evaluations(nouns)[("wordnet_noun_embeddings", "embeddings_finite_and_unit_norm")].passed
    for key in ("toy", "byo"):
        checks = _evaluations(results[key])
        assert set(checks) == {
            ("image_embeddings", "embeddings_finite_and_unit_norm"),
            ("text_space", "noun_for_every_center"),
            ("cluster_labels", "no_empty_clusters"),
            ("cluster_labels", "novel_share_below_refit_threshold"),
            ("metrics", "metrics_present"),
        }, key
        assert checks[("cluster_labels", "novel_share_below_refit_threshold")].passed, (
            key
        )  # a fit assigns none
        assert checks[("image_embeddings", "embeddings_finite_and_unit_norm")].passed, key
        assert checks[("metrics", "metrics_present")].passed, key
    # Three well separated blobs: every cluster is used.
    byo = _evaluations(results["byo"])[("cluster_labels", "no_empty_clusters")]
    assert byo.passed and byo.metadata["empty_clusters"].value == 0


def _check_names(definitions) -> set[tuple[str, str]]:
    return {(k.asset_key.to_user_string(), k.name) for d in definitions for k in d.check_keys}


def test_only_the_embedding_checks_are_steps_of_their_own():
    assets = build_assets(tiny_encoder().identity())
    standalone = _check_names(build_asset_checks(assets))
    assert standalone <= {
        ("image_embeddings", EMBEDDINGS_CHECK),
        ("wordnet_noun_embeddings", EMBEDDINGS_CHECK),
    }
    declared = _check_names(assets)
    assert IN_ASSET_CHECKS <= declared
    assert not declared & standalone  # one definition per check key
    # all embedding checks exist, in their asset or standalone
    assert {("image_embeddings", EMBEDDINGS_CHECK), ("wordnet_noun_embeddings", EMBEDDINGS_CHECK)} <= (
        declared | standalone
    )

    # an embedding asset that declares its check (the fold) drops the standalone one
    @dagster_asset(
        name="wordnet_noun_embeddings", check_specs=[embeddings_check_spec("wordnet_noun_embeddings")]
    )
    def folded():
        table = _vectors([[1, 0]])
        return MaterializeResult(value=table, check_results=[embeddings_check(table)])

    assert _check_names(build_asset_checks([folded])) == {("image_embeddings", EMBEDDINGS_CHECK)}
    assert _check_names(build_asset_checks()) == {
        ("image_embeddings", EMBEDDINGS_CHECK),
        ("wordnet_noun_embeddings", EMBEDDINGS_CHECK),
    }


def test_checks_run_in_their_assets_steps_and_show_per_partition(lineage):
    _, instance, _, results = lineage
    result = results["toy"]
    graph = build_assets(tiny_encoder().identity())
    in_asset = _check_names(graph)
    standalone = _check_names(c for c in build_asset_checks(graph) if c.partitions_def is not None)
    steps = {e.step_key for e in result.all_events if e.event_type_value == "STEP_START"}
    # eight assets, and a step for each standalone check (image_embeddings' until it is folded in)
    assert steps == {*PARTITIONED_ASSETS, *(f"{asset}_{check}" for asset, check in standalone)}
    evaluations = {
        (e.event_specific_data.asset_key.to_user_string(), e.event_specific_data.check_name): e
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert set(evaluations) == {c for c in in_asset | standalone if c[0] in PARTITIONED_ASSETS}
    for (asset_name, check_name), event in evaluations.items():
        in_step = asset_name if (asset_name, check_name) in in_asset else f"{asset_name}_{check_name}"
        assert event.step_key == in_step
        evaluation = event.event_specific_data
        # a partition's check, tied to the materialization it checked: the asset's Checks tab in the UI
        assert evaluation.partition == "toy", (asset_name, check_name)
        assert evaluation.target_materialization_data is not None, (asset_name, check_name)
    # what the UI reads: each check's executions, with the run's outcome
    for asset_name, check_name in IN_ASSET_CHECKS:
        history = instance.event_log_storage.get_asset_check_execution_history(
            AssetCheckKey(AssetKey(asset_name), check_name), limit=20
        )
        status = {record.run_id: record.status for record in history}
        passed = evaluations[(asset_name, check_name)].event_specific_data.passed
        expected = (
            AssetCheckExecutionRecordStatus.SUCCEEDED if passed else AssetCheckExecutionRecordStatus.FAILED
        )
        assert status[result.run_id] == expected, (asset_name, check_name)
    history = instance.event_log_storage.get_asset_check_execution_history(
        AssetCheckKey(AssetKey("text_space"), "noun_for_every_center"), limit=20
    )
    status = {record.run_id: record.status for record in history}
    assert status[results["few_nouns"].run_id] == AssetCheckExecutionRecordStatus.FAILED


def test_a_vocabulary_too_small_for_the_centres_warns(lineage):
    _, _, _, results = lineage
    checks = _evaluations(results["few_nouns"])
    centre = checks[("text_space", "noun_for_every_center")]
    assert not centre.passed and centre.severity == AssetCheckSeverity.WARN
    # two nouns for nine centres: at least seven centres with images received none
    assert centre.metadata["centers_without_nouns"].value >= 7
    assert "received no noun" in centre.description
    assert results["few_nouns"].success  # a warning informs, it does not fail the run


def test_a_collapsed_clustering_warns(lineage, monkeypatch):
    root, instance, _, _ = lineage
    from tac_pipeline import tac

    def collapsed(head, x, device=None):
        p = np.zeros((len(x), 3), dtype=np.float32)
        p[:, 0] = 1.0
        return p

    monkeypatch.setattr(tac, "predict_proba", collapsed)
    # Without its previous table every row is labelled again (rows the same model labelled are kept otherwise).
    (store_dir(root) / "cluster_labels" / "few_nouns.parquet").unlink()
    result = materialize_assets(root, instance, ["cluster_labels"], "few_nouns")
    check = _evaluations(result)[("cluster_labels", "no_empty_clusters")]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert check.metadata["empty_clusters"].value == 2 and "collapsed" in check.description
    assert result.success


def test_a_failing_error_check_is_recorded_without_failing_the_run(lineage, monkeypatch):
    """metrics_present (ERROR, not blocking): the metrics are stored and the check shows failed."""
    root, instance, _, _ = lineage
    from tac_pipeline import tac

    def no_nmi(truth, predicted):
        return {"nmi": float("nan"), "acc": 50.0, "ari": 50.0}

    monkeypatch.setattr(tac, "cluster_metrics", no_nmi)
    result = materialize_assets(root, instance, ["metrics"], "toy")
    check = _evaluations(result)[("metrics", "metrics_present")]
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR and not check.blocking
    assert "nmi missing" in check.description
    assert result.success and result.asset_materializations_for_node("metrics")
    assert np.isnan(read_output(root, "metrics", "toy")["nmi"].to_numpy()).all()  # stored as computed


def test_a_folded_embeddings_check_blocks_what_is_downstream(tmp_path):
    """The spec the embedding assets declare once folded: a failure stores the table, fails its step and
    skips every step downstream in the run."""
    spec = embeddings_check_spec("image_embeddings")
    assert spec.blocking and spec.name == EMBEDDINGS_CHECK and spec.partitions_def == datasets_partitions
    assert embeddings_check_spec("wordnet_noun_embeddings").partitions_def is None

    @dagster_asset(name="image_embeddings", partitions_def=datasets_partitions, check_specs=[spec])
    def bad_embeddings():
        table = _vectors([[1, 0], [np.nan, 0]])
        return MaterializeResult(value=table, check_results=[embeddings_check(table)])

    @dagster_asset(partitions_def=datasets_partitions)
    def downstream(image_embeddings: pa.Table) -> pa.Table:
        return image_embeddings

    with instance_for_test() as instance:
        instance.add_dynamic_partitions(datasets_partitions.name, ["bad"])
        result = materialize(
            [bad_embeddings, downstream],
            partition_key="bad",
            resources={"io_manager": ParquetIOManager(base_dir=str(tmp_path))},
            instance=instance,
            raise_on_error=False,
        )
    assert not result.success
    check = _evaluations(result)[("image_embeddings", EMBEDDINGS_CHECK)]
    assert not check.passed and check.blocking and check.partition == "bad"
    materialized = {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}
    assert materialized == {"image_embeddings"}
    assert (tmp_path / "image_embeddings" / "bad.parquet").is_file()
    assert not (tmp_path / "downstream").exists()


# --- the rules on crafted tables -------------------------------------------------------------------------


def test_cluster_names_are_the_most_frequent_nouns_of_the_members():
    clusters = [0, 0, 0, 0, 1, 1, 3, 3]
    nouns = ["dog", "cat", "dog", "puppy", "car", None, None, None]
    names = cluster_names(clusters, nouns, 4, top=2)
    assert names == ["dog / cat", "car", EMPTY_NAME, UNNAMED]  # ties broken alphabetically: cat < puppy
    assert cluster_names(clusters, nouns, 4, top=1, separator="+")[0] == "dog"
    with pytest.raises(ValueError, match="one noun per image"):
        cluster_names([0, 1], ["a"], 2)
    with pytest.raises(ValueError, match=r"\[0, 2\)"):
        cluster_names([0, 2], ["a", "b"], 2)


def _vectors(rows) -> pa.Table:
    return pa.table({"embedding": embedding_array(np.asarray(rows, dtype=np.float32))})


def test_embeddings_check_finds_nan_and_unnormalised_rows():
    good = embeddings_check(_vectors([[1, 0], [0.6, 0.8]]))
    assert good.passed and good.severity == AssetCheckSeverity.ERROR
    bad = embeddings_check(_vectors([[1, 0], [np.nan, 0], [2, 0]]))
    assert not bad.passed
    assert bad.metadata["non_finite_rows"].value == 1 and bad.metadata["not_unit_norm_rows"].value == 1
    assert "rows 1" in bad.description and "rows 2" in bad.description


def test_centre_and_cluster_rules():
    centres = pa.table({"center": [0, 1, 2], "size": [5, 0, 3]})
    space = pa.table({"center": [0, 0, 2]})
    assert nouns_per_center_check(space, centres).passed  # the empty centre 1 needs no noun
    assert not nouns_per_center_check(pa.table({"center": [0]}), centres).passed

    assert allowed_empty_clusters(100, 10) == 0 and allowed_empty_clusters(3, 5) == 2
    even = pa.table({"cluster": [0, 1, 2, 0, 1, 2]})
    assert empty_clusters_check(even, 3).passed
    assert empty_clusters_check(even, 3).metadata["size_entropy"].value == 1.0
    few = pa.table({"cluster": [0, 1, 2]})
    assert empty_clusters_check(few, 5).passed  # 3 images cannot fill 5 clusters
    assert not empty_clusters_check(pa.table({"cluster": [0, 0, 0, 1]}), 3).passed


def test_metrics_rule_demands_scores_only_when_labels_exist():
    labels = pa.table({"split": [None, None], "label": ["a", "b"]})
    unlabelled = pa.table({"split": [None, None], "label": pa.array([None, None], pa.string())})
    methods = ["kmeans_image", "tac_no_train", "tac_image", "tac_text", "tac_mean"]
    full = pa.table(
        {
            "method": methods,
            **{m: [50.0] * 5 for m in ("nmi", "acc", "ari")},
            "cluster_size_ratio": [1.0] * 5,
        }
    )
    empty_scores = full.set_column(1, "nmi", pa.array([None] * 5, pa.float64()))
    assert metrics_check(full, labels).passed
    failed = metrics_check(empty_scores, labels)
    assert not failed.passed and "nmi missing" in failed.description
    assert metrics_check(empty_scores, unlabelled).passed
    assert not metrics_check(full.slice(0, 3), labels).passed  # methods missing


def test_cluster_names_differ_when_clusters_share_their_most_frequent_noun():
    # Two classes (cats, dogs) whose members most often retrieve "animal"; a third cluster of cars.
    nouns = ["animal"] * 50 + ["cat"] * 40 + ["kitten"] * 5 + ["animal"] * 55 + ["dog"] * 35 + ["puppy"] * 6
    nouns += ["car"] * 30 + ["animal"] * 2
    clusters = [0] * 95 + [1] * 96 + [2] * 32
    names = cluster_names(clusters, nouns, 3)
    assert len(set(names)) == 3
    assert names[0].startswith("cat") and "kitten" in names[0]
    assert names[1].startswith("dog") and "puppy" in names[1]
    assert names[2].startswith("car")
    # More clusters than nouns: every name still differs.
    same = cluster_names([0, 1, 2], ["x", "x", "x"], 3)
    assert len(set(same)) == 3 and sum(name == "x" for name in same) == 1
