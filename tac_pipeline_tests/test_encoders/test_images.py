"""The image reader: drop layouts, every odd file of issues 4 and 8, CLIP preprocessing, worker processes."""

from __future__ import annotations

import hashlib
import logging
import os
import time
from pathlib import Path

import numpy as np
import open_clip
import pytest
import torch
from PIL import Image

from tac_pipeline.encoders import (
    ClipEncoder,
    ImageDecodeError,
    PreprocessSpec,
    discover_images,
    encode_drop,
    load_image,
    read_images,
)
from tac_pipeline_tests.test_encoders import oddfiles
from tac_pipeline_tests.test_encoders.oddfiles import BAD, GOOD, LONG_NAME, NON_UTF8_ID, noise


@pytest.fixture(scope="module")
def tiny() -> ClipEncoder:
    return ClipEncoder.from_pretrained("tac-tiny", device="cpu")


@pytest.fixture(scope="module")
def odd_drop(tmp_path_factory) -> Path:
    base = tmp_path_factory.mktemp("odd")
    oddfiles.write_odd_drop(base / "drop", base / "outside")
    return base / "drop"


class _ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


# ------------------------------------------------------------------------------------------------------------
# discovery
# ------------------------------------------------------------------------------------------------------------


def test_flat_drop_has_neither_labels_nor_splits(tmp_path):
    for name in ("b.png", "a.JPG", "c.webp"):
        noise((8, 8)).save(tmp_path / name, format="JPEG" if name.endswith("JPG") else None)
    (tmp_path / "readme.md").write_text("ignored")
    noise((8, 8)).save(tmp_path / ".hidden.png")
    listing = discover_images(tmp_path)
    assert listing.layout == "flat"
    assert [r.image_id for r in listing.records] == ["a.JPG", "b.png", "c.webp"]
    assert not listing.has_labels and not listing.has_splits and listing.label_names == []
    assert all(r.label is None and r.split is None for r in listing.records)
    assert listing.skipped == []


def test_class_folders_give_labels(tmp_path):
    for cls in ("dog", "cat"):
        (tmp_path / cls / "nested").mkdir(parents=True)
        noise((8, 8)).save(tmp_path / cls / "1.png")
        noise((8, 8)).save(tmp_path / cls / "nested" / "2.png")
    (tmp_path / ".git").mkdir()
    noise((8, 8)).save(tmp_path / ".git" / "x.png")
    listing = discover_images(tmp_path)
    assert listing.layout == "classes" and listing.has_labels and not listing.has_splits
    assert listing.label_names == ["cat", "dog"]
    assert [(r.image_id, r.label, r.split) for r in listing.records] == [
        ("cat/1.png", "cat", None),
        ("cat/nested/2.png", "cat", None),
        ("dog/1.png", "dog", None),
        ("dog/nested/2.png", "dog", None),
    ]
    assert listing.records[0].path == tmp_path / "cat" / "1.png"


def test_train_test_folders_give_splits_and_labels(tmp_path):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            noise((8, 8)).save(tmp_path / split / cls / "x.png")
    (tmp_path / "extra").mkdir()
    noise((8, 8)).save(tmp_path / "extra" / "y.png")
    listing = discover_images(tmp_path)
    assert listing.layout == "splits" and listing.has_splits and listing.has_labels
    assert listing.split_names == ["test", "train"] and listing.label_names == ["a", "b"]
    assert [(r.image_id, r.split, r.label) for r in listing.records] == [
        ("test/a/x.png", "test", "a"),
        ("test/b/x.png", "test", "b"),
        ("train/a/x.png", "train", "a"),
        ("train/b/x.png", "train", "b"),
    ]
    assert listing.skipped == [("extra/y.png", "outside train/ and test/ in a drop that uses splits")]


def test_symlinks_inside_are_followed_outside_and_loops_are_not(tmp_path):
    drop, outside = tmp_path / "drop", tmp_path / "outside"
    (drop / "cls").mkdir(parents=True)
    outside.mkdir()
    noise((8, 8)).save(drop / "cls" / "real.png")
    noise((8, 8)).save(outside / "secret.png")
    os.symlink(drop / "cls" / "real.png", drop / "cls" / "alias.png")
    os.symlink(outside / "secret.png", drop / "cls" / "escape.png")
    os.symlink(outside, drop / "outdir")
    os.symlink(drop, drop / "cls" / "loop")
    os.symlink(drop / "missing.png", drop / "cls" / "broken.png")
    listing = discover_images(drop)
    assert [r.image_id for r in listing.records] == ["cls/real.png"]
    reasons = dict(listing.skipped)
    assert reasons["cls/alias.png"] == "the same file as cls/real.png, reached again: counted once"
    assert "outside the drop" in reasons["cls/escape.png"]
    assert "outside the drop" in reasons["outdir"]
    assert "broken" in reasons["cls/broken.png"]
    assert "loop" in reasons["cls/loop"]


