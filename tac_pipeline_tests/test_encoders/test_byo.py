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
