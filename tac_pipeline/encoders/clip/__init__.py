"""CLIP on open_clip: the encoder of images, texts and nouns (docs/METHOD.md §1–§2), in small modules.

- :mod:`.models`: the offline smoke model ``tac-tiny`` (registered with open_clip on import), the tags that mean
  "random init", and :class:`EncoderUnavailableError`, the one error when a model cannot be had.
- :mod:`.weights`: a tag's weights from the Hugging Face cache or a time-bounded download; their digest.
- :mod:`.loading`: name, tag or checkpoint to a built model, transform and tokenizer (all the I/O).
- :mod:`.tokens`: token rows of texts and of the noun prompt ensemble.
- :mod:`.text_tower`: the text tower run on the shortest context that holds a batch (exact for open_clip's).
- :mod:`.encoder`: :class:`ClipEncoder` (``ClipEncoder.from_pretrained("ViT-B-32", "openai")``): embeddings as
  float32, L2-normalised numpy rows, and the identity that pins them.
"""

from __future__ import annotations

from .encoder import NOUN_TEMPLATES, ClipEncoder
from .models import (
    INIT_SEED,
    MODEL_CONFIG_DIR,
    TINY_MODEL_NAME,
    EncoderUnavailableError,
    register_model_configs,
)

__all__ = [
    "INIT_SEED",
    "MODEL_CONFIG_DIR",
    "NOUN_TEMPLATES",
    "TINY_MODEL_NAME",
    "ClipEncoder",
    "EncoderUnavailableError",
    "register_model_configs",
]
