"""Several daemons on one PostgreSQL (issue 16), with real parts only: three
`feedhub run` subprocesses, each with its own config dir (the same config
content) and its own feeds/, 300 sources on 30 loopback hosts
(127.0.0.1 ... 127.0.0.30: Linux routes all of 127/8 to lo) whose feeds
grow an item every few seconds and answer slowly, so polls overlap. One
daemon is killed with SIGKILL half-way; its sources go to the others.
Checked: no source fetched twice for one due time, the killed daemon's
sources polled again within the lease, at most max_per_host requests to a
host at once across the daemons, every item stored once, the archive
chain whole, and every node's feeds/ the same."""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import signal
import subprocess
import threading
import time
from collections import defaultdict
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import feedparser
import psycopg
import pytest

from hubdir import HubDir, files_under

HOSTS = 30
SOURCES = 300
INTERVAL = 20  # seconds: each source is due about five times in the test
LEASE = 10  # [hub] claim_lease: a killed daemon's sources wait at most this long
GROW = 12.0  # each feed gains an item this often
WINDOW = 10  # items a feed shows: more than grow between two polls, even a late one
DELAY = 0.3  # every answer takes this long, so requests overlap
SPACING = 0.25  # [hub] host_spacing: starts to one host at least this far apart
RUN = 100.0  # seconds the cluster runs
# the feeds stop growing here: the last changes are polled an interval (and
# its jitter) later, and every node has published them before the stop
FREEZE_AT = RUN - INTERVAL * 1.1 - 12
KILL_AT = 40.0  # when one daemon is killed
BASE_DATE = 1_700_000_000  # items' dates: fixed, so every node renders the same bytes


class Farm:
    """30 HTTP servers, one per loopback address, serving /s<N>.rss: what
    each source showed at each request, and requests in flight per host."""

    def __init__(self) -> None:
        self.start = time.monotonic()
        self.lock = threading.Lock()
        self.fetches: dict[int, list[tuple[float, int]]] = defaultdict(list)  # source: (t, n)
        self.in_flight: dict[str, int] = defaultdict(int)
        self.most_in_flight: dict[str, int] = defaultdict(int)
        self.servers = [self._server(f"127.0.0.{n}") for n in range(1, HOSTS + 1)]

    def _server(self, address: str) -> ThreadingHTTPServer:
        farm = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                source = int(self.path.strip("/").removeprefix("s").removesuffix(".rss"))
                host = self.headers.get("Host", "?")
                with farm.lock:
                    farm.in_flight[host] += 1
                    farm.most_in_flight[host] = max(farm.most_in_flight[host],
                                                    farm.in_flight[host])
                try:
                    started = time.monotonic() - farm.start
                    shown = farm.items_at(source, started)
                    time.sleep(DELAY)
                    body = farm.rss(source, shown).encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    with farm.lock:
                        farm.fetches[source].append((started, shown))
                finally:
                    with farm.lock:
                        farm.in_flight[host] -= 1

        server = ThreadingHTTPServer((address, 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                         daemon=True).start()
        return server

    def url(self, source: int) -> str:
        host, port = self.servers[source % HOSTS].server_address[:2]
        return f"http://{host}:{port}/s{source}.rss"

    @staticmethod
    def items_at(source: int, elapsed: float) -> int:
        """How many items source has at `elapsed`: 3, then one more every
        GROW seconds (sources offset, so they do not all grow at once)."""
        return 3 + int((min(elapsed, FREEZE_AT) + source % 7) / GROW)

    @staticmethod
    def rss(source: int, count: int) -> str:
        items = "".join(
            f"<item><title>s{source} item {k}</title><link>https://x.example/s{source}/{k}</link>"
            f"<guid>s{source}-{k}</guid><pubDate>{formatdate(BASE_DATE + k * 600 + source, usegmt=True)}"
            f"</pubDate><description>Text {k} of s{source}</description></item>"
            for k in range(max(0, count - WINDOW), count))
        return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>Source {source}</title>'
                f"<link>https://s{source}.example/</link><description>d</description>"
                f"<language>en</language>{items}</channel></rss>")

    def served(self) -> set[tuple[str, str]]:
        """Every (source, guid) the farm has answered with."""
        with self.lock:
            return {(f"s{source}", f"s{source}-{k}") for source, fetches in self.fetches.items()
                    for _, count in fetches for k in range(max(0, count - WINDOW), count)}

    def stop(self) -> None:
        for server in self.servers:
            server.shutdown()
            server.server_close()


def config_text(farm: Farm) -> str:
    sources = "".join(f'\n[[sources]]\nname = "s{n}"\nurl = "{farm.url(n)}"\nfulltext = "never"\n'
                      for n in range(SOURCES))
    return f"""[hub]
title = "Cluster hub"
base_url = "https://hub.example.org/feeds/"
allow_private_networks = true   # the farm is on 127.0.0.0/8
items_per_feed = 20
archive_page_size = 25
default_interval = "{INTERVAL}s"
timeout = "5s"
max_per_host = 2
host_spacing = "{SPACING}s"
claim_lease = "{LEASE}s"
pages = false
{sources}"""


def published(feeds: Path) -> dict[str, bytes]:
    return files_under(feeds)


@pytest.fixture
def farm() -> Any:
    farm = Farm()
    yield farm
    farm.stop()


