"""Parquet is read in one place, on the calling thread: a process that used Arrow's thread pool to decode can
abort at exit after its work is done ("terminate called without an active exception")."""

from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import tac_pipeline
from tac_pipeline.common.tables import (
    dictionary_columns,
    embedding_array,
    matching_rows,
    read_parquet,
    row_digests,
    take_rows,
)

PACKAGE = Path(tac_pipeline.__file__).parent
#: Calls that decode Parquet on Arrow's thread pool unless told otherwise.
THREADED_READS = {"read_table", "read_pandas", "ParquetFile", "ParquetDataset", "read_parquet", "dataset"}


def _threaded_reads(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            owner = node.func.value
            if (
                node.func.attr in THREADED_READS
                and isinstance(owner, ast.Name)
                and owner.id in {"pq", "pd", "ds"}
            ):
                found.append(f"{path.relative_to(PACKAGE)}:{node.lineno} {owner.id}.{node.func.attr}")
    return found


def test_the_package_reads_parquet_only_through_read_parquet():
    modules = [p for p in PACKAGE.rglob("*.py") if p != PACKAGE / "common" / "tables.py"]
    assert len(modules) > 50
    assert [hit for module in modules for hit in _threaded_reads(module)] == []


def test_read_parquet_reads_paths_and_file_objects_and_columns(tmp_path):
    table = pa.table({"image_id": ["a", "b", "c"], "embedding": embedding_array(np.eye(3, dtype=np.float32))})
    pq.write_table(table, tmp_path / "t.parquet")
    assert read_parquet(tmp_path / "t.parquet").equals(table)
    with open(tmp_path / "t.parquet", "rb") as handle:
        assert read_parquet(handle, columns=["image_id"]).column_names == ["image_id"]


@pytest.mark.parametrize(
    "rows", [[2, 3, 4], [0, 1, 2, 3, 4, 5], [4, 2, 3], [1, 3], [5], [], [3, 3], [0, 1, 3, 4]]
)
def test_take_rows_is_take_and_a_slice_for_consecutive_rows(rows):
    table = pa.table({"id": list("abcdef"), "embedding": embedding_array(np.arange(12.0).reshape(6, 2))})
    taken = take_rows(table, np.array(rows, dtype=np.int64))
    assert taken.equals(table.take(pa.array(rows, type=pa.int64())))
    consecutive = len(rows) > 0 and rows == list(range(rows[0], rows[0] + len(rows)))

    def values(t):
        return t["embedding"].chunk(0).flatten().to_numpy() if t.num_rows else np.empty(0)

    shares = np.shares_memory(values(taken), values(table))
    assert shares == consecutive


def test_floats_are_written_without_a_dictionary_and_read_back_the_same(tmp_path):
    from tac_pipeline.common.atomic import write_parquet_atomically

    table = pa.table(
        {
            "image_id": ["a", "b", "a"],
            "top_nouns": pa.array([["x", "y"], ["x"], []], pa.list_(pa.string())),
            "embedding": embedding_array(np.arange(6.0).reshape(3, 2)),
            "confidence": pa.array([0.5, 0.5, 0.25], pa.float32()),
            "cluster": [1, 1, 2],
        }
    )
    assert dictionary_columns(table.schema) == ["image_id", "top_nouns.list.element", "cluster"]
    write_parquet_atomically(table, tmp_path / "t.parquet")
    assert read_parquet(tmp_path / "t.parquet").equals(table)
    group = pq.read_metadata(tmp_path / "t.parquet").row_group(0)
    encodings = {group.column(i).path_in_schema: group.column(i).encodings for i in range(group.num_columns)}
    assert "RLE_DICTIONARY" not in encodings["embedding.list.element"]
    assert "RLE_DICTIONARY" not in encodings["confidence"]
    assert (
        "RLE_DICTIONARY" in encodings["image_id"] and "RLE_DICTIONARY" in encodings["top_nouns.list.element"]
    )


def test_row_digests_stay_the_blake2b_of_each_rows_float32_bytes():
    # Stored tables and image states keep these digests: a different digest would make every image look
    # changed (a refit after an upgrade), so their definition is pinned.
    import hashlib

    x = np.random.default_rng(0).normal(size=(20, 7))
    expected = [hashlib.blake2b(row.astype(np.float32).tobytes(), digest_size=8).hexdigest() for row in x]
    assert row_digests(x) == expected
    assert row_digests(x.astype(np.float32)[:, ::1]) == expected
    assert row_digests(np.asfortranarray(x.astype(np.float32))) == expected


@pytest.mark.parametrize("seed", range(6))
def test_matching_rows_finds_each_kept_image_with_the_same_vector(seed):
    rng = np.random.default_rng(seed)
    old_ids = [f"img{i}" for i in rng.permutation(40)]
    old_digests = [f"d{rng.integers(3)}" for _ in old_ids]
    previous = pa.table({"image_id": old_ids, "image_digest": old_digests})
    kept = rng.permutation(40)[: int(rng.integers(0, 40))]  # some images stay (others were removed)...
    ids = [old_ids[k] for k in kept] + [f"new{i}" for i in range(int(rng.integers(0, 5)))]  # ...some are new
    digests = [old_digests[k] if rng.random() < 0.8 else "changed" for k in kept] + ["x"] * (
        len(ids) - len(kept)
    )
    here, there, todo = matching_rows(ids, digests, previous)
    known = {key: row for row, key in enumerate(zip(old_ids, old_digests, strict=True))}
    expected = [(i, known[key]) for i, key in enumerate(zip(ids, digests, strict=True)) if key in known]
    assert list(zip(here.tolist(), there.tolist(), strict=True)) == expected
    assert sorted(here.tolist() + todo.tolist()) == list(range(len(ids)))
    assert here.dtype == there.dtype == todo.dtype == np.int64
    none = matching_rows(ids, digests, previous.drop_columns(["image_digest"]))
    assert none[0].size == 0 and none[2].tolist() == list(range(len(ids)))
