"""Dagster resources: the Parquet IO manager, the data root, the encoder settings and the compute device."""
