"""The Dagster objects, one kind per module or folder: assets by stage (:mod:`~tac_pipeline.defs.assets`), their
checks, resources, IO managers, executors, automation (the drops sensor and the schedule), jobs, partitions and
the asset names. :mod:`tac_pipeline.definitions` composes them from the configuration. Importing this package
imports none of them."""
