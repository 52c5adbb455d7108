"""Hard stops lose nothing: kill -9 at random points, an output directory
that refuses writes, two CLI processes editing config.toml at once."""

from __future__ import annotations

import random
import shutil
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import feedparser
import pytest

from hubdir import HubDir, stop, wait_for

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
        daemon = hub.start("run")
        time.sleep(rng.uniform(0.3, 2.5))  # mid-startup, mid-poll, mid-publish ...
        daemon.send_signal(signal.SIGKILL)
        daemon.wait(timeout=10)
        counts = assert_whole(hub)
        for name, count in stored.items():
            assert counts.get(name, 0) >= count  # nothing stored is ever lost
        stored = counts
    # and the next run carries on to the end
    daemon = hub.start("run")
    try:
        wait_for(lambda: assert_whole(hub) == sizes, timeout=60, step=0.3)
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log
    published = {e.title for e in hub.feed("en").entries}
    assert {f"{name} {size - 1}" for name, size in sizes.items()} <= published


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
