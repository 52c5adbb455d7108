"""`feedhub run` as a real subprocess with short intervals: rhythm, backoff,
Retry-After, redirects, 410, live config changes, signals and the lock."""

from __future__ import annotations

import fcntl
import itertools
import json
import math
import signal
import sqlite3
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

import feedparser

from hubdir import FIXTURES, HubDir, rss, stop, wait_for


def starts(feed_server, path: str) -> list[float]:
    return [r.time for r in feed_server.requests_for(path)]


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def hub_with_sources(tmp_path: Path, feed_server, interval: str, *names: str,
                     **serve: object) -> HubDir:
    """A hub whose sources are feeds served at /NAME.rss, one item each."""
    hub = HubDir(tmp_path, interval=interval)
    for name in names:
        feed_server.serve(f"/{name}.rss", rss(name, "1"), **serve)
        hub.run("add", feed_server.url(f"/{name}.rss"), "--name", name, "--no-check", "--no-fulltext")
    return hub


def test_failures_back_off_retry_after_is_honoured_and_others_keep_rhythm(
        tmp_path: Path, feed_server) -> None:
    hub = HubDir(tmp_path, interval="1s")
    feed_server.serve("/ok.rss", rss("ok", "1"))
    feed_server.error("/broken.rss", 500)
    feed_server.error("/busy.rss", 429, headers={"Retry-After": "4"})
    for name in ("ok", "broken", "busy"):
        hub.run("add", feed_server.url(f"/{name}.rss"), "--name", name, "--no-check", "--no-fulltext")
    daemon = hub.start("run")
    try:
        wait_for(lambda: len(starts(feed_server, "/ok.rss")) >= 8, timeout=20)
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log

    ok = starts(feed_server, "/ok.rss")
    assert all(0.5 < gap < 2.0 for gap in gaps(ok)), gaps(ok)  # the 1 s interval, give or take
    broken = gaps(starts(feed_server, "/broken.rss"))
    assert len(broken) >= 2 and all(b > a * 1.5 for a, b in itertools.pairwise(broken)), broken
    assert broken[0] >= 1.5  # the 1 s interval doubled after the first failure (less poll time)
    busy = gaps(starts(feed_server, "/busy.rss"))
    # Retry-After: 4 beats the 2 s backoff, counted from the answer
    assert busy and busy[0] >= 4, busy
    assert "Retry-After 4s honoured" in log

    status = json.loads(hub.run("status", "--json").stdout)
    by_name = {s["name"]: s for s in status["sources"]}
    assert by_name["ok"]["state"] == "ok" and by_name["ok"]["error_streak"] == 0
    assert by_name["broken"]["state"] == "failing"
    assert by_name["broken"]["error_streak"] == len(broken) + 1
    assert by_name["broken"]["last_error"] == "HTTP 500 Internal Server Error"
    assert status["summary"]["ok"] == 1 and status["summary"]["failing"] == 2
    assert status["summary"]["items_per_language"] == {"en": 1}


def test_never_back_before_retry_after_counted_from_a_slow_answer(
        tmp_path: Path, feed_server) -> None:
    """503s that take 1.5 s to come: `Retry-After: 5` counts from the answer
    (from the poll's start, the next request came 3.5 s after it), and an
    HTTP date is never beaten by rounding down (a date 10 s ahead was once
    polled 9.1 s later)."""
    hub = HubDir(tmp_path, interval="1s")  # backoff: 2 s, then 4 s; the hints are longer
    answered: dict[str, list[tuple[float, float]]] = {"delta": [], "dated": []}

    def retry_after(name: str, date: bool) -> Callable[[], str]:
        def header() -> str:  # asked as the answer goes out
            now, wall = time.monotonic(), time.time()
            if not date:
                answered[name].append((now, now + 5))
                return "5"
            when = math.floor(wall) + 5  # 4 to 5 s ahead, on a whole second
            answered[name].append((now, now + when - wall))
            return formatdate(when, usegmt=True)
        return header

    for name in ("delta", "dated"):
        feed_server.error(f"/{name}.rss", 503, delay=1.5,
                          headers={"Retry-After": retry_after(name, name == "dated")})
        hub.run("add", feed_server.url(f"/{name}.rss"), "--name", name, "--no-check",
                "--no-fulltext")
    daemon = hub.start("run")
    try:
        wait_for(lambda: all(len(starts(feed_server, f"/{n}.rss")) >= 3 for n in answered),
                 timeout=30)
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log
    early = [(name, f"asked again {again - answer:.2f}s after an answer that said "
                    f"{not_before - answer:.2f}s")
             for name, answers in answered.items()
             for (answer, not_before), again in zip(answers, starts(feed_server, f"/{name}.rss")[1:],
                                                    strict=False)
             if again < not_before]
    assert not early, early
    assert "HTTP 503 Service Unavailable (Retry-After 5s honoured)" in log


