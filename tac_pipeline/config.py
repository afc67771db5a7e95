"""The one reader of the environment: every ``TAC_*`` variable (and ``DAGSTER_HOME``, ``WNSEARCHDIR``,
``NLTK_DATA``) parsed once into a typed :class:`TacConfig`. No other module of the package reads
``os.environ``; :func:`tac_pipeline.definitions.build_definitions` builds the Definitions from a config.

==========================  =====================================================================  ===========
variable                    meaning                                                                default
==========================  =====================================================================  ===========
``TAC_DATA_DIR``            the data root: ``drops/``, ``store/``, caches (:mod:`tac_pipeline.store`)  ``./data``
``TAC_CLIP_MODEL``          open_clip model name (``tac-tiny``: the offline smoke model)           ``ViT-B-32``
``TAC_CLIP_PRETRAINED``     open_clip pretrained tag; ``none``/``random``/``null``/empty: random    ``openai``
``TAC_CLIP_CHECKPOINT``     a local weights file, used instead of the tag                          none
``TAC_CLIP_CACHE_DIR``      where downloaded weights are cached                                    Hugging Face's
``TAC_DEVICE``              ``auto`` (a free GPU, else CPU), ``cpu``, ``cuda``, ``cuda:N``          ``auto``
``TAC_NOUN_VOCABULARY``     the WordNet nouns embedded: ``lemmas`` (the authors') or ``synsets``   ``lemmas``
``TAC_RECLUSTER_CRON``      when the re-clustering schedule runs                                   ``0 2 * * *``
``TAC_EXECUTOR``            ``multiprocess`` (forked steps), ``in_process`` or ``dask``             ``multiprocess``
``TAC_DASK_SCHEDULER``      a Dask scheduler's address (unset: a local cluster per run)            none
``TAC_DASK_WORKERS``        workers of that local cluster                                          2
``TAC_DASK_GPU_RESOURCE``   GPU steps ask Dask for one ``GPU`` resource                            off
``TAC_EMBED_SHARDS``        ``image_embeddings`` as N parallel embedding steps                     1
``DAGSTER_HOME``            the Dagster instance (runs, event logs, schedules)                     ``./.dagster_home``
``WNSEARCHDIR``             a WordNet 3.0 ``dict`` folder, searched before the system ones         none
``NLTK_DATA``               more folders where nltk's corpora may be                               none
``TAC_MAX_IMAGE_MB``        an image file larger than this (MiB) is skipped before it is read      256
``TAC_IMAGE_ROOTS``         folders besides the data root that drops may read (``:``-separated)    none
``TAC_MAX_DROP_FILES``      a drop holding more files than this is refused                         10,000,000
``VERBOSE``                 the commands also print Dagster's event stream (``-v``)                 off
==========================  =====================================================================  ===========

A bad value raises :class:`ConfigError` naming the variable, the value and what it accepts.
``docs/CONFIGURATION.md`` is the user's guide to these.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

from tac_pipeline.encoders.identity import DEFAULT_MODEL, DEFAULT_PRETRAINED, EncoderChoice, resolve_encoder
from tac_pipeline.encoders.vocabularies import DEFAULT_VOCABULARY, check_vocabulary

EXECUTORS = ("multiprocess", "in_process", "dask")
#: More shards than this is a typo rather than a plan (each shard is a step in the run's plan).
MAX_EMBED_SHARDS = 1024
DEVICES = ("auto", "cpu", "cuda")
DEFAULT_CRON = "0 2 * * *"
#: The variables that choose the encoder: when any is set, the demo uses exactly that encoder.
ENCODER_VARIABLES = ("TAC_CLIP_MODEL", "TAC_CLIP_PRETRAINED", "TAC_CLIP_CHECKPOINT")


class ConfigError(ValueError):
    """An environment variable holds a value the pipeline cannot use; the message names it and the fix."""


#: The name the deployment settings' errors had; the same class.
DeploymentError = ConfigError


@dataclass(frozen=True)
class EncoderSettings:
    """The CLIP encoder as configured (``TAC_CLIP_*``); :meth:`choice` resolves which weights it means."""

    model: str = DEFAULT_MODEL
    pretrained: str | None = DEFAULT_PRETRAINED
    checkpoint: str | None = None
    cache_dir: str | None = None
    #: True when any of :data:`ENCODER_VARIABLES` was set: the user chose this encoder.
    chosen: bool = False

    def choice(self) -> EncoderChoice:
        return resolve_encoder(self.model, self.pretrained, self.checkpoint)


@dataclass(frozen=True)
class Deployment:
    """Which engine runs the steps, and how image embedding is split (``TAC_EXECUTOR``, ``TAC_DASK_*``,
    ``TAC_EMBED_SHARDS``; ``docs/DEPLOYMENT.md``)."""

    executor: str = "multiprocess"
    dask_scheduler: str | None = None
    dask_workers: int = 2
    dask_gpu_resource: bool = False
    embed_shards: int = 1

    @property
    def sharded(self) -> bool:
        return self.embed_shards > 1


@dataclass(frozen=True)
class TacConfig:
    """Everything the environment configures, parsed and checked (see the module docstring)."""

    data_dir: Path = Path("data")
    encoder: EncoderSettings = field(default_factory=EncoderSettings)
    device: str = "auto"
    noun_vocabulary: str = DEFAULT_VOCABULARY
    recluster_cron: str = DEFAULT_CRON
    deployment: Deployment = field(default_factory=Deployment)
    dagster_home: Path = Path(".dagster_home")
    #: A WordNet 3.0 ``dict`` folder searched before the system ones (``$WNSEARCHDIR``).
    wordnet_dir: Path | None = None
    #: Folders from ``$NLTK_DATA`` (nltk's own search path comes on top of these).
    nltk_data: tuple[Path, ...] = ()
    #: An image file larger than this many MiB is skipped, unread (``TAC_MAX_IMAGE_MB``).
    max_image_mb: int = 256
    #: Absolute folders besides the data root that drops may take images from (``TAC_IMAGE_ROOTS``).
    image_roots: tuple[Path, ...] = ()
    #: A drop holding more files than this is refused (``TAC_MAX_DROP_FILES``).
    max_drop_files: int = 10_000_000
    #: The commands print Dagster's event stream too (``VERBOSE=1`` or ``-v``), not only one line per step.
    verbose: bool = False

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> TacConfig:
        """The configuration the environment (``env``, default the process's) describes."""
        env = os.environ if env is None else env
        return cls(
            data_dir=data_dir_from_env(env),
            encoder=_encoder(env),
            device=_device(env),
            noun_vocabulary=_vocabulary(env),
            recluster_cron=_cron(env),
            deployment=_deployment(env),
            dagster_home=dagster_home_from_env(env),
            wordnet_dir=Path(_text(env, "WNSEARCHDIR")) if _text(env, "WNSEARCHDIR") else None,
            nltk_data=tuple(Path(p) for p in _text(env, "NLTK_DATA").split(os.pathsep) if p),
            max_image_mb=_whole(env, "TAC_MAX_IMAGE_MB", 256, 1, 1 << 20),
            image_roots=_image_roots(env),
            max_drop_files=_whole(env, "TAC_MAX_DROP_FILES", 10_000_000, 1, 10**12),
            verbose=_flag(env, "VERBOSE"),
        )

    def with_encoder(self, model: str | None = None, pretrained: str | None = None) -> TacConfig:
        """This configuration with the command line's ``--model`` / ``--pretrained`` applied."""
        if not model and pretrained is None:
            return self
        encoder = replace(
            self.encoder,
            model=model or self.encoder.model,
            pretrained=self.encoder.pretrained if pretrained is None else pretrained,
            chosen=True,
        )
        return replace(self, encoder=encoder)

    def environment(self, base: Mapping[str, str] | None = None) -> dict[str, str]:
        """The environment a child process (a run, a step) needs to see this same configuration: ``base``
        (default the process's) with the encoder settings written back."""
        env = dict(os.environ if base is None else base)
        env["TAC_CLIP_MODEL"] = self.encoder.model
        env["TAC_CLIP_PRETRAINED"] = self.encoder.pretrained or "none"
        env["DAGSTER_HOME"] = str(self.dagster_home)
        if self.image_roots:
            env["TAC_IMAGE_ROOTS"] = os.pathsep.join(str(root) for root in self.image_roots)
        return env

    def allowing(self, folder: str | os.PathLike[str]) -> TacConfig:
        """This configuration with ``folder`` added to the allowed image roots (``make reproduce --source``:
        the operator named it on the command line)."""
        folder = Path(folder).expanduser().absolute()
        if folder in self.image_roots:
            return self
        return replace(self, image_roots=(*self.image_roots, folder))


def data_dir_from_env(env: Mapping[str, str] | None = None) -> Path:
    """``$TAC_DATA_DIR`` (default ``./data``), absolute: the one variable the store's layout needs, read
    without checking the others."""
    return Path(_text(os.environ if env is None else env, "TAC_DATA_DIR") or "data").expanduser().absolute()


def dagster_home_from_env(env: Mapping[str, str] | None = None) -> Path:
    """``$DAGSTER_HOME`` (default ``./.dagster_home``), absolute, read without checking the other variables."""
    return (
        Path(_text(os.environ if env is None else env, "DAGSTER_HOME") or ".dagster_home")
        .expanduser()
        .absolute()
    )


def process_environment(**extra: str) -> dict[str, str]:
    """The process's environment with ``extra`` on top, for a child command (``apt-get``…)."""
    return {**os.environ, **extra}


def use_dagster_home(home: Path) -> None:
    """Make ``home`` this process's ``DAGSTER_HOME`` (Dagster and every child process read it there)."""
    os.environ["DAGSTER_HOME"] = str(home)


def use_fiftyone_database(database_dir: Path) -> None:
    """Make FiftyOne keep its database in ``database_dir`` for this process and the ones it starts (its MongoDB
    service reads its settings from the environment, not from the in-memory ``fiftyone.config``), without
    checking the server's version (the bundled MongoDB 6.0 is the oldest FiftyOne supports) and without
    usage tracking."""
    os.environ["FIFTYONE_DATABASE_DIR"] = str(database_dir)
    os.environ["FIFTYONE_DATABASE_VALIDATION"] = "false"
    os.environ["FIFTYONE_DO_NOT_TRACK"] = "true"


def _text(env: Mapping[str, str], name: str) -> str:
    return (env.get(name) or "").strip()


def _choice(env: Mapping[str, str], name: str, allowed: tuple[str, ...]) -> str:
    raw = _text(env, name).lower()
    if not raw:
        return allowed[0]
    if raw not in allowed:
        raise ConfigError(f"${name}: {raw!r} is not one of {', '.join(allowed)} (default {allowed[0]})")
    return raw


def _image_roots(env: Mapping[str, str]) -> tuple[Path, ...]:
    roots = tuple(Path(p).expanduser() for p in _text(env, "TAC_IMAGE_ROOTS").split(os.pathsep) if p.strip())
    relative = [str(p) for p in roots if not p.is_absolute()]
    if relative:
        raise ConfigError(f"TAC_IMAGE_ROOTS must list absolute folders, not {', '.join(relative)}")
    return roots


def _vocabulary(env: Mapping[str, str]) -> str:
    try:
        return check_vocabulary(
            _text(env, "TAC_NOUN_VOCABULARY") or DEFAULT_VOCABULARY, "$TAC_NOUN_VOCABULARY"
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from None


def _whole(env: Mapping[str, str], name: str, default: int, low: int, high: int) -> int:
    raw = _text(env, name)
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise ConfigError(f"{name} must be a whole number from {low} to {high}, not {raw!r}")
    return value


def _flag(env: Mapping[str, str], name: str) -> bool:
    raw = _text(env, name).lower()
    if raw in ("", "0", "false", "no", "off"):
        return False
    if raw in ("1", "true", "yes", "on"):
        return True
    raise ConfigError(f"{name} must be 1/true/yes or 0/false/no, not {raw!r}")


def _encoder(env: Mapping[str, str]) -> EncoderSettings:
    pretrained = env.get("TAC_CLIP_PRETRAINED")
    return EncoderSettings(
        model=_text(env, "TAC_CLIP_MODEL") or DEFAULT_MODEL,
        pretrained=DEFAULT_PRETRAINED if pretrained is None else pretrained.strip(),
        checkpoint=_text(env, "TAC_CLIP_CHECKPOINT") or None,
        cache_dir=_text(env, "TAC_CLIP_CACHE_DIR") or None,
        chosen=any(_text(env, name) for name in ENCODER_VARIABLES),
    )


def _device(env: Mapping[str, str]) -> str:
    raw = _text(env, "TAC_DEVICE").lower() or "auto"
    kind, _, index = raw.partition(":")
    if kind not in DEVICES or (index and (kind != "cuda" or not index.isdigit())):
        raise ConfigError(f"TAC_DEVICE must be auto, cpu, cuda or cuda:N, not {raw!r}")
    return raw


def _cron(env: Mapping[str, str]) -> str:
    raw = _text(env, "TAC_RECLUSTER_CRON")
    if not raw:
        return DEFAULT_CRON  # valid (tested): Dagster, which checks cron strings, is imported for a given one only
    from tac_pipeline.dagster_internals import is_valid_cron_string

    if not is_valid_cron_string(raw):
        raise ConfigError(
            f"TAC_RECLUSTER_CRON must be a cron expression such as '{DEFAULT_CRON}', not {raw!r}"
        )
    return raw


def _deployment(env: Mapping[str, str]) -> Deployment:
    executor = _text(env, "TAC_EXECUTOR").lower() or "multiprocess"
    if executor not in EXECUTORS:
        raise ConfigError(f"TAC_EXECUTOR must be one of {', '.join(EXECUTORS)}, not {executor!r}")
    scheduler = _text(env, "TAC_DASK_SCHEDULER") or None
    if scheduler is not None and executor != "dask":
        raise ConfigError("TAC_DASK_SCHEDULER is set but TAC_EXECUTOR is not 'dask': set TAC_EXECUTOR=dask")
    return Deployment(
        executor=executor,
        dask_scheduler=scheduler,
        dask_workers=_whole(env, "TAC_DASK_WORKERS", 2, 1, 512),
        dask_gpu_resource=_flag(env, "TAC_DASK_GPU_RESOURCE"),
        embed_shards=_whole(env, "TAC_EMBED_SHARDS", 1, 1, MAX_EMBED_SHARDS),
    )


def deployment_from_env(env: Mapping[str, str] | None = None) -> Deployment:
    """The deployment part of :meth:`TacConfig.from_env` alone (checks only those variables)."""
    return _deployment(os.environ if env is None else env)
