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

# browser.py: the Chromium fixtures (browser, open_page, static_server) for the
# HTML page tests; registered here so a test module just names them. pg.py: a
# throwaway PostgreSQL cluster (pg_cluster) and a fresh database per test (pg_database).
pytest_plugins = ["browser", "pg"]


@pytest.fixture
def feed_server() -> Iterator[FeedServer]:
    """A running FeedServer on 127.0.0.1, stopped after the test."""
    with FeedServer() as server:
        yield server


@pytest.fixture
def hub(tmp_path: Path) -> HubDir:
    """An empty hub directory with a config.toml, driven through the CLI."""
    return HubDir(tmp_path)


@pytest.fixture(autouse=True)
def _no_outside_database(monkeypatch: pytest.MonkeyPatch) -> None:
    """A FEEDHUB_DATABASE in the developer's environment (a real hub's
    PostgreSQL, say) never reaches a test or the CLI it runs: a test that
    wants one sets it (test_store_postgres_cli.py)."""
    monkeypatch.delenv("FEEDHUB_DATABASE", raising=False)


@pytest.fixture(autouse=True)
def _only_loopback(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests talk to 127.0.0.1 only: a name lookup of anything else in the
    test process fails the test instead of reaching for the network."""
    import socket

    real = socket.getaddrinfo

    import ipaddress

    def is_literal(host: object) -> bool:  # an address, not a name: no lookup happens
        try:
            ipaddress.ip_address(host.decode() if isinstance(host, bytes) else str(host))
        except ValueError:
            return False
        return True

    def guarded(host, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host not in (None, "localhost", b"localhost") and not is_literal(host):
            raise AssertionError(f"a test tried to resolve {host!r}: only 127.0.0.1 is allowed")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)


@pytest.fixture(autouse=True)
def _published_feeds_are_valid_atom(request: pytest.FixtureRequest,
                                    tmp_path: Path) -> Iterator[None]:
    """Every Atom document feedhub wrote during a test (feeds, archive pages,
    per-source feeds) must pass the RFC 4287 / RFC 5005 checks, whatever the
    test itself asserts."""
    yield
    if request.node.get_closest_marker("writes_invalid_atom"):  # the checker's own tests
        return
    from atomcheck import assert_valid_atom

    for path in sorted(tmp_path.rglob("*.atom")):
        data = path.read_bytes()
        if b">feedhub</generator>" in data:  # ours, not an upstream fixture
            assert_valid_atom(data, str(path.relative_to(tmp_path)))