def _images(folder: Path, n: int, seed: int = 0) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        noise((8, 8), seed=seed + i).save(folder / f"{i}.png")


def test_a_class_named_train_beside_other_classes_is_a_class(tmp_path):
    for c, cls in enumerate(("dog", "cat", "train")):  # CIFAR-100 has a class named "train"
        _images(tmp_path / cls, 10, seed=10 * c)
    listing = discover_images(tmp_path)
    assert listing.layout == "classes" and listing.has_labels and not listing.has_splits
    assert len(listing) == 30 and listing.label_names == ["cat", "dog", "train"]
    assert listing.skipped == []
    (note,) = listing.notes
    assert "'train' is a class" in note and "put every class folder inside them" in note


def test_split_folders_with_class_folders_leave_other_folders_out_and_say_so(tmp_path):
    for split in ("train", "test"):
        _images(tmp_path / split / "a", 2)
    _images(tmp_path / "extra", 3)
    listing = discover_images(tmp_path)
    assert listing.layout == "splits" and len(listing) == 4
    assert [name for name, _ in listing.skipped] == ["extra/0.png", "extra/1.png", "extra/2.png"]
    (note,) = listing.notes
    assert "extra/" in note and "left out" in note and "rename that folder" in note


def test_split_folders_holding_images_directly_are_unlabelled_splits_with_a_note(tmp_path):
    for split in ("train", "test"):
        _images(tmp_path / split, 2)
    listing = discover_images(tmp_path)
    assert listing.layout == "splits" and listing.split_names == ["test", "train"]
    assert not listing.has_labels and all(r.label is None for r in listing.records)
    (note,) = listing.notes
    assert "test/, train/" in note and "no label" in note


def test_a_file_reached_twice_through_an_in_drop_symlink_is_counted_once(tmp_path):
    _images(tmp_path / "dog", 2)
    _images(tmp_path / "cat", 1, seed=5)
    os.symlink("../dog", tmp_path / "cat" / "alias")  # every dog image again, under "cat"
    os.symlink("../dog/0.png", tmp_path / "cat" / "copy.png")
    _images(tmp_path / ".stash", 1, seed=7)  # hidden, so reached only through its link
    os.symlink("../.stash", tmp_path / "cat" / "stash")
    listing = discover_images(tmp_path)
    assert [(r.image_id, r.label) for r in listing.records] == [
        ("cat/0.png", "cat"),
        ("cat/stash/0.png", "cat"),
        ("dog/0.png", "dog"),
        ("dog/1.png", "dog"),
    ]
    assert listing.skipped == [  # a folder reached again is reported once, not walked again
        ("cat/alias", "the same folder as dog, reached again: counted once"),
        ("cat/copy.png", "the same file as dog/0.png, reached again: counted once"),
    ]


def test_missing_drop_folder_is_an_error(tmp_path):
    with pytest.raises(NotADirectoryError):
        discover_images(tmp_path / "nope")


# ------------------------------------------------------------------------------------------------------------
# decoding single files
# ------------------------------------------------------------------------------------------------------------


