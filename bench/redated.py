"""Poll-round time for feeds that change their own date (and so their ETag)
on every request while no item changes, against a 304 round and with the
items-unchanged shortcut off (Hub(parse_unchanged=True)), back to back in
one session (issue 13)::

    python bench/redated.py --feeds 1000 --items 30

The farm's bodies (bench/farm.py) are served from a child process, gzipped
as the farm serves them and built before each timed round; each "redated"
round rewrites every feed's <lastBuildDate> / <updated>.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import multiprocessing
import os
import socket
import sys
import tempfile
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from farm import Farm, _gzip, _http_date, _iso
from phase import feedhub_config


def serve(feeds: int, items: int, port: multiprocessing.Value, stamp: multiprocessing.Value) -> None:
    farm = Farm(feeds, items)
    bodies = [farm.body(i) for i in range(feeds)]
    stamps = [farm.version(i).last_modified_ts for i in range(feeds)]
    cache: dict[tuple[int, int], tuple[bytes, bytes, str]] = {}

    def body_of(i: int, now: int) -> tuple[bytes, bytes, str]:
        """(body, gzipped body, ETag) of feed i redated by `now` seconds."""
        if (i, now) not in cache:
            body, old = bodies[i], stamps[i]
            if now:  # the feed's own date only: the first occurrence is the channel's / feed's
                for before, after in ((_http_date(old), _http_date(old + now)),
                                      (_iso(old), _iso(old + now))):
                    body = body.replace(before.encode(), after.encode(), 1)
            cache[i, now] = body, _gzip(body), '"' + hashlib.sha1(body).hexdigest() + '"'
        return cache[i, now]

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args) -> None:
            pass

        def setup(self) -> None:
            super().setup()  # headers and body go out as two writes: no Nagle wait between
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def do_GET(self) -> None:
            if self.path == "/_prepare":  # build this round's bodies before it is timed
                for key in [key for key in cache if key[1] != stamp.value]:
                    del cache[key]
                for i in range(feeds):
                    body_of(i, stamp.value)
                self.send_response(204)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            i = int(self.path.rsplit("/", 1)[1].split(".")[0])
            body, gzipped, etag = body_of(i, stamp.value)
            if self.headers.get("If-None-Match") == etag:
                self.send_response(304)
                self.send_header("ETag", etag)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("Content-Type", farm.content_type(i))
            self.send_header("ETag", etag)
            if "gzip" in self.headers.get("Accept-Encoding", ""):  # as the farm does
                body = gzipped
                self.send_header("Content-Encoding", "gzip")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    port.value = server.server_address[1]
    server.serve_forever()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--items", type=int, default=30)
    args = parser.parse_args()
    port, stamp = multiprocessing.Value("i", 0), multiprocessing.Value("i", 0)
    child = multiprocessing.Process(target=serve, args=(args.feeds, args.items, port, stamp),
                                    daemon=True)
    child.start()
    while not port.value:
        time.sleep(0.05)

    from feedhub.config import load_config
    from feedhub.hub import Hub, forked_parser_pool, make_fetcher
    from feedhub.store import open_store

    workdir = Path(tempfile.mkdtemp(prefix="redated-"))
    urls = [f"http://127.0.0.1:{port.value}/f/{i}.xml" for i in range(args.feeds)]
    config = load_config(feedhub_config(workdir, urls))

    async def round_(name: str, *, redate: bool, parse_unchanged: bool = False) -> None:
        if redate:
            stamp.value += 60
        urllib.request.urlopen(f"http://127.0.0.1:{port.value}/_prepare", timeout=600).read()
        workers = os.cpu_count() or 1
        # the workers before the store, as `feedhub poll` makes them
        with forked_parser_pool(config, workers) as pool, open_store(config.hub.database) as store:
            async with make_fetcher(config) as fetcher:
                hub = Hub(config, store, fetcher, workers=workers, pool=pool,
                          parse_unchanged=parse_unchanged)
                try:
                    started = time.monotonic()
                    reports = await hub.poll_many(config.sources)
                    seconds = time.monotonic() - started
                finally:
                    hub.close()
        statuses: dict[object, int] = {}
        for report in reports:
            key = (report.status, report.note)
            statuses[key] = statuses.get(key, 0) + 1
        print(f"{name:<34} {seconds:6.2f} s  {statuses}", flush=True)

    async def run() -> None:
        await round_("first poll (everything new)", redate=False)
        await round_("304 round", redate=False)
        await round_("redated, parse_unchanged=True", redate=True, parse_unchanged=True)
        # the stored hash is the plain one: this round parses and stores fingerprints
        await round_("redated, shortcut (first)", redate=True)
        await round_("redated, shortcut", redate=True)
        await round_("304 round", redate=False)
        await round_("redated, shortcut", redate=True)

    asyncio.run(run())
    child.terminate()


if __name__ == "__main__":
    main()
