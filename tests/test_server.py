"""`feedhub serve` and `feedhub run --serve`: what feed readers get."""

from __future__ import annotations

import gzip
import json
import signal
import socket
import time

import brotli
import feedparser
import httpx
import pytest

from hubdir import FIXTURES, HubDir, stop, wait_for


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def served(hub: HubDir, feed_server):
    feed_server.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws")
    assert hub.run("poll").returncode == 0
    (hub.root / "secret.txt").write_text("outside feeds/")
    port = free_port()
    server = hub.start("serve", "--address", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _up(base))
    yield base
    server.send_signal(signal.SIGTERM)
    server.wait(timeout=10)
    assert server.returncode == 0


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "/index.html").status_code == 200
    except httpx.HTTPError:
        return False


def test_feeds_are_served_with_validators_and_304(served: str) -> None:
    first = httpx.get(served + "/en.atom", headers={"Accept-Encoding": "identity"})
    assert first.status_code == 200
    assert first.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert first.headers["etag"].startswith('"') and "last-modified" in first.headers
    assert "max-age=" in first.headers["cache-control"]
    assert not feedparser.parse(first.content).bozo
    again = httpx.get(served + "/en.atom", headers={"If-None-Match": first.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    since = httpx.get(served + "/en.atom",
                      headers={"If-Modified-Since": first.headers["last-modified"]})
    assert since.status_code == 304
    head = httpx.head(served + "/en.atom", headers={"Accept-Encoding": "identity"})
    assert head.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == str(len(first.content))
    assert httpx.get(served + "/").text.startswith("<!DOCTYPE html>")


def test_compression_on_request(served: str) -> None:
    plain = httpx.get(served + "/en.atom", headers={"Accept-Encoding": "identity"})
    with httpx.Client() as client:
        raw = client.get(served + "/en.atom", headers={"Accept-Encoding": "gzip"})
    assert raw.headers["content-encoding"] == "gzip"
    assert raw.content == plain.content  # httpx decoded it
    assert int(raw.headers["content-length"]) < len(plain.content)
    assert gzip.decompress(gzip.compress(plain.content)) == plain.content


def test_brotli_on_request(served: str) -> None:
    plain = httpx.get(served + "/en.atom", headers={"Accept-Encoding": "identity"})
    with socket.create_connection(("127.0.0.1", int(served.rsplit(":", 1)[1]))) as conn:
        conn.sendall(b"GET /en.atom HTTP/1.1\r\nHost: x\r\nAccept-Encoding: br\r\n"
                     b"Connection: close\r\n\r\n")
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"\r\nContent-Encoding: br\r\n" in head
    assert brotli.decompress(body) == plain.content and len(body) < len(plain.content)


def test_max_age_is_the_time_to_the_next_poll(served: str) -> None:
    # the source was just polled; its interval is 30 minutes (plus up to a tenth of jitter)
    max_age = int(httpx.get(served + "/en.atom").headers["cache-control"].rsplit("=", 1)[1])
    assert 1700 <= max_age <= 1990


def test_source_feeds_and_archive_pages_are_served(served: str, hub: HubDir) -> None:
    own = httpx.get(served + "/sources/wsws.atom")  # the per-source feed `poll` wrote
    assert own.status_code == 200 and own.headers["content-type"].startswith("application/atom+xml")
    assert feedparser.parse(own.content).entries[0].title == feedparser.parse(
        (hub.feeds / "en.atom").read_bytes()).entries[0].title
    assert 60 <= int(own.headers["cache-control"].rsplit("=", 1)[1]) <= 3600
    page = hub.feeds / "archive" / "en" / "1.atom"
    page.parent.mkdir(parents=True)
    page.write_bytes((hub.feeds / "en.atom").read_bytes())
    archived = httpx.get(served + "/archive/en/1.atom")
    assert archived.status_code == 200 and archived.content == page.read_bytes()
    assert archived.headers["cache-control"] == "public, max-age=86400"  # a day: takedowns reach caches


@pytest.mark.parametrize("path", ["/../config.toml", "/..%2fconfig.toml", "/%2e%2e/secret.txt",
                                  "/feeds/../../secret.txt", "//etc/passwd", "/.hidden",
                                  "/..\\secret.txt", "/%00en.atom"])
def test_nothing_outside_feeds_is_reachable(served: str, path: str) -> None:
    with socket.create_connection(("127.0.0.1", int(served.rsplit(":", 1)[1]))) as conn:
        conn.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        time.sleep(0.2)
        answer = conn.recv(65536)
    assert answer.startswith(b"HTTP/1.1 404"), answer[:100]
    assert b"outside feeds" not in answer and b"[hub]" not in answer


def test_healthz_reports_the_daemon(served: str) -> None:
    health = httpx.get(served + "/healthz")
    assert health.status_code == 503  # no daemon is running
    # one word for load balancers; which sources fail is on the admin address
    assert json.loads(health.content) == {"status": "degraded"}


def test_run_serve_serves_while_the_daemon_polls(tmp_path, feed_server) -> None:
    hub = HubDir(tmp_path, interval="1h")
    feed_server.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws")
    port = free_port()
    daemon = hub.start("run", "--serve", f"127.0.0.1:{port}")
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{port}")
                 and httpx.get(f"http://127.0.0.1:{port}/en.atom").status_code == 200)
        health = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert health.status_code == 200
        assert json.loads(health.content) == {"status": "ok"}
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log
