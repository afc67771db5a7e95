"""Fixtures of the explore tests: Debian's Chromium for the FiftyOne App test (the UI test's fixture)."""

from tac_pipeline_tests.test_ui.test_browser import chromium  # noqa: F401 - a fixture
