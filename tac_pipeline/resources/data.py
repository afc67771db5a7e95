"""The ``tac_data`` resource: the data root, and each dataset's drop, settings and images through it.

The rules (keys, ``dataset.toml``, image listing) live in :mod:`tac_pipeline.drops`; this wraps them for steps.
"""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from tac_pipeline.drops import drop_path, drop_settings, list_drop_images
from tac_pipeline.paths import data_root
from tac_pipeline.settings import DatasetSettings


class TacDataResource(ConfigurableResource):
    """The data root: ``drops/<dataset>/`` in, caches beside them."""

    data_dir: str = Field(description="The data root (default: $TAC_DATA_DIR or ./data).")

    @property
    def root(self) -> Path:
        return data_root(self.data_dir)

    def drop_dir(self, dataset: str) -> Path:
        """The drop folder of a partition key (validated: a key never becomes a path traversal)."""
        folder = drop_path(dataset, self.data_dir)
        if not folder.is_dir():
            raise FileNotFoundError(f"no drop folder {folder}: create it or remove the '{dataset}' partition")
        return folder

    def settings(self, dataset: str) -> DatasetSettings:
        return drop_settings(self.drop_dir(dataset))

    def list_images(self, dataset: str, settings: DatasetSettings | None = None):
        """The drop's images (a ``DropListing``): its own files, or those its ``[images]`` setting names."""
        return list_drop_images(self.drop_dir(dataset), settings or self.settings(dataset))
