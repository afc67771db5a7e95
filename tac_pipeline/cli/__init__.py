"""The command line (``python -m tac_pipeline.cli``, behind ``make demo``, ``make cluster`` and ``make reproduce``).

- :mod:`~tac_pipeline.cli.commands`: the commands and their arguments;
- :mod:`~tac_pipeline.cli.cluster`: one drop clustered through Dagster, then its metrics;
- :mod:`~tac_pipeline.cli.provision`: what the demo needs on a fresh machine (WordNet, weights or the smoke
  model).

Importing it loads no torch, faiss or scikit-learn: the command's own process only launches runs and reads
their results.
"""
