"""Embedding a drop's files: each file is read and hashed once per run."""

from __future__ import annotations

import hashlib
import logging

from tac_pipeline.defs.assets.embeddings import embed_part
from tac_pipeline.defs.resources.compute import ComputeDeviceResource
from tac_pipeline.encoders import discover_images, incremental
from tac_pipeline.encoders.images import chunks
from tac_pipeline_tests.test_defs.test_assets.helpers import tiny_encoder
from tac_pipeline_tests.test_encoders.oddfiles import noise


def test_each_new_image_is_hashed_once_per_run(tmp_path, monkeypatch):
    for i in range(4):
        noise((20 + i, 20), seed=i).save(tmp_path / f"{i}.png")
    hashed: list[int] = []

    class CountingHashlib:
        @staticmethod
        def sha256(*data: bytes):
            hashed.append(1)
            return hashlib.sha256(*data)

    monkeypatch.setattr(incremental, "hashlib", CountingHashlib)  # the reuse plan's hashes
    monkeypatch.setattr(chunks, "hashlib", CountingHashlib)  # the decoding workers' (in process here)
    listing = discover_images(tmp_path)
    part = embed_part(
        listing.records,
        range(len(listing)),
        None,
        clip_encoder=tiny_encoder(),
        compute_device=ComputeDeviceResource(device="cpu"),
        log=logging.getLogger(__name__),
    )
    assert len(part.positions) == 4 and part.encoded == 4
    assert len(hashed) == 4
    assert part.content_hashes == [hashlib.sha256(r.path.read_bytes()).hexdigest() for r in listing.records]