def test_permanent_redirects_move_a_source_temporary_ones_do_not_and_410_retires(
        tmp_path: Path, feed_server) -> None:
    hub = HubDir(tmp_path, interval="1s")
    feed_server.serve("/new.rss", rss("moved", "1"))
    feed_server.redirect("/old.rss", "/new.rss", 301)
    feed_server.serve("/elsewhere.rss", rss("temp", "1"))
    feed_server.redirect("/temp.rss", "/elsewhere.rss", 302)
    feed_server.error("/gone.rss", 410)
    for name in ("old", "temp", "gone"):
        hub.run("add", feed_server.url(f"/{name}.rss"), "--name", name, "--no-check", "--no-fulltext")
    daemon = hub.start("run")
    try:
        wait_for(lambda: feed_server.url("/new.rss") in hub.config.read_text(encoding="utf-8"))
        moved_at = len(starts(feed_server, "/old.rss"))
        wait_for(lambda: len(starts(feed_server, "/temp.rss")) >= 5)
        time.sleep(1.5)  # let the moved source be polled at its new URL
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log

    assert moved_at == 3  # moved after 3 permanent redirects in a row, not before
    assert len(starts(feed_server, "/old.rss")) == 3  # and never asked for again
    config = hub.config.read_text(encoding="utf-8")
    assert "# A test hub: comments must survive" in config
    assert "moved permanently (3 polls in a row)" in log
    assert feed_server.url("/temp.rss") in config  # 302: unchanged however often
    assert len(starts(feed_server, "/gone.rss")) == 1  # 410: polled once, then never
    [gone] = [s for s in json.loads(hub.run("status", "--json").stdout)["sources"]
              if s["name"] == "gone"]
    assert gone["state"] == "retired" and "410" in gone["retired"] and gone["next_poll"] is None
    assert "retired" in hub.run("status").stdout


def test_sources_added_and_removed_while_running_and_bad_edits_ignored(
        tmp_path: Path, feed_server) -> None:
    hub = HubDir(tmp_path, interval="1s")
    feed_server.serve("/a.rss", rss("a", "1"))
    feed_server.serve("/b.rss", rss("b", "1", "2"))
    hub.run("add", feed_server.url("/a.rss"), "--name", "a", "--no-check", "--no-fulltext")
    daemon = hub.start("run")
    try:
        wait_for(lambda: (hub.feeds / "en.atom").exists() and len(hub.feed("en").entries) == 1)
        # another shell adds a source: picked up without a restart
        assert hub.run("add", feed_server.url("/b.rss"), "--name", "b",
                       "--no-fulltext").returncode == 0
        wait_for(lambda: len(hub.feed("en").entries) == 3)
        # a broken hand edit is logged and ignored; polling goes on
        good = hub.config.read_text(encoding="utf-8")
        hub.config.write_text(good + "\n[[sources]]\nname = 'broken\n", encoding="utf-8")
        seen = len(starts(feed_server, "/a.rss"))
        wait_for(lambda: len(starts(feed_server, "/a.rss")) >= seen + 2)
        hub.config.write_text(good, encoding="utf-8")
        # removing a source takes its items out of the feed
        assert hub.run("remove", "a").returncode == 0
        wait_for(lambda: {e.title for e in hub.feed("en").entries} == {"b 1", "b 2"})
        removed_at = len(starts(feed_server, "/a.rss"))
        time.sleep(1.5)
        assert len(starts(feed_server, "/a.rss")) == removed_at  # no longer polled
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log
    assert "config change ignored, keeping the last good config" in log
    assert "config reloaded: 2 sources (1 added" in log


