"""What ``make demo`` needs on a fresh machine, offline included: WordNet, and weights or the smoke model.

- **WordNet** (:func:`ensure_wordnet`): used where it already is (the parsed cache, nltk's corpus wherever nltk
  looks, a system database); else downloaded by nltk when its host answers; else, as root on a Debian-like
  system with ``apt-get``, Debian's WordNet 3.0 packages are installed (``wordnet-base`` holds the database,
  ``wordnet-sense-index`` the ``index.sense`` file nltk's reader needs). Only when none of that works does it
  stop, with the loader's message naming every remedy. Commands run through an injectable ``run`` (tests
  never run apt).
- **Weights** (:func:`demo_encoder`): the demo's default CLIP weights, or, when those cannot be had and the
  user chose no encoder, the smoke model ``tac-tiny`` with a one-line notice; :func:`random_weights_banner`
  frames its results. ``make cluster`` never falls back.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from tac_pipeline.common.netprobe import reachable
from tac_pipeline.config import TacConfig, process_environment
from tac_pipeline.defs.resources.data import wordnet_nouns
from tac_pipeline.encoders import wordnet
from tac_pipeline.encoders.identity import TINY_MODEL_NAME, EncoderChoice

#: Debian's WordNet 3.0: the database, and the sense index nltk's reader opens.
DEBIAN_WORDNET_PACKAGES = ("wordnet-base", "wordnet-sense-index")
#: Where nltk.download fetches its corpora from.
NLTK_DATA_URL = "https://raw.githubusercontent.com/nltk/nltk_data/gh-pages/index.xml"
PROBE_SECONDS = 3.0
SMOKE_MODEL = TINY_MODEL_NAME
REAL_RUN = (
    "make demo (where the ViT-B-32 weights can be downloaded once), or "
    "TAC_CLIP_CHECKPOINT=/path/to/open_clip_model.safetensors make demo"
)


def apt_install_commands(
    *, euid: Callable[[], int] = os.geteuid, which: Callable[[str], str | None] = shutil.which
) -> list[list[str]] | None:
    """The ``apt-get`` commands that install Debian's WordNet, or None where this process cannot run them
    (not root, or no ``apt-get``)."""
    if euid() != 0 or which("apt-get") is None:
        return None
    return [
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "--no-install-recommends", *DEBIAN_WORDNET_PACKAGES],
    ]


def ensure_wordnet(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    run: Callable[..., subprocess.CompletedProcess] = subprocess.run,
    euid: Callable[[], int] = os.geteuid,
    which: Callable[[str], str | None] = shutil.which,
    probe: Callable[[str, float], tuple[bool, str]] = reachable,
    nltk_paths: Sequence[str | os.PathLike[str]] | None = None,
    system_dirs: Sequence[str | os.PathLike[str]] | None = None,
    say: Callable[[str], None] = print,
    config: TacConfig | None = None,
) -> int:
    """Make the WordNet noun vocabulary loadable offline (parsed and cached under the data root); return its
    row count. ``config`` (default: the environment's) gives ``$WNSEARCHDIR`` and ``$NLTK_DATA``. Raises :class:`~tac_pipeline.encoders.wordnet.WordNetUnavailableError` (every remedy named)
    when no source works and nothing could be installed."""

    settings = config or TacConfig.from_env()

    def load(download: bool) -> int:
        vocabulary = wordnet_nouns(
            data_dir,
            wordnet_dir=settings.wordnet_dir,
            nltk_data=settings.nltk_data,
            nltk_paths=nltk_paths,
            system_dirs=system_dirs,
            download=download,
        )
        return len(vocabulary)

    try:
        return load(download=False)
    except wordnet.WordNetUnavailableError as offline:
        missing = offline
    online, why = probe(NLTK_DATA_URL, PROBE_SECONDS)
    if online:
        try:
            return load(download=True)
        except wordnet.WordNetUnavailableError as failed:
            missing = failed
    else:
        missing = wordnet.WordNetUnavailableError(
            f"{missing}\nnltk's download host cannot be reached ({why})."
        )
    commands = apt_install_commands(euid=euid, which=which)
    if commands is None:
        raise missing
    say(
        "WordNet 3.0 (the nouns TAC uses as external knowledge) is not on this machine and nltk cannot "
        f"download it: installing Debian's {' and '.join(DEBIAN_WORDNET_PACKAGES)} with apt-get."
    )
    env = process_environment(DEBIAN_FRONTEND="noninteractive")
    for command in commands:
        done = run(command, env=env, check=False)
        if done.returncode != 0:
            raise wordnet.WordNetUnavailableError(
                f"{missing}\n`{' '.join(command)}` failed with exit status {done.returncode}."
            )
    return load(download=False)


@dataclass(frozen=True)
class DemoEncoder:
    """The configuration the demo runs with (its encoder possibly switched to the smoke model), and the notice
    to print when it fell back to the smoke model."""

    config: TacConfig
    fallback_notice: str | None = None

    @property
    def smoke(self) -> bool:
        """True when the demo runs random weights (the smoke model, or any spelling of "no weights")."""
        return self.config.encoder.choice().random_weights


def demo_encoder(config: TacConfig, check: Callable[[TacConfig], Exception | None]) -> DemoEncoder:
    """The demo's encoder. ``check(config)`` returns why the configured encoder cannot be built, or None.

    When the default weights cannot be had and nothing chose an encoder (no ``MODEL``/``PRETRAINED``, none of
    :data:`~tac_pipeline.config.ENCODER_VARIABLES`), the demo continues with :data:`SMOKE_MODEL`; an encoder
    the user chose fails with its own message (:class:`RuntimeError`)."""
    problem = check(config)
    if problem is None:
        return DemoEncoder(config)
    if config.encoder.chosen:
        raise RuntimeError(str(problem))
    reason = getattr(problem, "reason", None) or str(problem).splitlines()[0]
    return DemoEncoder(
        config.with_encoder(SMOKE_MODEL, "none"),
        f"The default CLIP weights (ViT-B-32, openai) cannot be had here ({reason}): "
        f"continuing with the smoke model {SMOKE_MODEL}.",
    )


def random_weights_banner(choice: EncoderChoice | None = None) -> str:
    """The lines above and below the results of a run with random weights (``choice``: that encoder)."""
    rule = "*" * 100
    what = (
        f"{SMOKE_MODEL} is a smoke model"
        if choice is None or choice.model == SMOKE_MODEL
        else f"{choice.model} runs without weights (pretrained {choice.weights})"
    )
    return (
        f"{rule}\n"
        f"* RANDOM WEIGHTS: {what}; these clusters and scores mean nothing.\n"
        f"* For a real run: {REAL_RUN}\n"
        f"{rule}"
    )
