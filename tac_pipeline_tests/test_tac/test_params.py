"""``TacParams``: the one home of TAC's defaults and ranges, which the estimator, the head training,
``dataset.toml`` and the assets' run config all read."""

from __future__ import annotations

import inspect
import subprocess
import sys

import pytest
from pydantic import ValidationError

from tac_pipeline.defs.assets.text import CounterpartsConfig, SemanticCentersConfig, TextSpaceConfig
from tac_pipeline.defs.assets.training import HeadsConfig, KnnConfig
from tac_pipeline.drops.settings import (
    DatasetSettings,
    RunConfigError,
    TacOverrides,
    resolve_params,
    run_config_overrides,
)
from tac_pipeline.tac import TAC, HeadTrainingConfig
from tac_pipeline.tac.params import DEFAULTS, TacParams

RUN_CONFIGS = (SemanticCentersConfig, TextSpaceConfig, CounterpartsConfig, KnnConfig, HeadsConfig)


def test_the_estimator_takes_the_model_and_shares_its_defaults():
    signature = inspect.signature(TAC)
    for name, value in DEFAULTS.model_dump().items():
        assert signature.parameters[name].default == value, name
    model = TAC(3, **TacParams(gamma=3, lr=0.01).model_dump())
    assert (model.gamma, model.lr, model.kmeans_iter) == (3, 0.01, 300)


def test_the_k_rule_of_head_training_lives_in_the_model():
    assert DEFAULTS.head_training(10) == {
        "epochs": 20,
        "batch_size": 512,
        "tau": 0.5,
        "lr": 1e-3,
        "entropy_weight": 5.0,
    }
    assert DEFAULTS.head_training(100)["epochs"] == 100
    assert TacParams(tau=2.0).head_training(1000)["tau"] == 2.0
    assert HeadTrainingConfig.for_clusters(100) == HeadTrainingConfig(**DEFAULTS.head_training(100))


def test_every_mirror_has_the_models_ranges():
    for mirror in (TacOverrides, *RUN_CONFIGS):
        for name, field in mirror.model_fields.items():
            if name in TacParams.model_fields:
                assert field.default is None, (mirror.__name__, name)
                assert field.metadata == TacParams.model_fields[name].metadata, (mirror.__name__, name)
    assert set(TacOverrides.model_fields) == set(TacParams.model_fields) - {"seed"}
    assert DatasetSettings.model_fields["seed"].metadata == TacParams.model_fields["seed"].metadata
    with pytest.raises(ValidationError, match="lr"):
        TacParams(lr=float("inf"))


def test_precedence_run_config_over_dataset_toml_over_defaults():
    settings = DatasetSettings.model_validate({"seed": 4, "tac": {"gamma": 3, "lr": 0.01}})
    resolved = resolve_params(
        settings, run_config_overrides({"gamma": 2, "knn_method": "exact"}, "ops.x.config")
    )
    assert (resolved.params.gamma, resolved.params.lr, resolved.params.seed) == (2, 0.01, 4)
    assert resolved.params.kmeans_iter == DEFAULTS.kmeans_iter
    assert resolved.sources["gamma"] == "run config"
    assert resolved.sources["lr"] == resolved.sources["seed"] == "dataset.toml"
    assert resolved.sources["kmeans_iter"] == "default"
    assert resolve_params(DatasetSettings()).params == DEFAULTS


@pytest.mark.parametrize(("field", "value"), [("lr", float("inf")), ("epochs", 10**9), ("batch_size", 1)])
def test_run_config_values_obey_the_ranges_naming_the_field(field, value):
    with pytest.raises(RunConfigError, match=rf"ops.trained_heads.config: field '{field}'"):
        run_config_overrides({field: value}, "ops.trained_heads.config")


def test_settings_import_without_torch():
    code = (
        "import sys, tac_pipeline.drops.settings, tac_pipeline.tac.params; assert 'torch' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
