"""Fixtures of the reliability tests: the tiny encoder and one shared, fully materialized data root."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
from dagster import DagsterInstance, instance_for_test

from tac_pipeline_tests.test_encoders.oddfiles import noise
from tac_pipeline_tests.test_reliability.helpers import NOUN_ASSET, new_data_root, run_assets

#: The drop of the shared world: three label folders holding the very same image four times each.
IDENTICAL = "identical"


@pytest.fixture(scope="session")
def tiny():
    from tac_pipeline.encoders import ClipEncoder

    return ClipEncoder.from_pretrained("tac-tiny", device="cpu")


@dataclass
class World:
    root: Path
    instance: DagsterInstance
    identical_result: object


@pytest.fixture(scope="session")
def world(tmp_path_factory) -> World:
    """Noun embeddings and the whole graph for the all-identical drop, materialized once per session.

    Tests that make a step fail check against it that nothing already stored is lost.
    """
    root = new_data_root(tmp_path_factory.mktemp("world"))
    image = noise((16, 16), seed=1)
    for label in ("a", "b", "c"):
        folder = root / "drops" / IDENTICAL / label
        folder.mkdir(parents=True)
        for i in range(4):
            image.save(folder / f"{i}.png")
    with instance_for_test() as instance:
        assert run_assets(root, instance, None, [NOUN_ASSET]).success
        result = run_assets(root, instance, IDENTICAL)
        yield World(root, instance, result)
