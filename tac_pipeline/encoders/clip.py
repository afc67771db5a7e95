"""CLIP encoder on open_clip: image embeddings, text embeddings and the noun prompt ensemble (docs/METHOD.md §1–§2).

:class:`ClipEncoder` wraps ``open_clip.create_model_and_transforms`` with what the pipeline needs:

- weights from a pretrained tag (resolved in the Hugging Face cache first, downloaded only when the hub is
  reachable, every network step time-bounded) or from a local checkpoint, always loaded without unpickling
  arbitrary objects (``torch.load(weights_only=True)`` or safetensors);
- one error type, :class:`EncoderUnavailableError`, when weights cannot be had, naming the model, the tag,
  where it looked and the two ways out;
- float32, L2-normalised ``(N, d)`` numpy outputs; fp16 autocast on CUDA, fp32 on CPU;
- QuickGELU where the tag was trained with it: open_clip 3 builds ``ViT-B-32`` with GELU even for the
  ``openai`` tag (it only warns), which would not be the paper's backbone; the tag's ``quick_gelu`` is applied;
- a fast text path: prompts sorted by token length and the text tower run on the shortest context that holds
  each batch (exact for open_clip's causal, EOT-pooled text transformer); noun prompts are assembled from
  per-noun tokens instead of re-tokenising 574,805 strings.

The offline smoke model ``tac-tiny`` (:data:`TINY_MODEL_NAME`; config in ``model_configs/tac-tiny.json``,
registered with open_clip when this module is imported) has 64-wide, 2-layer vision (64 px input, 16 px
patches) and text towers, the standard CLIP tokenizer (vocab 49,408, context 77) and embeddings of width 64,
randomly initialised from a fixed seed (under a private RNG: the global one is left alone) so that embeddings
are identical across processes and runs (and across machines with the same torch build). It needs no weights
and no network. It exists for tests, CI and the offline demo: its embeddings carry no
meaning, and clustering results computed with it are meaningless.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import logging
import os
import re
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from open_clip.pretrained import get_pretrained_cfg, list_pretrained_tags_by_model
from PIL import Image

from tac_pipeline.netprobe import reachable
from tac_pipeline.tac.device import resolve_device

from .images import PreprocessSpec
from .incremental import sha256_of_file

__all__ = [
    "NOUN_TEMPLATES",
    "TINY_MODEL_NAME",
    "ClipEncoder",
    "EncoderUnavailableError",
    "register_model_configs",
]

_log = logging.getLogger(__name__)

#: The offline smoke model (random weights from a fixed seed; meaningless for real clustering).
TINY_MODEL_NAME = "tac-tiny"

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

MODEL_CONFIG_DIR = Path(__file__).resolve().parent / "model_configs"
#: Seed of random initialisation (tac-tiny, or any model with ``pretrained=None``).
INIT_SEED = 0
_NO_WEIGHTS_TAGS = frozenset({"", "none", "random", "null"})
_HF_DEFAULT_WEIGHTS = "open_clip_pytorch_model.bin"
_register_lock = threading.Lock()


def register_model_configs() -> None:
    """Register this package's open_clip model configs (``tac-tiny``). Idempotent; runs at import."""
    with _register_lock:
        if TINY_MODEL_NAME not in open_clip.list_models():
            open_clip.add_model_config(MODEL_CONFIG_DIR)


register_model_configs()


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
            f"ClipEncoder({model_name!r}, {pretrained or 'openai'!r}, checkpoint='/path/to/open_clip_model.safetensors')"
            " (an open_clip state_dict as .safetensors, .bin or .pt; the tag then only sets preprocessing), or "
            f"(2) use the offline smoke model: ClipEncoder({TINY_MODEL_NAME!r}) (no weights, no network; "
            "meaningless for real clustering, for tests and demos only).",
        ]
        super().__init__("\n".join(lines))


# --------------------------------------------------------------------------------------------------------------
# weights: resolution, download with bounded waits, digests
# --------------------------------------------------------------------------------------------------------------


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


