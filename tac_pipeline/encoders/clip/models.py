"""Which CLIP models exist here: the offline smoke model ``tac-tiny``, the tags that mean "no weights", and the
one error raised when a model cannot be had.

``tac-tiny`` (:data:`TINY_MODEL_NAME`; config in ``encoders/model_configs/tac-tiny.json``, registered with
open_clip when this package is imported) has 64-wide, 2-layer vision (64 px input, 16 px patches) and text
towers, the standard CLIP tokenizer (vocab 49,408, context 77) and embeddings of width 64, randomly initialised
from :data:`INIT_SEED` (under a private RNG: the global one is left alone), so its embeddings are identical
across processes and runs (and across machines with the same torch build). It needs no weights and no network.
It exists for tests, CI and the offline demo: its embeddings carry no meaning, and clustering results computed
with it are meaningless.
"""

from __future__ import annotations

import threading
from pathlib import Path

import open_clip

from tac_pipeline.encoders.identity import TINY_MODEL_NAME, weights_tag

__all__ = [
    "INIT_SEED",
    "MODEL_CONFIG_DIR",
    "TINY_MODEL_NAME",
    "EncoderUnavailableError",
    "normalise_tag",
    "register_model_configs",
]


MODEL_CONFIG_DIR = Path(__file__).resolve().parent.parent / "model_configs"
#: Seed of random initialisation (tac-tiny, or any model with ``pretrained=None``).
INIT_SEED = 0
_register_lock = threading.Lock()


def register_model_configs() -> None:
    """Register this package's open_clip model configs (``tac-tiny``). Idempotent; runs at import."""
    with _register_lock:
        if TINY_MODEL_NAME not in open_clip.list_models():
            open_clip.add_model_config(MODEL_CONFIG_DIR)


register_model_configs()


def normalise_tag(model_name: str, pretrained: str | None) -> str | None:
    """The pretrained tag to look up, or None for random initialisation (the rule:
    :func:`tac_pipeline.encoders.identity.weights_tag`)."""
    return weights_tag(model_name, pretrained)


class EncoderUnavailableError(RuntimeError):
    """The encoder's weights cannot be obtained (offline, unknown model or tag, missing or corrupt file).

    The message names the model, the tag, where it looked, and the ways out; the parts are also attributes.
    """

    def __init__(
        self,
        *,
        model_name: str,
        pretrained: str | None,
        reason: str,
        looked_in: str,
        checkpoint: str | None = None,
    ) -> None:
        self.model_name = model_name
        self.pretrained = pretrained
        self.reason = reason
        self.looked_in = looked_in
        self.checkpoint = checkpoint
        tag = "none (random init)" if pretrained is None else repr(pretrained)
        lines = [
            f"CLIP encoder unavailable: model {model_name!r}, pretrained tag {tag}"
            + (f", checkpoint {checkpoint!r}" if checkpoint else "")
            + f": {reason}.",
            f"Looked in: {looked_in}.",
            "Ways out: (1) pass a local checkpoint path, e.g. "
            f"ClipEncoder.from_pretrained({model_name!r}, {pretrained or 'openai'!r}, "
            "checkpoint='/path/to/open_clip_model.safetensors') (an open_clip state_dict as .safetensors, .bin "
            "or .pt; the tag then only sets preprocessing), or (2) use the offline smoke model: "
            f"ClipEncoder.from_pretrained({TINY_MODEL_NAME!r}) (no weights, no network; meaningless for real "
            "clustering, for tests and demos only).",
        ]
        super().__init__("\n".join(lines))
