"""Which weights an encoder setting means, and the identity that pins them: the one home of that rule.

A setting is a model name, a pretrained tag and an optional local checkpoint. :func:`resolve_encoder` reads
every spelling of "no weights" (``None``, ``""``, ``none``, ``random``, ``null``, in any case) as random
initialisation, as it does the smoke model ``tac-tiny``, which has no weights at all. The result's
:attr:`EncoderChoice.identity` is what the embedding assets' code versions, the reuse of stored rows, the
command line's random-weights banner and the demo's provisioning all use, so two spellings of one encoder
never count as two encoders. Importing this module loads no torch and no open_clip.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

#: The offline smoke model (random weights from a fixed seed; meaningless for real clustering).
TINY_MODEL_NAME = "tac-tiny"
#: The pretrained tags that mean random initialisation (compared without case or surrounding blanks).
NO_WEIGHTS_TAGS = frozenset({"", "none", "random", "null"})
DEFAULT_MODEL = "ViT-B-32"
DEFAULT_PRETRAINED = "openai"


def weights_tag(model_name: str, pretrained: str | None) -> str | None:
    """The pretrained tag to look up, or None for random initialisation (always None for ``tac-tiny``)."""
    if model_name == TINY_MODEL_NAME or pretrained is None or pretrained.strip().lower() in NO_WEIGHTS_TAGS:
        return None
    return pretrained.strip()


@dataclass(frozen=True)
class EncoderChoice:
    """An encoder setting resolved: the model, its weights tag (None: random initialisation) and checkpoint."""

    model: str
    pretrained: str | None
    checkpoint: str | None = None

    @property
    def random_weights(self) -> bool:
        """True when no weights are loaded (random initialisation): its clusters and scores mean nothing."""
        return self.pretrained is None and self.checkpoint is None

    @property
    def weights(self) -> str:
        """``openai``, ``random-init`` or ``checkpoint <path>``: what a person reads."""
        if self.checkpoint:
            return f"checkpoint {self.checkpoint}"
        return self.pretrained or "random-init"

    @property
    def identity(self) -> str:
        """``<model>-<12 hex>``: changes whenever the embeddings would (model, weights tag, checkpoint file and
        its size and modification time)."""
        parts = [self.model, self.pretrained or "random-init"]
        if self.checkpoint:
            path = Path(self.checkpoint)
            stat = path.stat() if path.exists() else None
            parts += [str(path.resolve()), f"{stat.st_size}-{int(stat.st_mtime)}" if stat else "missing"]
        digest = hashlib.sha256("|".join(parts).encode()).hexdigest()[:12]
        return f"{self.model}-{digest}"


def resolve_encoder(
    model: str | None = None,
    pretrained: str | None = DEFAULT_PRETRAINED,
    checkpoint: str | os.PathLike[str] | None = None,
) -> EncoderChoice:
    """The encoder a setting means. ``model`` defaults to :data:`DEFAULT_MODEL`; any spelling of "no weights"
    in ``pretrained`` (and the model ``tac-tiny``) means random initialisation; an empty ``checkpoint`` is
    none."""
    model = (model or DEFAULT_MODEL).strip()
    return EncoderChoice(
        model=model,
        pretrained=weights_tag(model, pretrained),
        checkpoint=str(checkpoint) if checkpoint else None,
    )
