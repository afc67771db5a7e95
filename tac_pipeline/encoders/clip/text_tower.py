"""The trimmed text tower: open_clip's ``CLIP.encode_text`` run on the shortest context that holds a batch.

Exact for open_clip's causal, EOT-pooled text transformer (position ``i`` attends only to positions ``≤ i``, so
the pooled feature never sees the padding that is cut); :func:`trim_supported` says when that holds, and the
encoder otherwise runs the stock ``encode_text`` on full-length tokens.
"""

from __future__ import annotations

from typing import Any

import torch

from .tokens import composable_tokenizer

__all__ = ["encode_text_trimmed", "trim_supported"]


def trim_supported(model: torch.nn.Module, tokenizer: Any) -> bool:
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
    if not composable_tokenizer(tokenizer):
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


def encode_text_trimmed(model: Any, text: torch.Tensor) -> torch.Tensor:
    """``CLIP.encode_text`` on ``L = text.shape[1] ≤ context`` positions (see :func:`trim_supported`)."""
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
