"""The whole flow through the real CLI: add -> poll -> SQLite -> feeds/*.atom,
against feeds served over HTTP on 127.0.0.1."""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta

import feedparser
import lxml.etree
import lxml.html
import pytest

from hubdir import FIXTURES, HubDir, wait_for

SEED_TITLE = "US-backed coup regime in Peru extends emergency rule and military repression"
SEED_LINK = "https://www.wsws.org/en/articles/2022/12/28/peru-d28.html"
ATOM = "{http://www.w3.org/2005/Atom}"


def report_time_floor() -> str:
    """An ISO timestamp a minute ago: anything the hub stamps now is later."""
    return (datetime.now(UTC) - timedelta(minutes=1)).isoformat(timespec="seconds")


def seed_paragraphs() -> list[str]:
    return (FIXTURES / "seed_article.txt").read_text(encoding="utf-8").splitlines()


def text_of(fragment: str) -> str:
    return " ".join(lxml.html.fragment_fromstring(fragment, create_parent="div").text_content().split())


def serve_fixtures(feed_server) -> None:
    feed_server.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    feed_server.serve("/persian.rss", (FIXTURES / "persian.rss").read_bytes())
    feed_server.serve("/german.atom", (FIXTURES / "german.atom").read_bytes(),
                      content_type="application/atom+xml")


def test_seed_article_is_republished_with_full_text_and_credits(hub: HubDir, feed_server) -> None:
    serve_fixtures(feed_server)
    added = hub.run("add", feed_server.url("/wsws.rss"), "--name", "World Socialist")
    assert added.returncode == 0, added.stderr
    assert "World Socialist" in added.stdout

    polled = hub.run("poll")
    assert polled.returncode == 0, polled.stderr
    assert "1 new" in polled.stdout

    feed = hub.feed("en")
    assert not feed.bozo, feed.bozo_exception
    assert feed.feed.language == "en"
    [entry] = feed.entries
    assert entry.title == SEED_TITLE
    assert entry.author == "Andrea Lobo"
    assert entry.published == "2022-12-28T21:30:00+00:00"
    assert entry.link == SEED_LINK
    assert entry.id.startswith("tag:hub.example.org,")

    content = entry.content[0].value
    text = text_of(content)
    for paragraph in seed_paragraphs():
        assert " ".join(paragraph.split()) in text, paragraph[:60]
    # the relative image URL in the upstream HTML was made absolute against
    # the article's page, where it lives, not the host the feed came from
    assert 'src="https://www.wsws.org/asset/peru-police.jpg"' in content
    # the credit line: source name linked to the original, the original date
    credit = re.search(r'<p class="feedhub-credit"[^>]*>(.*?)</p>', content).group(1)
    assert f'<a href="{SEED_LINK}">World Socialist</a>' in credit
    assert "28 Dec 2022" in credit and "Andrea Lobo" in credit
    assert content.rstrip().endswith("</p></div>")  # the credit ends the entry

    # atom:source, the machine-readable credit (RFC 4287 4.2.11)
    root = lxml.etree.parse(str(hub.feeds / "en.atom")).getroot()
    source = root.find(f"{ATOM}entry/{ATOM}source")
    assert source.findtext(f"{ATOM}title") == "World Socialist Web Site"
    assert source.findtext(f"{ATOM}id") == "https://www.wsws.org/en/rss.xml"
    assert source.findtext(f"{ATOM}updated").startswith("2022-12-28T21:45:00")
    assert {link.get("rel") for link in source.findall(f"{ATOM}link")} == {"self", "alternate"}
    alternate = root.find(f"{ATOM}entry/{ATOM}link")
    assert alternate.get("rel") == "alternate" and alternate.get("href") == SEED_LINK


def test_atom_source_is_dated_by_the_newest_item_when_upstream_dates_no_feed(
        hub: HubDir, feed_server) -> None:
    """No lastBuildDate or pubDate on the channel: atom:source still has its
    <updated> (the W3C validator warns MissingSourceElement without it)."""
    items = "".join(f"<item><title>Story {day}</title><link>https://undated.example/{day}</link>"
                    f"<pubDate>{day:02d} Mar 2024 08:00:00 GMT</pubDate></item>"
                    for day in (3, 9, 5))
    feed_server.serve("/undated.rss", '<?xml version="1.0"?><rss version="2.0"><channel>'
                      "<title>Undated</title><link>https://undated.example/</link>"
                      f"<description>d</description><language>en</language>{items}</channel></rss>")
    hub.config.write_text(hub.config.read_text(encoding="utf-8")
                          + f'\n[[sources]]\nname = "undated"\nurl = "{feed_server.url("/undated.rss")}"\n'
                          'fulltext = "never"\n', encoding="utf-8")
    assert hub.run("poll").returncode == 0
    for name in ("en.atom", "all.atom", "sources/undated.atom"):
        root = lxml.etree.parse(str(hub.feeds / name)).getroot()
        sources = root.findall(f"{ATOM}entry/{ATOM}source")
        assert len(sources) == 3, name
        assert [s.findtext(f"{ATOM}updated") for s in sources] == ["2024-03-09T08:00:00+00:00"] * 3


