"""Each article text is stored once (issue 13): `content` holds the published
text only where it differs from the text it is derived from. Through the
real CLI, with a feed of full texts and a feed of teasers whose articles are
extracted."""

from __future__ import annotations

import shutil
import sqlite3
from html import escape
from pathlib import Path

from feedhub.store import PUBLISHED_TEXT, SCHEMA_VERSION
from hubdir import HubDir, files_under
from test_fulltext import serve_pages, teaser_feed

TEXTS = ("content", "feed_content", "extracted_content")


def full_feed() -> str:
    items = "".join(
        f"<item><title>Story {n}</title><link>https://full.example/{n}</link><guid>full-{n}</guid>"
        f"<pubDate>Tue, 0{n} Jan 2024 10:00:00 GMT</pubDate><description>"
        + escape(f"<p>Paragraph {n} of a story told in full, with <b>markup</b>.</p>" * 20)
        + "</description></item>" for n in range(1, 4))
    return ('<?xml version="1.0"?><rss version="2.0"><channel><title>Full</title>'
            "<link>https://full.example/</link><description>d</description>"
            f"<language>en</language>{items}</channel></rss>")


def polled_hub(root: Path, feed_server) -> HubDir:
    """Three items published as the feed sent them, three whose extracted
    article is published in place of the teaser."""
    root.mkdir(exist_ok=True)
    hub = HubDir(root)
    serve_pages(feed_server)
    feed_server.serve("/full.rss", full_feed())
    feed_server.serve("/teasers.rss", teaser_feed(feed_server.base_url, {
        "en": "en-article", "de": "de-article", "fa": "fa-article"}))
    assert hub.run("add", feed_server.url("/full.rss"), "--name", "full").returncode == 0
    assert hub.run("add", feed_server.url("/teasers.rss"), "--name", "teasers").returncode == 0
    hub.config.write_text(hub.config.read_text(encoding="utf-8").replace(
        'name = "full"', 'name = "full"\nfulltext = "never"'), encoding="utf-8")
    polled = hub.run("poll")
    assert polled.returncode == 0, polled.stderr
    return hub


def published_files(hub: HubDir) -> dict[str, bytes]:
    """Every file a publish from scratch writes."""
    shutil.rmtree(hub.feeds, ignore_errors=True)
    published = hub.run("publish")
    assert published.returncode == 0, published.stderr
    return files_under(hub.feeds)


def text_columns(database: Path) -> list[tuple[str | None, ...]]:
    with sqlite3.connect(database) as db:
        return db.execute(f"SELECT {', '.join(TEXTS)} FROM items ORDER BY id").fetchall()


def make_v8(database: Path) -> None:
    """The database as feedhub before schema 9 wrote it: the published text
    in `content` always, a copy of the feed's or the extracted text."""
    with sqlite3.connect(database) as db:
        db.execute(f"UPDATE items SET content = {PUBLISHED_TEXT}")
        db.execute("PRAGMA user_version = 8")


def test_each_text_is_stored_once_and_the_published_feeds_are_unchanged(tmp_path: Path,
                                                                       feed_server) -> None:
    hub = polled_hub(tmp_path / "hub", feed_server)
    rows = text_columns(hub.database)
    assert len(rows) == 6
    for content, feed_content, extracted in rows:
        assert content is None  # published as sent, or the extraction: no third copy
        texts = [t for t in (feed_content, extracted) if t is not None]
        assert texts and len(set(texts)) == len(texts)  # no two columns hold the same text
    assert sum(e is not None for _, _, e in rows) == 3
    stored = sum(len(text) for row in rows for text in row if text is not None)
    assert stored == sum(len(feed) + len(extracted or "") for _, feed, extracted in rows)

    # the same feeds as from a database that kept the published text twice
    now = published_files(hub)
    with sqlite3.connect(hub.database) as db:  # entries are kept rendered, without the text
        kept = db.execute("SELECT head, tail FROM rendered_entries").fetchall()
        assert len(kept) >= 6
        assert all(tail is not None for _, tail in kept)  # full text: head + text + tail
        assert not any(b"Paragraph 2 of a story" in head + tail for head, tail in kept)
    assert any("Paragraph 2 of a story" in body.decode() for body in now.values())
    (tmp_path / "old").mkdir()
    old = HubDir(tmp_path / "old")
    shutil.copy(hub.config, old.config)
    shutil.copy(hub.database, old.database)
    make_v8(old.database)
    with sqlite3.connect(old.database) as db:
        db.execute("PRAGMA user_version = 9")  # read as it is, not migrated
    assert published_files(old) == now


def test_a_v8_database_is_migrated_to_each_text_once(tmp_path: Path, feed_server) -> None:
    hub = polled_hub(tmp_path, feed_server)
    before = published_files(hub)
    make_v8(hub.database)
    assert all(content is not None for content, _, _ in text_columns(hub.database))

    assert published_files(hub) == before  # the first command migrates
    with sqlite3.connect(hub.database) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION >= 9
    assert all(content is None for content, _, _ in text_columns(hub.database))
    assert hub.run("poll", "--all").returncode == 0  # nothing changed upstream
    assert published_files(hub) == before