def test_odd_files_decode_to_rgb(odd_drop):
    for name in GOOD:
        img = load_image(odd_drop / name)
        assert img.mode == "RGB", name
    # 16-bit grey is scaled, not clipped: a 0…65535 ramp becomes 0…255
    grey = np.asarray(load_image(odd_drop / "grey16.png"))[0, :, 0].astype(int)
    assert grey[0] == 0 and grey[-1] == 255 and 100 < grey[len(grey) // 2] < 160
    assert np.all(np.diff(grey) >= 0)
    # CMYK (0, 255, 255, 0) is red
    assert np.asarray(load_image(odd_drop / "cmyk.jpg"))[5, 5].tolist() == [255, 0, 0]
    # transparency is composited over white; opaque palette entries keep their colour
    pal = np.asarray(load_image(odd_drop / "palette_transparent.png"))
    assert pal[0, 0].tolist() == [255, 0, 0] and pal[0, -1].tolist() == [255, 255, 255]
    # animated GIF: the first frame (red), not the second (blue)
    assert np.asarray(load_image(odd_drop / "animated.gif"))[0, 0].tolist() == [255, 0, 0]
    # EXIF orientation 6 turns the stored 20x10 into 10x20
    assert Image.open(odd_drop / "exif_rotated.jpg").size == (20, 10)
    assert load_image(odd_drop / "exif_rotated.jpg").size == (10, 20)
    assert load_image(odd_drop / "one_pixel.png").size == (1, 1)


def test_other_high_bit_depth_modes():
    img_i = Image.fromarray(np.array([[0, 1000, 65535]], dtype=np.int32), mode="I")
    assert np.asarray(oddfiles_to_rgb(img_i))[0, :, 0].tolist() == [0, 4, 255]
    img_f = Image.fromarray(np.array([[0.0, 0.5, 1.0]], dtype=np.float32), mode="F")
    assert np.asarray(oddfiles_to_rgb(img_f))[0, :, 0].tolist() == [0, 128, 255]
    img_8 = Image.fromarray(np.array([[0, 7, 200]], dtype=np.int32), mode="I")
    assert np.asarray(oddfiles_to_rgb(img_8))[0, :, 0].tolist() == [0, 7, 200]


def oddfiles_to_rgb(img: Image.Image) -> Image.Image:
    from tac_pipeline.encoders.images import to_rgb

    return to_rgb(img)


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_files_raise_with_a_reason(odd_drop, name):
    with pytest.raises(ImageDecodeError) as info:
        load_image(odd_drop / name)
    assert BAD[name] in info.value.reason


def test_decompression_bomb_warning_range_is_an_error_too(tmp_path):
    noise((40, 40)).save(tmp_path / "a.png")  # 1,600 pixels: above a 1,000 limit, below 2x
    with pytest.raises(ImageDecodeError, match="decompression bomb"):
        load_image(tmp_path / "a.png", max_pixels=1000)
    assert load_image(tmp_path / "a.png", max_pixels=2000).size == (40, 40)


def test_unreadable_path_is_reported(tmp_path):
    with pytest.raises(ImageDecodeError, match="unreadable"):
        load_image(tmp_path / "missing.png")


# ------------------------------------------------------------------------------------------------------------
# preprocessing
# ------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "size", [(500, 375), (375, 500), (32, 32), (1, 1), (7, 3), (225, 224), (640, 161), (2, 400), (3000, 20)]
)
def test_worker_preprocessing_is_bit_identical_to_clip(size):
    transform = open_clip.image_transform(224, is_train=False)  # ViT-B-32's eval transform
    spec = PreprocessSpec.from_transform(transform)
    assert spec == PreprocessSpec(224, open_clip.OPENAI_DATASET_MEAN, open_clip.OPENAI_DATASET_STD, "bicubic")
    img = noise(size, seed=sum(size))
    expected = transform(img)
    got = spec.normalize(torch.from_numpy(spec.to_uint8_chw(img))[None])[0]
    assert got.dtype == torch.float32 and got.shape == (3, 224, 224)
    assert torch.equal(got, expected)


def test_extreme_aspect_ratio_resamples_only_the_crop():
    transform = open_clip.image_transform(224, is_train=False)
    spec = PreprocessSpec.from_transform(transform)
    img = noise((1, 400), seed=1)  # the full resize would be 224 x 89,600 (20 M pixels)
    expected = transform(img)
    got = spec.normalize(torch.from_numpy(spec.to_uint8_chw(img))[None])[0]
    levels = ((got - expected).abs() * torch.tensor(spec.std).view(3, 1, 1) * 255).round()
    assert levels.max() <= 12 and levels.mean() < 1.0  # PIL rounds box offsets differently: close, not equal


def test_unrecognised_transforms_are_not_mistaken_for_clip():
    squash = open_clip.image_transform(224, is_train=False, resize_mode="squash")
    assert PreprocessSpec.from_transform(squash) is None
    assert PreprocessSpec.from_transform(lambda img: img) is None


# ------------------------------------------------------------------------------------------------------------
# the parallel reader and encode_drop
# ------------------------------------------------------------------------------------------------------------


def test_reader_in_workers_matches_in_process_and_reports_every_bad_file(odd_drop, tiny):
    listing = discover_images(odd_drop)
    handler = _ListHandler()
    logger = logging.getLogger("test_reader")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        parallel = read_images(listing, tiny.preprocess, num_workers=2, batch_size=4, logger=logger)
        batches = list(parallel)
    finally:
        logger.removeHandler(handler)
    serial = read_images(listing, tiny.preprocess, num_workers=0)
    serial_batches = list(serial)

    idx = np.concatenate([b.indices for b in batches])
    assert np.all(np.diff(idx) > 0)  # input order
    assert all(len(b.indices) <= 4 for b in batches)
    pixels = torch.cat([b.pixels for b in batches])
    assert pixels.dtype == torch.float32 and pixels.shape[1:] == (3, 64, 64)
    assert torch.equal(pixels, torch.cat([b.pixels for b in serial_batches]))
    ids = [listing.records[i].image_id for i in idx]
    assert sorted(ids) == sorted([*GOOD, NON_UTF8_ID, LONG_NAME])
    assert {name for name, _ in parallel.skipped} == set(BAD)
    for name, reason in parallel.skipped:
        assert BAD[name] in reason
    assert parallel.skipped == serial.skipped
    # content hash: sha256 of the file's bytes
    hashes = [h for b in batches for h in b.content_hashes]
    for i, h in zip(idx, hashes, strict=True):
        assert h == hashlib.sha256(listing.records[i].path.read_bytes()).hexdigest()
    # each image equals CLIP's own transform of the decoded file
    for i, row in zip(idx, pixels, strict=True):
        assert torch.equal(row, tiny.preprocess(load_image(listing.records[i].path)))
    assert parallel.n_ok == len(GOOD) + 2 and parallel.n_total == len(listing.records)
    assert any("images/s" in m for m in handler.messages)