def test_each_language_gets_its_own_feed(hub: HubDir, feed_server) -> None:
    serve_fixtures(feed_server)
    for path in ("/wsws.rss", "/persian.rss", "/german.atom"):
        assert hub.run("add", feed_server.url(path)).returncode == 0
    assert hub.run("poll").returncode == 0

    assert sorted(p.name for p in hub.feeds.glob("*.atom")) == [
        "all.atom", "de.atom", "en.atom", "fa.atom"]
    everything = hub.feed("all")  # the all-languages feed: each entry in its own language
    assert not everything.bozo and len(everything.entries) == 5
    assert {e.content[0].language for e in everything.entries} == {"en", "de", "fa-IR"}
    assert any("Zuerst veröffentlicht von" in e.content[0].value for e in everything.entries)
    persian = hub.feed("fa")
    assert not persian.bozo
    assert persian.feed.title == "خبرها"  # [languages.fa] title
    root = lxml.etree.parse(str(hub.feeds / "fa.atom")).getroot()
    assert root.get("{http://www.w3.org/XML/1998/namespace}lang") == "fa"
    assert len(persian.entries) == 2
    for entry in persian.entries:
        wrapper = lxml.html.fragment_fromstring(entry.content[0].value)
        assert (wrapper.tag, wrapper.get("lang"), wrapper.get("dir")) == ("div", "fa-IR", "rtl")
        credit = wrapper.find("p[@class='feedhub-credit']")
        assert credit.get("dir") == "rtl" and credit.text_content().startswith("منبع:")
        assert wrapper[-1] is credit
        assert "\u200c" in entry.content[0].value  # ZWNJ survives
    # the item without dc:creator is credited to its source
    assert {e.author for e in persian.entries} == {"مریم احمدی", "خبرگزاری نمونه"}

    german = hub.feed("de")
    assert not german.bozo
    assert len(german.entries) == 2
    assert all("Zuerst veröffentlicht von" in e.content[0].value for e in german.entries)

    index = (hub.feeds / "index.html").read_text(encoding="utf-8")
    opml = lxml.etree.parse(str(hub.feeds / "index.opml")).getroot()
    for language in ("de", "en", "fa"):
        assert f'href="{language}.atom"' in index
    assert [o.get("xmlUrl") for o in opml.findall("body/outline[@xmlUrl]")] == [
        f"https://hub.example.org/feeds/{language}.atom" for language in ("de", "en", "fa", "all")]
    assert 'href="all.atom"' in index

    # a feed per source, each linked from index.html and index.opml
    by_source = opml.findall("body/outline[@text='By source']/outline")
    assert len(by_source) == 3
    for outline in by_source:
        relative = outline.get("xmlUrl").removeprefix("https://hub.example.org/feeds/")
        assert relative.startswith("sources/") and f'href="{relative}"' in index
        own = feedparser.parse((hub.feeds / relative).read_bytes())
        assert not own.bozo and own.entries
        assert {e.source.title for e in own.entries} == {outline.get("text")}
    assert sum(len(feedparser.parse((hub.feeds / o.get("xmlUrl").removeprefix(
        "https://hub.example.org/feeds/")).read_bytes()).entries) for o in by_source) == 5


def test_second_poll_is_conditional_and_304_changes_nothing(hub: HubDir, feed_server) -> None:
    serve_fixtures(feed_server)
    hub.run("add", feed_server.url("/wsws.rss"), "--no-check", "--name", "wsws")
    assert hub.run("poll").returncode == 0
    before = (hub.feeds / "en.atom").stat()

    with sqlite3.connect(hub.database) as db:
        items_before = db.execute("SELECT * FROM items").fetchall()

    second = hub.run("poll", "--all", "--json")
    assert second.returncode == 0, second.stderr
    request = feed_server.requests_for("/wsws.rss")[-1]
    assert request.headers["if-none-match"].startswith('"')
    assert "if-modified-since" in request.headers
    [report] = json.loads(second.stdout)
    assert (report["source"], report["status"], report["new"], report["updated"]) == (
        "wsws", 304, 0, 0)
    assert report["next_poll"] > report_time_floor()
    with sqlite3.connect(hub.database) as db:
        assert db.execute("SELECT * FROM items").fetchall() == items_before
    after = (hub.feeds / "en.atom").stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)


