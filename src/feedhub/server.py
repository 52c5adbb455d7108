"""Serving feeds/ over HTTP: what feed readers see.

The HTTP server is Granian (Rust, hyper): it parses requests, bounds their
headers and how long a client may take to send them, and runs this module's
ASGI app in a worker process of its own, so that serving never competes
with polling for the daemon's GIL. The app serves only files inside the
output directory. Every response has a strong ETag and Last-Modified and
answers conditional requests with 304; a reader that accepts brotli or gzip
gets the NAME.br / NAME.gz that publishing wrote beside the document, as it
is (each with its own ETag); Cache-Control tells readers to come back when
the next poll may have changed something. /healthz answers 200 or 503 and
one word, ok or degraded (which sources fail, and why, is on the admin
address: feedhub.admin).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections import OrderedDict
from datetime import UTC, datetime
from email.utils import formatdate, parsedate_to_datetime
from pathlib import Path
from stat import S_ISREG
from typing import Any

from feedhub import status
from feedhub.models import Config
from feedhub.publish import ARCHIVE_DIR, COMPRESSED_TYPES
from feedhub.store import open_store

log = logging.getLogger("feedhub.server")

TYPES = {".atom": "application/atom+xml; charset=utf-8", ".opml": "text/x-opml; charset=utf-8",
         ".html": "text/html; charset=utf-8", ".xml": "application/xml; charset=utf-8",
         ".json": "application/feed+json; charset=utf-8"}
MIN_MAX_AGE, MAX_MAX_AGE = 60, 3600
ARCHIVE_MAX_AGE = 86400
# the soonest next poll is read from the database at most once a second, not per request
MAX_AGE_TTL = 1.0
# files kept in memory (LRU) with their ETags; a feed is ~600 KB, its copies a tenth
CACHE_BYTES = 64 * 1024 * 1024
# requests: headers at most 16 KB (else 431), sent within 10 s (else the
# connection is closed); no request body at all (413); GET and HEAD only (405)
MAX_HEADER_BYTES = 16 * 1024
HEADER_READ_TIMEOUT_MS = 10_000
ENCODINGS = ((b"br", ".br"), (b"gzip", ".gz"))  # preferred first
# `run --serve`: the server's nice(2) increment, below the daemon's polling
SERVE_NICENESS = 10
# what a request path resolves to (symlinks followed) is kept this long
RESOLVED_TTL = 1.0

Headers = list[tuple[bytes, bytes]]


class _File:
    """A file's bytes and the response headers that depend on them alone."""

    __slots__ = ("body", "etag", "key", "last_modified", "length", "mtime")

    def __init__(self, key: tuple[int, int, int], body: bytes, mtime: float):
        self.key, self.body, self.mtime = key, body, mtime
        self.etag = b'"' + hashlib.sha256(body).hexdigest()[:32].encode() + b'"'
        self.last_modified = formatdate(mtime, usegmt=True).encode()
        self.length = b"%d" % len(body)


