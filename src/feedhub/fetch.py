"""The only module that speaks HTTP.

httpx clients (a small one per host) with the manners a site owner expects
from a poller: conditional GET, compression, a User-Agent with a contact,
bounded concurrency overall and per host, an overall deadline per request
(httpx only has per-read timeouts), a cap on the body size that holds also
for compressed bodies, and no connections to private addresses unless the
operator allows them. Under httpcore's pool the connections are asyncio
transports of this module's own (_Stream), not anyio's: a round of 304s
is mostly bookkeeping, and anyio's was the larger part of it.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import ipaddress
import re
import socket
import ssl
import time
import zlib
from collections import OrderedDict, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from datetime import UTC, datetime
from http import HTTPStatus
from types import TracebackType
from typing import Any, Protocol, cast
from urllib.parse import quote, urlsplit

import httpcore
import httpx
from isal import isal_zlib

from feedhub.models import FetchResult, Validators

try:  # httpx[brotli] installs it; without it we just do not advertise br.
    import brotli
except ImportError:  # pragma: no cover
    brotli = None

ACCEPT = (
    "application/atom+xml, application/rss+xml, application/feed+json, application/rdf+xml;q=0.9, "
    "application/xml;q=0.8, text/xml;q=0.8, application/json;q=0.8, */*;q=0.5"
)
MAX_REDIRECTS = 5
MAX_IDLE_CLIENTS = 256  # per-host HTTP clients kept open for reuse
_READ_BUFFER = 256 * 1024  # bytes a connection buffers before it stops reading


class FetchError(Exception):
    """A request that produced no HTTP response: the message says why, in
    words an operator can act on."""


class BlockedAddressError(FetchError):
    pass


class InvalidURLError(FetchError):
    """A URL no request can be made to (not http(s), no host, a host or port
    the HTTP client rejects): asking again never helps."""

    def __init__(self, url: str, reason: str, *, redirected_from: str | None = None):
        self.url = url
        self.reason = reason
        where = f" (a redirect from {_shorten(redirected_from)})" if redirected_from else ""
        super().__init__(f"invalid URL {_shorten(url)}{where}: {reason}")


# WHATWG's forbidden domain code points: a name holding one is never resolved
_NOT_IN_HOST = re.compile(r"[\x00-\x20#%/:<>?@\[\\\]^|\x7f]")


def url_problem(url: str) -> str | None:
    """Why no request can be made to `url`, or None. The one rule for what
    config.toml may hold, for `add`, and for every request and redirect hop:
    a URL it accepts cannot fail inside the HTTP client, only on the network.
    httpx refuses some hosts (`0177.0.0.1`: "Invalid IPv4 address"); others
    it takes but the connection cannot (port 99999, an empty or over-long
    DNS label)."""
    if not isinstance(url, str):
        return f"not a string but {type(url).__name__}"
    try:
        parsed = httpx.URL(url)
        scheme, host, port = parsed.scheme, parsed.host, parsed.port  # .host decodes IDNA
    except (httpx.InvalidURL, ValueError) as exc:  # idna's errors are ValueErrors
        return str(exc).rstrip(".") or type(exc).__name__
    if not scheme:
        return "not an absolute URL: it must start with http:// or https://"
    if scheme not in ("http", "https"):
        return f"the scheme is {scheme!r}, not http or https"
    if not host:
        return "no host"
    if port is not None and not 0 < port < 65536:
        return f"port {port} is out of range 1-65535"
    host = parsed.raw_host.decode("ascii")
    if ":" not in host:  # not an IPv6 literal: the resolver gets it as a name
        if bad := _NOT_IN_HOST.search(host):  # httpx percent-encodes a space: "exa%20mple"
            return f"the host name {host!r} holds {bad.group()!r}, which no host name may"
        try:
            host.encode("idna")
        except UnicodeError:
            return f"the host name {host!r} has an empty or over-long label"
    try:
        _ = urlsplit(url).port  # as the other stages read links: no surprise there
    except ValueError as exc:
        return str(exc)
    return None


def check_url(url: str, *, redirected_from: str | None = None) -> httpx.URL:
    """`url` as the client will request it; InvalidURLError if it cannot be."""
    checked = (_checked(url) if isinstance(url, str) and len(url) <= _CACHED_URL_LENGTH
               else url_problem(url) or httpx.URL(url))
    if isinstance(checked, str):
        raise InvalidURLError(url, checked, redirected_from=redirected_from)
    return checked


_CACHED_URL_LENGTH = 2048  # longer URLs (rare, perhaps hostile) are checked each time


@functools.lru_cache(maxsize=4096)
def _checked(url: str) -> httpx.URL | str:
    """check_url's work, remembered: every poll checks its URL twice (before
    the request and in the redirect hook) and httpx parses it once more, the
    same 1,000 URLs each round. An httpx.URL is immutable."""
    return url_problem(url) or httpx.URL(url)


def _shorten(url: str, limit: int = 200) -> str:
    """A URL for a message: quoted, and cut when a hostile one is huge."""
    return repr(url if len(url) <= limit else url[:limit] + "…")


async def _check_hop(request: httpx.Request) -> None:
    """httpx's request hook, run for every hop of a redirect chain: a server
    can send a Location no request can be made to."""
    check_url(str(request.url))


def header_safe(value: str) -> str:
    """A header value that httpx can send: it encodes headers as ASCII and
    fails on anything else (a non-ASCII contact URL in the User-Agent)."""
    return quote(value, safe="".join(chr(c) for c in range(0x20, 0x7F)))


class TooLargeError(FetchError):
    pass


def is_public_address(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


class _Protocol(asyncio.Protocol):
    """Buffers what a connection receives until httpcore reads it."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self.transport: asyncio.Transport | None = None
        self.buffer = bytearray()
        self.eof = False
        self.error: BaseException | None = None
        self.paused = False  # reading paused: the buffer is full
        self._reader: asyncio.Future[None] | None = None
        self._writable: asyncio.Future[None] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if len(self.buffer) > _READ_BUFFER and not self.paused and self.transport is not None:
            self.paused = True
            self.transport.pause_reading()
        self._wake_reader()

    def eof_received(self) -> bool:
        self.eof = True
        self._wake_reader()
        return False  # close the transport

    def connection_lost(self, exc: Exception | None) -> None:
        self.eof = True
        self.error = exc
        self._wake_reader()
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def pause_writing(self) -> None:
        if self._writable is None or self._writable.done():
            self._writable = self._loop.create_future()

    def resume_writing(self) -> None:
        if self._writable is not None and not self._writable.done():
            self._writable.set_result(None)

    def _wake_reader(self) -> None:
        if self._reader is not None and not self._reader.done():
            self._reader.set_result(None)

    async def wait_readable(self, timeout: float | None) -> None:
        self._reader = self._loop.create_future()
        await _wait(self._reader, timeout)

    async def wait_writable(self, timeout: float | None) -> None:
        if self._writable is not None and not self._writable.done():
            await _wait(asyncio.shield(self._writable), timeout)


