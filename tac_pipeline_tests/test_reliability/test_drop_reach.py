"""What a drop may read, and walks that end: the allowed image roots (``TAC_IMAGE_ROOTS``), each real folder
walked once (a symlink "diamond"), no pseudo file system, progress of a long listing, and a size limit."""

from __future__ import annotations

import os
import time

import pytest
from PIL import Image

from tac_pipeline.config import ConfigError, TacConfig
from tac_pipeline.drops.listing import OutsideImageRootsError, list_drop_images
from tac_pipeline.encoders import discover_images
from tac_pipeline.encoders.images import walk
from tac_pipeline.encoders.images.walk import DropTooLargeError, Walker


def _png(path, shade: int = 0) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (8, 8), (shade, 60, 90)).save(path)


def test_the_allowed_image_roots_are_a_setting_of_absolute_folders(tmp_path):
    config = TacConfig.from_env({"TAC_IMAGE_ROOTS": f"{tmp_path / 'a'}{os.pathsep}{tmp_path / 'b'}"})
    assert config.image_roots == (tmp_path / "a", tmp_path / "b")
    assert TacConfig.from_env({}).image_roots == ()
    with pytest.raises(ConfigError, match="TAC_IMAGE_ROOTS must list absolute folders, not relative/x"):
        TacConfig.from_env({"TAC_IMAGE_ROOTS": "relative/x"})
    assert TacConfig.from_env({"TAC_MAX_DROP_FILES": "5"}).max_drop_files == 5


def test_a_drop_reads_only_inside_the_data_root_and_the_allowed_roots(tmp_path):
    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    _png(elsewhere / "cats" / "c.png")
    _png(data / "drops" / "pets" / "dogs" / "d.png", 100)
    (data / "drops" / "pets" / "dogs" / "leak.png").symlink_to(elsewhere / "cats" / "c.png")
    roots = [data]

    listing = list_drop_images(data / "drops" / "pets", roots=roots)  # a link out of the roots: skipped
    assert [r.image_id for r in listing.records] == ["dogs/d.png"]
    assert dict(listing.skipped)["dogs/leak.png"].startswith("symlink pointing outside the drop")
    allowed = list_drop_images(data / "drops" / "pets", roots=[data, elsewhere])  # the operator allowed it
    assert [r.image_id for r in allowed.records] == ["dogs/d.png", "dogs/leak.png"]

    (data / "drops" / "linked").symlink_to(elsewhere)  # a drop folder that is a link out of the roots
    with pytest.raises(OutsideImageRootsError, match="TAC_IMAGE_ROOTS") as caught:
        list_drop_images(data / "drops" / "linked", roots=roots)
    assert str(elsewhere) in str(caught.value) and "the drop folder" in str(caught.value)
    assert len(list_drop_images(data / "drops" / "linked", roots=[data, elsewhere]).records) == 1

    etc = data / "drops" / "etc"
    etc.mkdir()
    (etc / "dataset.toml").write_text('[images]\nroot = "/etc"\n')
    with pytest.raises(OutsideImageRootsError, match=r"images.root /etc .*TAC_IMAGE_ROOTS"):
        list_drop_images(etc, roots=roots)  # refused before a single file of /etc is listed


def test_a_symlink_diamond_is_walked_once_per_real_folder(tmp_path):
    """20 folders, each holding two links to the next: 2**20 paths, 20 real folders."""
    drop = tmp_path / "drop"
    levels = [drop / "cls" / f"d{i}" for i in range(20)]
    for i, level in enumerate(levels):
        _png(level / f"{i}.png", i)
    for here, below in zip(levels, levels[1:], strict=False):
        (here / "left").symlink_to(below)
        (here / "right").symlink_to(below)
    started = time.perf_counter()
    listing = discover_images(drop)
    assert time.perf_counter() - started < 5.0
    assert len(listing.records) == 20 and len({r.path.resolve() for r in listing.records}) == 20
    reasons = dict(listing.skipped)
    assert all("reached again: counted once" in reason for reason in reasons.values())


def test_a_pseudo_file_system_is_never_entered(tmp_path):
    (tmp_path / "proc").symlink_to("/proc")
    (tmp_path / "sys").symlink_to("/sys")
    walker = Walker(str(tmp_path), frozenset({".png"}), allowed=["/"])
    walker.walk(tmp_path, (), str(tmp_path))
    assert dict(walker.skipped) == {
        "proc": "a pseudo file system (/proc, /sys, /dev): not entered",
        "sys": "a pseudo file system (/proc, /sys, /dev): not entered",
    }


def test_a_long_listing_reports_progress_and_a_huge_drop_is_refused(tmp_path, monkeypatch):
    for i in range(3000):
        (tmp_path / f"f{i}.txt").touch()
    monkeypatch.setattr(walk, "PROGRESS_SECONDS", 0.0)
    heard = []
    discover_images(tmp_path, progress=lambda folders, files: heard.append((folders, files)))
    assert heard and heard[-1][1] >= 2048 and heard[-1][0] >= 1
    with pytest.raises(DropTooLargeError, match=r"passed 2,000 files.*TAC_MAX_DROP_FILES"):
        discover_images(tmp_path, max_files=2000)


def test_the_drops_manifest_never_walks_an_images_root_outside_the_allowed_roots(tmp_path):
    from tac_pipeline.drops.manifest import drop_manifest, watched_drop_manifest

    data, elsewhere = tmp_path / "data", tmp_path / "elsewhere"
    _png(elsewhere / "cats" / "c.png")
    drop = data / "drops" / "outside"
    drop.mkdir(parents=True)
    (drop / "dataset.toml").write_text(f'[images]\nroot = "{elsewhere}"\n')
    names = [name for name, _, _ in drop_manifest(drop, roots=[data]).entries]
    assert names == ["dataset.toml"]  # the sensor and the schedule never stat a file outside the roots
    watched = watched_drop_manifest(drop, tmp_path / "state.json", 0.0, roots=[data])
    assert watched.digest == drop_manifest(drop, roots=[data]).digest
    allowed = [name for name, _, _ in drop_manifest(drop, roots=[data, elsewhere]).entries]
    assert allowed == ["@images/cats/c.png", "dataset.toml"]
