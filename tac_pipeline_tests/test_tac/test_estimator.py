"""The TAC estimator: attributes, predictions, determinism and edge cases."""

import warnings

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from tac_pipeline.tac import TAC, TextSpace

from .conftest import blobs, unit_rows

FAST = {"kmeans_iter": 20, "kmeans_restarts": 2, "baseline_restarts": 2, "epochs": 3, "batch_size": 32}


@pytest.fixture(scope="module")
def data():
    v, y = blobs(n_per=40, n_blobs=3, dim=12, spread=0.1, seed=0)
    nouns = unit_rows(np.random.default_rng(1).standard_normal((60, 12)))
    return v, nouns, y


@pytest.fixture(scope="module")
def fitted(data):
    v, nouns, _ = data
    return TAC(3, seed=0, device="cpu", n_neighbors=10, **FAST).fit(v, nouns)


def test_fitted_attributes(fitted, data):
    v, nouns, _ = data
    m = fitted
    assert m.n_centers_ == 9  # N / K = 40 < 300 -> 3K
    assert m.centers_.shape == (9, 12) and m.center_labels_.shape == (120,)
    assert isinstance(m.text_space_, TextSpace) and len(m.text_space_) <= 45
    np.testing.assert_allclose(m.text_embeddings_, nouns[m.text_space_.noun_indices], atol=1e-6)
    assert m.counterparts_.shape == (120, 12) and m.top_nouns_.shape == (120,)
    assert m.knn_image_.shape == m.knn_text_.shape == (120, 10) and m.n_neighbors_ == 10
    assert len(m.history_) == 3 and m.training_config_.batch_size == 32
    assert m.image_head_.n_clusters == 3 and m.text_head_.in_dim == 12


def test_predictions(fitted, data):
    v, _, _ = data
    labels = fitted.predict(v[:50])
    assert labels.dtype == np.int64 and labels.shape == (50,) and labels.max() < 3
    for head in ("image", "text", "mean"):
        p = fitted.predict_proba(torch.from_numpy(v[:50]), head=head)
        assert p.shape == (50, 3)
        np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(fitted.predict_proba(v, "text").argmax(1), fitted.predict_text(v))
    np.testing.assert_array_equal(fitted.predict_proba(v, "mean").argmax(1), fitted.predict_mean(v))
    np.testing.assert_allclose(fitted.transform_counterparts(v), fitted.counterparts_, atol=1e-6)
    base = fitted.fit_predict_baseline(v[:60])
    assert base.dtype == np.int64 and base.shape == (60,)
    with pytest.raises(ValueError, match="head"):
        fitted.predict_proba(v, head="both")
    with pytest.raises(ValueError, match="12-wide"):
        fitted.predict(v[:, :5])


def test_same_seed_same_everything(data):
    v, nouns, _ = data
    a = TAC(3, seed=3, device="cpu", n_neighbors=10, **FAST).fit(v, nouns)
    b = TAC(3, seed=3, device="cpu", n_neighbors=10, **FAST).fit(torch.from_numpy(v), torch.from_numpy(nouns))
    np.testing.assert_array_equal(a.text_space_.noun_indices, b.text_space_.noun_indices)
    np.testing.assert_array_equal(a.predict(v), b.predict(v))
    np.testing.assert_array_equal(a.fit_predict_baseline(v), b.fit_predict_baseline(v))
    assert a.history_.as_dict()["total"] == b.history_.as_dict()["total"]


def test_small_n_warns_and_shrinks_neighbours(data):
    v, nouns, _ = data
    with pytest.warns(UserWarning, match="using 29 nearest neighbours instead of 50"):
        m = TAC(3, device="cpu", **{**FAST, "batch_size": 16}).fit(v[:30], nouns)
    assert m.n_neighbors_ == 29 and m.knn_image_.shape == (30, 29)
    assert not (m.knn_image_ == np.arange(30)[:, None]).any()


def test_no_warning_with_enough_images(data):
    v, nouns, _ = data
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        TAC(3, device="cpu", n_neighbors=10, **FAST).fit(v, nouns)


@pytest.mark.parametrize("k", [1, 0, -2, 2.5, True])
def test_too_few_clusters(k, data):
    v, nouns, _ = data
    model = TAC(k)  # stored as given: scikit-learn estimators check their parameters in fit
    assert model.n_clusters is k
    with pytest.raises(ValueError, match="'n_clusters' must be an integer >= 2"):
        model.fit(v, nouns)


def test_too_many_clusters(data):
    v, nouns, _ = data
    with pytest.raises(ValueError, match="smaller than the number of images"):
        TAC(10, device="cpu").fit(v[:10], nouns)


