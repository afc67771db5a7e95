"""Helpers below everything else, which the libraries (``tac/``, ``encoders/``) and the pipeline share:
atomic writes (:mod:`~tac_pipeline.common.atomic`), Arrow tables and the one way Parquet is read
(:mod:`~tac_pipeline.common.tables`), message formatting (:mod:`~tac_pipeline.common.messages`), devices
(:mod:`~tac_pipeline.common.devices`) and the network probe (:mod:`~tac_pipeline.common.netprobe`). Nothing here
imports anything else of the package or reads the environment."""
