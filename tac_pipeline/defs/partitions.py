"""The ``datasets`` dynamic partitions: one key per drop folder (the key rules: :mod:`tac_pipeline.drops.keys`)."""

from __future__ import annotations

from dagster import DynamicPartitionsDefinition

datasets_partitions = DynamicPartitionsDefinition(name="datasets")
