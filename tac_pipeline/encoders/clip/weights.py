"""Where a pretrained tag's weights come from: the Hugging Face cache first, then a download whose every
network step is time-bounded (a reachability probe, then bounded HTTP waits); and the weights' digest.

Nothing here builds a model. :func:`resolve_tag_weights` returns a local file or raises
:class:`~tac_pipeline.encoders.clip.models.EncoderUnavailableError` naming where it looked.
"""

from __future__ import annotations

import logging
import os
import re
from typing import Any

from tac_pipeline.common.netprobe import reachable
from tac_pipeline.encoders.incremental import sha256_of_file

from .models import EncoderUnavailableError

__all__ = ["hf_cache_dir", "resolve_tag_weights", "weights_digest"]

_log = logging.getLogger(__name__)

_HF_DEFAULT_WEIGHTS = "open_clip_pytorch_model.bin"


def _hf_offline() -> bool:
    """Hugging Face's offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``, as huggingface_hub read them)."""
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def _hf_endpoint() -> str:
    """Hugging Face's endpoint (``HF_ENDPOINT``, as huggingface_hub read it)."""
    from huggingface_hub import constants

    return str(constants.ENDPOINT).rstrip("/")


def hf_cache_dir(cache_dir: str | os.PathLike[str] | None) -> str:
    if cache_dir is not None:
        return str(cache_dir)
    try:
        from huggingface_hub import constants

        return str(constants.HF_HUB_CACHE)
    except Exception:  # pragma: no cover
        return os.path.expanduser("~/.cache/huggingface/hub")


_DIGESTS: dict[tuple[str, int, int], str] = {}


def weights_digest(path: str | os.PathLike[str]) -> str:
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


def resolve_tag_weights(
    model_name: str, tag: str, cfg: dict[str, Any], cache_dir: str | None, timeout: float
) -> str:
    """Local path of a tag's weights: the HF cache if present, else a bounded download, else the error."""
    hub = cfg.get("hf_hub") or ""
    cache = hf_cache_dir(cache_dir)
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