def _hf_offline() -> bool:
    if _truthy(os.environ.get("HF_HUB_OFFLINE")) or _truthy(os.environ.get("TRANSFORMERS_OFFLINE")):
        return True
    try:
        from huggingface_hub import constants

        return bool(constants.HF_HUB_OFFLINE)
    except Exception:  # pragma: no cover
        return False


def _hf_endpoint() -> str:
    env = os.environ.get("HF_ENDPOINT")
    if env:
        return env.rstrip("/")
    try:
        from huggingface_hub import constants

        return str(constants.ENDPOINT).rstrip("/")
    except Exception:  # pragma: no cover
        return "https://huggingface.co"


def _hf_cache_dir(cache_dir: str | os.PathLike[str] | None) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


_DIGESTS: dict[tuple[str, int, int], str] = {}


def _weights_digest(path: str | os.PathLike[str]) -> str:
    """sha256 of a weights file; free for Hugging Face cache entries (their blob is named by it), and
    remembered per (file, size, mtime) within the process."""
    real = os.path.realpath(path)
    name = os.path.basename(real)
    if re.fullmatch(r"[0-9a-f]{64}", name):
        return name
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = sha256_of_file(real)
    return _DIGESTS[key]


def _resolve_tag_weights(
    model_name: str, tag: str, cfg: dict[str, Any], cache_dir: str | None, timeout: float
) -> str:
    """Local path of a tag's weights: the HF cache if present, else a bounded download, else the error."""
    hub = cfg.get("hf_hub") or ""
    cache = _hf_cache_dir(cache_dir)
    if not hub:  # every tag of open_clip >= 3 has one; url-only archives are TorchScript (not weights_only)
        raise EncoderUnavailableError(
            model_name=model_name,
            pretrained=tag,
            reason="this tag has no Hugging Face Hub location, and its URL archive cannot be loaded safely",
            looked_in=str(cfg.get("url") or "nowhere"),
        )
    try:
        from huggingface_hub import hf_hub_download
    except ImportError:  # pragma: no cover
        raise EncoderUnavailableError(
            model_name=model_name,
            pretrained=tag,
            reason="huggingface_hub is not installed",
            looked_in=cache,
        ) from None
    repo, filename = os.path.split(hub)
    filename = filename or _HF_DEFAULT_WEIGHTS
    repo = repo.rstrip("/")
    candidates = ["open_clip_model.safetensors", filename] if filename == _HF_DEFAULT_WEIGHTS else [filename]
    where = f"Hugging Face cache {cache} (repo {repo}, files {' / '.join(candidates)})"
    for name in candidates:
        try:
            return str(hf_hub_download(repo, name, cache_dir=cache_dir, local_files_only=True))
        except Exception:
            continue
    if _hf_offline():
        raise EncoderUnavailableError(
            model_name=model_name,
            pretrained=tag,
            reason="the weights are not in the cache and downloads are disabled (HF_HUB_OFFLINE=1)",
            looked_in=where,
        )
    endpoint = _hf_endpoint()
    ok, why = reachable(endpoint, timeout)
    if not ok:
        raise EncoderUnavailableError(
            model_name=model_name,
            pretrained=tag,
            reason=f"the weights are not in the cache and {endpoint} cannot be reached ({why})",
            looked_in=where,
        )
    errors: list[str] = []
    for name in candidates:
        try:
            _log.info("downloading %s/%s from %s into %s", repo, name, endpoint, cache)
            return str(
                hf_hub_download(repo, name, cache_dir=cache_dir, etag_timeout=timeout, endpoint=endpoint)
            )
        except Exception as exc:
            errors.append(f"{name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
    raise EncoderUnavailableError(
        model_name=model_name,
        pretrained=tag,
        reason="download failed (" + "; ".join(errors) + ")",
        looked_in=f"{where} and {endpoint}",
    )


# --------------------------------------------------------------------------------------------------------------
# tokens
# --------------------------------------------------------------------------------------------------------------

_SAFE_NOUN = re.compile(
    r"[A-Za-z0-9](?:[ -%'-~]*[A-Za-z0-9])?"
)  # printable ASCII, no '&', alnum at both ends


class _PromptTokens:
    """Token rows of ``template.format(noun)`` for every (noun, template) pair, built lazily per batch.

    For open_clip's SimpleTokenizer, a prompt's tokens are ``[sot] + prefix + noun + suffix + [eot]`` whenever
    the noun's boundaries cannot merge with the template text (printable ASCII without ``&``, starting and
    ending with a letter or digit; template text around ``{}`` starting/ending with a space or punctuation),
    because the tokenizer cleans, lower-cases and splits words independently. Such nouns are tokenised once
    instead of seven times. Any other noun, template or tokenizer falls back to tokenising the full prompt.
    Prompt ``k`` is noun ``k // T``, template ``k % T``.
    """

    def __init__(self, tokenizer: Any, nouns: Sequence[str], templates: Sequence[str], context_length: int):
        self.tokenizer = tokenizer
        self.nouns = list(nouns)
        self.templates = list(templates)
        self.ctx = context_length
        n_t = len(self.templates)
        simple = _composable_tokenizer(tokenizer)
        self.sot = tokenizer.sot_token_id if simple else None
        self.eot = tokenizer.eot_token_id if simple else None
        self.parts: list[tuple[list[int], list[int]] | None] = []
        for t in self.templates:
            self.parts.append(_template_parts(tokenizer, t) if simple else None)
        self.noun_tokens: list[list[int] | None] = []
        self.full: dict[int, list[int]] = {}
        lengths = np.empty(len(self.nouns) * n_t, dtype=np.int64)
        for i, noun in enumerate(self.nouns):
            safe = simple and bool(_SAFE_NOUN.fullmatch(noun))
            toks = tokenizer.encode(noun) if safe else None
            self.noun_tokens.append(toks)
            for j, parts in enumerate(self.parts):
                k = i * n_t + j
                if toks is not None and parts is not None:
                    lengths[k] = len(parts[0]) + len(toks) + len(parts[1]) + 2
                else:
                    row = _tokenize_row(tokenizer, self.templates[j].format(noun), self.ctx)
                    self.full[k] = row
                    lengths[k] = len(row)
        self.lengths = np.minimum(lengths, self.ctx)

    def __len__(self) -> int:
        return len(self.lengths)

    def rows(self, ks: np.ndarray) -> list[list[int]]:
        n_t = len(self.templates)
        out = []
        for k in ks.tolist():
            row = self.full.get(k)
            if row is None:
                i, j = divmod(k, n_t)
                prefix, suffix = self.parts[j]  # type: ignore[misc]
                row = [self.sot, *prefix, *self.noun_tokens[i], *suffix, self.eot]  # type: ignore[misc]
                if len(row) > self.ctx:
                    row = row[: self.ctx]
                    row[-1] = self.eot
            out.append(row)
        return out


def _composable_tokenizer(tokenizer: Any) -> bool:
    """open_clip's SimpleTokenizer with its default cleaning ('lower') and plain truncation."""
    from open_clip.tokenizer import SimpleTokenizer, get_clean_fn

    return (
        type(tokenizer) is SimpleTokenizer
        and getattr(tokenizer, "reduction_fn", None) is None
        and getattr(tokenizer, "clean_fn", None) is get_clean_fn("lower")
    )


def _template_parts(tokenizer: Any, template: str) -> tuple[list[int], list[int]] | None:
    if template.count("{}") != 1:
        return None
    prefix, suffix = template.split("{}")
    if prefix and not prefix[-1].isspace():
        return None
    if suffix and not (suffix[0].isspace() or (not suffix[0].isalnum() and suffix[0] not in "'&")):
        return None
    if not (prefix + suffix).isascii() or "&" in prefix + suffix:
        return None
    return tokenizer.encode(prefix), tokenizer.encode(suffix)


def _tokenize_row(tokenizer: Any, text: str, context_length: int) -> list[int]:
    """One text's token ids: SimpleTokenizer ``[sot] + tokens + [eot]`` unpadded and truncated exactly as
    open_clip truncates (cut to the context, last token set to EOT); other tokenizers: their full padded row."""
    if _composable_tokenizer(tokenizer):
        row = [tokenizer.sot_token_id, *tokenizer.encode(text), tokenizer.eot_token_id]
        if len(row) > context_length:
            row = row[:context_length]
            row[-1] = tokenizer.eot_token_id
        return row
    return tokenizer([text])[0].tolist()


# --------------------------------------------------------------------------------------------------------------
# the encoder
# --------------------------------------------------------------------------------------------------------------


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

    Args:
        model_name: an open_clip architecture (``open_clip.list_models()``), or ``"tac-tiny"``.
        pretrained: an open_clip pretrained tag for ``model_name`` (default ``"openai"``, the paper's
            backbone); ``None`` / ``""`` / ``"none"`` for random initialisation from a fixed seed. Ignored by
            ``tac-tiny``, which never needs weights.
        checkpoint: a local open_clip state_dict (``.safetensors``, ``.bin``, ``.pt``) to load instead of
            downloading; a known ``pretrained`` tag then only contributes preprocessing and QuickGELU.
        cache_dir: Hugging Face hub cache (default: ``HF_HUB_CACHE``).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda"``, ``"cuda:1"``, or a torch.device.
        batch_size: images per forward pass.
        text_batch_size: prompts per forward pass of the text tower.
        precision: ``"auto"`` (fp16 autocast on CUDA, fp32 on CPU), ``"fp32"``, ``"fp16"`` or ``"bf16"``.
        download_timeout: seconds for the reachability probe and each HTTP wait of a download.

    Raises:
        EncoderUnavailableError: weights cannot be obtained (never hangs: cache first, then a time-bounded
            reachability probe, then a download whose waits are bounded).
    """

    def __init__(
        self,
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
    ) -> None:
        register_model_configs()
        tag = (
            None
            if pretrained is None or pretrained.strip().lower() in _NO_WEIGHTS_TAGS
            else pretrained.strip()
        )
        if model_name == TINY_MODEL_NAME:
            tag = None
        self._model_name = model_name
        self.batch_size = int(batch_size)
        self.text_batch_size = int(text_batch_size)
        self._device = resolve_device(device)
        self._precision = _resolve_precision(precision, self._device)
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
            weights = _resolve_tag_weights(model_name, tag, tag_cfg, cache, download_timeout)
        self._pretrained = tag.lower().replace("-", "_") if tag else None
        self._checkpoint = ckpt
        self._quick_gelu = bool(tag_cfg.get("quick_gelu", False))

        def unavailable(reason: str, looked_in: str) -> EncoderUnavailableError:
            return EncoderUnavailableError(
                model_name=model_name, pretrained=tag, checkpoint=ckpt, reason=reason, looked_in=looked_in
            )

        # Build on CPU under a private, seeded RNG (deterministic random init, global RNG untouched).
        kwargs: dict[str, Any] = dict(
            pretrained=None,
            precision="fp32",
            device="cpu",
            force_quick_gelu=self._quick_gelu,
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
        self._weights_sha256: str | None = None
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
            self._weights_sha256 = _weights_digest(weights)
        try:
            self._tokenizer = open_clip.get_tokenizer(model_name)
        except Exception as exc:
            raise unavailable(
                f"the tokenizer could not be loaded: {type(exc).__name__}: {exc}", _hf_cache_dir(cache)
            ) from exc

        self._model = model.to(self._device).eval()
        self._model.requires_grad_(False)
        self._preprocess = preprocess
        self._spec = PreprocessSpec.from_transform(preprocess)
        self._embedding_dim = int(self._probe_dim())
        self._context_length = int(getattr(self._model, "context_length", 0) or 77)
        self._trim = _trim_supported(self._model, self._tokenizer)
        self._config_sha256 = hashlib.sha256(
            json.dumps(open_clip.get_model_config(model_name), sort_keys=True).encode()
        ).hexdigest()

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
        """What determines the embeddings: a cache/version key for stored noun (and image) embeddings.

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

    @property
    def identity_key(self) -> str:
        """A short, filesystem-safe string of :attr:`identity`: ``<model>__<tag|random|checkpoint>__<hash16>``."""
        ident = self.identity
        blob = json.dumps({k: v for k, v in ident.items() if k != "checkpoint"}, sort_keys=True).encode()
        source = self._pretrained or ("checkpoint" if self._checkpoint else "random")
        safe = re.sub(r"[^A-Za-z0-9._-]+", "-", f"{self._model_name}__{source}")
        return f"{safe}__{hashlib.sha256(blob).hexdigest()[:16]}"

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
                feats = _encode_text_trimmed(self._model, tokens)
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
        rows = [_tokenize_row(self._tokenizer, t, self._context_length) for t in texts]
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
        prompts = _PromptTokens(self._tokenizer, nouns, templates, self._context_length)
        total, done = len(prompts), 0
        for idx, tokens in self._iter_token_batches(prompts.lengths, prompts.rows):
            feats = self._text_features(tokens)
            noun_idx = torch.from_numpy(idx // n_t).to(self._device)
            sums.index_add_(0, noun_idx, feats)
            done += len(idx)
            if progress is not None:
                progress(done, total)
        return F.normalize(sums / n_t, dim=-1).cpu().numpy()


# --------------------------------------------------------------------------------------------------------------
# trimmed-context text tower
# --------------------------------------------------------------------------------------------------------------


def _trim_supported(model: torch.nn.Module, tokenizer: Any) -> bool:
    """Is running the text tower on a shorter context exact for this model?

    True for open_clip's built-in ``CLIP`` text tower with a causal attention mask, absolute positional
    embeddings, EOT/EOS pooling and right-padding with zeros (SimpleTokenizer): position ``i`` then attends only
    to positions ``≤ i``, so the pooled EOT feature cannot see padding, and cutting the padding changes nothing.
    Anything else (custom/HF text towers, bidirectional masks, first/last pooling, other tokenizers) uses the
    stock ``encode_text`` on full-length tokens.
    """
    try:
        from open_clip.model import CLIP
        from open_clip.transformer import text_global_pool  # noqa: F401
    except ImportError:  # pragma: no cover
        return False
    if type(model) is not CLIP or type(model).encode_text is not CLIP.encode_text:
        return False
    if "encode_text" in vars(model):  # monkeypatched instance
        return False
    pool = getattr(model, "text_pool_type", None)
    if pool not in ("argmax", "eos") or (pool == "eos" and getattr(model, "text_eos_id", None) is None):
        return False
    if not _composable_tokenizer(tokenizer):
        return False
    mask = getattr(model, "attn_mask", None)
    pos = getattr(model, "positional_embedding", None)
    if mask is None or pos is None or mask.ndim != 2 or mask.shape[0] != pos.shape[0]:
        return False
    causal = torch.triu(torch.ones(mask.shape, dtype=torch.bool, device=mask.device), diagonal=1)
    if not torch.equal(torch.isinf(mask) & (mask < 0), causal) or not torch.all(mask[~causal] == 0):
        return False
    if model.text_pool_type == "argmax" and tokenizer.eot_token_id != max(tokenizer.encoder.values()):
        return False
    return True


def _encode_text_trimmed(model: Any, text: torch.Tensor) -> torch.Tensor:
    """``CLIP.encode_text`` on ``L = text.shape[1] ≤ context`` positions (see :func:`_trim_supported`)."""
    from open_clip.transformer import text_global_pool

    length = text.shape[1]
    cast_dtype = model.transformer.get_cast_dtype()
    x = model.token_embedding(text).to(cast_dtype)
    x = x + model.positional_embedding[:length].to(cast_dtype)
    x = model.transformer(x, attn_mask=model.attn_mask[:length, :length])
    x = model.ln_final(x)
    x = text_global_pool(x, text, model.text_pool_type, eos_token_id=getattr(model, "text_eos_id", None))
    if model.text_projection is not None:
        if isinstance(model.text_projection, torch.nn.Linear):
            x = model.text_projection(x)
        else:
            x = x @ model.text_projection
    return x
