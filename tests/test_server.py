"""`feedhub serve` and `feedhub run --serve`: what feed readers get.

Issue 15: Granian serves; the .br/.gz copies publishing wrote are sent as
they are, each with its own ETag; requests are bounded (headers, bodies,
methods, slow clients)."""

from __future__ import annotations

import gzip
import json
import os
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
    again = httpx.get(served + "/en.atom", headers={"If-None-Match": first.headers["etag"],
                                                    "Accept-Encoding": "identity"})
    assert again.status_code == 304 and again.content == b""
    assert again.headers["etag"] == first.headers["etag"]
    assert "max-age=" in again.headers["cache-control"]
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
    assert b"\r\ncontent-encoding: br\r\n" in head.lower()
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


def _raw(base: str, path: str, encoding: str) -> httpx.Response:
    """A response whose body is left as the server sent it (not decoded)."""
    with httpx.Client() as client, client.stream(
            "GET", base + path, headers={"Accept-Encoding": encoding}) as response:
        response.raw_body = b"".join(response.iter_raw())  # type: ignore[attr-defined]
        return response


@pytest.mark.parametrize(("accept", "coding", "suffix"), [
    ("gzip", "gzip", ".gz"), ("br", "br", ".br"), ("gzip, deflate, br", "br", ".br"),
    ("br;q=0, gzip", "gzip", ".gz"), ("*", "br", ".br")])
@pytest.mark.parametrize("path", ["en.atom", "index.html", "index.opml", "sources/wsws.atom"])
def test_the_precompressed_copy_is_sent_as_it_is(served: str, hub: HubDir, accept: str,
                                                  coding: str, suffix: str, path: str) -> None:
    response = _raw(served, "/" + path, accept)
    assert response.status_code == 200
    assert response.headers["content-encoding"] == coding
    assert response.headers["vary"] == "Accept-Encoding"
    assert response.raw_body == (hub.feeds / (path + suffix)).read_bytes()  # type: ignore[attr-defined]
    assert int(response.headers["content-length"]) == len(response.raw_body)  # type: ignore[attr-defined]
    decoded = brotli.decompress if coding == "br" else gzip.decompress
    assert decoded(response.raw_body) == (hub.feeds / path).read_bytes()  # type: ignore[attr-defined]
    expected = "text/html; charset=utf-8" if path.endswith(".html") else \
        "text/x-opml; charset=utf-8" if path.endswith(".opml") else "application/atom+xml; charset=utf-8"
    assert response.headers["content-type"] == expected


def test_each_encoding_has_its_own_etag_and_304(served: str) -> None:
    etags = {}
    for accept in ("identity", "gzip", "br"):
        first = httpx.get(served + "/en.atom", headers={"Accept-Encoding": accept})
        etags[accept] = first.headers["etag"]
        assert first.headers["etag"].startswith('"')  # strong
        again = httpx.get(served + "/en.atom", headers={"Accept-Encoding": accept,
                                                        "If-None-Match": first.headers["etag"]})
        assert again.status_code == 304 and again.content == b""
        assert again.headers["etag"] == first.headers["etag"]
        since = httpx.get(served + "/en.atom", headers={
            "Accept-Encoding": accept, "If-Modified-Since": first.headers["last-modified"]})
        assert since.status_code == 304
        head = httpx.head(served + "/en.atom", headers={"Accept-Encoding": accept})
        assert head.status_code == 200 and head.content == b""
        assert head.headers["etag"] == first.headers["etag"]
        assert head.headers["content-length"] == first.headers["content-length"]
        assert head.headers.get("content-encoding") == first.headers.get("content-encoding")
    assert len(set(etags.values())) == 3
    # the gzip representation's ETag does not validate the brotli one
    other = httpx.get(served + "/en.atom", headers={"Accept-Encoding": "br",
                                                    "If-None-Match": etags["gzip"]})
    assert other.status_code == 200 and other.headers["etag"] == etags["br"]
    listed = httpx.get(served + "/en.atom", headers={
        "Accept-Encoding": "br", "If-None-Match": f'"nope", {etags["br"]}'})
    assert listed.status_code == 304


def test_a_missing_or_outdated_copy_is_not_served(served: str, hub: HubDir) -> None:
    """An output dir from before the copies, or a document replaced by other
    means: the document itself is sent, never a copy of other bytes."""
    document = hub.feeds / "en.atom"
    (hub.feeds / "en.atom.br").unlink()
    gzipped = _raw(served, "/en.atom", "br, gzip")
    assert gzipped.headers["content-encoding"] == "gzip"
    stamp = document.stat().st_mtime_ns + 10**9
    os.utime(document, ns=(stamp, stamp))  # now newer than en.atom.gz
    plain = _raw(served, "/en.atom", "br, gzip")
    assert "content-encoding" not in plain.headers
    assert plain.raw_body == document.read_bytes()  # type: ignore[attr-defined]