async def _wait(future: asyncio.Future[None], timeout: float | None) -> None:
    """Await `future` at most `timeout` seconds (TimeoutError): one timer
    handle, not a cancel scope per read as anyio's fail_after."""
    if timeout is None:
        await future
        return

    def expire() -> None:
        if not future.done():
            future.set_exception(TimeoutError())

    timer = asyncio.get_running_loop().call_later(timeout, expire)
    try:
        await future
    finally:
        timer.cancel()


class _Stream(httpcore.AsyncNetworkStream):
    """A TCP (or TLS) connection on asyncio's own transport and a small
    protocol, for httpcore. In place of httpcore's anyio stream, whose every
    read and write opens an anyio cancel scope, and whose idle check (run
    for every connection of the pool on every request) looks the socket up
    through anyio's typed attributes: at 1,000 polls a round this
    bookkeeping cost more than the requests."""

    def __init__(self, transport: asyncio.Transport, protocol: _Protocol):
        self._transport = transport
        self._protocol = protocol

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        protocol = self._protocol
        if not protocol.buffer and not protocol.eof:
            try:
                await protocol.wait_readable(timeout)
            except TimeoutError:
                raise httpcore.ReadTimeout("timed out reading the response") from None
        if not protocol.buffer:
            if protocol.error is not None:
                raise httpcore.ReadError(str(protocol.error) or type(protocol.error).__name__)
            return b""
        data = bytes(protocol.buffer[:max_bytes])
        del protocol.buffer[:max_bytes]
        if protocol.paused and len(protocol.buffer) <= _READ_BUFFER // 2 and protocol.transport:
            protocol.paused = False
            protocol.transport.resume_reading()
        return data

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        if not buffer:
            return
        if self._transport.is_closing():
            raise httpcore.WriteError("the connection is closed")
        try:
            self._transport.write(buffer)
        except (OSError, RuntimeError) as exc:
            raise httpcore.WriteError(str(exc)) from None
        try:
            await self._protocol.wait_writable(timeout)
        except TimeoutError:
            raise httpcore.WriteTimeout("timed out sending the request") from None

    async def aclose(self) -> None:
        self._transport.close()

    async def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                        timeout: float | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            transport = await loop.start_tls(
                self._transport, self._protocol, ssl_context, server_side=False,
                server_hostname=server_hostname, ssl_handshake_timeout=timeout)
        except TimeoutError:
            self._transport.close()
            raise httpcore.ConnectTimeout("timed out in the TLS handshake") from None
        except (OSError, ssl.SSLError, ConnectionError) as exc:
            self._transport.close()
            raise httpcore.ConnectError(str(exc) or type(exc).__name__) from None
        if transport is None:
            raise httpcore.ConnectError("the connection closed during the TLS handshake")
        self._protocol.transport = transport  # pause and resume reading on the TLS layer
        return _Stream(transport, self._protocol)

    def get_extra_info(self, info: str) -> Any:
        if info == "is_readable":
            # The loop reads eagerly: a server's close (or unexpected bytes on
            # an idle connection) shows here, not on the socket.
            return bool(self._protocol.buffer) or self._protocol.eof or self._transport.is_closing()
        name = {"ssl_object": "ssl_object", "client_addr": "sockname",
                "server_addr": "peername", "socket": "socket"}.get(info)
        return None if name is None else self._transport.get_extra_info(name)


