"""Token rows for the text tower, built without re-tokenising what is already known.

:class:`PromptTokens` assembles the token rows of the noun prompt ensemble (every ``template.format(noun)``)
from per-noun tokens instead of re-tokenising every prompt (one string per noun and template);
:func:`tokenize_row` gives one text's unpadded row, truncated exactly as
open_clip truncates. Both fall back to the tokenizer's own output for anything but open_clip's
SimpleTokenizer with its default cleaning.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["PromptTokens", "composable_tokenizer", "tokenize_row"]

_SAFE_NOUN = re.compile(
    r"[A-Za-z0-9](?:[ -%'-~]*[A-Za-z0-9])?"
)  # printable ASCII, no '&', alnum at both ends


class PromptTokens:
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
        simple = composable_tokenizer(tokenizer)
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
                    row = tokenize_row(tokenizer, self.templates[j].format(noun), self.ctx)
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


def composable_tokenizer(tokenizer: Any) -> bool:
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


def tokenize_row(tokenizer: Any, text: str, context_length: int) -> list[int]:
    """One text's token ids: SimpleTokenizer ``[sot] + tokens + [eot]`` unpadded and truncated exactly as
    open_clip truncates (cut to the context, last token set to EOT); other tokenizers: their full padded row."""
    if composable_tokenizer(tokenizer):
        row = [tokenizer.sot_token_id, *tokenizer.encode(text), tokenizer.eot_token_id]
        if len(row) > context_length:
            row = row[:context_length]
            row[-1] = tokenizer.eot_token_id
        return row
    return tokenizer([text])[0].tolist()
