"""The admin address (`feedhub run --admin 127.0.0.1:9464`): /metrics,
/status and the detailed /healthz, apart from the public address because
they show operational detail (source names, errors).

A small stdlib HTTP server on threads of its own inside the daemon (the
asyncio loop never waits for it), bounded against clients that misbehave:
the request line and headers together at most MAX_HEAD bytes (431), no
body (413), the whole head within HEAD_TIMEOUT seconds (the connection is
closed), at most MAX_CLIENTS connections at once (more are closed), and
only GET and HEAD (405). One request per connection.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import socket
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import jinja2
from prometheus_client.exposition import choose_encoder

from feedhub import __version__
from feedhub._files import close_in_forked_children
from feedhub.metrics import StoreCollector
from feedhub.status import CHART_DAYS, ago, chart_days, report, source_reason
from feedhub.status import health as detailed_health
from feedhub.store import open_store

if TYPE_CHECKING:
    from feedhub.daemon import Daemon
    from feedhub.models import Config

log = logging.getLogger("feedhub.admin")

MAX_HEAD = 8192  # bytes: request line and headers
HEAD_TIMEOUT = 10.0  # seconds for a client to send them
WRITE_TIMEOUT = 30.0  # seconds any one send may block on a client that does not read
MAX_CLIENTS = 16  # connections served at once
LINGER_READS = 16  # at most 1 MiB read and dropped after refusing a request
DEFAULT_ADDRESS = "127.0.0.1:9464"  # the documented one (Prometheus' port registry: unused)

# the status table's order: failing sources first, then what else needs a look
STATE_ORDER = {"failing": 0, "degraded": 1, "empty": 2, "new": 3, "ok": 4, "retired": 5}
SORTS = ("state", "name", "last_poll", "next_poll", "errors", "items")
PAGE_SIZE = 500  # sources per page of /status (?page=2...)


class AdminServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], daemon: Daemon):
        self.feedhub = daemon
        self.metrics = daemon.metrics
        self.collector: StoreCollector = daemon.metrics.watch_store(
            daemon.config.hub.database, lambda: [s.name for s in daemon.config.sources],
            lambda: daemon.config.hub.output_dir)
        self.templates = jinja2.Environment(
            loader=jinja2.PackageLoader("feedhub", "admin_templates"), autoescape=True,
            undefined=jinja2.StrictUndefined)
        self._slots = threading.BoundedSemaphore(MAX_CLIENTS)
        super().__init__(address, _Handler)
        close_in_forked_children(self.socket)  # the address is taken while any copy is open

    @property
    def config(self) -> Config:
        return self.feedhub.config  # the latest good one (config reloads)

    def process_request(self, request: Any, client_address: Any) -> None:
        if not self._slots.acquire(blocking=False):
            log.warning("admin: %d connections already; closing one from %s", MAX_CLIENTS,
                        client_address[0])
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def server_close(self) -> None:
        super().server_close()
        self.collector.close()


class _Handler(BaseHTTPRequestHandler):
    server: AdminServer
    protocol_version = "HTTP/1.1"
    server_version = "feedhub-admin"
    timeout = WRITE_TIMEOUT

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def handle(self) -> None:
        self.close_connection = True
        self.handle_one_request()

    def handle_one_request(self) -> None:
        head = self._read_head()
        if head is None:
            return
        rfile = self.rfile
        self.rfile = io.BytesIO(head)  # parse_request reads the headers from here
        try:
            self.raw_requestline = self.rfile.readline()
            if not self.parse_request():  # has answered 400 or 505
                return
        finally:
            self.rfile = rfile
        if self.command not in ("GET", "HEAD"):
            self._plain(HTTPStatus.METHOD_NOT_ALLOWED, "only GET and HEAD\n",
                        {"Allow": "GET, HEAD"})
            return self._linger()
        if self.headers.get("Transfer-Encoding") or self.headers.get("Content-Length", "0") != "0":
            self._plain(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "no request body here\n")
            return self._linger()
        try:
            self._route()
        except Exception:
            log.exception("admin: %s failed", self.path)
            self._plain(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error (see the log)\n")

    def _read_head(self) -> bytes | None:
        """The request line and headers, at most MAX_HEAD bytes, within
        HEAD_TIMEOUT seconds (a watchdog hangs up on a slow client: a
        per-read timeout alone lets one byte every few seconds go on)."""
        timer = threading.Timer(HEAD_TIMEOUT, self._hang_up)
        timer.start()
        head = bytearray()
        try:
            while True:
                line = self.rfile.readline(MAX_HEAD + 1 - len(head))
                if not line:
                    return None  # closed, or hung up on
                head += line
                if line in (b"\r\n", b"\n"):
                    if len(head) == len(line):  # blank lines before a request: allowed, skipped
                        head.clear()
                        continue
                    return bytes(head)
                if len(head) > MAX_HEAD or not line.endswith(b"\n"):
                    self.request_version, self.command, self.requestline = "HTTP/1.1", "", ""
                    self._plain(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE,
                                f"request line and headers over {MAX_HEAD} bytes\n")
                    self._linger()
                    return None
        except OSError:
            return None
        finally:
            timer.cancel()

    def _linger(self) -> None:
        """After refusing a request whose bytes are not all read: stop
        sending, and read (and drop) a bounded amount of what the client
        still sends, so that closing does not reset the connection before
        the client has read the answer."""
        with contextlib.suppress(OSError):
            self.wfile.flush()
            self.connection.shutdown(socket.SHUT_WR)
            self.connection.settimeout(1.0)
            for _ in range(LINGER_READS):
                if not self.connection.recv(65536):
                    break

    def _hang_up(self) -> None:
        with contextlib.suppress(OSError):
            self.connection.shutdown(socket.SHUT_RDWR)

    def _route(self) -> None:
        url = urlsplit(self.path)
        if url.path == "/metrics":
            encoder, content_type = choose_encoder(self.headers.get("Accept") or "")
            return self._send(HTTPStatus.OK, encoder(self.server.metrics.registry), content_type)
        if url.path == "/healthz":
            health = detailed_health(self.server.config)
            status = HTTPStatus.OK if health["status"] == "ok" else HTTPStatus.SERVICE_UNAVAILABLE
            return self._send(status, json.dumps(health).encode(), "application/json")
        if url.path == "/status":
            query = parse_qs(url.query)
            sort = query.get("sort", ["state"])[0]
            number = query.get("page", ["1"])[0]
            page = render_status(self.server.templates, self.server.config, sort,
                                 int(number) if number.isdigit() and len(number) < 7 else 1)
            return self._send(HTTPStatus.OK, page, "text/html; charset=utf-8")
        return self._plain(HTTPStatus.NOT_FOUND, "not found: /metrics, /status, /healthz\n")

    def _plain(self, status: HTTPStatus, text: str, headers: dict[str, str] | None = None) -> None:
        self._send(status, text.encode(), "text/plain; charset=utf-8", headers)

    def _send(self, status: HTTPStatus, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in {"Content-Type": content_type, "Content-Length": str(len(body)),
                            "Cache-Control": "no-store", "Connection": "close",
                            "X-Content-Type-Options": "nosniff", **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)


# --- the status page ---------------------------------------------------------


@dataclass(frozen=True)
class Bar:
    """One day of a chart: a bar, its geometry computed here."""

    day: date
    count: int
    x: float
    y: float
    height: float


@dataclass(frozen=True)
class Sparkline:
    """A source's items per day: one polyline, a point per day (a table of
    10,000 sources with 30 bars each made a 35 MB page)."""

    width: int
    height: int
    points: str  # "x,y x,y ...", oldest day first
    peak: int
    total: int


def sparkline(per_day: dict[str, int], days: Sequence[date], width: int, height: int) -> Sparkline:
    counts = [per_day.get(day.isoformat(), 0) for day in days]
    peak = max(counts, default=0)
    step = (width - 2) / max(len(days) - 1, 1)
    points = " ".join(f"{1 + n * step:.1f},{height - 1 - (count / peak * (height - 2) if peak else 0):.1f}"
                      for n, count in enumerate(counts))
    return Sparkline(width, height, points, peak, sum(counts))


@dataclass(frozen=True)
class Chart:
    width: int
    height: int
    bar_width: float
    bars: Sequence[Bar]
    peak: int
    total: int


def chart(per_day: dict[str, int], days: Sequence[date], width: int, height: int) -> Chart:
    """A bar per day, scaled to the busiest day; a day with nothing still has
    its bar (a 1-pixel line), so every chart has exactly one per day."""
    peak = max((per_day.get(day.isoformat(), 0) for day in days), default=0)
    step = width / len(days)
    bars = []
    for n, day in enumerate(days):
        count = per_day.get(day.isoformat(), 0)
        tall = max(1.0, round(count / peak * height, 1)) if peak and count else 1.0
        bars.append(Bar(day, count, round(n * step, 1), round(height - tall, 1), tall))
    return Chart(width, height, round(step * 0.8, 1), bars, peak,
                 sum(bar.count for bar in bars))



def render_status(templates: jinja2.Environment, config: Config, sort: str,
                  page: int = 1) -> bytes:
    """The status page: every source, failing ones first (or as `sort` says),
    PAGE_SIZE to a page."""
    sort = sort if sort in SORTS else "state"
    now = datetime.now(UTC)
    days = chart_days(now.date())
    since = datetime.combine(days[0], datetime.min.time(), UTC)
    with open_store(config.hub.database, reader=True) as store:
        found = report(config, store)
        by_source, by_language = store.items_per_day([s.name for s in config.sources], since)
    rows: list[dict[str, Any]] = []
    for state, health in zip(found.states, found.health, strict=True):
        rows.append({"name": state.name, "state": health, "last_poll": state.last_poll,
                     "errors": state.error_count, "items": state.items,
                     "next_poll": None if state.retired else state.next_poll, "source": state})
    never = datetime.min.replace(tzinfo=UTC)
    keys = {
        "state": lambda r: (STATE_ORDER[r["state"]], -r["errors"], r["name"].casefold()),
        "name": lambda r: r["name"].casefold(),
        "last_poll": lambda r: r["last_poll"] or never,  # the stalest first
        "next_poll": lambda r: r["next_poll"] or datetime.max.replace(tzinfo=UTC),
        "errors": lambda r: (-r["errors"], r["name"].casefold()),
        "items": lambda r: (-r["items"], r["name"].casefold()),
    }
    rows.sort(key=keys[sort])
    pages = max(1, -(-len(rows) // PAGE_SIZE))
    page = min(max(page, 1), pages)
    rows = rows[(page - 1) * PAGE_SIZE:page * PAGE_SIZE]
    for row in rows:  # what only the rows shown need
        state = row.pop("source")
        row.update(last_poll_ago=ago(state.last_poll, now), last_status=state.last_status,
                   reason=source_reason(state, row["state"]),
                   next_poll_in="-" if state.retired else ago(row["next_poll"], now),
                   chart=sparkline(by_source.get(state.name, {}), days, 90, 20))
    languages = [(language, chart(per_day, days, 300, 60))
                 for language, per_day in sorted(by_language.items())]
    html = templates.get_template("status.html").render(
        hub=config.hub, rows=rows, summary=found.summary, languages=languages, sort=sort,
        page=page, pages=pages, page_size=PAGE_SIZE,
        sorts=SORTS, days=CHART_DAYS, first_day=days[0], last_day=days[-1],
        now=now.replace(microsecond=0), version=__version__)
    return html.encode()


def serve_in_thread(server: AdminServer) -> None:
    """Serve `server` (bound already, so that a taken address fails at
    start) from a thread of its own."""
    threading.Thread(target=server.serve_forever, name="feedhub-admin", daemon=True).start()
    log.info("admin (/metrics, /status, /healthz) on http://%s:%d/", *server.server_address[:2])