async def _connect(address: str, port: int, timeout: float | None,
                   local_address: str | None, socket_options: Iterable[Any] | None) -> _Stream:
    loop = asyncio.get_running_loop()
    protocol = _Protocol(loop)
    try:
        async with asyncio.timeout(timeout):
            transport, _ = await loop.create_connection(
                lambda: protocol, address, port,
                local_addr=(local_address, 0) if local_address else None)
    except TimeoutError:
        raise httpcore.ConnectTimeout(f"timed out connecting to port {port} of {address}") from None
    except OSError as exc:
        raise httpcore.ConnectError(exc.strerror or str(exc)) from None
    sock = transport.get_extra_info("socket")
    for option in socket_options or ():
        sock.setsockopt(*option)
    return _Stream(transport, protocol)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    """Resolves the host itself and connects to an address it has checked,
    so that a name cannot be re-resolved to a private address between the
    check and the connection. TLS still verifies the host name, because
    httpcore passes the original host to start_tls."""

    def __init__(self, allow_private: bool):
        self._allow_private = allow_private

    async def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                          local_address: str | None = None,
                          socket_options: Iterable[Any] | None = None) -> httpcore.AsyncNetworkStream:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            raise httpcore.ConnectError(f"cannot resolve {host}: {exc.strerror}") from None
        except (UnicodeError, ValueError, OverflowError) as exc:  # a name no resolver takes
            raise httpcore.ConnectError(f"cannot resolve {host!r}: {exc}") from None
        # an AF_INET or AF_INET6 sockaddr starts with the address as a string (typeshed
        # types sockaddr for every family, some of which start with an int)
        addresses = list(dict.fromkeys(cast(str, info[4][0]) for info in infos))
        if not self._allow_private:
            blocked = [a for a in addresses if not is_public_address(a)]
            if blocked:
                raise BlockedAddressError(
                    f"refused: {host} resolves to non-public address {blocked[0]} "
                    "(set allow_private_networks = true in [hub] to allow)"
                )
        last_error: Exception | None = None
        for address in addresses:
            try:
                return await _connect(address, port, timeout, local_address, socket_options)
            except httpcore.ConnectError as exc:
                last_error = httpcore.ConnectError(f"port {port} of {address}: {exc}")
        raise last_error or httpcore.ConnectError(f"no address for {host}")

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


# isal's stubs call its error an instance of Exception; it is a class
_INFLATE_ERROR = cast("type[Exception]", isal_zlib.error)


