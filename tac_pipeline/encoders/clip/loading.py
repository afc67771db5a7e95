"""Building an open_clip model from a name, a pretrained tag or a local checkpoint: the I/O of
:meth:`ClipEncoder.from_pretrained <tac_pipeline.encoders.clip.encoder.ClipEncoder.from_pretrained>`.

:func:`load_open_clip` checks the model name and tag, finds the weights (:mod:`.weights`: cache, then a bounded
download), builds the model on the CPU under a private, seeded RNG (deterministic random init; the global RNG
is left alone), loads the weights without unpickling arbitrary objects (``weights_only=True`` or safetensors),
and loads the tokenizer. Every failure is one :class:`~.models.EncoderUnavailableError` naming the model, the
tag, where it looked and the ways out.

QuickGELU is applied where the tag was trained with it: open_clip 3 builds ``ViT-B-32`` with GELU even for the
``openai`` tag (it only warns), which would not be the paper's backbone.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model

from .models import (
    INIT_SEED,
    MODEL_CONFIG_DIR,
    EncoderUnavailableError,
    normalise_tag,
    register_model_configs,
)
from .weights import hf_cache_dir, resolve_tag_weights, weights_digest

__all__ = ["LoadedModel", "load_open_clip"]

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LoadedModel:
    """What :class:`~.encoder.ClipEncoder` is built from (its constructor's keywords, see there)."""

    model: torch.nn.Module
    preprocess: Callable[..., Any]
    tokenizer: Any
    model_name: str
    pretrained: str | None
    checkpoint: str | None
    weights_sha256: str | None
    quick_gelu: bool


def load_open_clip(
    model_name: str,
    pretrained: str | None,
    *,
    checkpoint: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    download_timeout: float = 10.0,
) -> LoadedModel:
    """The model, its eval transform and its tokenizer (see the module docstring); on the CPU, in float32.

    ``pretrained``: an open_clip tag for ``model_name``; None / ``""`` / ``"none"`` for random initialisation
    (always for ``tac-tiny``). ``checkpoint``: a local open_clip state_dict loaded instead of the tag's weights
    (a known tag then only sets preprocessing and QuickGELU).
    """
    register_model_configs()
    tag = normalise_tag(model_name, pretrained)
    cache = None if cache_dir is None else str(cache_dir)
    if model_name not in open_clip.list_models():
        close = difflib.get_close_matches(model_name, open_clip.list_models(), n=5)
        raise EncoderUnavailableError(
            model_name=model_name,
            pretrained=tag,
            reason="unknown model architecture"
            + (f" (did you mean {', '.join(close)}?)" if close else " (see open_clip.list_models())"),
            looked_in="open_clip's model configs and " + str(MODEL_CONFIG_DIR),
        )

    tag_cfg: dict[str, Any] = {}
    weights: str | None = None
    ckpt = None if checkpoint is None else str(Path(checkpoint).expanduser())
    if ckpt is not None:
        if not os.path.isfile(ckpt):
            raise EncoderUnavailableError(
                model_name=model_name,
                pretrained=tag,
                checkpoint=ckpt,
                reason="the checkpoint file does not exist" if not os.path.exists(ckpt) else "not a file",
                looked_in=os.path.abspath(ckpt),
            )
        tag_cfg = get_pretrained_cfg(model_name, tag) if tag else {}
        if tag and not tag_cfg:
            _log.info("tag %r is not known for %s; using default CLIP preprocessing", tag, model_name)
            tag = None
        weights = ckpt
    elif tag is not None:
        tag_cfg = get_pretrained_cfg(model_name, tag)
        if not tag_cfg:
            valid = list_pretrained_tags_by_model(model_name)
            raise EncoderUnavailableError(
                model_name=model_name,
                pretrained=tag,
                reason=f"unknown pretrained tag; valid tags for {model_name}: "
                + (", ".join(valid) if valid else "none (use pretrained=None for random init)"),
                looked_in="open_clip's pretrained registry",
            )
        weights = resolve_tag_weights(model_name, tag, tag_cfg, cache, download_timeout)
    quick_gelu = bool(tag_cfg.get("quick_gelu", False))

    def unavailable(reason: str, looked_in: str) -> EncoderUnavailableError:
        return EncoderUnavailableError(
            model_name=model_name, pretrained=tag, checkpoint=ckpt, reason=reason, looked_in=looked_in
        )

    model, preprocess = _build(model_name, tag_cfg, quick_gelu, cache, unavailable)
    digest: str | None = None
    if weights is not None:
        try:
            open_clip.load_checkpoint(model, weights, strict=True, weights_only=True, device="cpu")
        except Exception as exc:
            msg = str(exc).splitlines()[0] if str(exc) else ""
            if "weights_only" in str(exc) or "Unpickl" in type(exc).__name__:
                msg = "not a plain state_dict (refusing to unpickle arbitrary objects)"
            raise unavailable(
                f"the weights file is corrupt or does not fit the model ({type(exc).__name__}: {msg})",
                os.path.abspath(weights),
            ) from exc
        digest = weights_digest(weights)
    try:
        tokenizer = open_clip.get_tokenizer(model_name)
    except Exception as exc:
        raise unavailable(
            f"the tokenizer could not be loaded: {type(exc).__name__}: {exc}", hf_cache_dir(cache)
        ) from exc
    return LoadedModel(
        model=model,
        preprocess=preprocess,
        tokenizer=tokenizer,
        model_name=model_name,
        pretrained=tag.lower().replace("-", "_") if tag else None,
        checkpoint=ckpt,
        weights_sha256=digest,
        quick_gelu=quick_gelu,
    )


def _build(
    model_name: str,
    tag_cfg: dict[str, Any],
    quick_gelu: bool,
    cache: str | None,
    unavailable: Callable[[str, str], EncoderUnavailableError],
) -> tuple[torch.nn.Module, Callable[..., Any]]:
    """The model with random weights (seeded, private RNG) and its eval transform (the tag's preprocessing)."""
    kwargs: dict[str, Any] = dict(
        pretrained=None,
        precision="fp32",
        device="cpu",
        force_quick_gelu=quick_gelu,
        pretrained_image=False,
        pretrained_text=False,
        cache_dir=cache,
    )
    for key, name in (
        ("mean", "image_mean"),
        ("std", "image_std"),
        ("interpolation", "image_interpolation"),
        ("resize_mode", "image_resize_mode"),
    ):
        if tag_cfg.get(key) is not None:
            kwargs[name] = tag_cfg[key]
    try:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(INIT_SEED)
            model, _, preprocess = open_clip.create_model_and_transforms(model_name, **kwargs)
    except Exception as exc:
        raise unavailable(
            f"the model could not be built: {type(exc).__name__}: {exc}", "open_clip's model configs"
        ) from exc
    return model, preprocess
