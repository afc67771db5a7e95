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
    AssetCheckSeverity,
    AssetKey,
    AssetRecordsFilter,
    instance_for_test,
    materialize,
)
from PIL import Image

from tac_pipeline.assets import build_assets
from tac_pipeline.assets.checks import (
    allowed_empty_clusters,
    build_asset_checks,
    embeddings_check,
    empty_clusters_check,
    metrics_check,
    nouns_per_center_check,
)
from tac_pipeline.assets.figures import MAX_FIGURE_BYTES, figure_path
from tac_pipeline.tables import embedding_array
from tac_pipeline.tac.naming import EMPTY_NAME, UNNAMED, cluster_names
from tac_pipeline_tests.conftest import write_toy_drop
from tac_pipeline_tests.test_assets.helpers import (
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
    md = {
        asset: latest_metadata(instance, asset, "toy")
        for asset in (
            "image_embeddings",
            "semantic_centers",
            "text_space",
            "counterparts",
            "knn_graphs",
            "trained_heads",
            "cluster_labels",
            "metrics",
        )
    }
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
    return materialize(
        [*build_assets(encoder.identity()), *build_asset_checks()],
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
            ("metrics", "metrics_present"),
        }, key
        assert checks[("image_embeddings", "embeddings_finite_and_unit_norm")].passed, key
        assert checks[("metrics", "metrics_present")].passed, key
    # Three well separated blobs: every cluster is used.
    byo = _evaluations(results["byo"])[("cluster_labels", "no_empty_clusters")]
    assert byo.passed and byo.metadata["empty_clusters"].value == 0


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
    result = materialize_assets(root, instance, ["cluster_labels"], "few_nouns")
    check = _evaluations(result)[("cluster_labels", "no_empty_clusters")]
    assert not check.passed and check.severity == AssetCheckSeverity.WARN
    assert check.metadata["empty_clusters"].value == 2 and "collapsed" in check.description
    assert result.success


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