class _BoundedDecoder:
    """Decodes a Content-Encoding while refusing to produce more than `limit`
    bytes: a small gzip or brotli body must not expand to gigabytes."""

    def __init__(self, encoding: str, limit: int):
        self.limit = limit
        self.produced = 0
        encoding = encoding.strip().lower()
        if encoding in ("", "identity"):
            self._decode = lambda data, budget: data
        elif encoding in ("gzip", "x-gzip"):
            # ISA-L's inflate (a dependency for the .gz copies already): the
            # same bytes as zlib's, in a third of the time (0.10 s against
            # 0.28 s of CPU for the bench's 1,000 bodies, 94 MB)
            self._zlib = isal_zlib.decompressobj(16 + zlib.MAX_WBITS)
            self._decode = lambda data, budget: self._zlib.decompress(data, budget)
        elif encoding == "deflate":
            self._zlib = isal_zlib.decompressobj()
            self._decode = self._deflate
        elif encoding == "br" and brotli is not None:
            self._brotli = brotli.Decompressor()
            self._decode = lambda data, budget: self._brotli.process(
                data, output_buffer_limit=budget
            )
        else:
            raise FetchError(f"server sent an unsupported Content-Encoding: {encoding!r}")

    def _deflate(self, data: bytes, budget: int) -> bytes:
        first = self.produced == 0 and not self._zlib.unconsumed_tail
        try:
            return self._zlib.decompress(data, budget)
        except _INFLATE_ERROR:
            if not first:
                raise
            # some servers send raw deflate without the zlib header
            self._zlib = isal_zlib.decompressobj(-zlib.MAX_WBITS)
            return self._zlib.decompress(data, budget)

    def finish(self) -> None:
        """A compressed body that stops before its end is a broken response,
        not a short feed."""
        complete = True
        if hasattr(self, "_zlib"):
            complete = self._zlib.eof
        elif hasattr(self, "_brotli"):
            complete = self._brotli.is_finished()
        if not complete:
            raise FetchError("the compressed response ended early (truncated body)")

    def feed(self, data: bytes) -> bytes:
        budget = self.limit - self.produced + 1
        try:
            out = self._decode(data, budget)
        except Exception as exc:  # zlib's, ISA-L's or brotli's error
            if isinstance(exc, FetchError):
                raise
            raise FetchError(f"cannot decompress the response: {exc}") from None
        self.produced += len(out)
        if self.produced > self.limit:
            raise TooLargeError(f"response larger than the {self.limit:,}-byte cap (decompressed)")
        return out


class _Cookies(httpx.Cookies):
    """httpx's cookie jar, which it asks on every response: wrapping the
    response for http.cookiejar costs more than a 304's parsing, so only a
    response that sets a cookie is shown to the jar."""

    def extract_cookies(self, response: httpx.Response) -> None:
        if "set-cookie" in response.headers:
            super().extract_cookies(response)


class HostGate(Protocol):
    """What a GET waits for before it starts: one of the host's
    `max_per_host` slots, held until the response is read, and its turn
    `host_spacing` after the previous start to that host. LocalGate keeps
    them in this process; a cluster's gate (feedhub.hub.ClusterGate) keeps
    them in the shared database, so they hold whichever daemons poll."""

    def slot(self, host: str) -> contextlib.AbstractAsyncContextManager[None]: ...


class LocalGate:
    """The gate of one process: a semaphore per host, and each request's
    start booked `host_spacing` after the host's previous one."""

    def __init__(self, max_per_host: int = 2, host_spacing: float = 0.0):
        self._per_host: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(max_per_host))
        self.host_spacing = host_spacing
        self._host_next_start: dict[str, float] = {}

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        async with self._per_host[host]:
            await self._space(host)
            yield

    async def _space(self, host: str) -> None:
        """Start requests to one host at least `host_spacing` apart: each
        caller books the next free slot, then sleeps until it."""
        if self.host_spacing <= 0:
            return
        now = time.monotonic()
        slot = max(now, self._host_next_start.get(host, now))
        self._host_next_start[host] = slot + self.host_spacing
        if slot > now:
            await asyncio.sleep(slot - now)