class FeedApp:
    """The ASGI app: one per worker process. Paths are plain strings here
    and what a request path resolves to is kept for a second: pathlib and
    realpath were half of a request's time."""

    def __init__(self, config: Config):
        self.config = config
        self.root = str(config.hub.output_dir.resolve())
        self.archive = os.path.join(self.root, ARCHIVE_DIR) + os.sep
        self._cache: OrderedDict[str, _File] = OrderedDict()
        self._cached_bytes = 0
        self._resolved: dict[str, tuple[float, str]] = {}
        self._max_age = (0.0, MIN_MAX_AGE)

    # -- files --------------------------------------------------------------

    def load(self, path: str, stat: os.stat_result) -> _File:
        """The file's bytes and strong ETag (a hash of its bytes), cached
        (at most CACHE_BYTES, least recently used out first) while its
        (mtime, size, inode) stay the same."""
        key = (stat.st_mtime_ns, stat.st_size, stat.st_ino)
        cached = self._cache.get(path)
        if cached is not None and cached.key == key:
            self._cache.move_to_end(path)
            return cached
        with open(path, "rb") as handle:
            body = handle.read()
        if len(body) != stat.st_size:  # replaced between stat and read: hash what was read
            key = (0, len(body), 0)
        found = _File(key, body, stat.st_mtime)
        if cached is not None:
            self._cached_bytes -= len(cached.body)
        self._cache[path] = found
        self._cache.move_to_end(path)
        self._cached_bytes += len(body)
        while self._cached_bytes > CACHE_BYTES and len(self._cache) > 1:
            _, dropped = self._cache.popitem(last=False)
            self._cached_bytes -= len(dropped.body)
        return found

    def resolve(self, path: str) -> str | None:
        """The file under the output directory, or None: no '..', no
        absolute paths, no symlink that leads outside, no hidden files, and
        not the compressed copies themselves (they are served in place of
        their document, never by their own name). Whether it is a regular
        file is for the caller's stat."""
        now = time.monotonic()
        if (known := self._resolved.get(path)) is not None and now - known[0] < RESOLVED_TTL:
            return known[1]
        relative = path.lstrip("/") or "index.html"
        if "\x00" in relative or "\\" in relative or any(
                part in ("..", "") or part.startswith(".") for part in relative.split("/")):
            return None
        if relative.endswith((".gz", ".br")):
            return None
        try:
            target = os.path.realpath(os.path.join(self.root, relative))
        except (OSError, ValueError):
            return None
        if not target.startswith(self.root + os.sep):
            return None
        if len(self._resolved) >= 10_000:
            self._resolved.clear()
        self._resolved[path] = (now, target)
        return target

    def representation(self, target: str, accepted: bytes) -> tuple[str, os.stat_result, bytes | None]:
        """The file to send: the document's brotli or gzip copy when the
        client accepts it and the copy is not older than the document (a
        copy is renamed into place right after its document), else the
        document itself. OSError if the document is not there."""
        stat = os.stat(target)
        if not S_ISREG(stat.st_mode):
            raise FileNotFoundError(target)
        if accepted and target.endswith(COMPRESSED_TYPES):
            codings = _accepted_codings(accepted)
            for coding, suffix in ENCODINGS:
                if coding not in codings:
                    continue
                copy = target + suffix
                try:
                    copy_stat = os.stat(copy)
                except OSError:
                    continue
                if copy_stat.st_mtime_ns >= stat.st_mtime_ns and S_ISREG(copy_stat.st_mode):
                    return copy, copy_stat, coding
        return target, stat, None

    def max_age(self) -> int:
        """Seconds until the soonest next poll: nothing can change before."""
        read_at, value = self._max_age
        now = time.monotonic()
        if now - read_at < MAX_AGE_TTL:
            return value
        try:
            with open_store(self.config.hub.database, reader=True) as store:  # never waits for a publish
                due = store.soonest_next_poll()
        except Exception:  # a busy or missing database must not break serving
            due = None
        value = MIN_MAX_AGE if due is None else max(MIN_MAX_AGE, min(
            MAX_MAX_AGE, int((due - datetime.now(UTC)).total_seconds())))
        self._max_age = (now, value)
        return value

    def health(self) -> dict[str, object]:
        """The admin address's answer; only its one word is sent here."""
        return status.health(self.config)

    # -- ASGI ---------------------------------------------------------------

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        status, headers, body = self.respond(scope)
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})

    def respond(self, scope: dict[str, Any]) -> tuple[int, Headers, bytes]:
        method = scope["method"]
        if method not in ("GET", "HEAD"):
            return _plain(405, b"method not allowed\n", [(b"allow", b"GET, HEAD")])
        request = dict(scope["headers"])  # the last of a repeated header: none that matter repeat
        if request.get(b"transfer-encoding") or request.get(b"content-length", b"0") != b"0":
            return _plain(413, b"no request body is accepted\n", [(b"connection", b"close")])
        path = scope["path"]
        if path == "/healthz":  # for load balancers: the detail is on the admin address
            health = self.health()
            return (200 if health["status"] == "ok" else 503,
                    [(b"content-type", b"application/json"), (b"cache-control", b"no-store")],
                    json.dumps({"status": health["status"]}).encode())
        target = self.resolve(path)
        if target is None:
            return _plain(404, b"not found\n")
        try:
            sent, stat, coding = self.representation(target, request.get(b"accept-encoding", b""))
            try:
                found = self.load(sent, stat)
            except OSError:
                if coding is None:
                    raise
                # the copy went meanwhile: a publish replaces a changed feed
                # after removing its copies (they come later), so send the feed
                sent, stat, coding = self.representation(target, b"")
                found = self.load(sent, stat)
        except OSError:  # not there, or removed meanwhile
            return _plain(404, b"not found\n")
        # an archive page changes only on a takedown: cache it for a day,
        # not forever, so a takedown reaches caches within one
        max_age = ARCHIVE_MAX_AGE if target.startswith(self.archive) else self.max_age()
        headers = [(b"etag", found.etag), (b"last-modified", found.last_modified),
                   (b"cache-control", b"public, max-age=%d" % max_age),
                   (b"vary", b"Accept-Encoding")]
        if _not_modified(request, found.etag, found.mtime):
            return 304, headers, b""
        if coding:
            headers.append((b"content-encoding", coding))
        headers.append((b"content-type", _type(target)))
        headers.append((b"content-length", found.length))
        return 200, headers, found.body


