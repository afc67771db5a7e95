"""Every stored table of a dataset says which upstream tables it was built from; a step whose inputs disagree
fails before computing anything.

Each partitioned asset's table carries, in its Parquet schema metadata under :data:`LINEAGE_KEY`, a JSON
object ``{"token": <this table's content digest>, "from": {<ancestor asset>: <its token>, ...}}``: the token of
every table upstream of it, as it was when this one was computed. When a step starts, :func:`check_inputs`
merges the claims of its input tables (each input's own token and everything it was built from). Two
inputs that name different tokens for the same ancestor come from two different states of the store (two
runs interleaved, or part of the graph was re-materialized alone) and the step raises
:class:`MixedInputsError`, naming the stale input, the ancestor and what to re-materialize, instead of
silently combining, say, heads trained on 300 images with embeddings of 360.

The token is a digest of the table's content (its Arrow IPC stream, schema metadata left out), so a table
recomputed to the same content (embeddings reused for an unchanged drop) keeps its token and does not make
its descendants look stale. Tables stored before lineage was recorded carry none and are not checked.

An **assign** run (:mod:`~tac_pipeline.defs.assets.run_kind`) labels today's images with a model fitted on
earlier ones: there the fitted inputs (``text_space``, ``trained_heads``) are checked on what they were fitted
from (semantic centres, nouns, each other), not on the per-image tables they were fitted on
(:data:`PER_IMAGE`), which have moved on since the fit.
:func:`with_lineage` wraps the compute function of every ``dataset_asset`` (``assets/common.py``), so no
asset does this by hand.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Mapping

import pyarrow as pa
from dagster import DagsterInvariantViolationError, MaterializeResult, MetadataValue

from tac_pipeline.defs.assets.run_kind import run_kind
from tac_pipeline.defs.names import ASSIGN, FIT_ASSETS

#: Schema-metadata key of a table's lineage.
LINEAGE_KEY = b"tac/lineage"
#: Characters of a token shown in messages and in the UI.
SHOWN = 12
#: The per-image tables a fitted model was fitted on; an assign run does not compare them with today's.
PER_IMAGE = frozenset({"image_embeddings", "counterparts", "knn_graphs", "cluster_labels"})


class MixedInputsError(ValueError):
    """The inputs of a step come from different states of the store."""


class _Digest:
    """A write-only file that hashes what is written to it (the sink of an Arrow IPC stream)."""

    def __init__(self) -> None:
        self.hash = hashlib.blake2b(digest_size=16)
        self.closed = False

    def write(self, data) -> int:
        self.hash.update(data)
        return len(data)

    def writable(self) -> bool:
        return True

    def flush(self) -> None:
        pass

    def close(self) -> None:
        self.closed = True


def table_token(table: pa.Table) -> str:
    """A digest of the table's content: its columns, types and values (schema metadata excluded)."""
    sink = _Digest()
    plain = table.replace_schema_metadata(None)
    with pa.ipc.new_stream(pa.PythonFile(sink, mode="w"), plain.schema) as writer:
        writer.write_table(plain)
    return sink.hash.hexdigest()