class Fetcher:
    """Use as `async with Fetcher(...) as fetcher: await fetcher.fetch(url)`.
    `gate`: what a GET waits for per host (default: a LocalGate of
    max_per_host and host_spacing)."""

    def __init__(self, *, user_agent: str, timeout: float = 30.0,
                 max_bytes: int = 10 * 1024 * 1024, allow_private: bool = False,
                 max_connections: int = 10, max_per_host: int = 2, host_spacing: float = 0.0,
                 gate: HostGate | None = None):
        self.user_agent = header_safe(user_agent)
        self.timeout = timeout
        self.max_bytes = max_bytes
        self._allow_private = allow_private
        self._overall = asyncio.Semaphore(max_connections)
        # WebSub pings' own slots (post_form), always this process's
        self._per_host: defaultdict[str, asyncio.Semaphore] = defaultdict(
            lambda: asyncio.Semaphore(max_per_host)
        )
        self.gate: HostGate = gate or LocalGate(max_per_host, host_spacing)
        self._closing: set[asyncio.Future[None]] = set()
        self._active: defaultdict[str, int] = defaultdict(int)  # requests in flight per host
        self._ssl_context = httpx.create_ssl_context()
        self._backend = _GuardedBackend(allow_private)
        self._max_per_host = max_per_host
        # One small client per host, most recently used last. httpcore's pool
        # scans every connection for every request, so its CPU cost grows
        # with the pool's size (measured: 1 ms a request with 2 connections,
        # 4 ms with 20); per-host pools of max_per_host stay cheap.
        self._clients: OrderedDict[str, httpx.AsyncClient] = OrderedDict()

    def _client_for(self, host: str) -> httpx.AsyncClient:
        client = self._clients.pop(host, None) or self._new_client()
        self._clients[host] = client
        if len(self._clients) > MAX_IDLE_CLIENTS:
            for other in list(self._clients)[:-MAX_IDLE_CLIENTS]:
                if not self._active.get(other):
                    closing = asyncio.ensure_future(self._clients.pop(other).aclose())
                    self._closing.add(closing)
                    closing.add_done_callback(self._closing.discard)
        return client

    def _new_client(self) -> httpx.AsyncClient:
        transport = httpx.AsyncHTTPTransport(verify=self._ssl_context, trust_env=False)
        # httpx has no public hook for the network backend; swapping the pool
        # keeps its request/response mapping (pinned httpx<0.29, tested).
        transport._pool = httpcore.AsyncConnectionPool(
            ssl_context=self._ssl_context,
            max_connections=self._max_per_host,
            network_backend=self._backend,
        )
        encodings = "gzip, deflate, br" if brotli is not None else "gzip, deflate"
        client = httpx.AsyncClient(
            transport=transport,
            follow_redirects=True,
            max_redirects=MAX_REDIRECTS,
            timeout=httpx.Timeout(self.timeout),
            headers={"User-Agent": self.user_agent, "Accept-Encoding": encodings},
            trust_env=False,
            event_hooks={"request": [_check_hop]},
        )
        client._cookies = _Cookies()  # the setter would copy it into a plain Cookies
        return client

    async def __aenter__(self) -> Fetcher:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None,
                        exc: BaseException | None, tb: TracebackType | None) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        clients, self._clients = list(self._clients.values()), OrderedDict()
        await asyncio.gather(*(client.aclose() for client in clients), *list(self._closing))

    async def fetch(self, url: str, validators: Validators | None = None, *,
                    accept: str = ACCEPT) -> FetchResult:
        """GET `url`. HTTP error statuses come back as results (the caller
        decides what a 410 or 429 means); no response at all raises FetchError,
        also for a URL no request can be made to (InvalidURLError)."""
        headers = {"Accept": accept}
        if validators and validators.etag:
            headers["If-None-Match"] = validators.etag
        if validators and validators.last_modified:
            headers["If-Modified-Since"] = validators.last_modified
        host = check_url(url).host
        async with self.gate.slot(host), self._overall:
            self._active[host] += 1
            try:
                return await self._fetch(url, host, headers)
            finally:
                self._active[host] -= 1
                if not self._active[host]:
                    del self._active[host]

    async def post_form(self, url: str, form: Mapping[str, str]) -> FetchResult:
        """POST `form` url-encoded to `url` (a WebSub publish ping). The
        status, headers and body come back as a result; no response at all
        raises FetchError. Same address guard, deadline and User-Agent as a
        GET, but its own per-host client and max_per_host slots, outside
        max_connections and host_spacing: a hub that hangs must not hold a
        connection or a slot that a poll of the same host needs. Redirects
        are not followed (httpx would turn the POST into a GET, dropping the form)."""
        host = check_url(url).host
        key = f"{host} POST"
        async with self._per_host[key]:
            self._active[key] += 1
            try:
                return await self._fetch(url, host, {}, send=lambda started: self._post(
                    url, key, form, started))
            finally:
                self._active[key] -= 1
                if not self._active[key]:
                    del self._active[key]

    async def _post(self, url: str, key: str, form: Mapping[str, str],
                    started: float) -> FetchResult:
        client = self._client_for(key)
        async with client.stream("POST", url, data=dict(form), follow_redirects=False) as response:
            body = await self._read_capped(response)  # an error's body says why
            return FetchResult(url=url, final_url=str(response.url), status=response.status_code,
                               content=body, headers={k.lower(): v for k, v in response.headers.items()},
                               fetched_at=datetime.now(UTC), elapsed=time.monotonic() - started)

    async def _fetch(self, url: str, host: str, headers: dict[str, str], *,
                     send: Callable[[float], Awaitable[FetchResult]] | None = None) -> FetchResult:
        started = time.monotonic()
        send = send or (lambda started: self._get(url, host, headers, started))
        try:
            async with asyncio.timeout(self.timeout):
                try:
                    return await send(started)
                except (httpx.RemoteProtocolError, httpx.WriteError):
                    # A kept-alive connection the server had just closed (seen
                    # as a protocol error, or a broken pipe while writing): the
                    # request never reached it, so it is safe to send once more
                    # (on a fresh connection), as browsers do.
                    return await send(started)
        except TimeoutError:
            raise FetchError(
                f"no complete response within {self.timeout:g}s (slow server)"
            ) from None
        except httpx.TooManyRedirects:
            raise FetchError(f"more than {MAX_REDIRECTS} redirects (a redirect loop?)") from None
        except httpx.TimeoutException:
            raise FetchError(f"timed out after {self.timeout:g}s") from None
        except httpx.ConnectError as exc:
            raise FetchError(f"cannot connect to {host}: {exc or 'connection failed'}") from None
        except InvalidURLError as exc:  # a redirect hop (the URL itself was checked)
            raise InvalidURLError(exc.url, exc.reason, redirected_from=url) from None
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:  # a redirect's Location
            raise FetchError(f"a redirect from {_shorten(url)} led to an invalid URL: {exc}") from None
        except httpx.HTTPError as exc:
            raise FetchError(f"HTTP error from {host}: {exc or type(exc).__name__}") from None
        except ValueError as exc:  # idna on a redirect's host, and the like: never a crash
            raise FetchError(f"cannot request {_shorten(url)} or a redirect from it: "
                             f"{type(exc).__name__}: {exc}") from None

    async def _get(self, url: str, host: str, headers: dict[str, str],
                   started: float) -> FetchResult:
        # the checked httpx.URL: httpx does not parse it again
        async with self._client_for(host).stream("GET", check_url(url), headers=headers) as response:
            # Read every body, even a 304's or an error page (capped): an unread
            # body makes httpcore close the connection instead of reusing it.
            body = await self._read_capped(response)
            if not 200 <= response.status_code < 300:
                body = b""
            return FetchResult(
                url=url,
                final_url=str(response.url),
                status=response.status_code,
                content=body,
                headers={k.lower(): v for k, v in response.headers.items()},
                fetched_at=datetime.now(UTC),
                redirects=tuple(
                    (hop.status_code, str(hop.url.join(hop.headers.get("location", ""))))
                    for hop in response.history
                ),
                elapsed=time.monotonic() - started,
            )

    async def _read_capped(self, response: httpx.Response) -> bytes:
        length = response.headers.get("content-length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise TooLargeError(
                f"response of {int(length):,} bytes is over the {self.max_bytes:,}-byte cap"
            )
        decoder = _BoundedDecoder(response.headers.get("content-encoding", ""), self.max_bytes)
        raw = 0
        parts: list[bytes] = []
        async for chunk in response.aiter_raw():
            raw += len(chunk)
            if raw > self.max_bytes:
                raise TooLargeError(f"response larger than the {self.max_bytes:,}-byte cap")
            parts.append(decoder.feed(chunk))
        decoder.finish()
        return b"".join(parts)


def permanent_target(result: FetchResult) -> str | None:
    """Where a chain of permanent redirects (301/308) leads: the location of
    the last hop of the unbroken permanent run from the start."""
    target = None
    for status, location in result.redirects:
        if status not in (301, 308):
            break
        target = location
    return target


def describe_status(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"