def test_a_burst_of_changes_publishes_each_language_once(tmp_path: Path, feed_server) -> None:
    hub = HubDir(tmp_path, interval="5s")  # first polls spread over 0.5 s: one burst
    for n in range(5):
        feed_server.serve(f"/{n}.rss", rss(f"s{n}", "1"))
        hub.run("add", feed_server.url(f"/{n}.rss"), "--name", f"s{n}", "--no-check", "--no-fulltext")
    daemon = hub.start("run")
    try:
        wait_for(lambda: (hub.feeds / "en.atom").exists() and len(hub.feed("en").entries) == 5)
        time.sleep(1.5)
    finally:
        log = stop(daemon)
    assert log.count("en.atom (5 entries)") == 1, log  # five polls, one regeneration
    # en.atom, all.atom and each source's own feed, once each; and the page beside each
    assert log.count(".atom (") == 7 and log.count(".html (") == 7, log
    assert all(log.count(f"sources/s{n}.atom (1 entries)") == 1 for n in range(5)), log


def test_restart_resumes_the_schedule_instead_of_polling_everything(
        tmp_path: Path, feed_server) -> None:
    hub = hub_with_sources(tmp_path, feed_server, "1h", "a")
    first = hub.start("run")
    try:
        wait_for(lambda: len(starts(feed_server, "/a.rss")) == 1)
    finally:
        stop(first)
    second = hub.start("run")
    time.sleep(2)
    log = stop(second)
    assert second.returncode == 0, log
    assert len(starts(feed_server, "/a.rss")) == 1  # next poll is an hour away, as stored


def test_a_body_that_did_not_change_is_not_parsed_again(tmp_path: Path, feed_server) -> None:
    # a server that ignores conditional GET: no ETag, no Last-Modified
    hub = hub_with_sources(tmp_path, feed_server, "1s", "a", etag=False, last_modified=False)
    daemon = hub.start("run")
    try:
        wait_for(lambda: len(starts(feed_server, "/a.rss")) >= 3)
    finally:
        log = stop(daemon)
    assert "poll a status=200 new=1" in log
    assert "poll a status=200 new=0 updated=0" in log and "note=body unchanged" in log


