"""Serving feeds/ over HTTP: what feed readers see.

Only files inside the output directory are reachable. Every response has a
strong ETag and Last-Modified and answers conditional requests with 304;
bodies are compressed when the reader asks; Cache-Control tells readers to
come back when the next poll may have changed something. /healthz answers
200 or 503 and one word, ok or degraded (which sources fail, and why, is on
the admin address: feedhub.admin).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import threading
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from feedhub._files import DaemonLock
from feedhub.models import Config
from feedhub.publish import ARCHIVE_DIR
from feedhub.store import Store

try:
    import brotli
except ImportError:  # pragma: no cover
    brotli = None

log = logging.getLogger("feedhub.server")

TYPES = {".atom": "application/atom+xml; charset=utf-8", ".opml": "text/x-opml; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".xml": "application/xml; charset=utf-8"}
MIN_MAX_AGE, MAX_MAX_AGE = 60, 3600
ARCHIVE_MAX_AGE = 86400


class FeedServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], config: Config):
        self.config = config
        self.root = config.hub.output_dir.resolve()
        self._cache: dict[Path, tuple[tuple[int, int], bytes, str]] = {}
        self._lock = threading.Lock()
        super().__init__(address, _Handler)

    def load(self, path: Path) -> tuple[bytes, str, float]:
        """(body, strong ETag, mtime); the hash is cached per (mtime, size)."""
        stat = path.stat()
        key = (stat.st_mtime_ns, stat.st_size)
        with self._lock:
            cached = self._cache.get(path)
        if cached and cached[0] == key:
            return cached[1], cached[2], stat.st_mtime
        body = path.read_bytes()
        etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
        with self._lock:
            self._cache[path] = (key, body, etag)
        return body, etag, stat.st_mtime

    def max_age(self) -> int:
        """Seconds until the soonest next poll: nothing can change before."""
        try:
            with Store(self.config.hub.database) as store:
                due = store.soonest_next_poll()
        except Exception:  # a busy or missing database must not break serving
            return MIN_MAX_AGE
        if due is None:
            return MIN_MAX_AGE
        seconds = int((due - datetime.now(UTC)).total_seconds())
        return max(MIN_MAX_AGE, min(MAX_MAX_AGE, seconds))

    def health(self) -> dict[str, object]:
        running = DaemonLock.held(self.config.hub.database)
        with Store(self.config.hub.database) as store:
            states = store.source_states([s.name for s in self.config.sources])
        failing = [s.name for s in states if s.error_count and not s.retired]
        return {"status": "ok" if running and not failing else "degraded",
                "daemon_running": running, "sources": len(states),
                "failing": failing, "retired": [s.name for s in states if s.retired]}


class _Handler(BaseHTTPRequestHandler):
    server: FeedServer
    protocol_version = "HTTP/1.1"
    server_version = "feedhub"

    def log_message(self, format: str, *args: object) -> None:
        log.debug("%s %s", self.address_string(), format % args)

    def do_HEAD(self) -> None:
        self._respond(head=True)

    def do_GET(self) -> None:
        self._respond(head=False)

    def _respond(self, head: bool) -> None:
        path = unquote(urlsplit(self.path).path)
        if path == "/healthz":  # for load balancers: the detail is on the admin address
            health = self.server.health()
            body = json.dumps({"status": health["status"]}).encode()
            status = HTTPStatus.OK if health["status"] == "ok" else HTTPStatus.SERVICE_UNAVAILABLE
            return self._send(status, body, "application/json", head, {"Cache-Control": "no-store"})
        target = self._resolve(path)
        if target is None:
            return self._send(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain", head)
        body, etag, mtime = self.server.load(target)
        # an archive page changes only on a takedown: cache it for a day,
        # not forever, so a takedown reaches caches within one
        max_age = (ARCHIVE_MAX_AGE if target.is_relative_to(self.server.root / ARCHIVE_DIR)
                   else self.server.max_age())
        headers = {"ETag": etag, "Last-Modified": formatdate(mtime, usegmt=True),
                   "Cache-Control": f"public, max-age={max_age}",
                   "Vary": "Accept-Encoding"}
        if self._not_modified(etag, mtime):
            return self._send(HTTPStatus.NOT_MODIFIED, b"", None, True, headers)
        accepted = self.headers.get("Accept-Encoding", "")
        if brotli is not None and "br" in accepted:
            body, headers["Content-Encoding"] = brotli.compress(body), "br"
        elif "gzip" in accepted:
            body, headers["Content-Encoding"] = gzip.compress(body, mtime=0), "gzip"
        self._send(HTTPStatus.OK, body, TYPES.get(target.suffix, "application/octet-stream"),
                   head, headers)

    def _resolve(self, path: str) -> Path | None:
        """The file under the output directory, or None: no '..', no
        absolute paths, no symlink that leads outside, no hidden files."""
        relative = path.lstrip("/") or "index.html"
        if "\x00" in relative or any(part in ("..", "") or part.startswith(".")
                                     for part in relative.split("/")):
            return None
        try:
            target = (self.server.root / relative).resolve()
        except (OSError, ValueError):
            return None
        if not target.is_relative_to(self.server.root) or not target.is_file():
            return None
        return target

    def _not_modified(self, etag: str, mtime: float) -> bool:
        if (match := self.headers.get("If-None-Match")) is not None:
            return etag in [tag.strip().removeprefix("W/") for tag in match.split(",")] or \
                match.strip() == "*"
        since = self.headers.get("If-Modified-Since")
        if since:
            try:
                return int(mtime) <= parsedate_to_datetime(since).timestamp()
            except (TypeError, ValueError):
                return False
        return False

    def _send(self, status: HTTPStatus, body: bytes, content_type: str | None, head: bool,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if content_type:
            self.send_header("Content-Type", content_type)
        if status != HTTPStatus.NOT_MODIFIED:
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)


def parse_address(address: str) -> tuple[str, int]:
    """'8080', ':8080', '127.0.0.1:8080' -> (host, port)."""
    host, _, port = address.rpartition(":")
    return (host or "127.0.0.1"), int(port)


def serve_in_thread(config: Config, address: tuple[str, int]) -> FeedServer:
    server = FeedServer(address, config)
    threading.Thread(target=server.serve_forever, name="feedhub-serve", daemon=True).start()
    log.info("serving %s on http://%s:%d/", config.hub.output_dir, *server.server_address[:2])
    return server
