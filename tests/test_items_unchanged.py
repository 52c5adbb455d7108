"""A body that differs from the last one only in the feed's own dates
(<lastBuildDate>, the feed's <updated>) is not given to feedparser, and
that shortcut changes nothing that is stored: every file of the shared
corpus, polled three times with its dates rewritten in between, leaves the
same items (every column) and the same feed-level state with the shortcut
as without it."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import re
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feedhub.config import parse_config
from feedhub.hub import Hub, make_fetcher
from feedhub.models import FetchResult
from feedhub.store import open_store
from hubdir import HubDir
from test_corpus import CORPUS, headers_of, manifest

REALWORLD = CORPUS.parent / "realworld"
POLLS = 3
# one date per poll after the first, in the forms upstream writes them
RSS_DATES = [b"Tue, 01 Dec 2026 0%d:00:00 GMT" % n for n in range(POLLS)]
ISO_DATES = [b"2026-12-01T0%d:00:00Z" % n for n in range(POLLS)]


def redate(body: bytes, poll: int) -> bytes:
    """The document with a feed-level date where it has none (an RSS
    <channel>'s <lastBuildDate>, an Atom <feed>'s <updated>), then with its
    first <lastBuildDate>, <pubDate> and <updated> (the feed's own, or an
    item's) saying another date on every poll."""
    if b"<lastBuildDate>" not in body:
        body = re.sub(rb"(<channel(?:\s[^>]*)?>)",
                      lambda m: m[1] + b"<lastBuildDate>" + RSS_DATES[0] + b"</lastBuildDate>",
                      body, count=1)
    if b"<updated>" not in body:
        body = re.sub(rb"(<feed(?:\s[^>]*[^/])?>)",
                      lambda m: m[1] + b"<updated>" + ISO_DATES[0] + b"</updated>", body, count=1)
    if poll == 0:
        return body
    for name, value in ((b"lastBuildDate", RSS_DATES[poll]), (b"pubDate", RSS_DATES[poll]),
                        (b"updated", ISO_DATES[poll])):
        body = re.sub(rb"(<%s>)[^<]*(</%s>)" % (name, name),
                      lambda match, value=value: match[1] + value + match[2], body, count=1)
    return body


def served_corpus(realworld_undated: re.Pattern[bytes] | None = None,
                  ) -> list[tuple[str, bytes, dict[str, str]]]:
    """(name, body, headers) of every corpus file served as a plain 200;
    with `realworld_undated`, each realworld feed also with what it matches
    taken out (its dates: the hub dates items by their place in the feed)."""
    files = []
    for row in manifest():
        headers = headers_of(row)
        if headers.get("Status", "200") != "200" or row["path"].endswith((".gz", ".z")):
            continue
        files.append((row["path"], (CORPUS / row["path"]).read_bytes(), headers))
    for path in sorted(REALWORLD.glob("*")):
        if path.suffix in (".xml", ".json"):
            files.append((path.name, path.read_bytes(), {}))
            if realworld_undated is not None:
                files.append((f"{path.name} undated",
                              realworld_undated.sub(b"", path.read_bytes()), {}))
    return files


def corpus_files() -> list[tuple[str, bytes, dict[str, str]]]:
    """The served corpus files whose dates `redate` can change (the others
    are byte-identical on every poll: no shortcut to take)."""
    return [f for f in served_corpus() if redate(f[1], 1) != redate(f[1], 0)]


def poll_all(tmp_path: Path, feed_server, files, *, parse_unchanged: bool,
             versions: Callable[[bytes, int], bytes] = redate, polls: int = POLLS,
             fulltext: str = "never", hours: Sequence[float] = ()) -> tuple[dict, dict, Counter]:
    """Poll every file `polls` times, served as `versions` makes it for each
    poll (by default: its dates rewritten); the stored items and sources, by
    source name, without the columns that are the poll's own bookkeeping;
    and the polls' notes. `hours`: when each poll happens, after the first
    (default: an hour apart)."""
    prefix = "/corpus/"  # the same URLs both ways: relative links resolve against them
    lines = ['[hub]', 'base_url = "https://hub.example.org/feeds/"',
             "allow_private_networks = true", "host_spacing = 0", "max_per_host = 8",
             "max_connections = 8", 'timeout = "10s"', "items_per_feed = 100000", ""]
    for n, _ in enumerate(files):
        lines += ["[[sources]]", f'name = "c{n}"',
                  f'url = "{feed_server.url(f"{prefix}{n}.xml")}"', f'fulltext = "{fulltext}"',
                  ""]
    config = parse_config("\n".join(lines), tmp_path / "config.toml")
    start = datetime(2026, 12, 1, tzinfo=UTC)

    notes = Counter()

    async def run() -> None:
        with open_store(config.hub.database) as store:
            async with make_fetcher(config) as fetcher:
                hub = Hub(config, store, fetcher, workers=2, parse_unchanged=parse_unchanged)
                fetch = fetcher.fetch
                try:
                    for poll in range(polls):
                        for n, (_, body, headers) in enumerate(files):
                            extra = dict(headers)
                            kind = extra.pop("Content-type", None) or extra.pop(
                                "Content-Type", None) or "application/xml"
                            feed_server.serve(f"{prefix}{n}.xml", versions(body, poll),
                                              content_type=kind, headers=extra)
                        at = start + timedelta(hours=hours[poll - 1] if poll and hours else poll)

                        async def fixed(*args, at=at, **kwargs) -> FetchResult:
                            # the same clock both ways: estimated dates, atom ids
                            result = await fetch(*args, **kwargs)
                            return dataclasses.replace(result, fetched_at=at)

                        fetcher.fetch = fixed
                        notes.update(r.note for r in await hub.poll_many(config.sources))
                finally:
                    hub.close()

    asyncio.run(run())
    db = sqlite3.connect(config.hub.database)
    db.row_factory = sqlite3.Row
    items, sources = {}, {}
    for row in db.execute("SELECT * FROM items"):
        items[row["source"], row["upstream_id"]] = dict(zip(row.keys(), row, strict=True))
        del items[row["source"], row["upstream_id"]]["id"]
    for row in db.execute("SELECT * FROM sources"):
        sources[row["name"]] = {k: v for k, v in zip(row.keys(), row, strict=True)
                                if k not in ("body_hash", "last_poll", "next_poll", "last_modified",
                                             "last_success", "failing_since")}  # times
    db.close()
    return items, sources, notes


@pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").exists(),
                    reason="the shared corpus is not beside this checkout")