def test_non_finite_rows_are_counted(data):
    v, nouns, _ = data
    bad = v.copy()
    bad[[3, 50, 99]] = np.nan
    with pytest.raises(ValueError, match="image embeddings: 3 of 120 rows contain non-finite"):
        TAC(3, device="cpu").fit(bad, nouns)
    zero = nouns.copy()
    zero[7] = 0
    with pytest.raises(ValueError, match="noun embeddings: 1 of 60 rows have zero norm"):
        TAC(3, device="cpu").fit(v, zero)


def test_noun_width_mismatch(data):
    v, nouns, _ = data
    with pytest.raises(ValueError, match="noun embeddings are 8 wide but image embeddings are 12 wide"):
        TAC(3, device="cpu").fit(v, nouns[:, :8])


@pytest.mark.parametrize(
    "method", ["predict", "predict_text", "predict_mean", "predict_proba", "transform_counterparts"]
)
def test_not_fitted(method):
    with pytest.raises(NotFittedError, match="not fitted"):
        getattr(TAC(3), method)(np.ones((2, 4), dtype=np.float32))


def test_scikit_learn_protocol(fitted, data):
    v, nouns, _ = data
    params = fitted.get_params()
    assert params["n_clusters"] == 3 and params["n_neighbors"] == 10 and params["epochs"] == 3
    copy = clone(fitted)
    assert copy.get_params() == params and not hasattr(copy, "labels_")
    assert TAC(**params).get_params() == params  # get_params round-trips through the constructor
    assert copy.set_params(gamma=2, n_clusters=4) is copy
    assert (copy.gamma, copy.n_clusters, fitted.gamma) == (2, 4, 5)
    with pytest.raises(ValueError, match="Invalid parameter"):
        copy.set_params(gama=2)
    # labels_ are the image head's clusters of the fitting images; fit_predict returns them.
    np.testing.assert_array_equal(fitted.labels_, fitted.predict(v))
    again = clone(fitted).fit_predict(v, nouns)
    np.testing.assert_array_equal(again, fitted.labels_)


@pytest.mark.parametrize(
    ("param", "value", "message"),
    [
        ("gamma", 0, "'gamma': Input should be greater than or equal to 1"),
        ("n_neighbors", 0, "'n_neighbors': Input should be greater than or equal to 1"),
        ("lr", float("nan"), "'lr'"),
        ("epochs", 2.5, "'epochs'"),
        ("tau", 1e-9, "'tau'"),
        ("backend", "cuda", "'backend' must be one of"),
        ("cuda_graph", "yes", "'cuda_graph' must be True or False"),
    ],
)
def test_bad_parameters_are_rejected_at_fit_by_name(param, value, message, data):
    v, nouns, _ = data
    model = TAC(3, device="cpu", **{param: value})
    assert getattr(model, param) is value or param == "lr"
    with pytest.raises(ValueError, match=message):
        model.fit(v, nouns)


def test_duplicate_images(data):
    v, nouns, _ = data
    dup = np.concatenate([v, v[:20]])
    m = TAC(3, device="cpu", n_neighbors=10, **FAST).fit(dup, nouns)
    assert not (m.knn_image_ == np.arange(140)[:, None]).any()
    assert not (m.knn_text_ == np.arange(140)[:, None]).any()


def test_a_fit_imports_nothing_and_times_its_stages(tmp_path):
    """Everything a fit needs is imported with the estimator: a module first imported inside ``fit`` (as
    ``torch.optim.Adam`` imports ``torch._dynamo``, a second on two cores) would land in every fit's time."""
    import subprocess
    import sys

    script = tmp_path / "fit.py"
    script.write_text(
        "import sys\n"
        "import numpy as np\n"
        "from tac_pipeline.tac import TAC\n"
        "rng = np.random.default_rng(0)\n"
        "x, nouns = rng.normal(size=(300, 16)), rng.normal(size=(80, 16))\n"
        "print('FIT START', file=sys.stderr, flush=True)\n"
        "model = TAC(n_clusters=3, epochs=1, device='cpu').fit(x, nouns)\n"
        "print('FIT END', file=sys.stderr, flush=True)\n"
        "print(sorted(model.stage_seconds_), len(model.center_n_iter_))\n"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", str(script)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    during = done.stderr.split("FIT START", 1)[1].split("FIT END", 1)[0]
    assert "import time:" not in during, during[:3000]
    assert done.stdout.strip() == (
        "['centers', 'choose_k', 'counterparts', 'heads', 'knn', 'nouns', 'novelty'] 10"
    )
