"""The real CLI on PostgreSQL (FEEDHUB_DATABASE=postgresql://...) publishes
the very bytes it publishes on SQLite: same feeds, archives, per-source
feeds and pages, from the same upstream feeds on 127.0.0.1."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path
from typing import Any

import pytest

from hubdir import FIXTURES, HubDir, files_under, rss, stop, wait_for

DATED = """<?xml version="1.0"?><rss version="2.0"><channel><title>Dated</title>
<link>https://dated.example/</link><description>d</description><language>en</language>
{items}</channel></rss>"""
ITEM = ("<item><title>Item {n}</title><link>https://dated.example/{n}</link><guid>dated-{n}</guid>"
        "<pubDate>Sat, {day:02d} Mar 2024 08:00:00 GMT</pubDate><description>Text {n}</description></item>")


def serve_fixtures(feed_server) -> None:  # type: ignore[no-untyped-def]
    feed_server.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    feed_server.serve("/persian.rss", (FIXTURES / "persian.rss").read_bytes())
    feed_server.serve("/german.atom", (FIXTURES / "german.atom").read_bytes(),
                      content_type="application/atom+xml")
    feed_server.serve("/dated.rss", DATED.format(items="".join(ITEM.format(n=n, day=n)
                                                               for n in range(1, 12))))


def published(hub: HubDir) -> dict[str, bytes]:
    """Every file under feeds/, by its path there."""
    return files_under(hub.feeds)


def run_hub(root: Path, feed_server) -> tuple[dict[str, bytes], dict[str, bytes]]:  # type: ignore[no-untyped-def]
    """add four sources and poll twice (the second: 304s), then take one
    down and publish: what was published after each."""
    root.mkdir()
    hub = HubDir(root, items_per_feed=2)  # small, and small archive pages: they fill too
    hub.config.write_text(hub.config.read_text(encoding="utf-8").replace(
        "host_spacing = 0", "host_spacing = 0\narchive_page_size = 3"), encoding="utf-8")
    for path in ("/wsws.rss", "/persian.rss", "/german.atom", "/dated.rss"):
        added = hub.run("add", feed_server.url(path), "--no-fulltext")
        assert added.returncode == 0, added.stderr
    for _ in range(2):
        polled = hub.run("poll")
        assert polled.returncode == 0, polled.stderr
    for command in (("list", "--json"), ("status", "--json")):
        shown = hub.run(*command)
        assert shown.returncode == 0, shown.stderr
    polled = published(hub)
    withdrawn = hub.run("withdraw", feed_server.url("/dated.rss"))
    assert withdrawn.returncode == 0, withdrawn.stderr + withdrawn.stdout
    assert hub.run("publish").returncode == 0
    return polled, published(hub)


def without_clock(document: bytes) -> bytes:
    """An Atom document a takedown emptied is dated by the clock (the time it
    became empty): its feed-level <updated> is left out of the comparison."""
    if b"<entry" in document:
        return document
    return re.sub(rb"<updated>[^<]*</updated>", b"", document, count=1)


def test_the_cli_on_postgresql_publishes_what_it_publishes_on_sqlite(
        tmp_path: Path, feed_server, pg_database: str,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    serve_fixtures(feed_server)
    monkeypatch.delenv("FEEDHUB_DATABASE", raising=False)
    sqlite_polled, sqlite_withdrawn = run_hub(tmp_path / "sqlite", feed_server)
    assert (tmp_path / "sqlite" / "feedhub.db").exists()

    monkeypatch.setenv("FEEDHUB_DATABASE", pg_database)
    pg_polled, pg_withdrawn = run_hub(tmp_path / "postgresql", feed_server)
    assert not (tmp_path / "postgresql" / "feedhub.db").exists()  # nothing went to SQLite

    # after the polls: every file, byte for byte (feeds, archives, pages, compressed copies)
    assert sum(name.startswith("archive/") and name.endswith(".atom") for name in sqlite_polled) >= 3
    assert sorted(pg_polled) == sorted(sqlite_polled)
    assert [name for name in sqlite_polled if sqlite_polled[name] != pg_polled[name]] == []
    # after the takedown: every Atom document, the emptied ones but for their date
    assert sorted(pg_withdrawn) == sorted(sqlite_withdrawn)
    atom = [name for name in sqlite_withdrawn if name.endswith(".atom")]
    assert any(b"<entry" not in sqlite_withdrawn[name] for name in atom)  # a page was emptied
    assert [name for name in atom if without_clock(sqlite_withdrawn[name])
            != without_clock(pg_withdrawn[name])] == []


def test_the_daemon_runs_on_postgresql_with_its_locks_beside_the_config(
        tmp_path: Path, feed_server, pg_database: str,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FEEDHUB_DATABASE", pg_database)
    hub = HubDir(tmp_path, interval="1s")
    feed_server.serve("/one.rss", rss("one", "1", "2"))
    assert hub.run("add", feed_server.url("/one.rss"), "--name", "one", "--no-check",
                   "--no-fulltext").returncode == 0
    daemon = hub.start("run")
    try:
        wait_for(lambda: (hub.feeds / "en.atom").exists()
                 and (tmp_path / "feedhub-postgresql.lock").exists())
        second = hub.start("run")  # one daemon per node: the lock beside the config says so
        _, refused = second.communicate(timeout=30)
        assert second.returncode != 0 and "another" in refused.lower(), refused
        shown = hub.run("status", "--json")
        assert shown.returncode == 0, shown.stderr
        assert [s["items"] for s in json.loads(shown.stdout)["sources"]] == [2]
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log
    assert not (tmp_path / "feedhub.db").exists()
    assert len(hub.feed("en").entries) == 2


def test_nodes_on_one_database_say_when_their_configs_differ(
        tmp_path: Path, pg_database: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two daemons (two config dirs, one database) whose config.toml differ by
    a comment: status lists both and says they disagree; each daemon logs it."""
    monkeypatch.setenv("FEEDHUB_DATABASE", pg_database)
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    hubs = [HubDir(tmp_path / "a"), HubDir(tmp_path / "b")]
    hubs[1].config.write_text(hubs[0].config.read_text(encoding="utf-8") + "# edited\n",
                              encoding="utf-8")

    def nodes() -> list[dict[str, Any]]:
        shown = hubs[0].run("status", "--json")
        assert shown.returncode == 0, shown.stderr
        status = json.loads(shown.stdout)
        assert status["nodes_disagree"] == (len({n["config_hash"] for n in status["nodes"]}) > 1)
        return list(status["nodes"])

    daemons = [hub.start("run") for hub in hubs]
    try:
        wait_for(lambda: len(nodes()) == 2, timeout=30, step=0.3)
        assert sorted(node["same_config"] for node in nodes()) == [False, True]
        text = hubs[0].run("status").stdout
        assert "run different configs" in text and "not this config.toml" in text
        time.sleep(6)  # a heartbeat (5 s) after both started: each has seen the other
    finally:
        logs = [stop(daemon) for daemon in daemons]
    assert all(daemon.returncode == 0 for daemon in daemons), logs
    assert all("runs another config" in log for log in logs), logs
    assert nodes() == []  # both left the list when they stopped