@pytest.mark.timeout(300)  # 100 s of running, then checks and every Atom document validated
def test_three_daemons_share_300_sources_and_survive_a_kill(
        tmp_path: Path, farm: Farm, pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDHUB_DATABASE", pg_database)
    text = config_text(farm)
    nodes = []
    for n in range(3):
        (tmp_path / f"node{n}").mkdir()
        hub = HubDir(tmp_path / f"node{n}")
        hub.config.write_text(text, encoding="utf-8")
        nodes.append(hub)
    # logs to files: 100 s of three daemons' logging would fill a pipe and block them
    daemons = [subprocess.Popen(hub.command("run"), stdout=subprocess.DEVNULL,
                                stderr=(hub.root / "log").open("w"), cwd=hub.root,
                                env={k: v for k, v in os.environ.items() if k != "FEEDHUB_CONFIG"},
                                start_new_session=True) for hub in nodes]
    killed_at = None
    try:
        time.sleep(KILL_AT - (time.monotonic() - farm.start))
        # the whole session of node1: the daemon and its parser workers, as a crash would
        os.killpg(daemons[1].pid, signal.SIGKILL)
        killed_at = time.monotonic() - farm.start
        daemons[1].wait(timeout=10)
        with psycopg.connect(pg_database) as conn:  # its heartbeat stays until it ages out
            assert len(conn.execute("SELECT node FROM nodes").fetchall()) == 3
        time.sleep(max(0.0, RUN - (time.monotonic() - farm.start)))
        status = nodes[0].run("status", "--json")
        assert status.returncode == 0, status.stderr
        # the killed node went silent (30 s): the two live ones, on one config
        shown = json.loads(status.stdout)
        assert len(shown["nodes"]) == 2 and not shown["nodes_disagree"], shown["nodes"]
        assert all(node["same_config"] for node in shown["nodes"])
    finally:
        for daemon in daemons:
            if daemon.poll() is None:
                daemon.send_signal(signal.SIGTERM)
        for daemon in daemons:
            with contextlib.suppress(subprocess.TimeoutExpired):
                daemon.wait(timeout=60)
        logs = [(hub.root / "log").read_text(errors="replace") for hub in nodes]
        for daemon in daemons:
            if daemon.poll() is None:  # the test failed before its kill
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
    ended = time.monotonic() - farm.start
    for i in (0, 2):
        assert daemons[i].returncode == 0, logs[i][-3000:]
        assert "Traceback" not in logs[i], logs[i][-3000:]
    assert killed_at is not None

    # every source polled once per due time, never twice: no two fetches of a
    # source closer than half its interval, whichever daemons made them
    starts = {source: sorted(t for t, _ in farm.fetches[source]) for source in range(SOURCES)}
    close = {source: [round(b - a, 2) for a, b in itertools.pairwise(times) if b - a < INTERVAL / 2]
             for source, times in starts.items()}
    assert {source: gaps for source, gaps in close.items() if gaps} == {}
    assert all(len(times) >= 4 for times in starts.values()), min(map(len, starts.values()))
    # the killed daemon's sources were polled again by the others within the
    # lease (and the interval and its jitter): no gap longer than that, and
    # every source polled after the kill
    longest = INTERVAL * 1.1 + LEASE + 10  # + 10 s for a loaded 2-core machine
    late = {source: [round(b - a, 1) for a, b in itertools.pairwise(times) if b - a > longest]
            for source, times in starts.items()}
    assert {source: gaps for source, gaps in late.items() if gaps} == {}
    assert all(times[-1] > killed_at + LEASE for times in starts.values())
    assert all(times[-1] > ended - longest - 5 for times in starts.values())

    # politeness across the cluster: never more than max_per_host requests
    # to one host at once, whichever daemons made them (and the limit was met)
    assert max(farm.most_in_flight.values()) == 2, dict(farm.most_in_flight)
    # (host_spacing is booked across the daemons too, but not asserted here:
    # the farm sees when a request arrives, and a daemon whose event loop a
    # publish holds sends a booked request late, next to the one booked after
    # it; the booking itself is tested in test_store_contract)

    # no item lost or doubled: the database holds exactly what the farm served, each once
    with psycopg.connect(pg_database) as conn:
        stored = conn.execute("SELECT source, upstream_id, atom_id FROM items").fetchall()
        nodes_left = conn.execute("SELECT count(*) FROM nodes").fetchone()
    assert {(source, guid) for source, guid, _ in stored} == farm.served()
    assert len(stored) == len({atom_id for _, _, atom_id in stored}) == len(farm.served())
    assert nodes_left == (0,)  # the survivors left the list; the killed one aged out

    # every node published what the others stored: the survivors' feeds/
    # are identical file for file, and the killed node's, once `feedhub
    # publish` has caught it up; archive pages too, byte for byte, whichever
    # node wrote one and when (each carries its sources' feed info as it was
    # when the page was closed)
    feeds = published(nodes[0].feeds)
    assert sorted(published(nodes[2].feeds)) == sorted(feeds)
    assert [name for name, data in published(nodes[2].feeds).items() if feeds[name] != data] == []
    caught_up = nodes[1].run("publish")
    assert caught_up.returncode == 0, caught_up.stderr
    assert sorted(published(nodes[1].feeds)) == sorted(feeds)
    assert [name for name, data in published(nodes[1].feeds).items() if feeds[name] != data] == []
    assert sum(name.startswith("sources/") and name.endswith(".atom") for name in feeds) == SOURCES

    # the archive chain: every item linked once, page by page
    chain, page = [], feedparser.parse(feeds["en.atom"])
    ids: list[str] = []
    while True:
        ids += [entry.id for entry in page.entries]
        prev = [link.href for link in page.feed.links if link.rel == "prev-archive"]
        if not prev:
            break
        chain.append(prev[0].removeprefix("https://hub.example.org/feeds/"))
        page = feedparser.parse(feeds[chain[-1]])
    assert len(chain) >= 10
    assert sorted(ids) == sorted(atom_id for _, _, atom_id in stored)
