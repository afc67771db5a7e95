"""Fixtures of the explore tests: FiftyOne (the ``explore`` extra) and Debian's Chromium (the UI test's)."""

import os

import pytest

from tac_pipeline_tests.test_ui.test_browser import chromium  # noqa: F401 - a fixture


@pytest.fixture(scope="session")
def explore_extra():
    """FiftyOne imports; skipped with the reason without the ``explore`` extra, unless ``TAC_REQUIRE_EXPLORE``
    is set (CI), where that is a failure."""
    from tac_pipeline.explore.fiftyone_dataset import ExploreError, require_fiftyone

    try:
        require_fiftyone()
    except ExploreError as exc:
        if os.environ.get("TAC_REQUIRE_EXPLORE"):
            pytest.fail(f"TAC_REQUIRE_EXPLORE is set but {exc}")
        pytest.skip(str(exc))
