"""Where drops live and what each dataset's ``dataset.toml`` says."""

from __future__ import annotations

from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from tac_pipeline.partitions import drop_path
from tac_pipeline.paths import data_root
from tac_pipeline.settings import DatasetSettings, load_dataset_settings


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
        return load_dataset_settings(self.drop_dir(dataset))

    def list_images(self, dataset: str, settings: DatasetSettings | None = None):
        """The drop's images (a ``DropListing``): its own files, or those its ``[images]`` setting names."""
        from tac_pipeline.encoders import discover_images

        settings = settings or self.settings(dataset)
        source = settings.images
        if source is None:
            return discover_images(self.drop_dir(dataset))
        return discover_images(
            self.drop_dir(dataset), image_root=source.root, splits=source.splits, classes=source.classes
        )
