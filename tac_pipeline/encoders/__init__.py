"""Encoders: open_clip images and nouns (and the offline smoke model ``tac-tiny``), the image reader for drops,
and the WordNet vocabulary (:mod:`tac_pipeline.encoders.wordnet`, whose ``load_noun_vocabulary`` is re-exported).

Nothing here knows about Dagster. The image-reading names are imported eagerly (Pillow and numpy only); the
CLIP names (``ClipEncoder``, ``EncoderUnavailableError``, ``NOUN_TEMPLATES``, ``TINY_MODEL_NAME``,
``register_model_configs``) are loaded on first access, because the image decoding worker processes import
this package and must not pay for importing torch and open_clip (seconds and ~1 GB each). Accessing any of
them imports :mod:`tac_pipeline.encoders.clip`, which registers ``tac-tiny`` with open_clip; code that calls
open_clip directly can call ``register_model_configs()`` first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from . import images as _images
from .images import *  # noqa: F403 - the reader's public names, listed once in images.__all__

if TYPE_CHECKING:  # pragma: no cover
    from .clip import (
        NOUN_TEMPLATES,
        TINY_MODEL_NAME,
        ClipEncoder,
        EncoderUnavailableError,
        register_model_configs,
    )
    from .wordnet import load_noun_vocabulary

__all__ = [
    *_images.__all__,
    "NOUN_TEMPLATES",
    "TINY_MODEL_NAME",
    "ClipEncoder",
    "EncoderUnavailableError",
    "register_model_configs",
    "load_noun_vocabulary",
]
#: Names loaded on first access, by the module that defines them.
_LAZY = {
    **dict.fromkeys(
        (
            "NOUN_TEMPLATES",
            "TINY_MODEL_NAME",
            "ClipEncoder",
            "EncoderUnavailableError",
            "register_model_configs",
        ),
        "clip",
    ),
    "load_noun_vocabulary": "wordnet",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