def test_sigterm_mid_poll_exits_0_promptly_and_leaves_everything_whole(
        tmp_path: Path, feed_server) -> None:
    hub = HubDir(tmp_path, interval="1s")
    feed_server.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    feed_server.slow("/slow.rss", rss("slow", "1"), first_byte_delay=2.0)
    hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws", "--no-check", "--no-fulltext")
    hub.run("add", feed_server.url("/slow.rss"), "--name", "slow", "--no-check", "--no-fulltext")
    daemon = hub.start("run")
    try:
        wait_for(lambda: (hub.feeds / "en.atom").exists() and feed_server.requests_for("/slow.rss"))
    finally:
        started = time.monotonic()
        log = stop(daemon)
    assert daemon.returncode == 0, log
    assert time.monotonic() - started < 8
    assert "SIGTERM received" in log and "stopped" in log
    with sqlite3.connect(hub.database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert not feedparser.parse((hub.feeds / "en.atom").read_bytes()).bozo
    assert not [p for p in hub.feeds.iterdir() if p.name.startswith(".")]  # no temp files


def test_a_second_signal_exits_at_once(tmp_path: Path, feed_server) -> None:
    hub = HubDir(tmp_path, interval="1s")
    feed_server.slow("/slow.rss", rss("slow", "1"), first_byte_delay=4.0)
    hub.run("add", feed_server.url("/slow.rss"), "--name", "slow", "--no-check", "--no-fulltext")
    daemon = hub.start("run")
    wait_for(lambda: feed_server.requests_for("/slow.rss"))
    daemon.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    daemon.send_signal(signal.SIGINT)
    started = time.monotonic()
    _, log = daemon.communicate(timeout=10)
    assert time.monotonic() - started < 2
    assert daemon.returncode == 1 and "second SIGINT: exiting now" in log


def test_one_daemon_per_database_while_cli_commands_keep_working(
        tmp_path: Path, feed_server) -> None:
    hub = hub_with_sources(tmp_path, feed_server, "1h", "a")
    daemon = hub.start("run")
    try:
        wait_for(lambda: feed_server.requests_for("/a.rss"))
        second = hub.run("run", timeout=20)
        assert second.returncode == 1
        assert "another feedhub daemon (pid" in second.stderr and "already running" in second.stderr
        assert hub.run("status").returncode == 0
        assert hub.run("list").returncode == 0
        assert hub.run("poll", "--all").returncode == 0
        assert hub.run("add", feed_server.url("/a.rss") + "?2", "--name", "b",
                       "--no-check", "--no-fulltext").returncode == 0
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log


def test_json_logs_carry_one_object_per_poll(tmp_path: Path, feed_server) -> None:
    hub = hub_with_sources(tmp_path, feed_server, "1h", "a")
    daemon = hub.start("--log-format", "json", "run")
    try:
        wait_for(lambda: (hub.feeds / "en.atom").exists())
    finally:
        log = stop(daemon)
    records = [json.loads(line) for line in log.splitlines()]
    [poll] = [r for r in records if r.get("source") == "a"]
    assert poll["status"] == 200 and poll["new"] == 1 and poll["level"] == "info"
    assert poll["message"].startswith("poll a status=200")


def test_the_daemon_keeps_polling_while_another_process_publishes(
        tmp_path: Path, feed_server) -> None:
    hub = hub_with_sources(tmp_path, feed_server, "1s", "a")
    with open(tmp_path / "feedhub.db.publish.lock", "a+b") as handle:  # `feedhub publish` runs
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        daemon = hub.start("run")
        try:
            wait_for(lambda: len(starts(feed_server, "/a.rss")) >= 3)  # polls go on
            assert not (hub.feeds / "en.atom").exists()  # publishing waits its turn...
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
            wait_for(lambda: (hub.feeds / "en.atom").exists())  # ... and comes once it is free
        finally:
            log = stop(daemon)
    assert "another process is publishing; publishing again in 5s" in log
    assert daemon.returncode == 0 and "Traceback" not in log


def test_a_poll_that_outlasts_its_interval_is_followed_by_the_next(tmp_path: Path,
                                                                   feed_server) -> None:
    """The first poll fetches a slow article page (2 s) on a 1 s interval, so
    its next poll is already due when it ends. That next poll must happen:
    scheduled from inside the running job, apscheduler skipped it as a second
    instance of the job, and the source was never polled again."""
    hub = HubDir(tmp_path, interval="1s")
    feed_server.slow("/article", "<html><body><article><p>" + "Text. " * 200
                     + "</p></article></body></html>", first_byte_delay=2.0,
                     content_type="text/html")
    feed_server.serve("/slow.rss", '<?xml version="1.0"?><rss version="2.0"><channel>'
                      "<title>S</title><link>https://s.example/</link><description>d</description>"
                      f"<item><title>T</title><link>{feed_server.url('/article')}</link>"
                      "<guid>t</guid><description>A teaser …</description></item>"
                      "</channel></rss>")
    assert hub.run("add", feed_server.url("/slow.rss"), "--name", "slow", "--no-check",
                   "--language", "en").returncode == 0
    daemon = hub.start("run")
    try:
        wait_for(lambda: len(feed_server.requests_for("/slow.rss")) >= 3, timeout=20)
    finally:
        stop(daemon)
    assert len(feed_server.requests_for("/article")) == 1  # extracted once, as ever
