"""The noun vocabularies WordNet can give (:mod:`tac_pipeline.encoders.wordnet` builds them), named here
without importing the reader, so that checking a setting stays cheap."""

from __future__ import annotations

#: ``lemmas``: every noun lemma, the TAC authors' list; ``synsets``: one row per noun synset. The first is the
#: default.
VOCABULARIES: tuple[str, ...] = ("lemmas", "synsets")
DEFAULT_VOCABULARY = VOCABULARIES[0]


def check_vocabulary(vocabulary: str, source: str = "vocabulary") -> str:
    """``vocabulary`` if it names one of :data:`VOCABULARIES`, else a ValueError naming the choices."""
    if vocabulary not in VOCABULARIES:
        raise ValueError(
            f"{source}: unknown noun vocabulary {vocabulary!r}; choose one of {', '.join(VOCABULARIES)} "
            f"(default {DEFAULT_VOCABULARY}, the TAC authors' list)"
        )
    return vocabulary