def lineage(table: pa.Table) -> dict | None:
    """The lineage a stored table carries (``{"token", "from"}``), or None (stored before lineage existed)."""
    raw = (table.schema.metadata or {}).get(LINEAGE_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        return None
    if not isinstance(value, dict) or not isinstance(value.get("from"), dict) or "token" not in value:
        return None
    return value


def check_inputs(
    asset: str, partition: str, inputs: Mapping[str, pa.Table], fitted: frozenset[str] = frozenset()
) -> dict[str, str]:
    """What the output of ``asset`` is built from (``{ancestor: token}``), after checking that ``inputs``
    (``{input asset: table}``) agree on every ancestor they share; raises :class:`MixedInputsError` naming
    the disagreement about the most upstream one (the ancestor most inputs descend from).

    ``fitted`` names inputs that are a fitted model used on newer images (an assign run): their claims about
    the :data:`PER_IMAGE` tables are left out."""
    claims: dict[str, list[tuple[str, str]]] = {}  # ancestor -> [(token, the input that says so)]
    for name, table in inputs.items():
        found = lineage(table)
        if found is not None:
            said = found["from"]
            if name in fitted:
                said = {a: t for a, t in said.items() if a not in PER_IMAGE}
            for ancestor, token in {**said, name: found["token"]}.items():
                claims.setdefault(ancestor, []).append((token, name))
    mixed = [ancestor for ancestor, said in claims.items() if len({token for token, _ in said}) > 1]
    if mixed:
        ancestor = max(mixed, key=lambda a: len(claims[a]))
        said = sorted(claims[ancestor], key=lambda claim: claim[1] != ancestor)  # the ancestor itself first
        other = next(claim for claim in said if claim[0] != said[0][0])
        raise MixedInputsError(_mixed_message(asset, partition, ancestor, said[0], other))
    return {ancestor: said[0][0] for ancestor, said in sorted(claims.items())}


def _mixed_message(asset: str, partition: str, ancestor: str, first: tuple, second: tuple) -> str:
    def says(token: str, via: str) -> str:
        if via == ancestor:
            return f"{ancestor} is {token[:SHOWN]}"
        return f"{via} was built from {ancestor} {token[:SHOWN]}"

    # The input that is the ancestor itself is current; the one built from another state of it is stale.
    stale = [via for _, via in (first, second) if via != ancestor]
    redo = (
        f"re-materialize {stale[0]} and everything downstream of it"
        if len(stale) == 1
        else f"re-materialize everything downstream of {ancestor}"
    )
    return (
        f"the inputs of {asset} for '{partition}' come from two different states of the store: "
        f"{says(*first)}, but {says(*second)} (two runs of the dataset interleaved, or part of the graph was "
        f"re-materialized alone). Nothing was computed. Fix: {redo} for '{partition}', or run the whole "
        f"graph again: make cluster DATASET={partition}"
    )


def stamp(table: pa.Table, built_from: Mapping[str, str]) -> pa.Table:
    """``table`` with its lineage in the schema metadata (other metadata kept)."""
    value = json.dumps({"token": table_token(table), "from": dict(built_from)}, sort_keys=True)
    return table.replace_schema_metadata({**(table.schema.metadata or {}), LINEAGE_KEY: value.encode()})


def lineage_metadata(table: pa.Table) -> dict:
    """The lineage as output metadata: this table's token and the tokens it was built from (shortened)."""
    found = lineage(table) or {"token": "", "from": {}}
    return {
        "lineage": MetadataValue.json(
            {
                "token": found["token"][:SHOWN],
                "built_from": {k: v[:SHOWN] for k, v in found["from"].items()},
            }
        )
    }


def with_lineage(compute):
    """Wrap an asset's compute function: check its input tables first, stamp its output table after.

    The inputs are the keyword arguments holding ``pyarrow.Table`` s (resources and config are not tables);
    the output is the returned table, or the value of a returned ``MaterializeResult``.
    """

    @functools.wraps(compute)
    def wrapper(context, *args, **kwargs):
        tables = {name: value for name, value in kwargs.items() if isinstance(value, pa.Table)}
        fitted = frozenset(FIT_ASSETS) if run_kind(context) == ASSIGN else frozenset()
        asset = context.asset_key.to_user_string()
        built_from = check_inputs(asset, context.partition_key, tables, fitted)
        result = compute(context, *args, **kwargs)
        if isinstance(result, pa.Table):
            result = stamp(result, built_from)
            try:
                context.add_output_metadata(lineage_metadata(result))
            except DagsterInvariantViolationError:
                pass  # an asset called as a function takes output metadata once; the table holds the lineage
            return result
        if isinstance(result, MaterializeResult) and isinstance(result.value, pa.Table):
            table = stamp(result.value, built_from)
            return MaterializeResult(
                asset_key=result.asset_key,
                metadata={**(result.metadata or {}), **lineage_metadata(table)},
                check_results=result.check_results,
                data_version=result.data_version,
                tags=result.tags,
                value=table,
            )
        return result

    return wrapper
