"""Hard stops lose nothing and leave nothing behind: kill -9 at random
points (and of a daemon or a `poll --all` whose parser pool is running),
an output directory that refuses writes, two CLI processes editing
config.toml at once."""

from __future__ import annotations

import os
import random
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import feedparser
import pytest

from hubdir import HubDir, Proc, kill_9, pool_of, stop, wait_for

RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>{name}</title>
<link>https://{name}.example/</link><description>d</description><language>en</language>
{items}</channel></rss>"""


def rss(name: str, count: int) -> str:
    body = "".join(
        f"<item><title>{name} {n}</title><link>https://{name}.example/{n}</link><guid>{name}-{n}"
        f"</guid><description>{'Words of the article. ' * 40}</description></item>"
        for n in range(count))
    return RSS.format(name=name, items=body)


def assert_whole(hub: HubDir) -> dict[str, int]:
    """integrity_check ok, no duplicate items, every feed file well-formed."""
    with sqlite3.connect(hub.database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        duplicates = db.execute("SELECT source, upstream_id, count(*) FROM items "
                                "GROUP BY source, upstream_id HAVING count(*) > 1").fetchall()
        assert duplicates == []
        counts = dict(db.execute("SELECT source, count(*) FROM items GROUP BY source"))
    for path in hub.feeds.glob("*.atom"):
        parsed = feedparser.parse(path.read_bytes())
        assert not parsed.bozo, (path, parsed.bozo_exception)
    return counts


@pytest.mark.timeout(300)
def test_kill_9_at_random_points_loses_nothing(tmp_path: Path, feed_server) -> None:
    hub = HubDir(tmp_path, interval="1s")
    sizes = {f"s{n}": 0 for n in range(6)}
    for name in sizes:
        feed_server.serve(f"/{name}.rss", rss(name, 1))
        hub.run("add", feed_server.url(f"/{name}.rss"), "--name", name, "--no-check",
                "--no-fulltext")
    rng = random.Random(9)
    stored: dict[str, int] = {}
    for _ in range(8):
        for name in sizes:  # the feeds keep growing while the daemon dies and restarts
            sizes[name] += rng.randint(1, 15)
            feed_server.serve(f"/{name}.rss", rss(name, sizes[name]))
        daemon = hub.start("run", new_session=True)
        time.sleep(rng.uniform(0.3, 2.5))  # mid-startup, mid-poll, mid-publish ...
        kill_9(daemon)  # and none of its workers or helpers lives on
        counts = assert_whole(hub)
        for name, count in stored.items():
            assert counts.get(name, 0) >= count  # nothing stored is ever lost
        stored = counts
    # and the next run carries on to the end (with something left to do: had
    # the last killed daemon stored everything, a SIGTERM sent at once would
    # reach this one before it installs its handlers)
    for name in sizes:
        sizes[name] += 1
        feed_server.serve(f"/{name}.rss", rss(name, sizes[name]))
    daemon = hub.start("run")
    try:
        wait_for(lambda: assert_whole(hub) == sizes, timeout=60, step=0.3)
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log
    published = {e.title for e in hub.feed("en").entries}
    assert {f"{name} {size - 1}" for name, size in sizes.items()} <= published


def add_sources(hub: HubDir, feed_server, count: int, items: int) -> None:
    for n in range(count):
        feed_server.serve(f"/s{n}.rss", rss(f"s{n}", items))
        hub.run("add", feed_server.url(f"/s{n}.rss"), "--name", f"s{n}", "--no-check",
                "--no-fulltext")


def wait_for_pool(pid: int, workers: int) -> dict[str, list[Proc]]:
    """Until `pid` runs `workers` parser workers: forked from it as the pool
    is made, when it has a single thread; else from a forkserver, with a
    resource tracker, at the first parse (worker.parser_pool)."""
    def running() -> bool:
        pool = pool_of(pid)
        helpers = len(pool["forkserver"]), len(pool["resource tracker"])
        return helpers in ((0, 0), (1, 1)) and len(pool["workers"]) >= workers

    wait_for(running, timeout=30)
    return pool_of(pid)


def test_kill_9_leaves_no_parser_worker_or_helper_behind(tmp_path: Path, feed_server) -> None:
    """The workers ignore SIGTERM (and a forkserver and resource tracker
    would wait for them): each must still go when the daemon is SIGKILLed
    (the OOM killer), or every crash-restart leaks them."""
    hub = HubDir(tmp_path, interval="1s")
    add_sources(hub, feed_server, 8, 300)  # first polls at once: parses overlap
    daemon = hub.start("run", new_session=True)
    try:
        pool = wait_for_pool(daemon.pid, min(2, os.cpu_count() or 1))
        # forked as it started, before its store and threads (worker.parser_pool)
        assert pool["forkserver"] == pool["resource tracker"] == []
    finally:
        seen = kill_9(daemon)
    assert len(seen) >= 1 + min(2, os.cpu_count() or 1)  # the daemon and its workers


def test_kill_9_mid_poll_all_leaves_no_parser_worker_behind(tmp_path: Path,
                                                            feed_server) -> None:
    hub = HubDir(tmp_path)
    add_sources(hub, feed_server, 8, 50)  # POOL_THRESHOLD: this poll parses in a pool
    feed_server.slow("/slow.rss", rss("slow", 1), first_byte_delay=30)  # still polling
    hub.run("add", feed_server.url("/slow.rss"), "--name", "slow", "--no-check", "--no-fulltext")
    poll = hub.start("poll", "--all", new_session=True)
    try:
        assert wait_for_pool(poll.pid, 1)["forkserver"] == []  # forked
        assert poll.poll() is None  # killed mid-poll
    finally:
        kill_9(poll)


STUCK_OWNER = """
import os, re, sys, threading, time
from feedhub.worker import parser_pool

