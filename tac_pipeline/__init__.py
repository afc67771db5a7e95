"""tac-pipeline: Text-Aided Clustering (TAC, ICML 2024) of image collections, orchestrated by Dagster."""

__version__ = "0.1.0"