def _type(path: str) -> bytes:
    return TYPES.get(os.path.splitext(path)[1], "application/octet-stream").encode()


def _plain(status: int, body: bytes, extra: Headers | None = None) -> tuple[int, Headers, bytes]:
    return status, [(b"content-type", b"text/plain"), *(extra or [])], body


@functools.lru_cache(maxsize=256)
def _accepted_codings(header: bytes) -> frozenset[bytes]:
    """The content codings an Accept-Encoding allows (q=0 excludes one)."""
    codings = set()
    for part in header.lower().split(b","):
        name, _, params = part.partition(b";")
        q = params.strip()
        if q.startswith(b"q="):
            try:
                if float(q[2:]) <= 0:
                    continue
            except ValueError:
                continue
        codings.add(name.strip())
    if b"*" in codings:
        codings |= {b"br", b"gzip"}
    return frozenset(codings)


def _not_modified(request: dict[bytes, bytes], etag: bytes, mtime: float) -> bool:
    if (match := request.get(b"if-none-match")) is not None:
        return match.strip() == b"*" or etag in [
            tag.strip().removeprefix(b"W/") for tag in match.split(b",")]
    since = request.get(b"if-modified-since")
    if since:
        try:
            return int(mtime) <= parsedate_to_datetime(since.decode("latin-1")).timestamp()
        except (TypeError, ValueError):
            return False
    return False


def app() -> FeedApp:
    """Granian's factory, called in each worker process: the config is
    named by FEEDHUB_CONFIG, as for the CLI."""
    from feedhub.config import load_config

    return FeedApp(load_config(Path(os.environ["FEEDHUB_CONFIG"])))


def parse_address(address: str) -> tuple[str, int]:
    """'8080', ':8080', '127.0.0.1:8080' -> (host, port)."""
    host, _, port = address.rpartition(":")
    return (host or "127.0.0.1"), int(port)


def granian_server(config_path: Path, address: tuple[str, int], workers: int = 1) -> Any:
    """A Granian server for `FeedApp` (its serve() blocks, in the main thread)."""
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings
    from granian.server import Server

    os.environ["FEEDHUB_CONFIG"] = str(Path(config_path).resolve())
    return Server(
        "feedhub.server:app", address=address[0], port=address[1], interface=Interfaces.ASGI,
        factory=True, workers=workers, loop=Loops.asyncio, http=HTTPModes.http1, websockets=False,
        http1_settings=HTTP1Settings(header_read_timeout=HEADER_READ_TIMEOUT_MS,
                                     max_buffer_size=MAX_HEADER_BYTES),
        log_enabled=False, respawn_failed_workers=True)


def serve_in_process(config_path: Path, address: tuple[str, int]) -> subprocess.Popen[bytes]:
    """`feedhub serve` as a child of the daemon (`run --serve`): its own
    processes, so requests never hold the daemon's GIL or event loop. It
    is told to end with the daemon (FEEDHUB_SERVE_PARENT)."""
    command = [sys.executable, "-m", "feedhub", "--config", str(config_path), "serve",
               "--address", f"{address[0]}:{address[1]}"]
    child = subprocess.Popen(command, stdin=subprocess.DEVNULL,
                             env={**os.environ, "FEEDHUB_SERVE_PARENT": str(os.getpid())})
    log.info("serving on http://%s:%d/ (process %d)", *address, child.pid)
    return child


def stop_process(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        child.send_signal(signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def die_with_parent() -> None:
    """In `feedhub serve` started by the daemon: a lower CPU priority
    (SERVE_NICENESS), and SIGTERM when the daemon dies, even by SIGKILL
    (Linux's PR_SET_PDEATHSIG), so no server is left holding the port."""
    parent = os.environ.pop("FEEDHUB_SERVE_PARENT", None)
    if parent is None:
        return
    # the daemon's polling comes first: on a busy machine the server (and
    # its workers, which inherit this) gets the CPU polling leaves
    os.nice(SERVE_NICENESS)
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != int(parent):  # it died before the prctl
        os.kill(os.getpid(), signal.SIGTERM)
