"""New images through a fitted model: heads, counterparts, novelty and the baselines' nearest centres."""

import numpy as np
import pytest
from sklearn.base import clone

from tac_pipeline.tac import TAC, NoveltyRule, SphericalKMeans, cluster_metrics

from .planted_data import planted_groups

FAST = {"seed": 0, "device": "cpu", "n_neighbors": 10, "kmeans_iter": 100, "epochs": 60, "batch_size": 64}


def _split(labels: np.ndarray, share: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Per class, ``share`` of the rows for the fit and the rest as new images (both sorted)."""
    rng = np.random.default_rng(seed)
    fit, new = [], []
    for c in np.unique(labels):
        rows = rng.permutation(np.flatnonzero(labels == c))
        cut = int(round(share * len(rows)))
        fit += rows[:cut].tolist()
        new += rows[cut:].tolist()
    return np.sort(fit), np.sort(new)


@pytest.fixture(scope="module", params=[0, 1], ids=lambda s: f"data{s}")
def planted_fit(request):
    """Four groups of two classes; the fit sees 70 % of the first three groups' images and none of the fourth."""
    v, nouns, y = planted_groups(request.param, groups=4, group_size=2, n_per=150)
    known = np.flatnonzero(y < 6)
    fit, new_known = _split(y[known], 0.7, seed=request.param)
    fit, new_known = known[fit], known[new_known]
    new_classes = np.flatnonzero(y >= 6)
    model = TAC(6, **FAST).fit(v[fit], nouns)
    return model, v, y, fit, new_known, new_classes


def test_assign_known_classes_matches_the_fit(planted_fit):
    model, v, y, fit, new_known, _ = planted_fit
    fit_acc = cluster_metrics(y[fit], model.labels_)["acc"]
    # The same cluster ids for both: score the new images under the fit's best matching of clusters to classes.
    both = np.concatenate([fit, new_known])
    predicted = model.predict(v[both])
    assert (predicted[: len(fit)] == model.labels_).all()  # the fitted images keep their labels exactly
    joint_acc = cluster_metrics(y[both], predicted)["acc"]
    new_acc = (joint_acc * len(both) - fit_acc * len(fit)) / len(new_known)
    print(f"fit ACC {fit_acc:.2f}, new known-class images ACC {new_acc:.2f}")
    assert new_acc >= fit_acc - 2.0
    novel = model.predict_novel(v[new_known]).mean()
    print(f"novel among new known-class images: {100 * novel:.1f} %")
    assert novel < 0.10


def test_new_classes_are_flagged_novel(planted_fit):
    model, v, _, fit, _, new_classes = planted_fit
    novel = model.predict_novel(v[new_classes]).mean()
    print(f"novel among images of unseen classes: {100 * novel:.1f} %")
    assert novel >= 0.80
    # The fitted images themselves: about two quantiles at most.
    assert model.predict_novel(v[fit]).mean() <= 2 * model.novelty_.quantile + 0.01


def test_novelty_rule_thresholds_are_the_fitted_quantiles():
    rng = np.random.default_rng(0)
    conf, sim = rng.uniform(0.5, 1.0, 1000), rng.uniform(0.2, 0.4, 1000)
    rule = NoveltyRule.fit(conf, sim, quantile=0.05)
    assert rule.confidence == pytest.approx(np.quantile(conf, 0.05))
    assert rule.noun_similarity == pytest.approx(np.quantile(sim, 0.05))
    flags = rule.flag(conf, sim)
    assert 0.05 <= flags.mean() <= 0.10
    assert rule.flag([0.1], [0.3]).tolist() == [True]
    assert rule.flag([0.9], [0.1]).tolist() == [True]
    assert rule.flag([0.9], [0.3]).tolist() == [False]
    with pytest.raises(ValueError, match="quantile"):
        NoveltyRule.fit(conf, sim, quantile=0.7)


def test_spherical_kmeans_predicts_its_fitted_rows_and_new_ones():
    v, _, y = planted_groups(0, groups=3, group_size=1, n_per=100, style=0.0)
    fit, new = _split(y, 0.6)
    model = SphericalKMeans(3, n_iter=50, n_restarts=3, seed=0).fit(v[fit])
    assert (model.predict(v[fit]) == model.labels_).all()
    assert cluster_metrics(y[new], model.predict(v[new]))["acc"] == pytest.approx(100.0)
    stored = SphericalKMeans.from_centers(model.cluster_centers_)
    assert (stored.predict(v) == model.predict(v)).all()
    assert clone(model).get_params() == model.get_params()
    with pytest.raises(ValueError, match="wide"):
        model.predict(v[:, :10])


def test_training_free_baseline_assigns_by_its_centres(planted_fit):
    model, v, y, fit, new_known, _ = planted_fit
    labels = model.fit_predict_baseline(v[fit])
    assert (model.predict_baseline(v[fit]) == labels).all()
    new = model.predict_baseline(v[new_known])
    assert new.shape == (len(new_known),) and new.max() < 6
