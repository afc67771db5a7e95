"""Shared by the reliability tests: small data roots, partial materializations and failure messages.

Everything runs in process with the offline ``tac-tiny`` model and a small synthetic noun vocabulary (written
where the WordNet loader keeps its cache), so no test needs the network or the system WordNet database.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import AssetKey, AssetRecordsFilter, DagsterInstance, materialize

from tac_pipeline.defs.assets import build_assets
from tac_pipeline.defs.partitions import datasets_partitions
from tac_pipeline.defs.resources.encoder import ClipEncoderResource
from tac_pipeline.encoders import wordnet
from tac_pipeline.store.layout import store_dir
from tac_pipeline_tests.test_defs.test_assets.helpers import resources, tiny_encoder

REPO = Path(__file__).resolve().parents[2]
NOUN_ASSET = "wordnet_noun_embeddings"
#: Enough nouns for a few semantic centres; the tiny model embeds them in well under a second.
VOCABULARY = [
    "dog", "cat", "car", "tree", "house", "bird", "boat", "flower", "apple", "chair",
    "river", "mountain", "horse", "truck", "cloud", "stone", "bottle", "lamp", "bridge", "fish",
    "shoe", "clock", "road", "ship", "plane", "train", "bread", "cake", "door", "window",
    "field", "forest", "beach", "snow", "fire", "book", "cup", "table", "bed", "phone",
]  # fmt: skip


def new_data_root(base: Path, *, vocabulary: bool = True) -> Path:
    """``base/data`` with an empty ``drops/`` and (optionally) the small vocabulary as the WordNet cache."""
    root = base / "data"
    (root / "drops").mkdir(parents=True)
    if vocabulary:
        (root / "cache").mkdir()
        frame = pa.table(
            {
                "noun": VOCABULARY,
                "synset": [f"{n}.n.01" for n in VOCABULARY],
                "gloss": [f"a {n}" for n in VOCABULARY],
            }
        )
        pq.write_table(frame, root / "cache" / wordnet.CACHE_FILE)
    return root


def ensure_partition(instance: DagsterInstance, key: str) -> None:
    if not instance.has_dynamic_partition(datasets_partitions.name, key):
        instance.add_dynamic_partitions(datasets_partitions.name, [key])


def run_assets(
    data_dir: Path,
    instance: DagsterInstance,
    key: str | None,
    names: Iterable[str] | None = None,
    encoder: ClipEncoderResource | None = None,
):
    """Materialize ``names`` (default: every partitioned asset) for partition ``key``, never raising."""
    encoder = encoder or tiny_encoder()
    assets = build_assets(encoder.identity())
    if key is not None:
        ensure_partition(instance, key)
    if names is None:
        selection = [a.key for a in assets if a.partitions_def is not None]
    else:
        selection = [AssetKey(n) for n in names]
    return materialize(
        assets,
        selection=selection,
        partition_key=key,
        resources=resources(data_dir, encoder),
        instance=instance,
        raise_on_error=False,
    )


def _error_text(error) -> str:
    parts = []
    while error is not None:
        parts.append(f"{error.cls_name}: {error.message}")
        error = error.cause
    return "\n".join(parts)


def step_failures(result) -> dict[str, str]:
    """``{step key: the error's text with its causes}`` of a finished run."""
    return {
        e.step_key: _error_text(e.event_specific_data.error) for e in result.all_events if e.is_step_failure
    }


def stored(data_dir: Path, asset: str, key: str | None = None) -> Path:
    return store_dir(data_dir) / (f"{asset}.parquet" if key is None else f"{asset}/{key}.parquet")


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def latest_storage_id(instance: DagsterInstance, asset: str, key: str | None = None) -> int | None:
    """The storage id of the latest materialization of ``asset`` (and partition), None when there is none."""
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=None if key is None else [key]),
        limit=1,
    ).records
    return records[0].storage_id if records else None


def snapshot(data_dir: Path, instance: DagsterInstance, assets: dict[str, str | None]) -> dict:
    """File digests and latest materialization ids of ``{asset: partition}``: compare before/after a failure."""
    return {
        (asset, key): (digest(stored(data_dir, asset, key)), latest_storage_id(instance, asset, key))
        for asset, key in assets.items()
    }


def write_byo(
    path: Path, n: int = 12, width: int = 16, *, seed: int = 0, labels: int = 3, ids=None, rows=None
) -> None:
    """A bring-your-own ``embeddings.parquet``: ``labels`` separated blobs of ``n`` rows in total."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(labels, width))
    cls = np.arange(n) % labels
    x = directions[cls] + 0.1 * rng.normal(size=(n, width))
    embeddings = rows if rows is not None else [list(map(float, r)) for r in x]
    table = pa.table(
        {
            "image_id": ids if ids is not None else [f"img{i:03d}" for i in range(n)],
            "embedding": embeddings,
            "label": [f"class{c}" for c in cls],
        }
    )
    pq.write_table(table, path)
