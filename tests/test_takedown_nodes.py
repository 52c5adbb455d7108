"""A takedown reaches every node of a cluster (several daemons on one
PostgreSQL, each with its own config dir and feeds/), with real parts only:
the CLI and a `feedhub run` daemon as subprocesses, upstream feeds on
127.0.0.1. `feedhub withdraw` on node A; node B's archive pages and feeds
lose the withdrawn items too: at its next `feedhub publish`, and, with a
daemon running there, within seconds without any command on B."""

from __future__ import annotations

import gzip
import os
import subprocess
from pathlib import Path

import brotli
import pytest

from hubdir import HubDir, files_under, stop, wait_for
from test_store_postgres_cli import without_clock

FEED = """<?xml version="1.0"?><rss version="2.0"><channel><title>{name}</title>
<link>https://{name}.example/</link><description>d</description><language>en</language>
{items}</channel></rss>"""
ITEM = ("<item><title>{name} {n}</title><link>https://{name}.example/{n}</link>"
        "<guid>{name}-{n}</guid><pubDate>Sat, {day:02d} Mar 2024 {hour:02d}:00:00 GMT</pubDate>"
        "<description>Text {n}</description></item>")
SOURCES = ("dated", "other", "third")  # interleaved by date: every archive page holds several


def feed(name: str, hour: int) -> str:
    return FEED.format(name=name, items="".join(ITEM.format(name=name, n=n, day=n, hour=hour)
                                                for n in range(1, 9)))


def published(hub: HubDir) -> dict[str, bytes]:
    """Every file under feeds/, compressed copies decompressed, and an
    emptied Atom document without its feed-level date (the clock's, see
    README "Known gaps")."""
    files = {}
    for name, data in files_under(hub.feeds).items():
        if name.endswith(".gz"):
            data = gzip.decompress(data)
        elif name.endswith(".br"):
            data = brotli.decompress(data)
        files[name] = without_clock(data)
    return files


def archive_pages(files: dict[str, bytes]) -> dict[str, bytes]:
    return {name: data for name, data in files.items()
            if name.startswith("archive/") and name.endswith(".atom")}


def holding(files: dict[str, bytes], source: str) -> list[str]:
    """The files that show an item of `source`."""
    return sorted(name for name, data in files.items() if f"https://{source}.example/".encode()
                  in data and (name.endswith((".atom", ".json", ".html"))))


@pytest.fixture
def nodes(tmp_path: Path, feed_server, pg_database: str,  # type: ignore[no-untyped-def]
          monkeypatch: pytest.MonkeyPatch) -> tuple[HubDir, HubDir]:
    """Two node config dirs (the same config.toml, each its own feeds/) on
    one PostgreSQL database, both published after node A's poll, with
    archive pages that hold items of every source."""
    monkeypatch.setenv("FEEDHUB_DATABASE", pg_database)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    a, b = HubDir(tmp_path / "a", items_per_feed=2), HubDir(tmp_path / "b")
    a.config.write_text(a.config.read_text(encoding="utf-8").replace(
        "host_spacing = 0", "host_spacing = 0\narchive_page_size = 3"), encoding="utf-8")
    for hour, name in enumerate(SOURCES):
        feed_server.serve(f"/{name}.rss", feed(name, hour))
        added = a.run("add", feed_server.url(f"/{name}.rss"), "--name", name, "--no-check",
                      "--no-fulltext")
        assert added.returncode == 0, added.stderr
    b.config.write_text(a.config.read_text(encoding="utf-8"), encoding="utf-8")
    polled = a.run("poll")
    assert polled.returncode == 0, polled.stderr
    caught_up = b.run("publish")
    assert caught_up.returncode == 0, caught_up.stderr
    files = published(a)
    assert len(archive_pages(files)) >= 5
    assert all(holding(archive_pages(files), name) for name in SOURCES)
    assert published(b) == files
    return a, b


def test_a_takedown_on_one_node_reaches_another_nodes_archives_at_its_publish(
        nodes: tuple[HubDir, HubDir]) -> None:
    a, b = nodes
    before = published(b)
    withdrawn = a.run("withdraw", "dated")
    assert withdrawn.returncode == 0, withdrawn.stderr + withdrawn.stdout
    assert holding(published(a), "dated") == []
    assert holding(published(b), "dated") != []  # B has not published since

    caught_up = b.run("publish")
    assert caught_up.returncode == 0, caught_up.stderr
    after = published(b)
    assert holding(after, "dated") == []  # archive pages, feeds, source feed
    assert after == published(a)  # file for file
    assert archive_pages(after) != archive_pages(before)  # the pages were rewritten
    again = a.run("publish")  # node A's rewrites were done once: nothing changes
    assert again.returncode == 0, again.stderr
    assert published(a) == after


@pytest.mark.timeout(120)
def test_a_takedown_on_one_node_reaches_a_running_daemon_on_another_within_seconds(
        nodes: tuple[HubDir, HubDir]) -> None:
    a, b = nodes
    # B's daemon polls nothing (A polled every source: none is due for 30 minutes)
    with (b.root / "log").open("w") as log:
        daemon = subprocess.Popen(b.command("run"), stdout=subprocess.DEVNULL, stderr=log,
                                  cwd=b.root, text=True, env={
                                      k: v for k, v in os.environ.items()
                                      if k != "FEEDHUB_CONFIG"})
    try:
        wait_for(lambda: "feedhub running" in (b.root / "log").read_text(), timeout=30, step=0.2)
        withdrawn = a.run("withdraw", "other")  # nothing is run on B after this
        assert withdrawn.returncode == 0, withdrawn.stderr + withdrawn.stdout
        wait_for(lambda: holding(published(b), "other") == [], timeout=20, step=0.2)
        wait_for(lambda: published(b) == published(a), timeout=10, step=0.2)
    finally:
        stop(daemon, timeout=30)
    logged = (b.root / "log").read_text()
    assert daemon.returncode == 0, logged[-3000:]
    assert "Traceback" not in logged, logged[-3000:]
    assert holding(published(a), "other") == []
    assert holding(published(b), "dated") != []  # only the withdrawn source left