def test_encode_drop_embeds_good_files_and_reports_bad_ones(odd_drop, tiny):
    listing = discover_images(odd_drop)
    out = encode_drop(tiny, listing, num_workers=2)
    assert out.embeddings.dtype == np.float32 and out.embeddings.shape == (len(GOOD) + 2, tiny.embedding_dim)
    np.testing.assert_allclose(np.linalg.norm(out.embeddings, axis=1), 1.0, atol=1e-5)
    assert sorted(out.image_ids) == sorted([*GOOD, NON_UTF8_ID, LONG_NAME])
    reasons = dict(out.skipped)
    assert set(reasons) == set(BAD) | {"escape.png"}
    assert "outside the drop" in reasons["escape.png"]
    for name, words in BAD.items():
        assert words in reasons[name]
    assert len(out.content_hashes) == len(out.image_ids) and out.labels == [None] * len(out.image_ids)
    # the same numbers as encoding the decoded images directly
    direct = tiny.encode_images([load_image(listing.records[i].path) for i in out.indices])
    np.testing.assert_allclose(out.embeddings, direct, atol=1e-5)
    assert out.images_per_second > 0


def test_encode_drop_carries_labels_and_splits(tmp_path, tiny):
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (tmp_path / split / cls).mkdir(parents=True)
            noise((16, 16), seed=len(split) + ord(cls)).save(tmp_path / split / cls / "x.png")
    out = encode_drop(tiny, discover_images(tmp_path), num_workers=0)
    assert out.image_ids == ["test/a/x.png", "test/b/x.png", "train/a/x.png", "train/b/x.png"]
    assert out.labels == ["a", "b", "a", "b"] and out.splits == ["test", "test", "train", "train"]


def test_a_worker_crash_skips_only_the_file_that_caused_it(tmp_path):
    paths = []
    for i, width in enumerate([10, 11, 13, 12, 14]):
        paths.append(tmp_path / f"{i}.png")
        noise((width, 9), seed=i).save(paths[-1])
    reader = read_images(paths, oddfiles.CrashOnWidth(13), num_workers=2, batch_size=2)
    batches = list(reader)
    assert np.concatenate([b.indices for b in batches]).tolist() == [0, 1, 3, 4]
    assert len(reader.skipped) == 1 and reader.skipped[0][0] == str(paths[2])
    assert "process died" in reader.skipped[0][1]


def test_empty_input_gives_no_batches(tiny):
    reader = read_images([], tiny.preprocess)
    assert list(reader) == [] and reader.skipped == []
    out = encode_drop(tiny, [])
    assert out.embeddings.shape == (0, tiny.embedding_dim) and out.image_ids == []


def _parked_blocks() -> set[str]:
    try:
        return {n for n in os.listdir("/dev/shm") if n.startswith("psm_")}
    except FileNotFoundError:
        return set()


@pytest.mark.skipif(not os.path.isdir("/dev/shm"), reason="shared-memory transport is Linux-only")
def test_shared_memory_transport_leaves_nothing_behind(tmp_path, tiny):
    paths = []
    for i in range(40):
        paths.append(tmp_path / f"{i:02d}.png")
        noise((20, 20), seed=i).save(paths[-1])
    before = _parked_blocks()
    reader = read_images(paths, tiny.preprocess, num_workers=2, batch_size=4)
    assert reader._use_shm
    full = torch.cat([b.pixels for b in reader])
    serial = torch.cat([b.pixels for b in read_images(paths, tiny.preprocess, num_workers=0)])
    assert torch.equal(full, serial)
    # stop after the first batch: chunks still in flight must be unlinked when they arrive
    early = read_images(paths, tiny.preprocess, num_workers=2, batch_size=4)
    for _batch in early:
        break
    del early
    import gc

    gc.collect()
    deadline = time.monotonic() + 10
    while _parked_blocks() - before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not (_parked_blocks() - before)
