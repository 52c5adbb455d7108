"""Placeholder dates mean "no date": Go's zero time, the Unix epoch and
anything before 1990 are treated like a missing date (the first-seen time,
flagged), through the real CLI."""

from __future__ import annotations

import sqlite3
import time
from datetime import UTC, datetime

import lxml.etree

from hubdir import HubDir

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Placeholders</title><link>https://dates.example.org/</link>
<description>d</description><language>en</language>
<item><title>Zero</title><link>https://dates.example.org/zero</link><guid>zero</guid>
<pubDate>Mon, 01 Jan 0001 00:00:00 +0000</pubDate></item>
<item><title>Epoch</title><link>https://dates.example.org/epoch</link><guid>epoch</guid>
<pubDate>Thu, 01 Jan 1970 00:00:00 +0000</pubDate></item>
<item><title>Eighties</title><link>https://dates.example.org/eighties</link><guid>eighties</guid>
<pubDate>Tue, 15 Oct 1985 08:30:00 +0000</pubDate></item>
<item><title>Good</title><link>https://dates.example.org/good</link><guid>good</guid>
<pubDate>Tue, 14 May 2024 10:00:00 +0000</pubDate></item>
{extra}</channel></rss>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">
<title>Zero Atom</title><id>urn:example:zero-atom</id><updated>0001-01-01T00:00:00Z</updated>
<entry><title>Atom zero</title><id>urn:example:zero-entry</id>
<link href="https://dates.example.org/atom-zero"/>
<published>0001-01-01T00:00:00Z</published><updated>0001-01-01T00:00:00Z</updated>
<content type="html">&lt;p&gt;text&lt;/p&gt;</content></entry>
</feed>"""

ATOM_NS = "{http://www.w3.org/2005/Atom}"
PLACEHOLDERS = ("Zero", "Epoch", "Eighties", "Atom zero")


def published(hub: HubDir) -> dict[str, tuple[datetime, datetime]]:
    return {e.title: (datetime.fromisoformat(e.published), datetime.fromisoformat(e.updated))
            for e in hub.feed("en").entries}


def test_placeholder_dates_are_no_dates(hub: HubDir, feed_server) -> None:
    feed_server.serve("/dates.rss", RSS.format(extra=""))
    feed_server.serve("/zero.atom", ATOM, content_type="application/atom+xml")
    for name, path in (("placeholders", "/dates.rss"), ("zero atom", "/zero.atom")):
        added = hub.run("add", feed_server.url(path), "--name", name, "--no-fulltext")
        assert added.returncode == 0, added.stderr
    before = datetime.now(UTC).replace(microsecond=0)
    polled = hub.run("poll", "--all")
    after = datetime.now(UTC)
    assert polled.returncode == 0, polled.stderr

    first = published(hub)
    for title in PLACEHOLDERS:  # the time the hub first saw them
        assert before <= first[title][0] <= after, (title, first[title])
        assert first[title][1] >= before, (title, first[title])  # no implausible updated either
    assert first["Good"][0] == datetime(2024, 5, 14, 10, 0, tzinfo=UTC)
    with sqlite3.connect(hub.database) as db:
        flagged = dict(db.execute("SELECT title, published_estimated FROM items"))
    assert flagged == {"Zero": 1, "Epoch": 1, "Eighties": 1, "Atom zero": 1, "Good": 0}
    # the feed-level updated in atom:source is no date either
    root = lxml.etree.parse(str(hub.feeds / "en.atom")).getroot()
    for source in root.iter(f"{ATOM_NS}source"):
        for updated in source.iter(f"{ATOM_NS}updated"):
            assert not updated.text.startswith(("0001", "1970")), updated.text

    # polled again (the feed changed, so it is parsed again): the estimates stay
    time.sleep(1.1)
    feed_server.serve("/dates.rss", RSS.format(
        extra="<item><title>New</title><link>https://dates.example.org/new</link><guid>new</guid>"
              "<pubDate>Wed, 15 May 2024 10:00:00 +0000</pubDate></item>"))
    feed_server.serve("/zero.atom", ATOM.replace("<p>text", "<p>text, edited"),
                      content_type="application/atom+xml")
    polled = hub.run("poll", "--all")
    assert polled.returncode == 0, polled.stderr
    second = published(hub)
    assert "New" in second
    for title in ("Zero", "Epoch", "Eighties"):
        assert second[title] == first[title], title  # no churn: same published, same updated
    assert second["Atom zero"][0] == first["Atom zero"][0]


UNDATED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>{name}</title><link>https://{name}.example.org/</link>
<description>d</description><language>en</language>{items}</channel></rss>"""


def test_dates_the_hub_makes_up_are_never_shared_and_keep_the_feeds_order(
        hub: HubDir, feed_server) -> None:
    """Undated items of two sources polled at once, then edited: every
    first-seen estimate and edit time is an entry's own (readers sort by
    them; the W3C validator flags a shared <updated>), and the undated items
    of one feed come out in the feed's order, newest first."""
    def serve(name: str, text: str) -> None:
        items = "".join(f"<item><title>{name} {n}</title><guid>{name}-{n}</guid>"
                        f"<link>https://{name}.example.org/{n}</link>"
                        f"<description>{text} {n}</description></item>" for n in range(5))
        feed_server.serve(f"/{name}.rss", UNDATED.format(name=name, items=items))

    for name in ("north", "south"):
        serve(name, "first")
        assert hub.run("add", feed_server.url(f"/{name}.rss"), "--name", name,
                       "--no-fulltext").returncode == 0
    assert hub.run("poll", "--all").returncode == 0
    for name in ("north", "south"):
        serve(name, "edited")  # every item changes in one poll: edit times are the hub's too
    for _ in range(2):
        entries = hub.feed("en").entries
        assert len(entries) == 10
        for field in ("published", "updated"):
            values = [getattr(entry, field) for entry in entries]
            assert len(set(values)) == len(values), (field, sorted(values))
        for name in ("north", "south"):  # the feed lists 0 first: its newest
            assert [e.title for e in entries if e.title.startswith(name)] == [
                f"{name} {n}" for n in range(5)]
        assert hub.run("poll", "--all").returncode == 0
