"""Everything Dagster loads for this project, composed in one place."""

from __future__ import annotations

from dagster import Definitions

from tac_pipeline.partitions import datasets_partitions  # noqa: F401  (registered with the assets)

defs = Definitions(assets=[])
