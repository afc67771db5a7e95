"""Planning which files to re-encode: reuse by content hash, moved files keep their embedding."""

from __future__ import annotations

import hashlib

import pyarrow as pa

from tac_pipeline.encoders.incremental import content_hashes, file_sha256, plan_reuse


def test_file_hash_matches_sha256_of_the_bytes(tmp_path):
    path = tmp_path / "a.png"
    path.write_bytes(b"pixels")
    assert file_sha256(path) == hashlib.sha256(b"pixels").hexdigest()
    assert file_sha256(tmp_path / "missing.png") is None
    many = [tmp_path / f"{i}.bin" for i in range(100)]
    for i, p in enumerate(many):
        p.write_bytes(bytes([i]))
    assert content_hashes(many) == [hashlib.sha256(bytes([i])).hexdigest() for i in range(100)]


def test_plan_reuses_unchanged_content_and_counts_removed():
    previous = pa.table({"image_id": ["x", "y", "z"], "content_hash": ["h1", "h2", "h3"]})
    # "h2" moved to a new name (position 0), "h1" is unchanged, "h9" is new, "h3" was removed.
    plan = plan_reuse(["h2", "h1", "h9", None], previous)
    assert plan.reuse == [(0, 1), (1, 0)]
    assert plan.encode == [2, 3]  # unreadable files (no hash) are tried by the reader, which reports them
    assert plan.removed == 1


def test_without_a_previous_table_everything_is_encoded():
    assert plan_reuse(["h1", "h2"], None).encode == [0, 1]
