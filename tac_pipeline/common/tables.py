"""Arrow helpers shared by the assets and the IO manager: embeddings as fixed-size list<float32> columns, and
the one way the package reads Parquet."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq


def read_parquet(source, columns: list[str] | None = None) -> pa.Table:
    """``pyarrow.parquet.read_table(source)`` (a path or a binary file object) decoded on the calling thread.

    A process that decoded Parquet on Arrow's CPU thread pool intermittently aborts at interpreter exit,
    after its work is done ("terminate called without an active exception", SIGABRT; apache/arrow#34314),
    more often under load: a finished ``make cluster`` or run would then exit -6. Short processes reading one
    table, six at a time on two cores, aborted 14 times in 90 with the pool and 0 in 90 without. Each step
    reads its few inputs once: one thread costs little. ``tac_pipeline_tests/test_common/test_tables.py`` keeps every
    read of the package here.
    """
    return pq.read_table(source, columns=columns, use_threads=False)


def dictionary_columns(schema: pa.Schema) -> list[str]:
    """The Parquet leaf columns (``name`` or ``name.list.element``) worth dictionary encoding: all but the
    floating-point ones (embedding vectors, scores), whose values hardly ever repeat. Trying a dictionary on
    30 million floats before giving up on it is about 40 % of writing a 60,000 x 512 table."""
    columns = []
    for field in schema:
        data_type, path = field.type, field.name
        while is_vector_type(data_type) or pa.types.is_large_list(data_type):
            data_type, path = data_type.value_type, f"{path}.list.element"
        if not pa.types.is_floating(data_type):
            columns.append(path)
    return columns


def parquet_footer_reads(source) -> bool:
    """True when a Parquet file's footer (its schema and row groups) reads: a cut-short or damaged file's does
    not. Reads the footer only (``source``: a path or a binary file object)."""
    try:
        pq.read_metadata(source)
    except (OSError, pa.ArrowException):
        return False
    return True


def embedding_array(x: np.ndarray) -> pa.FixedSizeListArray:
    """(N, d) float array → fixed-size list<float32>[d] column, without a Python loop."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if x.ndim != 2:
        raise ValueError(f"expected an (N, d) array, got shape {x.shape}")
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), type=pa.float32()), x.shape[1])


def index_array(x: np.ndarray) -> pa.FixedSizeListArray:
    """(N, k) integer array → fixed-size list<int64>[k] column."""
    x = np.ascontiguousarray(np.asarray(x, dtype=np.int64))
    return pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), type=pa.int64()), x.shape[1])


def column_matrix(table: pa.Table, column: str, dtype=np.float32) -> np.ndarray:
    """A fixed-size (or regular) list column → (N, d) numpy array."""
    if column not in table.column_names:
        raise KeyError(f"column {column!r} not in table (columns: {', '.join(table.column_names)})")
    values = table[column].combine_chunks()
    if len(values) == 0:
        width = values.type.list_size if pa.types.is_fixed_size_list(values.type) else 0
        return np.zeros((0, width), dtype=dtype)
    if pa.types.is_fixed_size_list(values.type):
        width = values.type.list_size
    else:
        lengths = np.asarray(values.value_lengths())
        if (lengths != lengths[0]).any():
            raise ValueError(
                f"column {column!r} has rows of different lengths ({lengths.min()}..{lengths.max()})"
            )
        width = int(lengths[0])
    flat = values.flatten().to_numpy(zero_copy_only=False)
    return np.asarray(flat, dtype=dtype).reshape(len(values), width)


def take_rows(table: pa.Table, rows: np.ndarray) -> pa.Table:
    """``table.take(rows)``, as a zero-copy slice when ``rows`` are consecutive (an assign keeps the stored rows
    in their order: copying 60,000 vectors twice per step for nothing otherwise)."""
    rows = np.asarray(rows, dtype=np.int64)
    if len(rows) and rows[-1] - rows[0] == len(rows) - 1 and bool((np.diff(rows) == 1).all()):
        return table.slice(int(rows[0]), len(rows))
    return table.take(pa.array(rows, type=pa.int64()))


def is_vector_type(data_type: pa.DataType) -> bool:
    return pa.types.is_fixed_size_list(data_type) or pa.types.is_list(data_type)


def table_digest(table: pa.Table) -> str:
    """sha256 of a table's schema and values (Arrow IPC of its combined chunks: the same rows in any
    chunking give the same digest)."""
    import hashlib

    sink = pa.BufferOutputStream()
    combined = table.combine_chunks().replace_schema_metadata(None)
    with pa.ipc.new_stream(sink, combined.schema) as writer:
        writer.write_table(combined)
    return hashlib.sha256(sink.getvalue()).hexdigest()


def matching_rows(
    ids: list, digests: list, previous: pa.Table | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which rows of a new table a previous one already holds, matched on ``(image_id, image_digest)``.

    Returns ``(here, there, todo)``: the new rows found, their rows in ``previous``, and the new rows to compute
    (all of them when ``previous`` is None or has no ``image_digest``). int64 arrays.
    """
    everything = np.arange(len(ids), dtype=np.int64)
    if previous is None or "image_digest" not in previous.column_names or not len(ids):
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64), everything
    import pyarrow.compute as pc

    def keys(image_ids, image_digests):
        return pc.binary_join_element_wise(
            pc.cast(image_ids, pa.string()), pc.cast(image_digests, pa.string()), "\x00"
        )

    found = pc.index_in(
        keys(pa.array(ids, pa.string()), pa.array(digests, pa.string())),
        value_set=keys(previous["image_id"], previous["image_digest"]).combine_chunks(),
    )
    there = found.to_numpy(zero_copy_only=False)
    held = ~np.isnan(there) if there.dtype.kind == "f" else np.ones(len(there), dtype=bool)
    here = everything[held]
    return here, there[held].astype(np.int64), everything[~held]


def row_digests(x: np.ndarray) -> list[str]:
    """A 16-hex-digit blake2b digest of every row's float32 bytes: which rows of two tables hold the same vector."""
    import hashlib

    rows = np.ascontiguousarray(x, dtype=np.float32)
    return [hashlib.blake2b(memoryview(row), digest_size=8).hexdigest() for row in rows]
