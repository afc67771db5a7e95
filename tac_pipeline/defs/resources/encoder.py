"""The ``clip_encoder`` resource: the open_clip model that embeds images and nouns, as configured.

Which weights a setting means and the identity that pins them: :mod:`tac_pipeline.encoders.identity`.
"""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from tac_pipeline.config import EncoderSettings
from tac_pipeline.encoders.identity import EncoderChoice, resolve_encoder


class EncoderOverrideError(RuntimeError):
    """A run's config changed the encoder of an embedding asset; the message names the setting to use."""


class ClipEncoderResource(ConfigurableResource):
    """The open_clip model that embeds images and nouns (docs/METHOD.md §1–§2)."""

    model_name: str = Field(default="ViT-B-32", description="open_clip model name, or 'tac-tiny' offline.")
    pretrained: str | None = Field(
        default="openai", description="open_clip pretrained tag (None: random init)."
    )
    checkpoint: str | None = Field(
        default=None, description="Local checkpoint file, used instead of the tag."
    )
    cache_dir: str | None = Field(default=None, description="Where downloaded weights are cached.")
    batch_size: int = Field(default=256, description="Images or prompts per forward pass.")
    num_workers: int | None = Field(
        default=None, description="Image-decoding processes (default: CPU count)."
    )

    def choice(self) -> EncoderChoice:
        """Which weights these settings mean (every spelling of "no weights" is random initialisation)."""
        return resolve_encoder(self.model_name, self.pretrained, self.checkpoint)

    def effective_pretrained(self) -> str | None:
        return self.choice().pretrained

    def identity(self) -> str:
        """A short version string that changes whenever the embeddings would change."""
        return self.choice().identity

    def require_identity(self, expected: str, asset: str) -> None:
        """Refuse to run ``asset`` with an encoder other than the one its code version names.

        The embedding assets' code version (staleness) and their row reuse follow the encoder the definitions
        were loaded with (``$TAC_CLIP_*``). An override of this resource's model, tag or checkpoint in a run's
        config would store rows of another encoder under that version, or mix both encoders in one table.
        Settings that do not change the embeddings (``batch_size``, ``num_workers``, ``cache_dir``) may be
        overridden freely.
        """
        if self.identity() == expected:
            return
        wanted = [
            f"TAC_CLIP_MODEL={self.model_name}",
            f"TAC_CLIP_PRETRAINED={self.effective_pretrained() or 'none'}",
        ]
        if self.checkpoint:
            wanted.append(f"TAC_CLIP_CHECKPOINT={self.checkpoint}")
        raise EncoderOverrideError(
            f"{asset}: this run's config overrides the clip_encoder resource (model {self.model_name!r}, "
            f"pretrained {self.effective_pretrained()!r}, checkpoint {self.checkpoint!r}), but the stored "
            f"embeddings, their reuse and their staleness follow the encoder the definitions were loaded with "
            f"(code version {expected}). Remove model_name / pretrained / checkpoint from the run config; to "
            f"change the encoder, set {' '.join(wanted)} in the code location's environment (or pass --model / "
            "--pretrained to make cluster) and reload the definitions."
        )

    def build(self, device: str):
        from tac_pipeline.encoders import ClipEncoder

        return ClipEncoder.from_pretrained(
            self.model_name,
            self.effective_pretrained(),
            checkpoint=self.checkpoint,
            cache_dir=self.cache_dir,
            device=device,
            batch_size=self.batch_size,
        )


def encoder_resource(settings: EncoderSettings) -> ClipEncoderResource:
    """The resource for the configured encoder (:attr:`tac_pipeline.config.TacConfig.encoder`)."""
    return ClipEncoderResource(
        model_name=settings.model,
        pretrained=settings.choice().pretrained,
        checkpoint=settings.checkpoint,
        cache_dir=settings.cache_dir,
    )
