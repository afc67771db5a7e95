"""The executors: steps in local processes with one GPU step per visible GPU
(:mod:`~tac_pipeline.defs.executors.local`), or tasks on a Dask cluster
(:mod:`~tac_pipeline.defs.executors.dask_cluster`, with the ``distributed`` extra). ``TAC_EXECUTOR`` chooses
(:mod:`tac_pipeline.config`)."""
