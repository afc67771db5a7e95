"""Shared fixtures: generated drops and a data root whose WordNet vocabulary is parsed once per session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# No test may reach the network: open_clip / huggingface downloads fail fast instead of waiting.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: Distinct, easy-to-separate synthetic classes: (background RGB, stripe RGB).
TOY_CLASSES = {
    "red": ((200, 30, 30), (255, 200, 200)),
    "green": ((30, 160, 40), (200, 255, 200)),
    "blue": ((30, 40, 200), (200, 200, 255)),
}


def toy_image(rng: np.random.Generator, background, stripe, size: int = 32) -> Image.Image:
    pixels = np.empty((size, size, 3), dtype=np.float32)
    pixels[:] = background
    row = rng.integers(0, size - 4)
    pixels[row : row + 4] = stripe
    pixels += rng.normal(0, 12, pixels.shape)
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def write_toy_drop(drop: Path, *, train: int = 12, test: int = 6, seed: int = 0) -> int:
    """``drop/{train,test}/<class>/*.png`` for the three toy classes; returns the image count."""
    rng = np.random.default_rng(seed)
    count = 0
    for split, per_class in (("train", train), ("test", test)):
        for name, (background, stripe) in TOY_CLASSES.items():
            folder = drop / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                toy_image(rng, background, stripe).save(folder / f"{name}_{i:03d}.png")
                count += 1
    return count


@pytest.fixture(scope="session")
def wordnet_cache(tmp_path_factory) -> Path:
    """The parsed WordNet vocabulary (Parquet), built once per session from the system database."""
    from tac_pipeline.encoders import wordnet

    if not any((d / "data.noun").is_file() for d in wordnet.system_wordnet_dirs()):
        if os.environ.get("TAC_REQUIRE_WORDNET"):
            pytest.fail("TAC_REQUIRE_WORDNET is set but no system WordNet database exists")
        pytest.skip("no system WordNet database: apt-get install wordnet-base wordnet-sense-index")
    root = tmp_path_factory.mktemp("wordnet_root")
    from tac_pipeline.defs.resources.data import wordnet_nouns

    wordnet_nouns(root, download=False)
    return root / "cache" / wordnet.CACHE_FILE


@pytest.fixture
def data_dir(tmp_path, wordnet_cache) -> Path:
    """A fresh data root with the WordNet cache in place and an empty drops folder."""
    from tac_pipeline.encoders import wordnet

    root = tmp_path / "data"
    (root / "cache").mkdir(parents=True)
    (root / "drops").mkdir()
    shutil.copyfile(wordnet_cache, root / "cache" / wordnet.CACHE_FILE)
    return root
