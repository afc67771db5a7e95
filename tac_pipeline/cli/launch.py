"""The run's own process: ``python -m tac_pipeline.cli.launch --select a,b [--partition P] [--config-json J]``.

``python -m tac_pipeline.cli.launch --request-on-stdin`` is the same process started ahead of time: it loads
the definitions first (most of its start-up), then reads those arguments as one JSON list from its standard
input, so a command starts it before deciding what to run (:class:`tac_pipeline.runs.child.ChildProcess`) and
the two start-ups overlap. An empty standard input (the command decided to run nothing) ends it quietly.

It materializes the selected assets with Dagster's Python API (``execute_job`` on the project's implicit asset
job), recording the run in the instance at
``$DAGSTER_HOME`` as the UI's runs are. Dagster's event stream always goes to the run's log in the UI; the
terminal sees it only with ``--verbose`` (``make cluster VERBOSE=1``): otherwise the command that started this
process prints one line per finished step (:mod:`tac_pipeline.cli.progress`). ``--tag key=value`` adds run tags
(the command finds its run by one).
"""

from __future__ import annotations

import argparse
import functools
import json
import os


@functools.cache
def load_definitions():
    """The project's repository, its definitions loaded (``tac_pipeline.definitions:defs``) once per process,
    out of the garbage collector's way (:func:`~tac_pipeline.runs.child.long_lived_objects`)."""
    from tac_pipeline.runs.child import long_lived_objects

    with long_lived_objects():
        from tac_pipeline.dagster_internals import ReconstructableRepository

        repository = ReconstructableRepository.for_module("tac_pipeline.definitions", "defs")
        repository.get_definition()
    return repository


def launch(
    names: list[str],
    partition: str | None,
    run_config: dict | None = None,
    tags: dict[str, str] | None = None,
    verbose: bool = False,
) -> bool:
    """Materialize ``names`` (for ``partition``) in the instance at ``$DAGSTER_HOME``; True on success.

    The job is the project's implicit asset job for those assets, reconstructed from
    ``tac_pipeline.definitions:defs`` in every step process (what ``dagster asset materialize`` runs).
    """
    from dagster import AssetKey, DagsterInstance, execute_job

    run_config = dict(run_config or {})
    if not verbose:  # the events still reach the run's log in the UI; the terminal gets the command's lines
        run_config.setdefault("loggers", {"console": {"config": {"log_level": "ERROR"}}})
    keys = [AssetKey(name) for name in names]
    repository = load_definitions()
    job = repository.get_definition().get_implicit_job_def_for_assets(keys)
    if job is None:
        raise ValueError(f"{', '.join(names)}: these assets cannot run in one job (different partitions)")
    run_tags = dict(tags or {})
    if partition is not None:
        run_tags |= job.get_tags_for_partition_key(partition, selected_asset_keys=keys)
    with DagsterInstance.get() as instance:
        result = execute_job(
            repository.get_reconstructable_job(job.name),
            instance=instance,
            run_config=run_config,
            tags=run_tags,
            asset_selection=keys,
        )
        return result.success


#: The argument that makes the process read its arguments from its standard input (see the module's docs).
REQUEST_ON_STDIN = "--request-on-stdin"


def read_request(stream) -> list[str] | None:
    """After loading the definitions: the arguments a command sends on ``stream`` (one JSON list of
    strings), or None when it sent nothing."""
    load_definitions()
    line = stream.readline()
    if not line.strip():
        return None
    request = json.loads(line)
    if not isinstance(request, list) or not all(isinstance(arg, str) for arg in request):
        raise ValueError(f"{REQUEST_ON_STDIN}: expected a JSON list of arguments, got {line[:200]!r}")
    return request


def main(argv: list[str] | None = None) -> int:
    import sys

    argv = sys.argv[1:] if argv is None else argv
    if argv == [REQUEST_ON_STDIN]:
        argv = read_request(sys.stdin)
        if argv is None:
            return 0
    parser = argparse.ArgumentParser(prog="python -m tac_pipeline.cli.launch")
    parser.add_argument("--select", required=True, help="asset names, comma-separated")
    parser.add_argument("--partition", default=None)
    parser.add_argument("--config-json", default=None)
    parser.add_argument("--tag", action="append", default=[], help="key=value")
    parser.add_argument("--verbose", action="store_true", help="Dagster's event stream on the terminal too")
    args = parser.parse_args(argv)
    tags = dict(tag.split("=", 1) for tag in args.tag)
    config = json.loads(args.config_json) if args.config_json else None
    ok = launch(args.select.split(","), args.partition, config, tags, args.verbose)
    return 0 if ok else 1


if __name__ == "__main__":
    from tac_pipeline.runs.child import exit_now, stop_group_when_orphaned

    stop_group_when_orphaned(os.getppid())
    exit_now(main())
