"""Shared pytest fixtures for feedhub's tests."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

# Make `tests/` importable regardless of rootdir/import-mode, so helper modules
# such as feedserver.py can be imported by name.
_TESTS_DIR = str(Path(__file__).resolve().parent)
if _TESTS_DIR not in sys.path:
    sys.path.insert(0, _TESTS_DIR)

from feedserver import FeedServer  # noqa: E402
from hubdir import HubDir  # noqa: E402


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A running FeedServer on 127.0.0.1, stopped after the test."""
    with FeedServer() as server:
        yield server


@pytest.fixture
def hub(tmp_path: Path) -> HubDir:
    """An empty hub directory with a config.toml, driven through the CLI."""
    return HubDir(tmp_path)
