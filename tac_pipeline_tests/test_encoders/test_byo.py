"""Bring-your-own Parquet files: every malformed column gets a message naming the file, the column and the rows."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tac_pipeline.encoders.byo import ByoEmbeddingsError, read_byo_embeddings, read_byo_nouns


def write(path, **columns):
    pq.write_table(pa.table(columns), path)
    return path


def ids(n):
    return [f"img{i}" for i in range(n)]


def test_a_nested_list_embedding_is_refused_as_nested(tmp_path):
    path = write(tmp_path / "embeddings.parquet", image_id=ids(3), embedding=[[[1.0, 0.0], [0.0, 1.0]]] * 3)
    with pytest.raises(
        ByoEmbeddingsError,
        match=r"one list of floats per row, not list<element: list<.*a list of lists: give each row one flat",
    ):
        read_byo_embeddings(path)


def test_empty_embedding_lists_are_reported_as_empty_not_as_zeros(tmp_path):
    rows = [[1.0, 0.0], [], [0.0, 1.0], []]
    path = write(tmp_path / "embeddings.parquet", image_id=ids(4), embedding=rows)
    with pytest.raises(ByoEmbeddingsError, match=r"2 row\(s\) hold an empty embedding list \(rows 1, 3\)"):
        read_byo_embeddings(path)
    everywhere = write(
        tmp_path / "all_empty.parquet", image_id=ids(2), embedding=pa.array([[], []], pa.list_(pa.float32()))
    )
    with pytest.raises(ByoEmbeddingsError, match=r"2 row\(s\) hold an empty embedding list"):
        read_byo_embeddings(everywhere)


def test_null_embeddings_name_their_rows(tmp_path):
    path = write(tmp_path / "embeddings.parquet", image_id=ids(3), embedding=[[1.0, 0.0], None, [0.0, 1.0]])
    with pytest.raises(ByoEmbeddingsError, match=r"'embedding' is missing \(null\) in 1 row\(s\) \(rows 1\)"):
        read_byo_embeddings(path)


@pytest.mark.parametrize(
    ("nouns", "where"),
    [([None, None, None], "every row"), (["cat", None, " "], r"2 row\(s\) \(rows 1, 2\)")],
)
def test_nouns_without_their_word_are_refused(tmp_path, nouns, where):
    path = write(
        tmp_path / "nouns.parquet",
        noun=pa.array(nouns, pa.string()),
        embedding=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
    )
    with pytest.raises(ByoEmbeddingsError, match=rf"column 'noun' is empty or null in {where}"):
        read_byo_nouns(path, expected_width=2)


def test_empty_labels_count_as_missing_labels(tmp_path):
    path = write(
        tmp_path / "embeddings.parquet",
        image_id=ids(3),
        embedding=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
        label=["a", "", None],
    )
    assert read_byo_embeddings(path)["label"].to_pylist() == ["a", None, None]


@pytest.mark.parametrize("stored", [pa.float32(), pa.float64(), pa.float16(), pa.int32()])
def test_vectors_of_any_numeric_type_come_out_unit_length_float32_and_bad_rows_are_named(tmp_path, stored):
    import numpy as np

    rng = np.random.default_rng(0)
    x = rng.integers(-50, 50, size=(40, 16)).astype(np.float64)
    path = write(
        tmp_path / "embeddings.parquet", image_id=ids(40), embedding=pa.array(x.tolist(), pa.list_(stored))
    )
    table = read_byo_embeddings(path)
    out = np.stack(table["embedding"].to_numpy(zero_copy_only=False))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x / np.linalg.norm(x, axis=1, keepdims=True), rtol=0, atol=1e-6)
    if pa.types.is_floating(stored):
        x[[3, 7], 2] = [np.nan, np.inf]
        bad = write(
            tmp_path / "bad.parquet", image_id=ids(40), embedding=pa.array(x.tolist(), pa.list_(stored))
        )
        with pytest.raises(ByoEmbeddingsError, match=r"2 row\(s\) hold NaN or infinite values \(rows 3, 7\)"):
            read_byo_embeddings(bad)
