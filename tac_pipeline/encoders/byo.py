"""Bring your own embeddings: a drop's ``embeddings.parquet`` (and ``nouns.parquet``) instead of CLIP.

``embeddings.parquet``: ``image_id`` (unique strings), ``embedding`` (list of float, one width),
optional ``label`` and ``split`` (``train``/``test``). ``nouns.parquet``: ``noun``, ``embedding``.
Every problem is reported with the file, the column and the rows concerned.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from tac_pipeline.common.messages import listed
from tac_pipeline.common.tables import column_matrix, embedding_array, is_vector_type, read_parquet

BYO_EMBEDDINGS = "embeddings.parquet"
BYO_NOUNS = "nouns.parquet"
SPLITS = ("train", "test")


class ByoEmbeddingsError(ValueError):
    """A bring-your-own Parquet file is malformed; the message names the file, column and fix."""


def _read(path: Path, required: tuple[str, ...]) -> pa.Table:
    try:
        table = read_parquet(path)
    except (OSError, pa.ArrowException) as exc:
        raise ByoEmbeddingsError(f"{path}: not a readable Parquet file ({exc})") from exc
    missing = [c for c in required if c not in table.column_names]
    if missing:
        raise ByoEmbeddingsError(
            f"{path}: missing column(s) {', '.join(missing)} (found: {', '.join(table.column_names)})"
        )
    return table


def _matrix(table: pa.Table, path: Path, expected_width: int | None = None) -> np.ndarray:
    column = table["embedding"]
    if not is_vector_type(column.type):
        raise ByoEmbeddingsError(f"{path}: column 'embedding' must be a list of floats, not {column.type}")
    values = column.type.value_type
    if not (pa.types.is_floating(values) or pa.types.is_integer(values)):
        nested = (
            " (a list of lists: give each row one flat list of its floats)" if is_vector_type(values) else ""
        )
        raise ByoEmbeddingsError(
            f"{path}: column 'embedding' must hold one list of floats per row, not {column.type}{nested}"
        )
    if column.null_count:
        missing = np.flatnonzero(column.is_null().to_numpy(zero_copy_only=False))
        raise ByoEmbeddingsError(
            f"{path}: column 'embedding' is missing (null) in {len(missing)} row(s) (rows {listed(missing)})"
        )
    empty = np.flatnonzero(pc.list_value_length(column).to_numpy(zero_copy_only=False) == 0)
    if len(empty):
        raise ByoEmbeddingsError(
            f"{path}: {len(empty)} row(s) hold an empty embedding list (rows {listed(empty)}); every row needs "
            "its embedding's values"
        )
    # float32 vectors (CLIP's) are checked and normalised in float32 with float64 sums (ten times faster than
    # widening 60,000 x 512 values); any other type in float64.
    precision = np.float32 if values in (pa.float32(), pa.float16()) else np.float64
    try:
        x = column_matrix(table, "embedding", dtype=precision)
    except ValueError as exc:
        raise ByoEmbeddingsError(f"{path}: {exc}; every embedding must have the same width") from None
    if expected_width is not None and x.shape[1] != expected_width:
        raise ByoEmbeddingsError(
            f"{path}: embeddings are {x.shape[1]} wide but must be {expected_width} wide "
            "(the width of the other modality's embeddings)"
        )
    bad = np.flatnonzero(~np.isfinite(x).all(axis=1))
    if len(bad):
        raise ByoEmbeddingsError(
            f"{path}: {len(bad)} row(s) hold NaN or infinite values (rows {listed(bad)})"
        )
    norms = np.sqrt(np.einsum("ij,ij->i", x, x, dtype=np.float64))
    zero = np.flatnonzero(norms == 0)
    if len(zero):
        raise ByoEmbeddingsError(f"{path}: {len(zero)} row(s) are all zeros (rows {listed(zero)})")
    return (x / norms.astype(precision)[:, None]).astype(np.float32, copy=False)


def read_byo_file(path: str | Path) -> pa.Table:
    """``embeddings.parquet`` as it is on disk (its columns checked, its values not): what
    :func:`read_byo_embeddings` validates, read once by a caller that needs the raw vectors too."""
    return _read(Path(path), ("image_id", "embedding"))


def read_byo_embeddings(path: str | Path, raw: pa.Table | None = None) -> pa.Table:
    """Validate ``embeddings.parquet`` and return it in the ``image_embeddings`` schema (normalised);
    ``raw``: the file already read by :func:`read_byo_file`."""
    path = Path(path)
    table = read_byo_file(path) if raw is None else raw
    if table.num_rows == 0:
        raise ByoEmbeddingsError(f"{path}: no rows")
    ids = table["image_id"].cast(pa.string())
    if ids.null_count:
        raise ByoEmbeddingsError(f"{path}: column 'image_id' has {ids.null_count} empty values")
    counts = pc.value_counts(ids).flatten()
    repeated = pc.filter(counts[0], pc.greater(counts[1], 1))
    if len(repeated):
        dupes = sorted(repeated.to_pylist())
        raise ByoEmbeddingsError(
            f"{path}: column 'image_id' must be unique; {len(dupes)} id(s) repeat, e.g. "
            + ", ".join(repr(d) for d in dupes[:5])
        )
    x = _matrix(table, path)
    n = table.num_rows
    labels = table["label"].cast(pa.string()) if "label" in table.column_names else pa.nulls(n, pa.string())
    # An empty label is no label: the image is clustered and counted, not scored (as a null label).
    labels = pc.if_else(pc.equal(labels, ""), pa.scalar(None, pa.string()), labels)
    splits = table["split"].cast(pa.string()) if "split" in table.column_names else pa.nulls(n, pa.string())
    split_values = set(splits.drop_null().to_pylist())
    if split_values - set(SPLITS):
        raise ByoEmbeddingsError(
            f"{path}: column 'split' may hold only {' / '.join(SPLITS)} (or be empty), found "
            + ", ".join(sorted(map(repr, split_values - set(SPLITS))))
        )
    return pa.table(
        {
            "image_id": ids.combine_chunks(),
            "path": pa.nulls(n, pa.string()),
            "content_hash": pa.nulls(n, pa.string()),
            "label": labels,
            "split": splits,
            "embedding": embedding_array(x),
        }
    )


def read_byo_nouns(path: str | Path, expected_width: int) -> pa.Table:
    """Validate ``nouns.parquet`` and return it in the ``wordnet_noun_embeddings`` schema (normalised)."""
    path = Path(path)
    table = _read(path, ("noun", "embedding"))
    if table.num_rows == 0:
        raise ByoEmbeddingsError(f"{path}: no rows")
    nouns = table["noun"].cast(pa.string())
    blank = np.flatnonzero(pc.fill_null(pc.equal(pc.utf8_trim_whitespace(nouns), ""), True).to_numpy(False))
    if len(blank):
        where = "every row" if len(blank) == table.num_rows else f"{len(blank)} row(s) (rows {listed(blank)})"
        raise ByoEmbeddingsError(
            f"{path}: column 'noun' is empty or null in {where}: each embedding needs its noun, the word the "
            "text space shows and names clusters after"
        )
    x = _matrix(table, path, expected_width)
    n = table.num_rows
    return pa.table(
        {
            "noun": nouns,
            "synset": table["synset"].cast(pa.string())
            if "synset" in table.column_names
            else pa.nulls(n, pa.string()),
            "gloss": table["gloss"].cast(pa.string())
            if "gloss" in table.column_names
            else pa.nulls(n, pa.string()),
            "embedding": embedding_array(x),
        }
    )
