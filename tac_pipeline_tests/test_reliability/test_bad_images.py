"""Odd image files through the ``image_embeddings`` asset: each good one embedded right, each bad one skipped
with its reason, the run never stopped by a file.

One drop holds every case (the generators of ``test_encoders/oddfiles.py``); it is materialized once and each
test checks its own file in the stored table and in the skip report the asset writes to the UI.
"""

from __future__ import annotations

import hashlib
import os
import re
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from dagster import instance_for_test
from PIL import Image

from tac_pipeline.common.tables import column_matrix
from tac_pipeline.encoders import load_image
from tac_pipeline_tests.test_encoders import oddfiles
from tac_pipeline_tests.test_encoders.oddfiles import BAD, GOOD, LONG_NAME, NON_UTF8_ID
from tac_pipeline_tests.test_reliability.helpers import new_data_root, run_assets, stored

KEY = "odd"


class Odd:
    def __init__(self, root, outside, table, skipped):
        self.root = root
        self.drop = root / "drops" / KEY
        self.outside = outside
        self.table = table
        self.ids = table["image_id"].to_pylist()
        self.embeddings = column_matrix(table, "embedding")
        self.skipped = skipped

    def embedding(self, image_id: str) -> np.ndarray:
        return self.embeddings[self.ids.index(image_id)]


def _skip_report(markdown: str) -> dict[str, str]:
    rows = (re.fullmatch(r"\| `(.*)` \| (.*) \|", line) for line in markdown.splitlines()[2:])
    return {m.group(1): m.group(2) for m in rows if m}


@pytest.fixture(scope="module")
def odd(tmp_path_factory) -> Odd:
    base = tmp_path_factory.mktemp("odd")
    root = new_data_root(base, vocabulary=False)
    oddfiles.write_odd_drop(root / "drops" / KEY, base / "outside")
    with instance_for_test() as instance:
        result = run_assets(root, instance, KEY, ["image_embeddings"])
        assert result.success, result.all_events
        metadata = result.asset_materializations_for_node("image_embeddings")[0].metadata
    table = pq.read_table(stored(root, "image_embeddings", KEY))
    return Odd(root, base / "outside", table, _skip_report(metadata["skipped_files"].value))


def _close(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.allclose(a, b, atol=1e-5))


def test_every_good_file_is_embedded_once_and_nothing_else(odd):
    assert sorted(odd.ids) == sorted([*GOOD, NON_UTF8_ID, LONG_NAME])
    assert np.isfinite(odd.embeddings).all()
    np.testing.assert_allclose(np.linalg.norm(odd.embeddings, axis=1), 1.0, atol=1e-5)
    hashes = dict(zip(odd.ids, odd.table["content_hash"].to_pylist(), strict=True))
    assert hashes["rgb.jpg"] == hashlib.sha256((odd.drop / "rgb.jpg").read_bytes()).hexdigest()


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_skipped_with_its_reason(odd, name):
    """Truncated JPEG, zero-byte file, text named .png, 20,000×20,000 PNG header: skipped, listed, run goes on."""
    assert name not in odd.ids
    assert BAD[name] in odd.skipped[name]


def test_one_pixel_image_is_embedded(odd, tiny):
    assert _close(
        odd.embedding("one_pixel.png"), tiny.encode_images([load_image(odd.drop / "one_pixel.png")])[0]
    )


def test_16_bit_png_is_scaled_not_clipped_to_white(odd, tiny):
    got = odd.embedding("grey16.png")
    assert _close(got, tiny.encode_images([load_image(odd.drop / "grey16.png")])[0])
    white = tiny.encode_images([Image.new("RGB", (40, 24), (255, 255, 255))])[0]
    assert not _close(got, white)


def test_cmyk_jpeg_is_converted_to_rgb(odd, tiny):
    red, cyan = tiny.encode_images([Image.new("RGB", (24, 24), c) for c in ((255, 0, 0), (0, 255, 255))])
    got = odd.embedding("cmyk.jpg")
    assert float(got @ red) > 0.999 and float(got @ red) > float(got @ cyan)


def test_animated_gif_uses_the_first_frame(odd, tiny):
    red, blue = tiny.encode_images([Image.new("RGB", (16, 16), c) for c in ((255, 0, 0), (0, 0, 255))])
    got = odd.embedding("animated.gif")
    assert _close(got, red) and not _close(got, blue)


def test_exif_rotation_is_applied(odd, tiny):
    path = odd.drop / "exif_rotated.jpg"
    stored_pixels = Image.open(path).convert("RGB")  # 20×10 as stored, orientation tag ignored
    rotated, unrotated = tiny.encode_images([load_image(path), stored_pixels])
    assert load_image(path).size == (10, 20)
    assert _close(odd.embedding("exif_rotated.jpg"), rotated) and not _close(rotated, unrotated)


def test_non_utf8_file_name_is_stored_escaped_and_readable(odd, tiny):
    row = odd.ids.index(NON_UTF8_ID)
    assert odd.table["path"][row].as_py() == NON_UTF8_ID  # valid UTF-8 in Parquet, bytes shown as \xNN
    frame = pq.read_table(stored(odd.root, "image_embeddings", KEY)).to_pandas()  # pandas reads it too
    assert NON_UTF8_ID in set(frame["image_id"])
    raw = os.path.join(os.fsencode(odd.drop), oddfiles.NON_UTF8_NAME)
    assert _close(odd.embedding(NON_UTF8_ID), tiny.encode_images([load_image(raw)])[0])


