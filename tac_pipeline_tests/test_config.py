"""The one reader of the environment: every variable parsed into :class:`TacConfig`, bad values named."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tac_pipeline.config import ConfigError, Deployment, TacConfig


def test_defaults_need_no_environment(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = TacConfig.from_env({})
    assert config.data_dir == tmp_path / "data" and config.dagster_home == tmp_path / ".dagster_home"
    assert (config.encoder.model, config.encoder.pretrained, config.encoder.chosen) == (
        "ViT-B-32",
        "openai",
        False,
    )
    assert config.device == "auto" and config.noun_vocabulary == "lemmas"
    assert config.recluster_cron == "0 2 * * *" and config.deployment == Deployment()
    assert config.wordnet_dir is None and config.nltk_data == () and not config.verbose


def test_the_default_cron_is_valid_and_reading_the_defaults_imports_no_dagster(tmp_path):
    from tac_pipeline.config import DEFAULT_CRON
    from tac_pipeline.dagster_internals import is_valid_cron_string

    assert is_valid_cron_string(DEFAULT_CRON)
    # ``make cluster`` starts its run's process once the configuration is read: reading it stays light.
    code = (
        "import sys; from tac_pipeline.config import TacConfig; TacConfig.from_env({}); "
        "print(sorted(m for m in ('dagster', 'pandas', 'torch') if m in sys.modules))"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_every_variable_is_read(tmp_path):
    env = {
        "TAC_DATA_DIR": str(tmp_path / "root"),
        "TAC_CLIP_MODEL": "ViT-L-14",
        "TAC_CLIP_PRETRAINED": "laion2b_s32b_b82k",
        "TAC_CLIP_CHECKPOINT": str(tmp_path / "w.pt"),
        "TAC_CLIP_CACHE_DIR": str(tmp_path / "hf"),
        "TAC_DEVICE": "cuda:1",
        "TAC_NOUN_VOCABULARY": "synsets",
        "TAC_RECLUSTER_CRON": "*/15 * * * *",
        "TAC_EXECUTOR": "dask",
        "TAC_DASK_SCHEDULER": "tcp://10.0.0.1:8786",
        "TAC_DASK_WORKERS": "4",
        "TAC_DASK_GPU_RESOURCE": "yes",
        "TAC_EMBED_SHARDS": "8",
        "DAGSTER_HOME": str(tmp_path / "home"),
        "WNSEARCHDIR": str(tmp_path / "dict"),
        "NLTK_DATA": f"{tmp_path / 'a'}:{tmp_path / 'b'}",
        "VERBOSE": "1",
    }
    config = TacConfig.from_env(env)
    assert config.data_dir == tmp_path / "root" and config.dagster_home == tmp_path / "home"
    encoder = config.encoder
    assert (encoder.model, encoder.pretrained, encoder.checkpoint) == (
        "ViT-L-14",
        "laion2b_s32b_b82k",
        env["TAC_CLIP_CHECKPOINT"],
    )
    assert encoder.cache_dir == env["TAC_CLIP_CACHE_DIR"] and encoder.chosen
    assert config.device == "cuda:1" and config.noun_vocabulary == "synsets"
    assert config.recluster_cron == "*/15 * * * *"
    assert config.deployment == Deployment("dask", "tcp://10.0.0.1:8786", 4, True, 8)
    assert config.wordnet_dir == tmp_path / "dict" and config.nltk_data == (tmp_path / "a", tmp_path / "b")
    assert config.verbose


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("TAC_DEVICE", "gpu", "TAC_DEVICE must be auto, cpu, cuda or cuda:N"),
        ("TAC_DEVICE", "cpu:1", "TAC_DEVICE must be"),
        ("TAC_NOUN_VOCABULARY", "words", "lemmas, synsets"),
        ("TAC_RECLUSTER_CRON", "every night", "TAC_RECLUSTER_CRON must be a cron expression"),
        ("TAC_EXECUTOR", "threads", "TAC_EXECUTOR must be one of multiprocess, in_process, dask"),
        ("TAC_DASK_WORKERS", "0", "TAC_DASK_WORKERS must be a whole number from 1 to 512"),
        ("TAC_EMBED_SHARDS", "two", "TAC_EMBED_SHARDS must be a whole number"),
        ("TAC_DASK_GPU_RESOURCE", "maybe", "TAC_DASK_GPU_RESOURCE must be 1/true/yes"),
        ("TAC_DASK_SCHEDULER", "tcp://x:1", "set TAC_EXECUTOR=dask"),
    ],
)
def test_a_bad_value_is_refused_naming_the_variable(name, value, message):
    with pytest.raises(ConfigError, match=message) as caught:
        TacConfig.from_env({name: value})
    assert name in str(caught.value)


def test_the_command_line_encoder_and_the_child_environment(tmp_path):
    config = TacConfig.from_env({"TAC_DATA_DIR": str(tmp_path)})
    assert config.with_encoder() is config
    tiny = config.with_encoder("tac-tiny")
    assert tiny.encoder.model == "tac-tiny" and tiny.encoder.chosen and tiny.encoder.choice().random_weights
    child = TacConfig.from_env(tiny.environment({"TAC_DATA_DIR": str(tmp_path)}))
    assert child.encoder.choice() == tiny.encoder.choice() and child.data_dir == tmp_path
    random = TacConfig.from_env(config.with_encoder(pretrained="random").environment({}))
    assert random.encoder.choice().random_weights


def test_the_definitions_are_built_from_a_configuration(tmp_path):
    from tac_pipeline.definitions import build_definitions

    config = TacConfig.from_env(
        {
            "TAC_DATA_DIR": str(tmp_path),
            "TAC_CLIP_MODEL": "tac-tiny",
            "TAC_DEVICE": "cpu",
            "TAC_RECLUSTER_CRON": "0 5 * * 1",
        }
    )
    defs = build_definitions(config)
    assert defs.get_schedule_def("recluster_changed_drops").cron_schedule == "0 5 * * 1"
    resources = defs.resources
    assert resources["compute_device"].device == "cpu" and resources["tac_data"].data_dir == str(tmp_path)
    assert resources["io_manager"].base_dir == str(tmp_path / "store")
    assert resources["clip_encoder"].identity() == config.encoder.choice().identity


def test_a_folder_named_on_the_command_line_is_allowed_for_its_runs(tmp_path):
    config = TacConfig.from_env({"TAC_IMAGE_ROOTS": str(tmp_path / "a")})
    allowed = config.allowing(tmp_path / "imagenet")
    assert (
        allowed.image_roots == (tmp_path / "a", tmp_path / "imagenet")
        and allowed.allowing(tmp_path / "a") == allowed
    )
    child = TacConfig.from_env(allowed.environment({}))  # the runs the command starts see it too
    assert child.image_roots == allowed.image_roots
