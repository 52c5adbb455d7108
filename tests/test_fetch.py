"""The Fetcher against a real HTTP server on 127.0.0.1 (tests/feedserver.py).

Each test runs its own event loop with asyncio.run(); the Fetcher is created
inside it, so its semaphores and connection pool belong to that loop.
"""

import asyncio
import gzip
import itertools
import socket
import threading
import time
import tracemalloc
import zlib

import brotli
import pytest

from feedhub.fetch import BlockedAddressError, Fetcher, FetchError, TooLargeError, is_public_address
from feedhub.models import FetchResult, Validators

USER_AGENT = "feedhub-test (+https://example.org)"

FEED = (
    '<?xml version="1.0" encoding="utf-8"?>\n'
    '<rss version="2.0"><channel><title>Test feed</title><link>https://example.org/</link>'
    + "".join(
        f"<item><title>Item {n}</title><link>https://example.org/{n}</link>"
        f"<description>Paragraph {n} of a feed that compresses well.</description></item>"
        for n in range(50)
    )
    + "</channel></rss>\n"
).encode()


def fetch(url: str, validators: Validators | None = None, *, allow_private: bool = True,
          timeout: float = 5.0, max_bytes: int = 10 * 1024 * 1024) -> FetchResult:
    async def run() -> FetchResult:
        async with Fetcher(user_agent=USER_AGENT, allow_private=allow_private,
                           timeout=timeout, max_bytes=max_bytes) as fetcher:
            return await fetcher.fetch(url, validators)

    return asyncio.run(run())


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --- conditional GET and manners ---------------------------------------------


def test_conditional_get_sends_validators_and_gets_304(feed_server):
    feed_server.serve("/feed.xml", FEED)
    url = feed_server.url("/feed.xml")

    async def run() -> tuple[FetchResult, FetchResult]:
        async with Fetcher(user_agent=USER_AGENT, allow_private=True, timeout=5.0) as fetcher:
            first = await fetcher.fetch(url)
            second = await fetcher.fetch(url, first.validators)
            return first, second

    first, second = asyncio.run(run())

    assert first.status == 200
    assert first.content == FEED
    assert first.validators.etag and first.validators.last_modified
    sent = feed_server.requests_for("/feed.xml")[-1].headers
    assert sent["if-none-match"] == first.validators.etag
    assert sent["if-modified-since"] == first.validators.last_modified
    assert second.status == 304
    assert second.not_modified
    assert second.content == b""


def test_first_fetch_is_unconditional(feed_server):
    feed_server.serve("/feed.xml", FEED)
    fetch(feed_server.url("/feed.xml"))
    sent = feed_server.requests_for("/feed.xml")[0].headers
    assert "if-none-match" not in sent
    assert "if-modified-since" not in sent


def test_user_agent_and_accept_encoding_are_sent(feed_server):
    feed_server.serve("/feed.xml", FEED)
    fetch(feed_server.url("/feed.xml"))
    sent = feed_server.requests_for("/feed.xml")[-1].headers
    assert sent["user-agent"] == USER_AGENT
    codings = {c.strip() for c in sent["accept-encoding"].split(",")}
    assert {"gzip", "br"} <= codings
    assert "application/atom+xml" in sent["accept"]
    assert "application/rss+xml" in sent["accept"]


def test_brotli_response_is_decoded(feed_server):
    feed_server.serve("/feed.xml", FEED)  # the server picks br: the client accepts it
    result = fetch(feed_server.url("/feed.xml"))
    assert result.headers["content-encoding"] == "br"
    assert result.content == FEED


def test_gzip_response_is_decoded(feed_server):
    # error(..., 200) sends the bytes as given, so the server does not re-encode them.
    feed_server.error("/feed.xml", 200, body=gzip.compress(FEED), headers={"Content-Encoding": "gzip"})
    result = fetch(feed_server.url("/feed.xml"))
    assert result.headers["content-encoding"] == "gzip"
    assert result.content == FEED


@pytest.mark.parametrize("wbits", [zlib.MAX_WBITS, -zlib.MAX_WBITS], ids=["zlib", "raw"])
def test_deflate_response_is_decoded(feed_server, wbits):
    """Servers send 'deflate' both with the zlib header and without it."""
    compressor = zlib.compressobj(wbits=wbits)
    body = compressor.compress(FEED) + compressor.flush()
    feed_server.error("/feed.xml", 200, body=body, headers={"Content-Encoding": "deflate"})
    assert fetch(feed_server.url("/feed.xml")).content == FEED