def test_very_long_file_name_is_embedded(odd):
    assert len(LONG_NAME) > 240 and LONG_NAME in odd.ids
    assert odd.table["path"][odd.ids.index(LONG_NAME)].as_py() == LONG_NAME


def test_symlink_pointing_outside_the_drop_is_not_followed(odd, tiny):
    assert "escape.png" not in odd.ids
    assert "outside the drop" in odd.skipped["escape.png"]
    secret = tiny.encode_images([load_image(odd.outside / "secret.png")])[0]
    assert not any(_close(row, secret) for row in odd.embeddings)


def test_a_huge_file_is_refused_before_it_is_read(tmp_path):
    """A 3 GiB sparse file named like an image costs neither its size in memory nor the time to read it."""
    import resource
    import time

    from tac_pipeline.encoders import ImageDecodeError
    from tac_pipeline.encoders.images.decoding import MAX_FILE_BYTES, read_bytes

    huge = tmp_path / "huge.jpg"
    with open(huge, "wb") as handle:
        handle.truncate(3 * 2**30)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match=r"too large: 3,072.0 MiB, over the 256 MiB limit"):
        load_image(huge)
    assert time.perf_counter() - started < 1.0
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 100_000  # KiB: nothing was read
    assert MAX_FILE_BYTES == 256 * 2**20
    small = tmp_path / "small.png"
    Image.new("RGB", (8, 8)).save(small)
    with pytest.raises(ImageDecodeError, match="over the 0 MiB limit"):
        read_bytes(small, max_bytes=10)
    assert read_bytes(small, max_bytes=None) == small.read_bytes()


def test_the_size_limit_is_a_setting_and_skips_the_file_in_a_drop(tmp_path):
    from tac_pipeline.config import TacConfig
    from tac_pipeline.definitions import build_definitions
    from tac_pipeline.encoders import discover_images, read_images
    from tac_pipeline.encoders.images.preprocess import PreprocessSpec

    assert TacConfig.from_env({"TAC_MAX_IMAGE_MB": "3"}).max_image_mb == 3
    defs = build_definitions(TacConfig.from_env({"TAC_DATA_DIR": str(tmp_path), "TAC_MAX_IMAGE_MB": "3"}))
    assert defs.resources["tac_data"].max_image_bytes == 3 * 2**20
    drop = tmp_path / "drop"
    drop.mkdir()
    Image.new("RGB", (16, 16), (200, 10, 10)).save(drop / "ok.png")
    with open(drop / "big.png", "wb") as handle:
        handle.truncate(4 * 2**20)
    spec = PreprocessSpec(size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    images = read_images(discover_images(drop), spec, num_workers=0, max_file_bytes=3 * 2**20)
    pixels = [batch for batch in images]
    assert sum(len(batch.indices) for batch in pixels) == 1
    [(name, reason)] = images.skipped
    assert name == "big.png" and reason.startswith("too large: 4.0 MiB, over the 3 MiB limit")


def test_avif_is_embedded_and_heic_without_its_decoder_is_skipped_with_the_remedy(tmp_path):
    import io

    from tac_pipeline.encoders import discover_images, read_images
    from tac_pipeline.encoders.images.preprocess import PreprocessSpec

    drop = tmp_path / "drop"
    (drop / "cats").mkdir(parents=True)
    for i in range(3):
        Image.new("RGB", (24, 24), (20 * i, 100, 30)).save(drop / "cats" / f"c{i}.AVIF", format="AVIF")
    heic = b"\0\0\0\x18ftypheic\0\0\0\0mif1heic" + bytes(200)  # an iPhone photo's header
    (drop / "cats" / "phone.heic").write_bytes(heic)
    listing = discover_images(drop)
    assert sorted(r.path.name for r in listing.records) == ["c0.AVIF", "c1.AVIF", "c2.AVIF", "phone.heic"]
    spec = PreprocessSpec(size=8, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5))
    images = read_images(listing, spec, num_workers=0)
    assert sum(len(batch.indices) for batch in images) == 3  # every AVIF decoded
    try:
        import pillow_heif  # noqa: F401
    except ImportError:
        [(name, reason)] = images.skipped
        assert name == "cats/phone.heic" and "pip install pillow-heif" in reason
    assert Image.open(io.BytesIO((drop / "cats" / "c0.AVIF").read_bytes())).format == "AVIF"


def test_an_undecodable_name_and_its_escape_written_literally_are_two_paths(tmp_path):
    from tac_pipeline.defs.assets.embeddings import image_table
    from tac_pipeline.encoders.images.discovery import path_text, text_path

    byte_name = os.fsdecode(b"caf\xe9.png")  # a name holding the byte 0xE9 (not UTF-8)
    literal = "caf\\xe9.png"  # a name holding a backslash, an x, an e and a 9
    for name in (byte_name, literal, "plain.png", "back\\slash.png"):
        Image.new("RGB", (8, 8)).save(tmp_path / name, format="PNG")
    texts = [path_text(name) for name in (byte_name, literal)]
    assert texts == ["caf\\xe9.png", "caf\\\\xe9.png"] and len(set(texts)) == 2
    for name in (byte_name, literal, "plain.png", "back\\slash.png"):
        assert text_path(path_text(name)) == Path(name) and (tmp_path / text_path(path_text(name))).is_file()
    table = image_table(["a", "b"], [byte_name, literal], ["h1", "h2"], [None, None], [None, None], np.eye(2))
    assert len(set(table["path"].to_pylist())) == 2
