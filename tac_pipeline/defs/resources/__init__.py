"""Dagster resources: the data root (`tac_data`), the CLIP encoder settings (`clip_encoder`) and the compute device (`compute_device`)."""
