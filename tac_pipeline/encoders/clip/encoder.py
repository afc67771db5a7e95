"""The CLIP encoder: image embeddings, text embeddings and the noun prompt ensemble (docs/METHOD.md §1–§2).

:class:`ClipEncoder` wraps a built open_clip model with what the pipeline needs: float32, L2-normalised
``(N, d)`` numpy outputs; fp16 autocast on CUDA, fp32 on CPU; an :attr:`~ClipEncoder.identity` that pins
what determines the embeddings; and a fast text path (prompts sorted by token length, the text tower run on
the shortest context that holds each batch, :mod:`.text_tower`; noun prompts assembled from per-noun tokens,
:mod:`.tokens`).

Its constructor takes the built parts and does no I/O beyond moving the model to its device.
:meth:`ClipEncoder.from_pretrained` is the factory that resolves a model name, a pretrained tag or a local
checkpoint (:mod:`.loading`, which may download, every network step time-bounded), as open_clip's
``create_model_and_transforms`` does.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image

from tac_pipeline.common.devices import resolve_device
from tac_pipeline.encoders.images.preprocess import PreprocessSpec

from .loading import load_open_clip
from .models import INIT_SEED
from .text_tower import encode_text_trimmed, trim_supported
from .tokens import PromptTokens, tokenize_row

__all__ = ["NOUN_TEMPLATES", "ClipEncoder"]

#: CLIP's short ImageNet prompt set, the noun ensemble of docs/METHOD.md §2 (order matters for nothing but speed).
NOUN_TEMPLATES: tuple[str, ...] = (
    "itap of a {}.",
    "a bad photo of the {}.",
    "a origami {}.",
    "a photo of the large {}.",
    "a {} in a video game.",
    "art of the {}.",
    "a photo of the small {}.",
)


def _resolve_precision(precision: str, device: torch.device) -> str:
    if precision == "auto":
        return "fp16" if device.type == "cuda" else "fp32"
    if precision not in ("fp32", "fp16", "bf16"):
        raise ValueError(f"precision must be 'auto', 'fp32', 'fp16' or 'bf16', not {precision!r}")
    if precision == "fp16" and device.type == "cpu":
        raise ValueError("fp16 autocast is not supported on CPU; use 'fp32' (or 'bf16')")
    return precision


class ClipEncoder:
    """An open_clip model ready to embed images, texts and nouns (float32, L2-normalised numpy rows).

    Build one with :meth:`from_pretrained` (by model name, tag or checkpoint). The constructor takes parts
    already built (what :func:`~.loading.load_open_clip` returns) and does no I/O:

    Args:
        model: an open_clip ``CLIP`` model (moved to ``device``, put in eval mode, gradients off).
        preprocess: its eval transform, ``PIL.Image -> (3,H,W)`` tensor.
        tokenizer: its open_clip tokenizer.
        model_name: the open_clip architecture name (part of :attr:`identity`).
        pretrained: the (normalised) pretrained tag, or None.
        checkpoint: the local weights file, or None.
        weights_sha256: the digest of the loaded weights; None for random initialisation from
            :data:`~.models.INIT_SEED`.
        quick_gelu: whether the model was built with QuickGELU.
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or a torch.device.
        batch_size: images per forward pass.
        text_batch_size: prompts per forward pass of the text tower.
        precision: ``"auto"`` (fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``, ``"fp16"`` or ``"bf16"``.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        preprocess: Callable[[Image.Image], torch.Tensor] | None = None,
        tokenizer: Any = None,
        *,
        model_name: str | None = None,
        pretrained: str | None = None,
        checkpoint: str | None = None,
        weights_sha256: str | None = None,
        quick_gelu: bool = False,
        device: str | torch.device = "auto",
        batch_size: int = 256,
        text_batch_size: int = 2048,
        precision: str = "auto",
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"ClipEncoder(model, preprocess, tokenizer, ...) takes a built model, not {model!r}: to load "
                f"one by name, tag or checkpoint use ClipEncoder.from_pretrained({model!r}, ...)"
            )
        if preprocess is None or tokenizer is None or model_name is None:
            raise TypeError("ClipEncoder(model, preprocess, tokenizer, model_name=...) needs all four")
        self._model_name = model_name
        self._pretrained = pretrained
        self._checkpoint = checkpoint
        self._weights_sha256 = weights_sha256
        self._quick_gelu = bool(quick_gelu)
        self.batch_size = int(batch_size)
        self.text_batch_size = int(text_batch_size)
        self._device = resolve_device(device)
        self._precision = _resolve_precision(precision, self._device)
        self._tokenizer = tokenizer
        self._model = model.to(self._device).eval()
        self._model.requires_grad_(False)
        self._preprocess = preprocess
        self._spec = PreprocessSpec.from_transform(preprocess)
        self._embedding_dim = int(self._probe_dim())
        self._context_length = int(getattr(self._model, "context_length", 0) or 77)
        self._trim = trim_supported(self._model, self._tokenizer)
        self._config_sha256 = hashlib.sha256(
            json.dumps(open_clip.get_model_config(model_name), sort_keys=True).encode()
        ).hexdigest()

    @classmethod
    def from_pretrained(
        cls,
        model_name: str = "ViT-B-32",
        pretrained: str | None = "openai",
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        device: str | torch.device = "auto",
        batch_size: int = 256,
        text_batch_size: int = 2048,
        precision: str = "auto",
        download_timeout: float = 10.0,
    ) -> ClipEncoder:
        """Load a model by name and tag, or from a local checkpoint, and wrap it.

        Args:
            model_name: an open_clip architecture (``open_clip.list_models()``), or ``"tac-tiny"``.
            pretrained: an open_clip pretrained tag for ``model_name`` (default ``"openai"``, the paper's
                backbone); ``None`` / ``""`` / ``"none"`` for random initialisation from a fixed seed. Ignored
                by ``tac-tiny``, which never needs weights.
            checkpoint: a local open_clip state_dict (``.safetensors``, ``.bin``, ``.pt``) to load instead of
                downloading; a known ``pretrained`` tag then only contributes preprocessing and QuickGELU.
            cache_dir: Hugging Face hub cache (default: ``HF_HUB_CACHE``).
            download_timeout: seconds for the reachability probe and each HTTP wait of a download.
            device, batch_size, text_batch_size, precision: as for the constructor.

        Raises:
            EncoderUnavailableError: weights cannot be obtained (never hangs: cache first, then a time-bounded
                reachability probe, then a download whose waits are bounded).
            ValueError: an unknown or unsupported ``precision`` (checked before anything is loaded).
        """
        _resolve_precision(precision, resolve_device(device))
        loaded = load_open_clip(
            model_name,
            pretrained,
            checkpoint=checkpoint,
            cache_dir=cache_dir,
            download_timeout=download_timeout,
        )
        return cls(
            **vars(loaded),  # the constructor's parts, by name
            device=device,
            batch_size=batch_size,
            text_batch_size=text_batch_size,
            precision=precision,
        )

    # -- properties ------------------------------------------------------------------------------------------
    @property
    def model_name(self) -> str:
        return self._model_name

    @property
    def pretrained(self) -> str | None:
        """The pretrained tag in use (normalised), or None (random init or a checkpoint without tag)."""
        return self._pretrained

    @property
    def checkpoint(self) -> str | None:
        return self._checkpoint

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def tokenizer(self) -> Any:
        return self._tokenizer

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def precision(self) -> str:
        return self._precision

    @property
    def embedding_dim(self) -> int:
        return self._embedding_dim

    @property
    def context_length(self) -> int:
        return self._context_length

    @property
    def preprocess(self) -> Callable[[Image.Image], torch.Tensor]:
        """CLIP's eval transform: bicubic resize of the short side, centre crop, RGB, CLIP mean/std."""
        return self._preprocess

    @property
    def preprocess_spec(self) -> PreprocessSpec | None:
        """The same transform as plain data (what the decoding workers run), when it is CLIP's standard one."""
        return self._spec

    @property
    def image_size(self) -> int:
        size = self._model.visual.preprocess_cfg["size"]
        return int(size if isinstance(size, int) else size[0])

    @property
    def uses_trimmed_text_context(self) -> bool:
        """True when texts run on the shortest context per batch (exact for causal, EOT-pooled towers)."""
        return self._trim

    @property
    def identity(self) -> dict[str, Any]:
        """Everything that determines the embeddings, for a person or a log (the pipeline's code versions use
        the setting's identity, :func:`tac_pipeline.encoders.identity.resolve_encoder`).

        ``weights_sha256`` is the digest of the weights file (None for random init, where ``init_seed`` and
        ``config_sha256`` pin the weights instead); ``precision`` is included because fp16 and fp32 results
        differ in the last digits.
        """
        return {
            "model": self._model_name,
            "pretrained": self._pretrained,
            "checkpoint": self._checkpoint,
            "weights_sha256": self._weights_sha256,
            "init_seed": INIT_SEED if self._weights_sha256 is None else None,
            "config_sha256": self._config_sha256,
            "quick_gelu": self._quick_gelu,
            "precision": self._precision,
            "open_clip": open_clip.__version__,
        }

    def __repr__(self) -> str:
        return (
            f"ClipEncoder(model={self._model_name!r}, pretrained={self._pretrained!r}, "
            f"checkpoint={self._checkpoint!r}, device={str(self._device)!r}, precision={self._precision!r}, "
            f"dim={self._embedding_dim})"
        )

    # -- internals ------------------------------------------------------------------------------------------
    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self._precision == "fp32":
            return contextlib.nullcontext()
        dtype = torch.float16 if self._precision == "fp16" else torch.bfloat16
        return torch.autocast(device_type=self._device.type, dtype=dtype)

    def _probe_dim(self) -> int:
        proj = getattr(self._model, "text_projection", None)
        if isinstance(proj, torch.nn.Parameter) or isinstance(proj, torch.Tensor):
            return int(proj.shape[-1])
        if isinstance(proj, torch.nn.Linear):
            return int(proj.out_features)
        with torch.inference_mode():
            size = self.image_size
            x = torch.zeros(1, 3, size, size, device=self._device)
            return int(self._model.encode_image(x).shape[-1])

    def _text_features(self, tokens: torch.Tensor) -> torch.Tensor:
        """Raw (unnormalised) float32 text features of a token batch (padded to any length ≤ context)."""
        with self._autocast():
            if self._trim:
                feats = encode_text_trimmed(self._model, tokens)
            else:
                if tokens.shape[1] < self._context_length:
                    tokens = F.pad(tokens, (0, self._context_length - tokens.shape[1]))
                feats = self._model.encode_text(tokens)
        return feats.float()

    def _iter_token_batches(
        self, lengths: np.ndarray, rows: Callable[[np.ndarray], list[list[int]]]
    ) -> Iterator[tuple[np.ndarray, torch.Tensor]]:
        """Batches of prompts sorted by length: (prompt indices, LongTensor padded to the batch's longest)."""
        order = np.argsort(lengths, kind="stable")
        bs = self.text_batch_size
        for start in range(0, len(order), bs):
            idx = order[start : start + bs]
            batch = rows(idx)
            width = max(len(r) for r in batch)
            arr = np.zeros((len(batch), width), dtype=np.int64)
            for r, row in enumerate(batch):
                arr[r, : len(row)] = row
            yield idx, torch.from_numpy(arr).to(self._device, non_blocking=True)

    # -- public API -----------------------------------------------------------------------------------------
    @torch.inference_mode()
    def encode_images(self, batch: torch.Tensor | np.ndarray | Sequence[Image.Image]) -> np.ndarray:
        """Image embeddings, float32 ``(N, d)``, L2-normalised.

        ``batch``: a float tensor already preprocessed ``(N,3,H,W)``; a uint8 tensor/array ``(N,3,H,W)`` from
        the reader (resized and cropped, normalised here on the device); or a list of PIL images (run through
        :attr:`preprocess`).
        """
        if isinstance(batch, np.ndarray):
            batch = torch.from_numpy(batch)
        if not isinstance(batch, torch.Tensor):
            images = list(batch)
            if not images:
                return np.zeros((0, self._embedding_dim), dtype=np.float32)
            bs = self.batch_size
            return np.concatenate(
                [
                    self.encode_images(torch.stack([self._preprocess(img) for img in images[i : i + bs]]))
                    for i in range(0, len(images), bs)
                ]
            )
        if batch.ndim != 4 or batch.shape[1] != 3:
            raise ValueError(f"expected images of shape (N, 3, H, W), got {tuple(batch.shape)}")
        n = batch.shape[0]
        out = torch.empty((n, self._embedding_dim), dtype=torch.float32, device=self._device)
        for start in range(0, n, self.batch_size):
            x = batch[start : start + self.batch_size].to(self._device, non_blocking=True)
            if x.dtype == torch.uint8:
                if self._spec is None:
                    raise ValueError(
                        "uint8 input needs CLIP's standard preprocessing (preprocess_spec is None)"
                    )
                x = self._spec.normalize(x)
            else:
                x = x.float()
            with self._autocast():
                feats = self._model.encode_image(x)
            out[start : start + len(x)] = F.normalize(feats.float(), dim=-1)
        return out.cpu().numpy()

    @torch.inference_mode()
    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings, float32 ``(N, d)``, L2-normalised (tokens truncated to the context length)."""
        texts = [texts] if isinstance(texts, str) else list(texts)
        if not texts:
            return np.zeros((0, self._embedding_dim), dtype=np.float32)
        rows = [tokenize_row(self._tokenizer, t, self._context_length) for t in texts]
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        out = torch.empty((len(texts), self._embedding_dim), dtype=torch.float32, device=self._device)
        for idx, tokens in self._iter_token_batches(lengths, lambda ks: [rows[k] for k in ks.tolist()]):
            out[torch.from_numpy(idx).to(self._device)] = F.normalize(self._text_features(tokens), dim=-1)
        return out.cpu().numpy()

    @torch.inference_mode()
    def encode_nouns(
        self,
        nouns: Sequence[str],
        templates: Sequence[str] = NOUN_TEMPLATES,
        progress: Callable[[int, int], None] | None = None,
    ) -> np.ndarray:
        """Prompt-ensemble embeddings (docs/METHOD.md §2), float32 ``(len(nouns), d)``, L2-normalised.

        For each noun: the raw text features (after projection, before normalisation) of every
        ``template.format(noun)`` are averaged, then the mean is L2-normalised. ``progress(done, total)`` is
        called after each batch with counts of prompts.
        """
        nouns = list(nouns)
        templates = list(templates)
        if not templates:
            raise ValueError("at least one template is needed")
        n_t = len(templates)
        sums = torch.zeros((len(nouns), self._embedding_dim), dtype=torch.float32, device=self._device)
        if not nouns:
            return sums.cpu().numpy()
        prompts = PromptTokens(self._tokenizer, nouns, templates, self._context_length)
        total, done = len(prompts), 0
        for idx, tokens in self._iter_token_batches(prompts.lengths, prompts.rows):
            feats = self._text_features(tokens)
            noun_idx = torch.from_numpy(idx // n_t).to(self._device)
            sums.index_add_(0, noun_idx, feats)
            done += len(idx)
            if progress is not None:
                progress(done, total)
        return F.normalize(sums / n_t, dim=-1).cpu().numpy()
