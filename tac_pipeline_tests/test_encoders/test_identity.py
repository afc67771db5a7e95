"""One rule for which weights a setting means: every spelling of "no weights" is the same encoder everywhere
(its identity, the code versions, the resource, the configuration) and gets the random-weights banner."""

from __future__ import annotations

import os

import pytest

from tac_pipeline.cli.commands import _framed
from tac_pipeline.cli.provision import random_weights_banner
from tac_pipeline.config import TacConfig
from tac_pipeline.defs.names import embedding_code_version, noun_code_version
from tac_pipeline.defs.resources.encoder import ClipEncoderResource, encoder_resource
from tac_pipeline.encoders.identity import resolve_encoder

NO_WEIGHTS = ["random", "none", "null", "", "NONE", " Random ", None]


@pytest.mark.parametrize("spelling", NO_WEIGHTS)
def test_every_spelling_of_no_weights_is_one_encoder_everywhere(spelling):
    reference = resolve_encoder("ViT-B-32", None)
    choice = resolve_encoder("ViT-B-32", spelling)
    assert choice == reference and choice.random_weights and choice.weights == "random-init"
    assert ClipEncoderResource(model_name="ViT-B-32", pretrained=spelling).identity() == reference.identity
    env = {"TAC_CLIP_MODEL": "ViT-B-32", "TAC_CLIP_PRETRAINED": "" if spelling is None else spelling}
    config = TacConfig.from_env(env)
    assert config.encoder.choice() == reference
    resource = encoder_resource(config.encoder)
    assert resource.identity() == reference.identity and resource.effective_pretrained() is None
    assert embedding_code_version(resource.identity()) == embedding_code_version(reference.identity)
    assert noun_code_version(resource.identity()) == noun_code_version(reference.identity)
    # The command line frames the results of every one of them with the banner.
    framed = _framed("metrics\n", config)
    banner = random_weights_banner(config.encoder.choice())
    assert framed.count(banner) == 2 and "RANDOM WEIGHTS" in banner and "ViT-B-32" in banner
    assert framed == _framed("metrics\n", TacConfig.from_env({}).with_encoder("ViT-B-32", spelling or "none"))


def test_real_weights_a_checkpoint_and_the_smoke_model():
    openai = resolve_encoder("ViT-B-32", "openai")
    assert not openai.random_weights and openai.pretrained == "openai"
    assert openai.identity != resolve_encoder("ViT-B-32", "none").identity
    assert _framed("metrics\n", TacConfig.from_env({})) == "metrics\n"  # the default: no banner
    tiny = resolve_encoder("tac-tiny", "openai")  # the smoke model has no weights, whatever the tag says
    assert tiny.random_weights and tiny == resolve_encoder("tac-tiny", "none")
    assert "tac-tiny is a smoke model" in random_weights_banner(tiny)
    assert resolve_encoder(None).model == "ViT-B-32"


def test_a_checkpoint_is_weights_and_its_file_is_part_of_the_identity(tmp_path):
    weights = tmp_path / "model.safetensors"
    weights.write_bytes(b"1" * 10)
    choice = resolve_encoder("ViT-B-32", "none", weights)
    assert not choice.random_weights and choice.weights == f"checkpoint {weights}"
    before = choice.identity
    weights.write_bytes(b"2" * 20)
    os.utime(weights, (1, 1))
    assert resolve_encoder("ViT-B-32", "none", weights).identity != before
    assert resolve_encoder("ViT-B-32", "none", "").checkpoint is None
