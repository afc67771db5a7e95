"""The ``datasets`` dynamic partitions: one key per drop folder (the rules live in :mod:`tac_pipeline.drops`)."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

# Re-exported for callers of the partitions' key rules; their home is tac_pipeline.drops.keys.
from tac_pipeline.drops.keys import (
    PARTITION_KEY_PATTERN,
    InvalidDatasetKeyError,
    discover_dataset_keys,
    drop_path,
    validate_dataset_key,
)

__all__ = [
    "PARTITION_KEY_PATTERN",
    "InvalidDatasetKeyError",
    "datasets_partitions",
    "discover_dataset_keys",
    "drop_path",
    "validate_dataset_key",
]

datasets_partitions = DynamicPartitionsDefinition(name="datasets")