if __name__ == "__main__":
    if sys.argv[1] == "threaded":  # its workers come from a forkserver
        threading.Thread(target=time.sleep, args=(600,), daemon=True).start()
    pool = parser_pool(1, fork=True)
    pool.submit(os.getpid).result()  # the pool runs
    pool.submit(re.match, r"(a+)+$", "a" * 64 + "b")  # backtracks for ages, holding the GIL
    time.sleep(0.5)
    print("stuck", flush=True)
    time.sleep(600)
"""


@pytest.mark.parametrize("owner_kind", ["single-threaded", "threaded"])
def test_a_worker_stuck_holding_the_gil_dies_with_its_owner(tmp_path: Path,
                                                            owner_kind: str) -> None:
    """A hostile feed can keep a worker in C code that never lets a
    watching thread run: the kernel must end it (the parent-death signal:
    of a forked worker; of a forkserver and its worker both)."""
    script = tmp_path / "owner.py"
    script.write_text(STUCK_OWNER, encoding="utf-8")
    owner = subprocess.Popen([sys.executable, str(script), owner_kind], stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert owner.stdout is not None and owner.stdout.readline() == "stuck\n"
        pool = pool_of(owner.pid)
        assert len(pool["workers"]) == 1
        assert len(pool["forkserver"]) == (owner_kind == "threaded")
    finally:
        kill_9(owner)


def test_an_output_directory_that_refuses_writes_keeps_the_old_feeds(tmp_path: Path,
                                                                     feed_server) -> None:
    if not shutil.which("chattr"):
        pytest.skip("chattr is not installed")
    hub = HubDir(tmp_path, interval="1s")
    feed_server.serve("/a.rss", rss("a", 2))
    hub.run("add", feed_server.url("/a.rss"), "--name", "a", "--no-check", "--no-fulltext")
    assert hub.run("poll").returncode == 0
    before = (hub.feeds / "en.atom").read_bytes()
    # chattr +i: even root cannot create or replace files in the directory
    if subprocess.run(["chattr", "+i", str(hub.feeds)], capture_output=True).returncode:
        pytest.skip("this filesystem does not support the immutable flag")
    try:
        feed_server.serve("/a.rss", rss("a", 4))
        failed = hub.run("poll", "--all")
        assert failed.returncode == 1
        assert "publishing failed (previous feed files kept)" in failed.stderr
        assert (hub.feeds / "en.atom").read_bytes() == before
        with sqlite3.connect(hub.database) as db:  # the poll itself was stored
            assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 4

        feed_server.serve("/a.rss", rss("a", 6))
        daemon = hub.start("run")
        wait_for(lambda: len(feed_server.requests_for("/a.rss")) >= 4)  # polling goes on
        assert (hub.feeds / "en.atom").read_bytes() == before
    finally:
        subprocess.run(["chattr", "-i", str(hub.feeds)], check=True)
    try:  # space is back: the retry publishes
        wait_for(lambda: len(hub.feed("en").entries) == 6, timeout=20)
    finally:
        log = stop(daemon)
    assert "publishing failed, previous feed files kept; retrying" in log
    assert daemon.returncode == 0


def test_concurrent_cli_edits_lose_no_source(hub: HubDir) -> None:
    processes = [subprocess.Popen(hub.command("add", f"https://s{n}.example/feed", "--name",
                                              f"s{n}", "--no-check"),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for n in range(12)]
    for process in processes:
        process.wait(timeout=60)
        assert process.returncode == 0, process.stderr.read()
    listed = hub.run("list", "--json")
    assert listed.returncode == 0
    assert sorted(row["name"] for row in __import__("json").loads(listed.stdout)) == sorted(
        f"s{n}" for n in range(12))
