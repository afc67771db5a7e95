"""Atomic writes: a failed or abandoned write never leaves half a file or half a folder behind."""

from __future__ import annotations

import pytest

from tac_pipeline.common.atomic import publish_folder, staging_folder, write_bytes_atomically


def test_a_failed_folder_build_leaves_the_target_and_no_staging(tmp_path):
    target = tmp_path / "corpus"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(RuntimeError, match="copy failed"), staging_folder(target) as staging:
        (staging / "half.txt").write_text("half")
        raise RuntimeError("copy failed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    assert [p.name for p in target.iterdir()] == ["old.txt"]


def test_an_abandoned_folder_build_is_removed_and_a_published_one_replaces_the_target(tmp_path):
    target = tmp_path / "corpus"
    with staging_folder(target) as staging:
        (staging / "part.txt").write_text("part")
    assert list(tmp_path.iterdir()) == []  # left without publishing: nothing stays

    write_bytes_atomically(b"old", target / "old.txt")
    with staging_folder(target) as staging:
        (staging / "new.txt").write_text("new")
        publish_folder(staging, target)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["corpus"]
    assert [p.name for p in target.iterdir()] == ["new.txt"]
