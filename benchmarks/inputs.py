"""Generated inputs of the benchmarks: image files, CIFAR-like drops, CLIP-like vectors, nouns.

Generating them is never timed. Heavy imports (numpy, Pillow, pandas) live inside the functions.
"""

from __future__ import annotations

import io
import os
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

#: Distinct words of the default noun vocabulary (the 146,347 lemmas of WordNet 3.0's noun synsets).
WORDNET_NOUNS = 119_034


# -- image files -------------------------------------------------------------------------------------------


def _smooth_images(count: int, size: tuple[int, int], seed: int):
    """Photo-like test images (smooth colour fields plus grain), compressing like real ones."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    width, height = size
    for _ in range(count):
        coarse = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
        img = Image.fromarray(coarse).resize((width, height), Image.Resampling.BICUBIC)
        arr = np.asarray(img, dtype=np.int16) + rng.normal(0, 6, size=(height, width, 3)).astype(np.int16)
        yield Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def write_images(folder: Path, count: int, size: tuple[int, int], fmt: str, distinct: int = 64) -> list[Path]:
    """``count`` files in ``folder`` (``distinct`` different images, repeated under different names)."""
    folder.mkdir(parents=True, exist_ok=True)
    blobs = []
    for img in _smooth_images(min(distinct, count), size, seed=count):
        buf = io.BytesIO()
        img.save(buf, fmt, **({"quality": 90} if fmt == "JPEG" else {}))
        blobs.append(buf.getvalue())
    ext = ".jpg" if fmt == "JPEG" else ".png"
    paths = []
    for i in range(count):
        path = folder / f"{i:07d}{ext}"
        path.write_bytes(blobs[i % len(blobs)])
        paths.append(path)
    return paths


def write_cifar_drop(folder: Path, n_train: int, n_test: int, n_classes: int, seed: int = 0) -> None:
    """Distinct photo-like 32x32 PNGs: a smooth colour field per class, varied per image, plus grain.

    Chunks of 1,024 images are written by a thread pool (numpy and Pillow's PNG encoder release the GIL).
    """
    import numpy as np

    bases = np.random.default_rng(seed).uniform(40, 215, size=(n_classes, 4, 4, 3))
    chunks = []
    for split_no, (split, count) in enumerate((("train", n_train), ("test", n_test))):
        for c in range(n_classes):
            (folder / split / f"class{c}").mkdir(parents=True, exist_ok=True)
        chunks += [
            (folder / split, start, min(count, start + 1024), (seed, split_no, start))
            for start in range(0, count, 1024)
        ]
    with ThreadPoolExecutor(max_workers=os.cpu_count()) as pool:
        list(pool.map(lambda chunk: _write_png_chunk(bases, *chunk), chunks))


def _write_png_chunk(bases, folder: Path, start: int, stop: int, seed: tuple[int, ...]) -> None:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    labels = np.arange(start, stop) % len(bases)
    coarse = bases[labels] + rng.normal(0, 25, size=(len(labels), 4, 4, 3))
    fields = coarse.repeat(8, axis=1).repeat(8, axis=2)  # 4x4 -> 32x32 blocks
    fields = (fields + np.roll(fields, 4, axis=1) + np.roll(fields, 4, axis=2)) / 3  # soften the edges
    pixels = np.clip(fields + rng.normal(0, 6, size=fields.shape), 0, 255).astype(np.uint8)
    for i, label in enumerate(labels):
        buf = io.BytesIO()
        Image.fromarray(pixels[i]).save(buf, "PNG")
        (folder / f"class{label}" / f"{start + i:06d}.png").write_bytes(buf.getvalue())


def link_tree(source: Path, target: Path) -> None:
    """The same files under another folder, as hard links (copies where links fail)."""
    for path in source.rglob("*"):
        dest = target / path.relative_to(source)
        if path.is_dir():
            dest.mkdir(parents=True, exist_ok=True)
            continue
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, dest)
        except OSError:
            shutil.copy2(path, dest)


# -- vectors -----------------------------------------------------------------------------------------------


def synthetic_embeddings(n: int, d: int, k: int, seed: int = 0):
    """Unit vectors in k classes of 30 sub-clusters each (CLIP-like structure), and noisier counterparts."""
    import numpy as np

    rng = np.random.default_rng(seed)
    classes = rng.standard_normal((k, d)).astype(np.float32)
    subs = classes.repeat(30, axis=0) + 0.7 * rng.standard_normal((k * 30, d)).astype(np.float32)
    sub = rng.integers(0, k * 30, n)
    y = sub // 30
    v = subs[sub] + 0.9 * rng.standard_normal((n, d)).astype(np.float32)
    t = classes[y] + 0.6 * rng.standard_normal((n, d)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    t /= np.linalg.norm(t, axis=1, keepdims=True)
    return v, t, y


# -- nouns -------------------------------------------------------------------------------------------------


def synthetic_nouns(count: int, seed: int = 0) -> list[str]:
    """Nouns shaped like WordNet's first lemmas: 1–3 words (70/25/5 %), words of 3–11 letters."""
    import numpy as np

    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    out = []
    for _ in range(count):
        n_words = rng.choice([1, 2, 3], p=[0.7, 0.25, 0.05])
        out.append(" ".join("".join(rng.choice(letters, rng.integers(3, 12))) for _ in range(n_words)))
    return out


def wordnet_vocabulary(data_dir: str | os.PathLike[str] | None = None):
    """The default WordNet noun vocabulary (DataFrame ``noun``, ``synset``, ``gloss``) with a data root's
    folders (default the configured root: its cache, its nltk corpus), never downloading.

    :func:`tac_pipeline.defs.resources.data.wordnet_nouns` where Dagster imports; elsewhere the library
    function with the same folders. Raises when no source of WordNet is found.
    """
    try:
        from tac_pipeline.defs.resources.data import wordnet_nouns
    except ImportError:  # no Dagster here
        from tac_pipeline.encoders.wordnet import load_noun_vocabulary
        from tac_pipeline.store.layout import cache_dir, nltk_data_dir

        return load_noun_vocabulary(cache_dir(data_dir), nltk_dir=nltk_data_dir(data_dir), download=False)
    return wordnet_nouns(data_dir, download=False)


def noun_vocabulary():
    """(DataFrame noun/synset/gloss, source): WordNet when it loads offline, else synthetic."""
    import pandas as pd

    try:
        return wordnet_vocabulary(), "WordNet"
    except Exception as exc:  # no cache and no WordNet database: strings shaped like WordNet's lemmas
        print(
            f"(WordNet unavailable: {type(exc).__name__}: {str(exc).splitlines()[0][:100]}; synthetic nouns)"
        )
        nouns = synthetic_nouns(WORDNET_NOUNS)
        synsets = [f"{noun.replace(' ', '_')}.n.01" for noun in nouns]
        return pd.DataFrame({"noun": nouns, "synset": synsets, "gloss": ""}), "synthetic"


def write_vocabulary_cache(frame, data_dir: Path) -> None:
    """Seed a data root's WordNet cache: the graph's noun step then reads it and needs no WordNet database."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from tac_pipeline.encoders.wordnet import CACHE_FILE
    from tac_pipeline.store.layout import cache_dir

    path = cache_dir(data_dir) / CACHE_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), path)