@pytest.mark.timeout(900)
def test_the_shortcut_stores_exactly_what_a_full_parse_stores(tmp_path, feed_server):
    files = corpus_files()
    assert len(files) > 300
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    with_items, with_sources, notes = poll_all(tmp_path / "on", feed_server, files,
                                        parse_unchanged=False)
    without_items, without_sources, plain_notes = poll_all(tmp_path / "off", feed_server, files,
                                              parse_unchanged=True)
    assert len(with_items) > 1000
    assert with_items.keys() == without_items.keys()
    differ = [key for key in with_items if with_items[key] != without_items[key]]
    assert differ == [], [(files[int(key[0][1:])][0], key[1], {
        column: (value, without_items[key][column]) for column, value in with_items[key].items()
        if value != without_items[key][column]}) for key in differ]
    differ = [name for name in with_sources if with_sources[name] != without_sources[name]]
    assert differ == [], [(files[int(name[1:])][0], with_sources[name], without_sources[name])
                          for name in differ[:3]]
    # and the shortcut was taken: most of these bodies differ only in dates
    assert notes["items unchanged"] > 2 * 1000, notes
    assert plain_notes["items unchanged"] == 0


CHANNEL = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Rewrites</title><link>https://rewrites.example/</link>
<description>d</description><language>en</language>
<lastBuildDate>{date}</lastBuildDate>
{items}</channel></rss>"""
ENTRY = ("<item><title>Item {n}</title><link>https://rewrites.example/{n}</link>"
         "<guid>rewrites-{n}</guid><pubDate>Mon, 0{n} Nov 2026 10:00:00 GMT</pubDate></item>")


def channel(date: str, *numbers: int) -> str:
    return CHANNEL.format(date=date, items="".join(ENTRY.format(n=n) for n in numbers))


def test_a_feed_that_only_redates_itself_is_not_parsed(hub: HubDir, feed_server) -> None:
    feed_server.serve("/rewrites.rss", channel("Sun, 29 Nov 2026 10:00:00 GMT", 2, 1),
                      content_type="application/rss+xml")
    hub.run("add", feed_server.url("/rewrites.rss"), "--no-check", "--name", "rewrites")

    def poll() -> tuple[dict, str]:
        polled = hub.run("--log-level", "debug", "poll", "--all", "--json")
        assert polled.returncode == 0, polled.stderr
        [report] = json.loads(polled.stdout)
        return report, polled.stderr

    def stored() -> list[tuple]:
        with sqlite3.connect(hub.database) as db:
            return db.execute("SELECT * FROM items ORDER BY id").fetchall()

    def feed_updated() -> str:
        with sqlite3.connect(hub.database) as db:
            return db.execute("SELECT feed_updated FROM sources").fetchone()[0]

    report, log = poll()
    assert report["new"] == 2 and "poll rewrites: parsing" in log
    items = stored()
    assert feed_updated() == "2026-11-29T10:00:00+00:00"

    # a new <lastBuildDate> (and so a new ETag): items unchanged, feedparser not run
    feed_server.serve("/rewrites.rss", channel("Mon, 30 Nov 2026 10:00:00 GMT", 2, 1),
                      content_type="application/rss+xml")
    report, log = poll()
    assert (report["status"], report["new"], report["updated"], report["note"]) == (
        200, 0, 0, "items unchanged")
    assert "parsing" not in log
    assert stored() == items
    assert feed_updated() == "2026-11-30T10:00:00+00:00"  # atom:source's <updated> keeps up

    # one new item: parsed, and exactly that one is stored
    feed_server.serve("/rewrites.rss", channel("Mon, 30 Nov 2026 11:00:00 GMT", 3, 2, 1),
                      content_type="application/rss+xml")
    report, log = poll()
    assert (report["new"], report["updated"]) == (1, 0) and "poll rewrites: parsing" in log
    after = stored()
    assert after[:2] == items
    [(upstream_id, title)] = [(row[2], row[4]) for row in after[2:]]
    assert (upstream_id, title) == ("rewrites-3", "Item 3")
