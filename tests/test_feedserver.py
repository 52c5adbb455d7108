"""Sanity checks for the FeedServer test helper.

Other tests trust FeedServer to behave like a real feed host; these make sure
it actually does (304s, redirects, compression, slowness, request log), so a
failing fetcher test points at the fetcher, not at the helper.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import threading
import time
from collections.abc import Iterator
from email.utils import parsedate_to_datetime

import httpx
import pytest

from feedserver import FeedServer, Request

RSS = "<?xml version='1.0'?><rss version='2.0'><channel><title>T</title></channel></rss>"


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=2.0) as c:
        yield c


def test_serves_static_body_with_validators(feed_server: FeedServer, client: httpx.Client) -> None:
    feed_server.serve("/a.xml", RSS)
    r = client.get(feed_server.url("/a.xml"), headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.text == RSS
    assert r.headers["content-type"] == "application/rss+xml; charset=utf-8"
    assert r.headers["etag"] == '"' + hashlib.sha1(RSS.encode()).hexdigest() + '"'
    assert r.headers["content-length"] == str(len(RSS.encode()))
    assert "content-encoding" not in r.headers
    assert parsedate_to_datetime(r.headers["last-modified"]).timestamp() < time.time()
    assert feed_server.url("/a.xml") == feed_server.base_url + "/a.xml"
    assert feed_server.base_url.startswith("http://127.0.0.1:")


def test_unknown_path_and_remove_answer_404(feed_server: FeedServer, client: httpx.Client) -> None:
    assert client.get(feed_server.url("/nope")).status_code == 404
    feed_server.serve("/a.xml", RSS)
    assert client.get(feed_server.url("/a.xml")).status_code == 200
    feed_server.remove("/a.xml")
    assert client.get(feed_server.url("/a.xml")).status_code == 404


def test_conditional_get_304(feed_server: FeedServer, client: httpx.Client) -> None:
    feed_server.serve("/a.xml", RSS)
    first = client.get(feed_server.url("/a.xml"))
    etag, lm = first.headers["etag"], first.headers["last-modified"]

    r = client.get(feed_server.url("/a.xml"), headers={"If-None-Match": etag})
    assert r.status_code == 304
    assert r.content == b""
    assert r.headers["etag"] == etag
    assert (
        client.get(
            feed_server.url("/a.xml"), headers={"If-None-Match": f'"x", W/{etag}'}
        ).status_code
        == 304
    )
    assert (
        client.get(feed_server.url("/a.xml"), headers={"If-Modified-Since": lm}).status_code == 304
    )
    # A non-matching If-None-Match wins over a satisfied If-Modified-Since.
    r = client.get(
        feed_server.url("/a.xml"),
        headers={"If-None-Match": '"other"', "If-Modified-Since": lm},
    )
    assert r.status_code == 200
    assert r.text == RSS

    # Changing the body changes both validators; old ones now get a 200.
    feed_server.serve("/a.xml", RSS + " ")
    r = client.get(feed_server.url("/a.xml"), headers={"If-None-Match": etag})
    assert r.status_code == 200
    assert (
        client.get(feed_server.url("/a.xml"), headers={"If-Modified-Since": lm}).status_code == 200
    )


def test_no_validators_when_disabled(feed_server: FeedServer, client: httpx.Client) -> None:
    feed_server.serve(
        "/a.xml",
        RSS,
        etag=False,
        last_modified=False,
        headers={"Cache-Control": "max-age=60"},
    )
    r = client.get(feed_server.url("/a.xml"), headers={"If-None-Match": "*"})
    assert r.status_code == 200
    assert "etag" not in r.headers
    assert "last-modified" not in r.headers
    assert r.headers["cache-control"] == "max-age=60"


def test_last_modified_moves_only_when_bytes_change(
    feed_server: FeedServer, client: httpx.Client
) -> None:
    def last_modified() -> float:
        return parsedate_to_datetime(
            client.get(feed_server.url("/a.xml")).headers["last-modified"]
        ).timestamp()

    feed_server.serve("/a.xml", RSS)
    t1 = last_modified()
    feed_server.serve("/a.xml", RSS.encode())  # same bytes: unchanged
    assert last_modified() == t1
    # Changed within the same second: still strictly later.
    feed_server.serve("/a.xml", RSS + "1")
    t2 = last_modified()
    feed_server.serve("/a.xml", RSS + "2")
    t3 = last_modified()
    assert t1 < t2 < t3


def test_gzip_and_brotli(feed_server: FeedServer) -> None:
    body = RSS * 50
    feed_server.serve("/a.xml", body)
    url = feed_server.url("/a.xml")

    conn = http.client.HTTPConnection(
        "127.0.0.1", int(feed_server.base_url.rsplit(":", 1)[1]), timeout=2
    )
    conn.request("GET", "/a.xml", headers={"Accept-Encoding": "gzip"})
    raw = conn.getresponse()
    data = raw.read()
    conn.close()
    assert raw.getheader("Content-Encoding") == "gzip"
    assert raw.getheader("Vary") == "Accept-Encoding"
    assert int(raw.getheader("Content-Length")) == len(data) < len(body)
    assert gzip.decompress(data).decode() == body

    r = httpx.get(url, headers={"Accept-Encoding": "gzip;q=1, br;q=0"})
    assert r.headers["content-encoding"] == "gzip"
    assert r.text == body

    pytest.importorskip("brotli")
    r = httpx.get(url, headers={"Accept-Encoding": "gzip, br"})
    assert r.headers["content-encoding"] == "br"
    assert r.text == body  # httpx decodes br when brotli is installed


def test_head(feed_server: FeedServer, client: httpx.Client) -> None:
    feed_server.serve("/a.xml", RSS)
    r = client.head(feed_server.url("/a.xml"), headers={"Accept-Encoding": "identity"})
    assert r.status_code == 200
    assert r.content == b""
    assert r.headers["content-length"] == str(len(RSS))
    # The keep-alive connection is still usable after a HEAD.
    assert client.get(feed_server.url("/a.xml")).text == RSS


def test_redirects(feed_server: FeedServer, client: httpx.Client) -> None:
    feed_server.serve("/new.xml", RSS)
    feed_server.redirect("/old.xml", "/new.xml")
    feed_server.redirect("/temp.xml", feed_server.url("/old.xml"), status=302)

    r = client.get(feed_server.url("/old.xml"))
    assert r.status_code == 301
    assert r.headers["location"] == "/new.xml"

    r = client.get(feed_server.url("/temp.xml"), follow_redirects=True)
    assert r.status_code == 200
    assert r.text == RSS
    assert [h.status_code for h in r.history] == [302, 301]
    assert str(r.url) == feed_server.url("/new.xml")


def test_errors(feed_server: FeedServer, client: httpx.Client) -> None:
    feed_server.error("/limited", 429, headers={"Retry-After": "30"})
    feed_server.error("/gone", 410, body="gone")
    feed_server.serve("/teapot", "short and stout", status=418, content_type="text/plain")

    r = client.get(feed_server.url("/limited"))
    assert (r.status_code, r.headers["retry-after"], r.content) == (429, "30", b"")
    r = client.get(feed_server.url("/gone"))
    assert (r.status_code, r.text) == (410, "gone")
    r = client.get(feed_server.url("/teapot"))
    assert (r.status_code, r.text, r.headers["content-type"]) == (
        418,
        "short and stout",
        "text/plain",
    )


def test_slow_errors_and_headers_made_as_the_answer_goes_out(
        feed_server: FeedServer, client: httpx.Client) -> None:
    answers: list[float] = []

    def stamp() -> str:
        answers.append(time.monotonic())
        return str(len(answers))

    feed_server.error("/busy", 503, headers={"Retry-After": stamp}, delay=lambda: 0.3)
    for n in ("1", "2"):
        r = client.get(feed_server.url("/busy"))
        assert (r.status_code, r.headers["retry-after"]) == (503, n)
    [first, second] = feed_server.requests_for("/busy")
    assert answers[0] - first.time >= 0.3 and answers[1] - second.time >= 0.3


def test_query_string_routing(feed_server: FeedServer, client: httpx.Client) -> None:
    feed_server.serve("/feed", "plain")
    feed_server.serve("/feed?page=2", "page two")
    assert client.get(feed_server.url("/feed?x=1")).text == "plain"
    assert client.get(feed_server.url("/feed?page=2")).text == "page two"
    assert client.get(feed_server.url("/feed")).text == "plain"
    feed_server.serve("/only?q=1", "q")
    assert client.get(feed_server.url("/only")).status_code == 404


def test_request_log(feed_server: FeedServer, client: httpx.Client) -> None:
    feed_server.serve("/a.xml", RSS)
    before = time.monotonic()
    client.get(
        feed_server.url("/a.xml"),
        headers={"User-Agent": "feedhub-test/1", "X-Mixed-Case": "v"},
    )
    client.head(feed_server.url("/a.xml?x=1"))
    client.get(feed_server.url("/missing"))

    assert [(r.method, r.path) for r in feed_server.requests] == [
        ("GET", "/a.xml"),
        ("HEAD", "/a.xml?x=1"),
        ("GET", "/missing"),
    ]
    first = feed_server.requests[0]
    assert isinstance(first, Request)
    assert first.headers["user-agent"] == "feedhub-test/1"
    assert first.headers["x-mixed-case"] == "v"
    assert before <= first.time <= feed_server.requests[1].time <= time.monotonic()
    assert [r.method for r in feed_server.requests_for("/a.xml")] == ["GET", "HEAD"]
    assert [r.method for r in feed_server.requests_for("/a.xml?x=1")] == ["HEAD"]

    feed_server.clear_requests()
    assert feed_server.requests == []
    assert feed_server.requests_for("/a.xml") == []


def test_keep_alive(feed_server: FeedServer) -> None:
    feed_server.serve("/a.xml", RSS)
    feed_server.error("/e", 500, body="boom")
    port = int(feed_server.base_url.rsplit(":", 1)[1])
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
    try:
        for path in ("/a.xml", "/e", "/missing", "/a.xml"):
            conn.request("GET", path)
            sock = conn.sock
            resp = conn.getresponse()
            resp.read()
            assert not resp.will_close
            assert conn.sock is sock  # same TCP connection reused
    finally:
        conn.close()


def test_slow_body_arrives_in_chunks(feed_server: FeedServer, client: httpx.Client) -> None:
    feed_server.slow(
        "/slow", "0123456789", first_byte_delay=0.05, per_chunk_delay=0.01, chunk_size=2
    )
    start = time.monotonic()
    r = client.get(feed_server.url("/slow"))
    elapsed = time.monotonic() - start
    assert r.text == "0123456789"
    assert r.headers["content-length"] == "10"
    assert r.headers["content-type"] == "application/rss+xml"
    assert 0.09 <= elapsed < 1.0  # 0.05 first byte + 4 gaps of 0.01


def test_slow_first_byte_triggers_read_timeout(feed_server: FeedServer) -> None:
    feed_server.slow("/slow", RSS, first_byte_delay=5.0)
    with (
        httpx.Client(timeout=httpx.Timeout(2.0, read=0.1)) as c,
        pytest.raises(httpx.ReadTimeout),
    ):
        c.get(feed_server.url("/slow"))
    _wait_for_no_connections(feed_server)


def test_slow_body_stops_when_client_disconnects(feed_server: FeedServer) -> None:
    feed_server.slow("/slow", b"x" * 10_000, per_chunk_delay=0.01)  # would take ~100 s
    with httpx.Client(timeout=2.0) as c, c.stream("GET", feed_server.url("/slow")) as r:
        assert r.headers["content-length"] == "10000"
        assert next(r.iter_raw())
    _wait_for_no_connections(feed_server)


def test_stop_is_prompt_with_slow_response_in_flight() -> None:
    server = FeedServer().start()
    server.slow("/slow", RSS, first_byte_delay=10.0)
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            httpx.get(server.url("/slow"), timeout=10.0)
        except httpx.HTTPError as exc:
            errors.append(exc)

    t = threading.Thread(target=fetch, daemon=True)
    t.start()
    deadline = time.monotonic() + 2
    while not server.requests_for("/slow") and time.monotonic() < deadline:
        time.sleep(0.005)
    assert server.requests_for("/slow")

    start = time.monotonic()
    server.stop()
    assert time.monotonic() - start < 1.0
    t.join(timeout=1.0)
    assert not t.is_alive()
    assert errors  # the client saw the connection drop instead of hanging
    server.stop()  # idempotent


def _wait_for_no_connections(server: FeedServer, timeout: float = 1.0) -> None:
    """The handler thread must give up on its own, well before its delays end."""
    deadline = time.monotonic() + timeout
    while server._connections and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not server._connections
