"""A real, in-process HTTP server for feedhub's tests and benchmarks.

Why a real server instead of mocking httpx: the fetcher's interesting behaviour
(conditional GETs, redirects, content decoding, keep-alive, read timeouts and
overall deadlines) lives at the HTTP/socket level, and a mock transport would
happily "pass" code that breaks against real servers. This module uses only the
standard library so it works anywhere the tests run, binds 127.0.0.1 on an
ephemeral port so parallel test runs never collide, and shuts down within a
fraction of a second even while a deliberately slow response is in flight.

Typical use (see the ``feed_server`` fixture in ``conftest.py``)::

    with FeedServer() as server:
        server.serve("/a.xml", "<rss>...</rss>")
        httpx.get(server.url("/a.xml"))
        assert server.requests_for("/a.xml")[0].method == "GET"
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import re
import select
import socket
import socketserver
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate, parsedate_to_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any, Self

try:  # Optional: only used when the client advertises "br".
    import brotli as _brotli
except ImportError:  # pragma: no cover - depends on the environment
    _brotli = None

__all__ = ["FeedServer", "Request"]

DEFAULT_CONTENT_TYPE = "application/rss+xml; charset=utf-8"

# How often waits inside slow responses re-check "server stopping" and
# "client went away"; small enough that stop() and disconnects are prompt.
_POLL_INTERVAL = 0.02

# Entity tags inside If-None-Match, e.g. `"abc", W/"def"` or `*`.
_ETAG_RE = re.compile(r'(?:W/)?"[^"]*"|\*')

# A connection error means the client went away (or we are stopping): that is
# expected in timeout/deadline tests and must not spam stderr.
_QUIET_ERRORS = (ConnectionError, TimeoutError, socket.timeout)


@dataclass(frozen=True)
class Request:
    """One request as the server saw it, so tests can assert on what was sent.

    ``path`` is the raw request target including any query string; header
    names are lower-cased so lookups don't depend on the client's casing
    (repeated headers are joined with ", "). ``time`` is ``time.monotonic()``
    at receipt, which lets tests check ordering, spacing and rate limiting.
    """

    method: str
    path: str
    headers: dict[str, str]
    time: float
    body: bytes = b""  # what a POST sent (see ``receive_posts``)


@dataclass(frozen=True)
class _Static:
    body: bytes
    content_type: str
    headers: dict[str, str]
    etag: bool
    last_modified: bool
    status: int
    modified: int  # epoch seconds of the fake clock when the bytes last changed
    _encoded: dict[str, bytes] = field(default_factory=dict, compare=False)

    def encoded(self, coding: str) -> bytes:
        """Return the body in ``coding``, cached because benchmarks hit it hard."""
        data = self._encoded.get(coding)
        if data is None:
            if coding == "gzip":
                data = gzip.compress(self.body, mtime=0)
            elif coding == "br" and _brotli is not None:
                data = _brotli.compress(self.body)
            else:
                data = self.body
            self._encoded[coding] = data
        return data


@dataclass(frozen=True)
class _Redirect:
    to: str
    status: int


@dataclass(frozen=True)
class _Error:
    status: int
    body: bytes
    headers: dict[str, str | Callable[[], str]]
    delay: float | Callable[[], float] = 0.0


@dataclass(frozen=True)
class _Slow:
    body: bytes
    first_byte_delay: float
    per_chunk_delay: float
    chunk_size: int
    content_type: str


@dataclass(frozen=True)
class _Post:
    statuses: tuple[int, ...]  # answered in turn; the last one repeats
    headers: dict[str, str]
    delay: float
    body: bytes  # sent with error statuses (a hub saying why)


_Route = _Static | _Redirect | _Error | _Slow | _Post


def _to_bytes(body: bytes | str) -> bytes:
    return body.encode("utf-8") if isinstance(body, str) else bytes(body)


def _split_query(target: str) -> str:
    return target.split("?", 1)[0]


def _accepted_codings(accept_encoding: str) -> dict[str, float]:
    """Parse Accept-Encoding into {coding: q}; q=0 means "explicitly refused"."""
    codings: dict[str, float] = {}
    for part in accept_encoding.split(","):
        name, _, params = part.strip().partition(";")
        name = name.strip().lower()
        if not name:
            continue
        q = 1.0
        for param in params.split(";"):
            key, _, value = param.strip().partition("=")
            if key.strip().lower() == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
        codings[name] = q
    return codings


def _choose_coding(accept_encoding: str | None) -> str | None:
    """Pick br (smaller, so preferred) or gzip, honouring q-values and ``*``."""
    if not accept_encoding:
        return None
    codings = _accepted_codings(accept_encoding)

    def accepts(name: str) -> bool:
        return codings.get(name, codings.get("*", 0.0)) > 0

    if _brotli is not None and accepts("br"):
        return "br"
    if accepts("gzip"):
        return "gzip"
    return None


def _parse_http_date(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return parsedate_to_datetime(value).timestamp()
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _merge_headers(defaults: dict[str, str], extra: dict[str, str] | None) -> dict[str, str]:
    """Overlay ``extra`` on ``defaults`` case-insensitively.

    Letting extra headers replace the defaults means tests can serve e.g. a weak
    ETag or a hand-picked Last-Modified without another API knob.
    """
    merged = dict(defaults)
    for name, value in (extra or {}).items():
        for existing in [k for k in merged if k.lower() == name.lower()]:
            del merged[existing]
        merged[name] = value
    return merged


def _header(headers: dict[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


class _Handler(BaseHTTPRequestHandler):
    """Per-connection handler: looks up the route and answers it."""

    # HTTP/1.1 + exact Content-Length everywhere, so keep-alive pools are exercised.
    protocol_version = "HTTP/1.1"
    # Slow responses write tiny chunks; Nagle + delayed ACKs would add ~40 ms
    # per chunk on loopback and distort timing tests.
    disable_nagle_algorithm = True
    server: _HTTPServer

    # -- plumbing ---------------------------------------------------------

    def setup(self) -> None:
        super().setup()
        self.server.feed._register_connection(self.connection)

    def finish(self) -> None:
        try:
            super().finish()
        except _QUIET_ERRORS:
            pass
        finally:
            self.server.feed._unregister_connection(self.connection)

    def log_message(self, format: str, *args: Any) -> None:
        """Stay quiet: a line per request on stderr drowns pytest output."""

    def do_GET(self) -> None:
        self._dispatch()

    def do_HEAD(self) -> None:
        self._dispatch()

    def _not_allowed(self) -> None:
        self._record()
        self._send_simple(405, b"", {"Allow": "GET, HEAD"})

    do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _not_allowed

    def do_POST(self) -> None:
        """Only a ``receive_posts`` route takes a POST; elsewhere 405 as before."""
        route = self.server.feed._lookup(self.path)
        if not isinstance(route, _Post):
            self._not_allowed()
            return
        length = self.headers.get("Content-Length", "0")
        self._record(self.rfile.read(int(length)) if length.isdigit() else b"")
        status = self.server.feed._next_status(self.path, route)
        if route.delay > 0:
            self._peer_sent_data = False
            self.close_connection = True
            if not self._pause(route.delay):
                return
        body = route.body if status >= 300 else b""
        headers = dict(route.headers)
        if route.delay > 0:
            headers["Connection"] = "close"  # as a held GET answer says: no next request on it
        if body:
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        if status not in (204, 304):  # those never carry a body, nor its length
            headers["Content-Length"] = str(len(body))
        try:
            self._write_head(status, headers)
            if body:
                self.wfile.write(body)
        except _QUIET_ERRORS:
            return

    def _record(self, body: bytes = b"") -> None:
        headers: dict[str, str] = {}
        for name, value in self.headers.items():
            key = name.lower()
            headers[key] = f"{headers[key]}, {value}" if key in headers else value
        self.server.feed._record(Request(self.command, self.path, headers, time.monotonic(), body))

    def _dispatch(self) -> None:
        self._record()
        route = self.server.feed._lookup(self.path)
        if route is None:
            self._send_simple(404, b"Not Found", {"Content-Type": "text/plain; charset=utf-8"})
        elif isinstance(route, _Static):
            self._send_static(route)
        elif isinstance(route, _Redirect):
            self._send_simple(route.status, b"", {"Location": route.to})
        elif isinstance(route, _Error):
            self._send_error(route)
        elif isinstance(route, _Post):
            self._send_simple(405, b"", {"Allow": "POST"})
        else:
            self._send_slow(route)

    def _write_head(self, status: int, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()

    def _send_simple(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self._write_head(status, {**headers, "Content-Length": str(len(body))})
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def _send_error(self, route: _Error) -> None:
        delay = route.delay() if callable(route.delay) else route.delay
        # callables are asked as the answer goes out (a date relative to it)
        headers = {name: value for name, value in route.headers.items() if not callable(value)}
        if delay > 0:
            self._peer_sent_data = False
            self.close_connection = True  # an answer held back may be cut short
            if not self._pause(delay):
                return
            headers["Connection"] = "close"  # said too: no next request on this one
        headers.update({name: value() for name, value in route.headers.items() if callable(value)})
        defaults = {"Content-Type": "text/plain; charset=utf-8"} if route.body else {}
        try:
            self._send_simple(route.status, route.body, _merge_headers(defaults, headers))
        except _QUIET_ERRORS:
            return

    # -- static routes ----------------------------------------------------

    def _not_modified(self, etag: str | None, last_modified: str | None) -> bool:
        if_none_match = self.headers.get("If-None-Match")
        if if_none_match is not None:
            # RFC 9110: If-None-Match uses weak comparison and, when present,
            # If-Modified-Since must be ignored.
            if etag is None:
                return False
            ours = etag.removeprefix("W/")
            for tag in _ETAG_RE.findall(if_none_match):
                if tag == "*" or tag.removeprefix("W/") == ours:
                    return True
            return False
        since = _parse_http_date(self.headers.get("If-Modified-Since"))
        modified = _parse_http_date(last_modified)
        return since is not None and modified is not None and since >= modified

    def _send_static(self, route: _Static) -> None:
        defaults = {"Content-Type": route.content_type, "Vary": "Accept-Encoding"}
        if route.etag:
            defaults["ETag"] = f'"{hashlib.sha1(route.body).hexdigest()}"'
        if route.last_modified:
            defaults["Last-Modified"] = formatdate(route.modified, usegmt=True)
        headers = _merge_headers(defaults, route.headers)

        if route.status == 200 and self._not_modified(
            _header(headers, "etag"), _header(headers, "last-modified")
        ):
            # 304 carries the validators but no body (and no Content-Length).
            keep = {"etag", "last-modified", "vary", "cache-control", "expires"}
            self._write_head(304, {k: v for k, v in headers.items() if k.lower() in keep})
            return

        coding = _choose_coding(self.headers.get("Accept-Encoding"))
        body = route.encoded(coding) if coding else route.body
        if coding:
            headers["Content-Encoding"] = coding
        headers["Content-Length"] = str(len(body))
        self._write_head(route.status, headers)
        if self.command != "HEAD":
            self.wfile.write(body)

    # -- slow routes ------------------------------------------------------

    def _client_gone(self) -> bool:
        """True if the peer closed the connection (readable + EOF on peek)."""
        if self._peer_sent_data:
            return False
        try:
            readable, _, _ = select.select([self.connection], [], [], 0)
            if not readable:
                return False
            if self.connection.recv(1, socket.MSG_PEEK):
                # Pipelined bytes, not EOF: stop checking so we don't spin.
                self._peer_sent_data = True
                return False
            return True
        except (OSError, ValueError):
            return True

    def _pause(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; False means abort (stopping or client gone)."""
        stopping = self.server.feed._stopping
        deadline = time.monotonic() + seconds
        while True:
            if stopping.is_set() or self._client_gone():
                return False
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return True
            if stopping.wait(min(remaining, _POLL_INTERVAL)):
                return False

    def _send_slow(self, route: _Slow) -> None:
        self._peer_sent_data = False
        # Whatever happens, don't reuse a connection whose response may be cut short.
        self.close_connection = True
        try:
            if not self._pause(route.first_byte_delay):
                return
            self._write_head(
                200,
                {
                    "Content-Type": route.content_type,
                    "Content-Length": str(len(route.body)),
                },
            )
            if self.command == "HEAD":
                return
            body, size = route.body, route.chunk_size
            for start in range(0, len(body), size):
                if start and route.per_chunk_delay > 0 and not self._pause(route.per_chunk_delay):
                    return
                if self.server.feed._stopping.is_set():
                    return
                self.wfile.write(body[start : start + size])
        except _QUIET_ERRORS:
            return


