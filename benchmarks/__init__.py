"""Timing scripts for the pipeline (not tests), run from the checkout's root as modules:

    python -m benchmarks.run                     # every stage and the whole graph, one markdown table
    python -m benchmarks.bench_encoders          # image and noun encoding throughput
    python -m benchmarks.bench_heads             # head training: the engine against the original loop
    python -m benchmarks.bench_scaling           # growth with N, projected to ImageNet-1K
    python -m benchmarks.bench_dagster_overhead  # Dagster's per-step overhead, executor modes compared
    python -m benchmarks.bench_sharded           # sharded image embedding on a local Dask cluster
    python -m benchmarks.bench_choose_k          # the K each criterion picks on planted sets
    python -m benchmarks.bench_drop_scan         # the drops sensor's per-tick check against a full walk

Shared parts: :mod:`benchmarks.inputs` (generated images, drops, vectors and nouns),
:mod:`benchmarks.dagster_runs` (runs of the asset graph through the CLI's own materialize),
:mod:`benchmarks.harness`, :mod:`benchmarks.stages` and :mod:`benchmarks.graph` (the sections of ``run``).
Importing this package imports nothing heavy: image-decoding workers re-import the running module.
"""

from pathlib import Path

#: The checkout holding ``benchmarks/`` and ``tac_pipeline/`` (the package may not be installed there).
REPO = Path(__file__).resolve().parents[1]
