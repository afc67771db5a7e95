"""``TAC(n_clusters="auto")``: K chosen on planted sets with known K, including look-alike classes whose nouns
differ, lands within 25% of the truth, and the clustering stays within 5 NMI points of a run told the truth.

The same sets and criterion as benchmarks/bench_choose_k.py (whose table, with the image and concatenated
criteria that fail on the look-alike sets, is in the README).
"""

import numpy as np
import pytest

from tac_pipeline.tac import TAC, choose_n_clusters, cluster_metrics
from tac_pipeline.tac.params import AUTO_K_MAX, auto_k_range

from .planted_data import K_SETS, planted_groups

#: Scaled to ~1,000 images, as test_planted.py does.
SMALL = {"n_neighbors": 10, "kmeans_iter": 100, "kmeans_restarts": 3, "epochs": 30, "batch_size": 64}


@pytest.fixture(
    scope="module",
    params=[(name, seed) for name in ("plain", "pairs", "triples") for seed in (0, 1, 2)],
    ids=lambda p: f"{p[0]}-data{p[1]}",
)
def auto_and_told(request):
    name, seed = request.param
    v, nouns, y = planted_groups(seed, **K_SETS[name])
    truth = len(np.unique(y))
    auto = TAC("auto", seed=0, device="cpu", **SMALL).fit(v, nouns)
    told = TAC(truth, seed=0, device="cpu", **SMALL).fit(v, nouns)
    nmi_auto, nmi_told = cluster_metrics(y, auto.labels_)["nmi"], cluster_metrics(y, told.labels_)["nmi"]
    print(f"\n{name} data {seed}: K {auto.n_clusters_} (truth {truth}), NMI {nmi_auto:.1f} vs {nmi_told:.1f}")
    return auto, told, truth, nmi_auto, nmi_told


def test_chosen_k_is_within_a_quarter_of_the_truth(auto_and_told):
    auto, _, truth, _, _ = auto_and_told
    assert abs(auto.n_clusters_ - truth) <= 0.25 * truth
    assert auto.n_clusters_scores_[auto.n_clusters_] == max(auto.n_clusters_scores_.values())
    assert list(auto.n_clusters_scores_) == list(range(2, min(AUTO_K_MAX, len(auto.labels_) // 10) + 1))
    assert auto.image_head_.n_clusters == auto.n_clusters_ and auto.labels_.max() < auto.n_clusters_


def test_nmi_is_within_five_points_of_a_run_told_the_true_k(auto_and_told):
    _, _, _, nmi_auto, nmi_told = auto_and_told
    assert nmi_auto >= nmi_told - 5.0


def test_the_centres_are_sized_for_the_range_upper_end(auto_and_told):
    auto, told, truth, _, _ = auto_and_told
    n = len(auto.labels_)
    assert auto.n_centers_ == 3 * min(AUTO_K_MAX, n // 10)  # N / K_max < 300: 3 x K_max
    assert told.n_centers_ == 3 * truth


def test_an_integer_k_is_used_as_given():
    v, nouns, _ = planted_groups(0, groups=3, group_size=1, n_per=30, style=0.0)
    fast = {"n_neighbors": 5, "kmeans_iter": 20, "kmeans_restarts": 1, "epochs": 2, "batch_size": 32}
    model = TAC(4, seed=0, device="cpu", **fast).fit(v, nouns)
    assert model.n_clusters == model.n_clusters_ == 4 and model.n_clusters_scores_ is None
    assert model.k_sweep_ is None and model.n_centers_ == 12  # 3K, as without the feature
    same = TAC(4, seed=0, device="cpu", **fast).fit(v, nouns)
    np.testing.assert_array_equal(model.labels_, same.labels_)
    ranged = TAC("auto", n_clusters_range=(2, 5), seed=0, device="cpu", **fast).fit(v, nouns)
    assert list(ranged.n_clusters_scores_) == [2, 3, 4, 5] and ranged.n_centers_ == 15
    assert ranged.n_clusters_ == 3 and ranged.get_params()["n_clusters"] == "auto"


@pytest.mark.parametrize(
    ("k", "k_range", "message"),
    [
        (
            "Auto",
            None,
            "'n_clusters' must be an integer >= 2 or 'auto', got 'Auto' \\(did you mean 'auto'\\?\\)",
        ),
        ("auto", (1, 5), "'n_clusters_range': the K range must start at 2 or more"),
        ("auto", (10, 5), "'n_clusters_range': the K range's upper end must exceed its lower end"),
        ("auto", (2, 5.5), "'n_clusters_range': the K range must be two integers"),
        (
            "auto",
            (2, 90),
            "'n_clusters_range': the K range \\[2, 90\\] reaches the number of images \\(90\\)",
        ),
        (5, (2, 5), "'n_clusters_range' is only used with n_clusters='auto'"),
    ],
)
def test_bad_k_settings_are_rejected_at_fit(k, k_range, message):
    v, nouns, _ = planted_groups(0, groups=3, group_size=1, n_per=30, style=0.0)
    with pytest.raises(ValueError, match=message):
        TAC(k, n_clusters_range=k_range, device="cpu").fit(v, nouns)


def test_default_range_and_a_too_small_set():
    assert auto_k_range(60_000) == (2, 100) and auto_k_range(400) == (2, 40)
    with pytest.raises(ValueError, match="only 25 images"):
        auto_k_range(25)


def test_the_sweep_scores_a_seeded_sample_whatever_n():
    v, nouns, y = planted_groups(1, **K_SETS["plain"])
    a = choose_n_clusters(v, v, (2, 20), max_samples=400, seed=3)
    b = choose_n_clusters(v, v, (2, 20), max_samples=400, seed=3)
    assert a.n_samples == 400 and a.chosen == b.chosen == 10
    np.testing.assert_array_equal(a.scores, b.scores)
    with pytest.raises(ValueError, match="criterion must be one of"):
        choose_n_clusters(v, v, (2, 20), criterion="text")