class _HTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer tuned for tests: daemon threads, no DNS, quiet errors."""

    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128  # benchmarks open many connections at once

    def __init__(self, feed: FeedServer) -> None:
        self.feed = feed
        super().__init__(("127.0.0.1", 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls socket.getfqdn(), a reverse-DNS lookup
        # that can take seconds in sandboxes; we know the name already.
        socketserver.TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def handle_error(self, request: Any, client_address: Any) -> None:
        exc = sys.exc_info()[1]
        if isinstance(exc, _QUIET_ERRORS) or (
            isinstance(exc, OSError) and self.feed._stopping.is_set()
        ):
            return
        super().handle_error(request, client_address)


class FeedServer:
    """A scriptable HTTP server on 127.0.0.1 for exercising feed fetching.

    Routes are registered at runtime (``serve``, ``redirect``, ``error``,
    ``slow``; ``receive_posts`` for POSTs) and can be replaced or removed
    while the server runs, so a test can simulate a feed changing, moving or
    dying between fetches. Every request is logged in ``requests`` so tests
    can assert on what the client actually sent (conditional headers,
    User-Agent, request spacing, a POST's body...).
    """

    def __init__(self) -> None:
        """Bind immediately (port 0) so ``base_url`` is known before ``start()``."""
        self._lock = threading.Lock()
        self._routes: dict[str, _Route] = {}
        self._connections: set[socket.socket] = set()
        # A fake clock for Last-Modified: starts a day in the past (so dates are
        # never in the future) and advances 1 s per body change, which keeps
        # Last-Modified strictly increasing even for changes within one second.
        self._clock = int(time.time()) - 86400
        self._stopping = threading.Event()
        self.requests: list[Request] = []
        self._posts_answered: dict[str, int] = {}
        self._httpd = _HTTPServer(self)
        host, port = self._httpd.server_address[:2]
        self.base_url: str = f"http://{host}:{port}"
        self._thread: threading.Thread | None = None
        self._stopped = False

    # -- lifecycle ----------------------------------------------------------

    def start(self) -> Self:
        """Start serving on a daemon thread (returns self for chaining)."""
        if self._stopped:
            raise RuntimeError("FeedServer cannot be restarted after stop()")
        if self._thread is None:
            self._thread = threading.Thread(
                target=self._httpd.serve_forever,
                kwargs={"poll_interval": 0.05},
                name=f"FeedServer {self.base_url}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop promptly, even mid-response: a hung test server must not hang CI.

        Sets the stopping flag (slow responses poll it), stops the accept loop,
        shuts down every open connection (idle keep-alive ones included, so
        their handler threads exit) and closes the listening socket.
        Idempotent.
        """
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        if self._thread is not None:
            self._httpd.shutdown()  # only safe if serve_forever is running
        with self._lock:
            connections = list(self._connections)
        for conn in connections:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=1.0)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def url(self, path: str) -> str:
        """Absolute URL for ``path`` (which should start with "/")."""
        return self.base_url + path

    # -- routes ---------------------------------------------------------------

    def serve(
        self,
        path: str,
        body: bytes | str,
        *,
        content_type: str = DEFAULT_CONTENT_TYPE,
        headers: dict[str, str] | None = None,
        etag: bool = True,
        last_modified: bool = True,
        status: int = 200,
    ) -> None:
        """Register (or replace) a static response at ``path``.

        Behaves like a well-behaved feed host so conditional-GET and decoding
        logic can be tested: strong ETag (quoted sha1 of the body), a
        Last-Modified that only moves when the bytes change, 304 on a matching
        If-None-Match (or, absent that header, If-Modified-Since >=
        Last-Modified; 304s only apply when ``status`` is 200), and br/gzip
        encoding when the client accepts it. ``headers`` are sent as given and
        replace same-named defaults (the replaced ETag/Last-Modified is then
        what conditional requests are checked against).
        """
        data = _to_bytes(body)
        with self._lock:
            previous = self._routes.get(path)
            if isinstance(previous, _Static) and previous.body == data:
                modified = previous.modified
            else:
                self._clock += 1
                modified = self._clock
            self._routes[path] = _Static(
                body=data,
                content_type=content_type,
                headers=dict(headers or {}),
                etag=etag,
                last_modified=last_modified,
                status=status,
                modified=modified,
            )

    def redirect(self, path: str, to: str, status: int = 301) -> None:
        """Redirect ``path`` to ``to`` (a path or a full URL).

        The Location header is sent exactly as given, so a path also checks
        that the client resolves relative redirects against the request URL.
        """
        self._set(path, _Redirect(to=to, status=status))

    def error(
        self,
        path: str,
        status: int,
        *,
        body: bytes | str = b"",
        headers: dict[str, str | Callable[[], str]] | None = None,
        delay: float | Callable[[], float] = 0.0,
    ) -> None:
        """Answer ``path`` with an error status, e.g. 410 or 429 + Retry-After.

        ``delay`` (seconds, or a callable returning them, asked per request)
        holds the answer back: a slow server. A header value may be a
        callable, asked as the answer goes out: e.g. a Retry-After date
        counted from the moment of answering.
        """
        self._set(
            path,
            _Error(status=status, body=_to_bytes(body), headers=dict(headers or {}),
                   delay=delay),
        )

    def slow(
        self,
        path: str,
        body: bytes | str,
        *,
        first_byte_delay: float = 0.0,
        per_chunk_delay: float = 0.0,
        chunk_size: int = 1,
        content_type: str = "application/rss+xml",
    ) -> None:
        """Answer ``path`` slowly, to test read timeouts and overall deadlines.

        Headers (with the full Content-Length) are sent after
        ``first_byte_delay``; then the body goes out ``chunk_size`` bytes at a
        time with ``per_chunk_delay`` between chunks. The response is
        abandoned as soon as the client disconnects or the server stops.
        """
        if chunk_size < 1:
            raise ValueError("chunk_size must be >= 1")
        self._set(
            path,
            _Slow(
                body=_to_bytes(body),
                first_byte_delay=first_byte_delay,
                per_chunk_delay=per_chunk_delay,
                chunk_size=chunk_size,
                content_type=content_type,
            ),
        )

    def receive_posts(
        self,
        path: str,
        *statuses: int,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
        body: bytes | str = b"",
    ) -> None:
        """Take POSTs at ``path`` (a WebSub hub stand-in): each is logged in
        ``requests`` with its body, and answered with ``statuses`` in turn,
        the last one repeating (default 202), with ``headers`` (e.g.
        Retry-After) and, for a status from 300 up, ``body`` (the hub's
        reason). ``delay`` holds every answer that long (a hub that hangs);
        it is abandoned when the client goes away or the server stops.
        Registering the path again starts the statuses over."""
        with self._lock:
            self._routes[path] = _Post(statuses=statuses or (202,), headers=dict(headers or {}),
                                       delay=delay, body=_to_bytes(body))
            self._posts_answered[path] = 0

    def _next_status(self, path: str, route: _Post) -> int:
        with self._lock:
            key = path if path in self._posts_answered else _split_query(path)
            count = self._posts_answered.get(key, 0)
            self._posts_answered[key] = count + 1
        return route.statuses[min(count, len(route.statuses) - 1)]

    def remove(self, path: str) -> None:
        """Forget ``path`` so it answers 404 (a no-op if it was never registered)."""
        with self._lock:
            self._routes.pop(path, None)

    def _set(self, path: str, route: _Route) -> None:
        with self._lock:
            self._routes[path] = route

    def _lookup(self, target: str) -> _Route | None:
        """Route for a request target: exact match first, then without the query.

        So a route registered with a query string only matches that query, and
        one registered without a query matches any query on that path.
        """
        with self._lock:
            route = self._routes.get(target)
            if route is None and "?" in target:
                route = self._routes.get(_split_query(target))
            return route

    # -- request log ----------------------------------------------------------

    def _record(self, request: Request) -> None:
        """Append to the request log (called from handler threads)."""
        with self._lock:
            self.requests.append(request)

    def requests_for(self, path: str) -> list[Request]:
        """Logged requests for ``path``, in order.

        A ``path`` containing "?" must match the request target exactly;
        otherwise the query string of logged requests is ignored.
        """
        with self._lock:
            snapshot = list(self.requests)
        if "?" in path:
            return [r for r in snapshot if r.path == path]
        return [r for r in snapshot if _split_query(r.path) == path]

    def clear_requests(self) -> None:
        """Empty the log in place, e.g. between the priming and the real fetch."""
        with self._lock:
            self.requests.clear()

    # -- connection tracking (used by stop()) -------------------------------

    def _register_connection(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.add(conn)

    def _unregister_connection(self, conn: socket.socket) -> None:
        with self._lock:
            self._connections.discard(conn)
