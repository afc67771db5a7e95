"""A fresh machine: WordNet found, downloaded or installed (apt never really runs here), and the demo's fallback
to the smoke model when the default weights cannot be had."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from tac_pipeline.cli import provision
from tac_pipeline.config import TacConfig
from tac_pipeline.encoders import wordnet
from tac_pipeline.encoders.wordnet import WORDNET_30_ROWS, WordNetUnavailableError

APT_UPDATE = ["apt-get", "update", "-q"]
APT_INSTALL = [
    "apt-get",
    "install",
    "-y",
    "-q",
    "--no-install-recommends",
    "wordnet-base",
    "wordnet-sense-index",
]
SYSTEM_DB = next((d for d in wordnet.system_wordnet_dirs() if (d / "data.noun").is_file()), None)


def offline(url, timeout):
    return False, "simulated: no network"


def never(*args, **kwargs):
    raise AssertionError("must not be called")


@pytest.fixture
def bare(tmp_path):
    """A data root, nltk folders and system folders with no WordNet in any of them."""
    (tmp_path / "nltk").mkdir()
    return {
        "data_dir": tmp_path / "data",
        "nltk_paths": [tmp_path / "nltk"],
        "system_dirs": [tmp_path / "dict"],
    }


class Apt:
    """Records the commands it is given; "installs" by copying a WordNet database where the package would."""

    def __init__(self, target, source=None, fail: list[str] | None = None):
        self.target, self.source, self.fail, self.calls = target, source, fail, []

    def __call__(self, command, env=None, check=False):
        self.calls.append((command, env.get("DEBIAN_FRONTEND")))
        if command == self.fail:
            return subprocess.CompletedProcess(command, 100)
        if command == APT_INSTALL and self.source is not None:
            shutil.copytree(self.source, self.target)
        return subprocess.CompletedProcess(command, 0)


def test_wordnet_already_there_installs_and_probes_nothing(data_dir):
    rows = provision.ensure_wordnet(data_dir, run=never, probe=never, euid=lambda: 0)
    assert rows == WORDNET_30_ROWS["lemmas"]


def test_missing_wordnet_without_root_stops_with_every_remedy(bare):
    with pytest.raises(WordNetUnavailableError) as caught:
        provision.ensure_wordnet(**bare, run=never, probe=offline, euid=lambda: 1000, which=lambda _: "/x")
    message = str(caught.value)
    assert "apt-get install wordnet-base wordnet-sense-index" in message and "WNSEARCHDIR" in message
    assert "download host cannot be reached (simulated: no network)" in message


def test_missing_wordnet_as_root_without_apt_stops(bare):
    with pytest.raises(WordNetUnavailableError):
        provision.ensure_wordnet(**bare, run=never, probe=offline, euid=lambda: 0, which=lambda _: None)


@pytest.mark.skipif(SYSTEM_DB is None, reason="no system WordNet database to stand in for the package")
def test_missing_wordnet_as_root_installs_debian_packages(bare):
    apt = Apt(bare["system_dirs"][0], SYSTEM_DB)
    said = []
    rows = provision.ensure_wordnet(
        **bare, run=apt, probe=offline, euid=lambda: 0, which=lambda n: f"/usr/bin/{n}", say=said.append
    )
    assert apt.calls == [(APT_UPDATE, "noninteractive"), (APT_INSTALL, "noninteractive")]
    assert rows == WORDNET_30_ROWS["lemmas"]
    assert (bare["data_dir"] / "cache" / wordnet.CACHE_FILE).is_file()  # parsed once, offline from now on
    assert len(said) == 1 and "wordnet-base and wordnet-sense-index with apt-get" in said[0]


def test_a_failing_apt_get_is_reported_with_the_remedies(bare):
    apt = Apt(bare["system_dirs"][0], fail=APT_INSTALL)
    with pytest.raises(WordNetUnavailableError) as caught:
        provision.ensure_wordnet(
            **bare, run=apt, probe=offline, euid=lambda: 0, which=lambda n: n, say=lambda _: None
        )
    assert f"`{' '.join(APT_INSTALL)}` failed with exit status 100" in str(caught.value)
    assert "WNSEARCHDIR" in str(caught.value)


def test_online_wordnet_comes_from_nltk_before_apt(bare, monkeypatch):
    downloads = []
    monkeypatch.setattr(wordnet, "_nltk_download", lambda d, t: downloads.append(d) or "simulated: refused")
    apt = Apt(bare["system_dirs"][0], fail=APT_UPDATE)
    with pytest.raises(WordNetUnavailableError, match="simulated: refused"):
        provision.ensure_wordnet(
            **bare, run=apt, probe=lambda u, t: (True, ""), euid=lambda: 0, which=lambda n: n, say=print
        )
    assert downloads == [bare["data_dir"] / "nltk_data"] and apt.calls[0][0] == APT_UPDATE


class Unavailable(RuntimeError):
    reason = "the weights are not in the cache and https://huggingface.co cannot be reached (simulated)"


def test_the_demo_falls_back_to_the_smoke_model_only_when_nothing_chose_an_encoder():
    def check(config):
        return (
            None
            if config.encoder.model == provision.SMOKE_MODEL
            else Unavailable("CLIP encoder unavailable: …")
        )

    fallback = provision.demo_encoder(TacConfig.from_env({}), check)
    encoder = fallback.config.encoder
    assert (encoder.model, encoder.choice().pretrained, fallback.smoke) == ("tac-tiny", None, True)
    assert "\n" not in fallback.fallback_notice and Unavailable.reason in fallback.fallback_notice
    tiny = TacConfig.from_env({}).with_encoder("tac-tiny")
    assert provision.demo_encoder(tiny, check).fallback_notice is None
    for env in ({"TAC_CLIP_MODEL": "ViT-L-14"}, {"TAC_CLIP_CHECKPOINT": "/w.safetensors"}):
        with pytest.raises(RuntimeError, match="CLIP encoder unavailable"):
            provision.demo_encoder(TacConfig.from_env(env), check)
    with pytest.raises(RuntimeError, match="CLIP encoder unavailable"):
        provision.demo_encoder(TacConfig.from_env({}).with_encoder("ViT-L-14"), check)
    real = provision.demo_encoder(TacConfig.from_env({}), lambda config: None)
    assert real.config.encoder.model == "ViT-B-32" and not real.smoke and real.fallback_notice is None