def test_poll_sends_a_user_agent_with_a_contact(hub: HubDir, feed_server) -> None:
    serve_fixtures(feed_server)
    hub.run("add", feed_server.url("/wsws.rss"), "--no-check")
    hub.run("poll")
    agent = feed_server.requests_for("/wsws.rss")[-1].headers["user-agent"]
    assert re.match(r"feedhub/\S+ \(\+https://hub\.example\.org/feeds/\)", agent)
    assert "gzip" in feed_server.requests_for("/wsws.rss")[-1].headers["accept-encoding"]


def test_an_edited_item_is_updated_in_place(hub: HubDir, feed_server) -> None:
    original = (FIXTURES / "seed_wsws.rss").read_text(encoding="utf-8")
    feed_server.serve("/wsws.rss", original)
    hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws")
    hub.run("poll")
    [before] = hub.feed("en").entries

    edited = original.replace("Curfews have expired", "CORRECTION: Curfews have expired")
    feed_server.serve("/wsws.rss", edited)
    polled = hub.run("poll", "--all")
    assert polled.returncode == 0, polled.stderr
    assert "1 updated" in polled.stdout
    [after] = hub.feed("en").entries
    assert after.id == before.id
    assert "CORRECTION: Curfews have expired" in after.content[0].value
    assert before.updated == "2022-12-28T21:30:00+00:00"  # no upstream <updated>: the pubDate
    assert after.updated > report_time_floor()  # the edit was seen now
    assert after.published == before.published
    with sqlite3.connect(hub.database) as db:
        assert db.execute("SELECT count(*) FROM items").fetchone()[0] == 1


def test_removed_source_leaves_the_feeds(hub: HubDir, feed_server) -> None:
    serve_fixtures(feed_server)
    hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws")
    hub.run("add", feed_server.url("/german.atom"), "--name", "de")
    hub.run("poll")
    assert len(hub.feed("en").entries) == 1

    removed = hub.run("remove", "wsws")
    assert removed.returncode == 0, removed.stderr
    config = hub.config.read_text(encoding="utf-8")
    assert "wsws.rss" not in config and "german.atom" in config
    assert "# A test hub: comments must survive" in config
    assert hub.run("publish").returncode == 0
    assert hub.feed("en").entries == []  # still a valid feed, now empty
    assert len(hub.feed("de").entries) == 2
    with sqlite3.connect(hub.database) as db:  # nothing stored is lost
        assert db.execute("SELECT count(*) FROM items WHERE source='wsws'").fetchone()[0] == 1

    again = hub.run("remove", "wsws")
    assert again.returncode == 2 and "no source named 'wsws'" in again.stderr


def test_a_feed_emptied_by_a_removal_is_dated_when_it_became_empty(hub: HubDir,
                                                                   feed_server) -> None:
    serve_fixtures(feed_server)
    hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws")
    assert hub.run("poll").returncode == 0
    assert hub.run("remove", "wsws").returncode == 0
    assert hub.run("publish").returncode == 0
    for language in ("en", "all"):
        feed = hub.feed(language)
        assert feed.entries == []
        updated = datetime.fromisoformat(feed.feed.updated)  # not 1970, nor 2022's article
        assert timedelta(0) <= datetime.now(UTC) - updated < timedelta(minutes=5), language
    before = {name: (hub.feeds / name).read_bytes() for name in ("en.atom", "all.atom")}
    time.sleep(1.1)
    again = hub.run("publish")
    assert again.returncode == 0 and "written" not in again.stdout
    assert {name: (hub.feeds / name).read_bytes() for name in before} == before


def test_list_shows_sources_as_a_table_and_json(hub: HubDir, feed_server) -> None:
    serve_fixtures(feed_server)
    hub.run("add", feed_server.url("/persian.rss"), "--interval", "15m")
    hub.run("poll")
    table = hub.run("list")
    assert table.returncode == 0
    assert "خبرگزاری نمونه" in table.stdout and "15m" in table.stdout
    [row] = json.loads(hub.run("list", "--json").stdout)
    assert row["name"] == "خبرگزاری نمونه"
    assert row["language"] == "fa-IR" and row["items"] == 2 and row["last_status"] == 200


def test_add_refuses_duplicates_and_non_feeds(hub: HubDir, feed_server) -> None:
    serve_fixtures(feed_server)
    feed_server.serve("/home.html", (FIXTURES / "not_a_feed.html").read_bytes(),
                      content_type="text/html; charset=utf-8")
    assert hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws").returncode == 0
    config_before = hub.config.read_bytes()

    page = hub.run("add", feed_server.url("/home.html"))
    assert page.returncode == 1
    assert "is not a feed" in page.stderr and "HTML page" in page.stderr

    same_url = hub.run("add", feed_server.url("/wsws.rss"), "--name", "other")
    assert same_url.returncode == 1 and "already a source" in same_url.stderr
    same_name = hub.run("add", feed_server.url("/german.atom"), "--name", "wsws")
    assert same_name.returncode == 1 and "already exists" in same_name.stderr
    missing = hub.run("add", feed_server.url("/missing.rss"))
    assert missing.returncode == 1 and "404" in missing.stderr
    bad = hub.run("add", "ftp://example.org/feed")
    assert bad.returncode == 2 and "http(s) URL" in bad.stderr
    assert hub.config.read_bytes() == config_before