def test_a_copy_removed_between_stat_and_read_sends_the_new_document(tmp_path) -> None:
    """A publish replacing a changed feed first removes its copies (they
    are written after every feed): a request that found the old copy an
    instant before gets the feed as it now is, uncompressed, not a 404.
    (In process: the moment cannot be hit through a real server on cue.)"""
    from feedhub.config import parse_config
    from feedhub.publish import batched_writes, copies_later, write_if_changed
    from feedhub.server import FeedApp

    config_path = tmp_path / "config.toml"
    config_path.write_text('[hub]\nbase_url = "https://hub.example/feeds/"\n', encoding="utf-8")
    app = FeedApp(parse_config(config_path.read_text(), config_path))
    document = app.config.hub.output_dir / "en.atom"
    write_if_changed(document, b"<feed>old</feed>")
    found = app.representation

    def publish_meanwhile(target: str, accepted: bytes):  # type: ignore[no-untyped-def]
        chosen = found(target, accepted)
        if accepted:
            with copies_later(), batched_writes():
                write_if_changed(document, b"<feed>new</feed>")
        return chosen

    app.representation = publish_meanwhile  # type: ignore[method-assign]
    scope = {"method": "GET", "path": "/en.atom", "headers": [(b"accept-encoding", b"br")]}
    status, headers, body = app.respond(scope)
    assert (status, body) == (200, b"<feed>new</feed>")
    assert b"content-encoding" not in dict(headers)


@pytest.mark.parametrize("path", ["/en.atom.gz", "/en.atom.br", "/index.html.gz"])
def test_the_copies_are_not_served_by_their_own_name(served: str, path: str) -> None:
    assert httpx.get(served + path).status_code == 404


def test_a_symlink_out_of_the_output_dir_is_not_followed(served: str, hub: HubDir) -> None:
    (hub.feeds / "out.atom").symlink_to(hub.root / "secret.txt")
    (hub.feeds / "in.atom").symlink_to(hub.feeds / "en.atom")
    assert httpx.get(served + "/out.atom").status_code == 404
    assert httpx.get(served + "/in.atom").status_code == 200


@pytest.mark.parametrize("method", ["POST", "PUT", "DELETE", "PATCH", "OPTIONS"])
def test_only_get_and_head(served: str, method: str) -> None:
    response = httpx.request(method, served + "/en.atom")
    assert response.status_code == 405 and response.headers["allow"] == "GET, HEAD"


def test_a_request_body_is_refused(served: str) -> None:
    response = httpx.request("GET", served + "/en.atom", content=b"x" * 1000)
    assert response.status_code == 413


def test_oversized_headers_are_refused(served: str) -> None:
    port = int(served.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(b"GET /en.atom HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 40_000 + b"\r\n\r\n")
        answer = conn.recv(65536)
    assert answer.split(b" ")[1] in (b"431", b"400"), answer[:100]
    assert httpx.get(served + "/en.atom").status_code == 200  # and the server goes on


def test_slow_clients_do_not_hold_up_others_and_are_cut_off(served: str) -> None:
    """Clients that send half a request (slowloris) take no worker: a whole
    request is answered meanwhile; they are disconnected after the header
    timeout (10 s)."""
    port = int(served.rsplit(":", 1)[1])
    slow = []
    for _ in range(60):
        conn = socket.create_connection(("127.0.0.1", port))
        conn.sendall(b"GET /en.atom HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        slow.append(conn)
    try:
        started = time.monotonic()
        response = httpx.get(served + "/en.atom", timeout=5)
        assert response.status_code == 200 and time.monotonic() - started < 5
        slow[0].settimeout(30)
        cut = time.monotonic()
        answer = slow[0].recv(65536)  # b"" (closed) or a 408 before closing
        assert answer == b"" or answer.split(b" ")[1] == b"408", answer[:100]
        assert time.monotonic() - cut < 25
    finally:
        for conn in slow:
            conn.close()


def test_run_serve_server_ends_with_the_daemon(tmp_path, feed_server) -> None:
    """`run --serve` serves from a child process (its own GIL); killed with
    the daemon, even by SIGKILL, it leaves no server on the port."""
    hub = HubDir(tmp_path, interval="1h")
    feed_server.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws")
    port = free_port()
    daemon = hub.start("run", "--serve", f"127.0.0.1:{port}")
    try:
        wait_for(lambda: _up(f"http://127.0.0.1:{port}"))
        daemon.kill()
        daemon.wait(timeout=10)
        wait_for(lambda: not _up(f"http://127.0.0.1:{port}"), timeout=20)
    finally:
        stop(daemon)
