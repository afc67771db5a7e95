"""The ``tac_data`` resource: the data root, and each dataset's drop, settings and images through it.

The rules (keys, ``dataset.toml``, image listing) live in :mod:`tac_pipeline.drops`; this wraps them for steps.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from tac_pipeline.drops.listing import drop_settings, list_drop_images
from tac_pipeline.drops.settings import DatasetSettings
from tac_pipeline.store.layout import cache_dir, data_root, drop_path, nltk_data_dir


class TacDataResource(ConfigurableResource):
    """The data root: ``drops/<dataset>/`` in, caches beside them."""

    data_dir: str = Field(description="The data root (default: $TAC_DATA_DIR or ./data).")
    wordnet_dir: str | None = Field(
        default=None, description="A WordNet 3.0 dict folder searched before the system ones ($WNSEARCHDIR)."
    )
    nltk_data: list[str] = Field(
        default_factory=list, description="More folders where nltk's corpora may be."
    )
    max_image_mb: int = Field(
        default=256, ge=1, description="An image file larger than this (MiB) is skipped before it is read."
    )
    image_roots: list[str] = Field(
        default_factory=list,
        description="Folders besides the data root that drops may take images from ($TAC_IMAGE_ROOTS).",
    )
    max_drop_files: int = Field(
        default=10_000_000,
        ge=1,
        description="A drop holding more files than this is refused ($TAC_MAX_DROP_FILES).",
    )

    @property
    def max_image_bytes(self) -> int:
        return self.max_image_mb * 2**20

    @property
    def root(self) -> Path:
        return data_root(self.data_dir)

    @property
    def roots(self) -> list[Path]:
        """Where drops may take images from: the data root, then the allowed image roots."""
        return [self.root, *(Path(r) for r in self.image_roots)]

    def drop_dir(self, dataset: str) -> Path:
        """The drop folder of a partition key (validated: a key never becomes a path traversal)."""
        folder = drop_path(dataset, self.data_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"no drop folder {folder}: create it or remove the '{dataset}' partition")
        return folder

    def settings(self, dataset: str) -> DatasetSettings:
        return drop_settings(self.drop_dir(dataset))

    def list_images(self, dataset: str, settings: DatasetSettings | None = None, log=None):
        """The drop's images (a ``DropListing``): its own files, or those its ``[images]`` setting names, read
        only inside :attr:`roots`; a long listing logs its progress to ``log``."""

        def progress(folders: int, files: int) -> None:
            log.info(f"listing the drop: {folders:,} folders, {files:,} files so far")

        return list_drop_images(
            self.drop_dir(dataset),
            settings or self.settings(dataset),
            roots=self.roots,
            progress=progress if log is not None else None,
            max_files=self.max_drop_files,
        )

    def noun_vocabulary(self, vocabulary: str, *, logger=None, download: bool = True):
        """The WordNet noun vocabulary, cached and built under this data root (:func:`wordnet_nouns`)."""
        return wordnet_nouns(
            self.root,
            vocabulary,
            wordnet_dir=self.wordnet_dir,
            nltk_data=self.nltk_data,
            logger=logger,
            download=download,
        )


def wordnet_nouns(
    data_dir: str | os.PathLike[str] | None = None,
    vocabulary: str = "lemmas",
    *,
    wordnet_dir: str | os.PathLike[str] | None = None,
    nltk_data: Sequence[str | os.PathLike[str]] = (),
    **kwargs,
):
    """:func:`tac_pipeline.encoders.wordnet.load_noun_vocabulary` with the data root's folders (its cache in
    ``cache/``, a downloaded or built corpus in ``nltk_data/``), ``wordnet_dir`` (``$WNSEARCHDIR``) searched
    before the system databases and ``nltk_data`` (``$NLTK_DATA``) after nltk's own path; other keyword
    arguments (``nltk_paths``, ``system_dirs``, ``download``…) go to it as they are (None: its default)."""
    from tac_pipeline.encoders import wordnet

    kwargs = {name: value for name, value in kwargs.items() if value is not None}
    if nltk_data and "nltk_paths" not in kwargs:
        kwargs["nltk_paths"] = [*wordnet.default_nltk_paths(), *map(str, nltk_data)]
    if "system_dirs" not in kwargs:
        first = [Path(wordnet_dir)] if wordnet_dir else []
        kwargs["system_dirs"] = first + wordnet.system_wordnet_dirs()
    return wordnet.load_noun_vocabulary(
        cache_dir(data_dir), vocabulary, nltk_dir=nltk_data_dir(data_dir), **kwargs
    )
