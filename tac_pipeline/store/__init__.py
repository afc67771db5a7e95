"""The store: where every file lives (:mod:`~tac_pipeline.store.layout`, every folder under the data root) and
what the latest materialization of an asset recorded (:mod:`~tac_pipeline.store.records`). Tables are written
atomically (:mod:`tac_pipeline.common.atomic`) and read on the calling thread
(:func:`tac_pipeline.common.tables.read_parquet`); the Dagster IO managers that write them are in
:mod:`tac_pipeline.defs.io_managers`."""