def test_corrupt_gzip_raises_fetch_error(feed_server):
    feed_server.error("/feed.xml", 200, body=b"this is not gzip", headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError, match="decompress"):
        fetch(feed_server.url("/feed.xml"))


def test_unsupported_content_encoding_raises_fetch_error(feed_server):
    feed_server.error("/feed.xml", 200, body=FEED, headers={"Content-Encoding": "zstd"})
    with pytest.raises(FetchError, match="zstd"):
        fetch(feed_server.url("/feed.xml"))


def test_truncated_gzip_raises_fetch_error(feed_server):
    compressed = gzip.compress(FEED)
    feed_server.error("/feed.xml", 200, body=compressed[: len(compressed) // 2],
                      headers={"Content-Encoding": "gzip"})
    with pytest.raises(FetchError):
        fetch(feed_server.url("/feed.xml"))


# --- redirects -----------------------------------------------------------------


def test_permanent_redirect_is_followed_and_reported(feed_server):
    feed_server.serve("/new.xml", FEED)
    feed_server.redirect("/old.xml", "/new.xml", 301)
    result = fetch(feed_server.url("/old.xml"))
    target = feed_server.url("/new.xml")
    assert result.status == 200
    assert result.url == feed_server.url("/old.xml")
    assert result.final_url == target
    assert result.redirects == ((301, target),)
    assert result.content == FEED


def test_redirect_chain_lists_every_hop(feed_server):
    feed_server.serve("/c.xml", FEED)
    feed_server.redirect("/a.xml", "/b.xml", 302)
    feed_server.redirect("/b.xml", feed_server.url("/c.xml"), 308)
    result = fetch(feed_server.url("/a.xml"))
    assert result.redirects == ((302, feed_server.url("/b.xml")), (308, feed_server.url("/c.xml")))
    assert result.final_url == feed_server.url("/c.xml")


def test_redirect_loop_raises_fetch_error(feed_server):
    feed_server.redirect("/a.xml", "/b.xml")
    feed_server.redirect("/b.xml", "/a.xml")
    with pytest.raises(FetchError, match="redirect"):
        fetch(feed_server.url("/a.xml"))
    assert len(feed_server.requests) < 10  # gave up, did not spin


def test_a_cookie_the_host_sets_is_sent_back(feed_server):
    feed_server.serve("/set.xml", FEED, headers={"Set-Cookie": "consent=yes; Path=/"})
    feed_server.serve("/feed.xml", FEED)

    async def run() -> None:
        async with Fetcher(user_agent=USER_AGENT, allow_private=True) as fetcher:
            await fetcher.fetch(feed_server.url("/feed.xml"))
            await fetcher.fetch(feed_server.url("/set.xml"))
            await fetcher.fetch(feed_server.url("/feed.xml"))

    asyncio.run(run())
    first, second = feed_server.requests_for("/feed.xml")
    assert "cookie" not in first.headers
    assert second.headers["cookie"] == "consent=yes"


def test_an_idle_connection_the_server_closed_is_not_reused():
    """The next request goes out on a fresh connection: the pool sees the
    server's close before it picks a connection."""
    answer = (b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
              b"Content-Length: %d\r\n\r\n" % len(FEED)) + FEED
    connections: list[int] = []
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        port = server.getsockname()[1]

        def serve() -> None:
            for n in range(2):  # one request per connection, then close (no Connection: close)
                conn, _ = server.accept()
                with conn:
                    conn.recv(65536)
                    connections.append(n)
                    conn.sendall(answer)

        thread = threading.Thread(target=serve, daemon=True)
        thread.start()

        async def run() -> list[int]:
            async with Fetcher(user_agent=USER_AGENT, allow_private=True, timeout=5) as fetcher:
                first = await fetcher.fetch(f"http://127.0.0.1:{port}/feed.xml")
                await asyncio.sleep(0.2)  # the server has closed by now
                second = await fetcher.fetch(f"http://127.0.0.1:{port}/feed.xml")
                return [first.status, second.status]

        assert asyncio.run(run()) == [200, 200]
        thread.join(5)
    assert connections == [0, 1]


def test_https_is_verified_and_large_bodies_arrive_whole():
    """TLS on the fetcher's own connections: the certificate is checked
    against the host name, and a body far larger than the read buffer
    arrives complete over a kept-alive connection."""
    import http.server
    import ssl
    from pathlib import Path

    fixtures = Path(__file__).parent / "fixtures"
    body = FEED * (3_000_000 // len(FEED))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(fixtures / "tls-localhost.pem", fixtures / "tls-localhost.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"https://localhost:{server.server_address[1]}/feed.xml"

    async def run() -> list[int]:
        async with Fetcher(user_agent=USER_AGENT, allow_private=True, timeout=20) as fetcher:
            fetcher._ssl_context = ssl.create_default_context(cafile=fixtures / "tls-localhost.pem")
            results = [await fetcher.fetch(url) for _ in range(2)]
            assert all(result.content == body for result in results)
        async with Fetcher(user_agent=USER_AGENT, allow_private=True, timeout=20) as fetcher:
            with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
                await fetcher.fetch(url)  # the usual trust store does not know this certificate
        return [result.status for result in results]

    try:
        assert asyncio.run(run()) == [200, 200]
    finally:
        server.shutdown()
        server.server_close()


# --- HTTP errors are results ------------------------------------------------------


def test_404_is_a_result(feed_server):
    result = fetch(feed_server.url("/nothing-here.xml"))
    assert result.status == 404
    assert not result.ok
    assert result.content == b""


def test_410_gone_is_a_result(feed_server):
    feed_server.error("/gone.xml", 410, body="Gone")
    result = fetch(feed_server.url("/gone.xml"))
    assert result.status == 410
    assert result.content == b""


def test_500_is_a_result(feed_server):
    feed_server.error("/broken.xml", 500, body="Internal Server Error")
    result = fetch(feed_server.url("/broken.xml"))
    assert result.status == 500
    assert not result.ok


def test_429_keeps_retry_after(feed_server):
    feed_server.error("/busy.xml", 429, headers={"Retry-After": "120"})
    result = fetch(feed_server.url("/busy.xml"))
    assert result.status == 429
    assert result.headers["retry-after"] == "120"


def test_response_header_names_are_lower_case(feed_server):
    feed_server.serve("/feed.xml", FEED, headers={"Cache-Control": "max-age=600"})
    result = fetch(feed_server.url("/feed.xml"))
    assert result.headers["cache-control"] == "max-age=600"
    assert all(name == name.lower() for name in result.headers)


# --- size cap -----------------------------------------------------------------------


def test_plain_body_over_the_cap_raises(feed_server):
    feed_server.error("/big.xml", 200, body=b"x" * 5000)  # no Content-Encoding
    with pytest.raises(TooLargeError, match="cap"):
        fetch(feed_server.url("/big.xml"), max_bytes=1000)


def test_body_without_content_length_over_the_cap_raises():
    """No Content-Length to check up front: the cap must hold while reading."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]

        def answer() -> None:
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/rss+xml\r\n"
                             b"Connection: close\r\n\r\n" + b"x" * 50_000)

        thread = threading.Thread(target=answer, daemon=True)
        thread.start()
        with pytest.raises(TooLargeError):
            fetch(f"http://127.0.0.1:{port}/feed.xml", max_bytes=1000)
        thread.join(timeout=5)


def test_compressed_body_over_the_cap_raises(feed_server):
    """Small on the wire, too big once decoded: the cap is on the decoded size."""
    feed_server.serve("/big.xml", b"x" * 5000)
    with pytest.raises(TooLargeError):
        fetch(feed_server.url("/big.xml"), max_bytes=1000)


def test_body_at_the_cap_is_accepted(feed_server):
    feed_server.error("/exact.xml", 200, body=b"x" * 1000)
    assert len(fetch(feed_server.url("/exact.xml"), max_bytes=1000).content) == 1000


@pytest.mark.parametrize("coding", ["gzip", "br"])
def test_decompression_bomb_is_stopped_without_expanding(feed_server, coding):
    """50 MB of zeros compressed to a few KB: the fetcher must stop at the cap
    without ever holding the expanded body in memory."""
    zeros = b"\0" * 50_000_000
    bomb = gzip.compress(zeros) if coding == "gzip" else brotli.compress(zeros, quality=5)
    del zeros
    feed_server.error("/bomb.xml", 200, body=bomb, headers={"Content-Encoding": coding})

    tracemalloc.start()
    try:
        with pytest.raises(TooLargeError):
            fetch(feed_server.url("/bomb.xml"), max_bytes=1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 10_000_000, f"peak {peak:,} bytes while refusing a 50 MB bomb"


# --- time limits and connection failures ----------------------------------------------


def test_overall_deadline_stops_a_trickling_server(feed_server):
    """1 byte every 0.2 s never trips a per-read timeout, but 100 bytes would
    take 20 s: the overall deadline must cut it off."""
    feed_server.slow("/slow.xml", b"x" * 100, per_chunk_delay=0.2)
    started = time.monotonic()
    with pytest.raises(FetchError):
        fetch(feed_server.url("/slow.xml"), timeout=1.0)
    elapsed = time.monotonic() - started
    assert elapsed < 5, f"took {elapsed:.1f}s with a 1s deadline"


def test_no_first_byte_times_out(feed_server):
    feed_server.slow("/silent.xml", FEED, first_byte_delay=30)
    started = time.monotonic()
    with pytest.raises(FetchError):
        fetch(feed_server.url("/silent.xml"), timeout=0.5)
    assert time.monotonic() - started < 5


def test_connection_refused_raises_readable_fetch_error():
    port = closed_port()
    with pytest.raises(FetchError) as caught:
        fetch(f"http://127.0.0.1:{port}/feed.xml")
    message = str(caught.value)
    assert "127.0.0.1" in message
    assert "connect" in message.lower()
    assert "Traceback" not in message


def test_non_http_url_raises_fetch_error():
    with pytest.raises(FetchError, match="http"):
        fetch("file:///etc/passwd")


# --- private-address guard -------------------------------------------------------------


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]"])
def test_private_addresses_are_refused_before_connecting(feed_server, host):
    feed_server.serve("/feed.xml", FEED)
    port = feed_server.base_url.rsplit(":", 1)[1]
    with pytest.raises(BlockedAddressError, match="allow_private_networks"):
        fetch(f"http://{host}:{port}/feed.xml", allow_private=False)
    assert feed_server.requests == []


def test_loopback_is_allowed_when_the_operator_allows_it(feed_server):
    feed_server.serve("/feed.xml", FEED)
    assert fetch(feed_server.url("/feed.xml"), allow_private=True).status == 200


@pytest.mark.parametrize("address", [
    "127.0.0.1", "10.1.2.3", "172.16.0.1", "192.168.1.1", "169.254.169.254", "::1", "fe80::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "0.0.0.0", "100.64.0.1",
])
def test_non_public_addresses(address):
    assert is_public_address(address) is False


@pytest.mark.parametrize("address", ["8.8.8.8", "2606:4700:4700::1111"])
def test_public_addresses(address):
    assert is_public_address(address) is True


# --- politeness: per-host limit and spacing -------------------------------------


def fetch_together(url: str, times: int, **fetcher_options: object) -> None:
    async def run() -> None:
        async with Fetcher(user_agent="t", allow_private=True, **fetcher_options) as fetcher:
            await asyncio.gather(*(fetcher.fetch(url) for _ in range(times)))

    asyncio.run(run())


def test_requests_to_one_host_are_limited_and_spaced(feed_server):
    feed_server.slow("/slow.xml", FEED[:200], first_byte_delay=0.3, chunk_size=200)
    fetch_together(feed_server.url("/slow.xml"), 3, max_per_host=1, host_spacing=0.2)
    times = [r.time for r in feed_server.requests_for("/slow.xml")]
    assert len(times) == 3
    # one at a time: each starts after the previous 0.3 s response, never together
    assert all(b - a >= 0.28 for a, b in itertools.pairwise(times)), times


def test_host_spacing_holds_even_when_responses_are_fast(feed_server):
    feed_server.serve("/a.xml", FEED)
    fetch_together(feed_server.url("/a.xml"), 4, max_per_host=4, host_spacing=0.25)
    times = [r.time for r in feed_server.requests_for("/a.xml")]
    assert len(times) == 4
    assert all(b - a >= 0.2 for a, b in itertools.pairwise(times)), times