def test_unreachable_source_fails_the_poll_but_not_the_others(hub: HubDir, feed_server) -> None:
    serve_fixtures(feed_server)
    hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws")
    hub.run("add", "http://127.0.0.1:9/feed.rss", "--no-check", "--name", "gone")
    polled = hub.run("poll")
    assert polled.returncode == 1
    assert "1 of 2 sources failed" in polled.stderr
    assert "gone: cannot connect to 127.0.0.1" in polled.stderr
    assert len(hub.feed("en").entries) == 1
    [state] = [r for r in json.loads(hub.run("list", "--json").stdout) if r["name"] == "gone"]
    assert state["last_error"].startswith("cannot connect")


@pytest.mark.parametrize(("bad", "message"), [
    ('[hub]\ntitle = "x"\nitems_per_feed = "many"\n', "config.toml:3: [hub] 'items_per_feed'"),
    ('[hub]\ntitel = "x"\n', "config.toml:2: unknown key 'titel' in [hub] (did you mean 'title'?)"),
    ('[hub]\ntitle = "x\n', "config.toml:2: not valid TOML"),
    ('# top\ntitle = "x"\n[hub]\n', "config.toml:2: unknown key 'title' in the top level"),
    ('[languages.fa-IR]\ntitle = "x"\n', "config.toml:1: [languages.fa-IR]: feeds are per "
     "primary language, use [languages.fa]"),
    ('[[sources]]\nname = "a"\nurl = "https://a.example/rss"\n\n[[sources]]\nname = "b"\n'
     'url = "https://b.example/rss"\nlanguage = "not a tag"\n',
     "config.toml:8: [[sources]] #2 'language'"),
])
def test_bad_config_names_file_and_line_and_exits_2(hub: HubDir, bad: str, message: str) -> None:
    hub.config.write_text(bad, encoding="utf-8")
    for command in (["list"], ["poll"], ["add", "https://example.org/rss", "--no-check"]):
        result = hub.run(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert message in result.stderr
    assert hub.config.read_text(encoding="utf-8") == bad
    assert not hub.database.exists()


def test_missing_config_is_a_clear_error(tmp_path) -> None:
    hub = HubDir(tmp_path)
    hub.config.unlink()
    result = hub.run("list")
    assert result.returncode == 2
    assert "config file not found" in result.stderr


def test_every_command_has_help(hub: HubDir) -> None:
    for command in ("add", "remove", "list", "poll", "publish", "run", "status", "refetch",
                    "serve", "import", "export", "withdraw"):
        result = hub.run(command, "--help")
        assert result.returncode == 0 and "Usage: feedhub" in result.stdout, command


def test_run_polls_on_its_interval_and_stops_cleanly_on_sigterm(tmp_path, feed_server) -> None:
    hub = HubDir(tmp_path, interval="1s")
    serve_fixtures(feed_server)
    hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws")
    hub.run("add", feed_server.url("/german.atom"), "--name", "de")
    daemon = hub.start("run")
    try:
        wait_for(lambda: (hub.feeds / "de.atom").exists() and (hub.feeds / "en.atom").exists())
        # polled again on its interval, conditionally
        wait_for(lambda: len(feed_server.requests_for("/wsws.rss")) >= 3)
        assert "if-none-match" in feed_server.requests_for("/wsws.rss")[-1].headers
    finally:
        daemon.send_signal(signal.SIGTERM)
        started = time.monotonic()
        _, stderr = daemon.communicate(timeout=15)
    assert daemon.returncode == 0, stderr
    assert time.monotonic() - started < 10
    assert re.search(r"poll wsws status=200 new=1 updated=0 duration=\d", stderr)
    assert re.search(r"poll wsws status=304", stderr)
    assert "stopped" in stderr
    with sqlite3.connect(hub.database) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    for language in ("en", "de"):
        assert not feedparser.parse((hub.feeds / f"{language}.atom").read_bytes()).bozo


def test_config_comes_from_feedhub_config_when_not_given(hub: HubDir, tmp_path) -> None:
    hub.run("add", "https://example.org/rss", "--no-check", "--name", "via-env")
    entry = hub.command()[:-2]  # the entry point without --config
    result = subprocess.run([*entry, "list", "--json"], capture_output=True, text=True,
                            cwd=tmp_path.parent, env={**os.environ, "FEEDHUB_CONFIG": str(hub.config)})
    assert result.returncode == 0, result.stderr
    assert [row["name"] for row in json.loads(result.stdout)] == ["via-env"]
