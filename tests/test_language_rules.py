"""Items whose language nothing declares, through the real CLI against feeds
served on 127.0.0.1 (issue 12): short or odd texts (captions, titles, key
blocks) take the source's usual language; a language without a
[languages.X] table needs long, sure text; zxx never becomes a feed."""

from __future__ import annotations

from html import escape

from hubdir import FIXTURES, HubDir

PAGES = FIXTURES / "pages"

# py3langid on these, as the hub detected them before issue 12: pcm 0.53,
# pcm 0.64, pcm 0.51, de 0.54, pcm 0.31 ("Bundesliga ..."), zxx 1.00
CAPTIONS = ["Queue for fuel in Lagos", "Children play football in Lagos",
            "Traders wait for customers at Balogun market, Lagos. Photo: Reuters"]
TITLES = ["Kindergarten Report 2024", "Bundesliga: Bayern win again"]
PGP_KEY = """-----BEGIN PGP PUBLIC KEY BLOCK-----

mQINBGXk2ZQBEADHq0y3qkBvZ7Q1pD0xJ8m5cZr6N2tF4wS9aL1eK3uV7hY0bT2n
Rf8Lx6pW1oE4sD9cA3vB7gH2kJ5mN0qP8tU6yZ1xC4wR7eI9oL2aS5dF8gK3hJ6
QmZ0vX2bN5cV8xM1lK4jH7gF0dS3aP6oI9uY2tR5eW8qA1sZ4xC7vB0nM3lK6jH
=Xy7Q
-----END PGP PUBLIC KEY BLOCK-----"""


def paragraphs(name: str, count: int, start: int = 0) -> str:
    lines = (PAGES / f"{name}.paragraphs.txt").read_text(encoding="utf-8").splitlines()
    return "".join(f"<p>{escape(line)}</p>" for line in lines[start:start + count])


def feed(base: str, items: list[tuple[str, str]], *, prefix: str = "item") -> str:
    """RSS with no language anywhere; (title, HTML) per item, newest first."""
    entries = "".join(
        f"<item><title>{escape(title)}</title><link>{base}/{prefix}/{n}</link>"
        f"<guid>{prefix}-{n}</guid><pubDate>Mon, {20 - n:02d} Jan 2025 10:00:00 GMT</pubDate>"
        f"<description>{escape(html)}</description></item>"
        for n, (title, html) in enumerate(items))
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            f"<title>Odd texts</title><link>{base}/</link><description>d</description>"
            f"{entries}</channel></rss>")


def languages_of(hub: HubDir) -> dict[str, str]:
    """Title -> the language feed its entry was published in (all.atom aside)."""
    found: dict[str, str] = {}
    for path in sorted(hub.feeds.glob("*.atom")):
        if path.stem != "all":
            for entry in hub.feed(path.stem).entries:
                found[entry.title] = path.stem
    return found


def language_feeds(hub: HubDir) -> set[str]:
    return {path.stem for path in hub.feeds.glob("*.atom")} - {"all"}


def stored_detections(hub: HubDir) -> dict[str, tuple[str, str | None]]:
    import sqlite3

    with sqlite3.connect(hub.database) as db:
        return {title: (group, detected) for title, group, detected in db.execute(
            "SELECT title, lang_group, detected_language FROM items")}


def test_captions_titles_and_a_key_block_stay_in_the_sources_language(hub: HubDir,
                                                                      feed_server) -> None:
    """Long English articles with short English captions and titles and a
    PGP key post: everything in en.atom, no pcm/de/zxx feed. Also on the next
    poll, when only short items come (the store's usual language decides)."""
    english = [(f"Article {n}", paragraphs("en-article", 2, 2 * n)) for n in range(3)]
    odd = [(text, "") for text in CAPTIONS + TITLES] + [("Our new PGP key", f"<pre>{PGP_KEY}</pre>")]
    feed_server.serve("/odd.rss", feed(feed_server.base_url, odd[:3] + english + odd[3:]))
    assert hub.run("add", feed_server.url("/odd.rss"), "--name", "odd",
                   "--no-fulltext").returncode == 0
    polled = hub.run("poll")
    assert polled.returncode == 0, polled.stderr

    assert language_feeds(hub) == {"en"}
    assert set(languages_of(hub).values()) == {"en"} and len(languages_of(hub)) == 9
    # what the detector said is still stored, for `status` and debugging
    detected = stored_detections(hub)
    assert detected["Our new PGP key"] == ("en", "zxx")
    assert detected["Queue for fuel in Lagos"] == ("en", "pcm")

    # the next poll brings only short items: the source's stored items decide
    later = [(f"Later: {text}", "") for text in CAPTIONS[:2] + TITLES[:1]]
    feed_server.serve("/odd.rss", feed(feed_server.base_url, later, prefix="later"))
    assert hub.run("poll", "--all").returncode == 0
    assert language_feeds(hub) == {"en"}
    assert [languages_of(hub)[f"Later: {text}"] for text in CAPTIONS[:2] + TITLES[:1]] == ["en"] * 3


def test_a_persian_source_keeps_its_short_english_titled_items(hub: HubDir,
                                                              feed_server) -> None:
    """A source whose long texts are Persian: an item with only a short
    English title goes to fa, in the first poll (the poll's majority) and in
    a later one (the stored items' majority)."""
    persian = [(f"خبر {n}", paragraphs("fa-article", 2, 2 * n)) for n in range(3)]
    feed_server.serve("/fa.rss", feed(feed_server.base_url, [("Live updates", ""), *persian]))
    assert hub.run("add", feed_server.url("/fa.rss"), "--name", "farsi",
                   "--no-fulltext").returncode == 0
    assert hub.run("poll").returncode == 0
    assert language_feeds(hub) == {"fa"}
    assert languages_of(hub)["Live updates"] == "fa"

    feed_server.serve("/fa.rss", feed(feed_server.base_url, [("Breaking news", ""),
                                                             ("Podcast: Episode 12", "")],
                                      prefix="later"))
    assert hub.run("poll", "--all").returncode == 0
    assert language_feeds(hub) == {"fa"}
    assert {languages_of(hub)[t] for t in ("Breaking news", "Podcast: Episode 12")} == {"fa"}


def test_a_language_without_a_table_needs_a_long_sure_text(hub: HubDir, feed_server) -> None:
    """An English source (no [languages.de] in the test hub) with a long
    German article, which py3langid is sure of: de.atom. A German teaser of
    one line, under 200 characters, stays with the source: en.atom."""
    english = [(f"Article {n}", paragraphs("en-article", 2, 2 * n)) for n in range(3)]
    german = ("Entlastungspaket beschlossen", paragraphs("de-article", 2))
    teaser = ("Bahnstreik beendet", "<p>Die GDL ruft erneut zum Streik auf. "
              "Was Pendler jetzt wissen müssen.</p>")
    feed_server.serve("/mostly-en.rss", feed(feed_server.base_url, [german, teaser, *english]))
    assert hub.run("add", feed_server.url("/mostly-en.rss"), "--name", "mostly-en",
                   "--no-fulltext").returncode == 0
    assert hub.run("poll").returncode == 0
    found = languages_of(hub)
    assert language_feeds(hub) == {"en", "de"}
    assert [e.title for e in hub.feed("de").entries] == ["Entlastungspaket beschlossen"]
    assert found["Bahnstreik beendet"] == "en"
    assert stored_detections(hub)["Bahnstreik beendet"] == ("en", "de")


def key_page() -> bytes:
    """An article page whose text is a PGP key block and one short line."""
    return (f"<!doctype html><html><head><title>Our signing key</title></head><body>"
            f"<article><h1>Our signing key</h1><p>Fingerprint below.</p>"
            f"<pre>{PGP_KEY}</pre><pre>{PGP_KEY}</pre></article></body></html>").encode()


def test_detection_on_an_extracted_page_follows_the_same_rules(hub: HubDir,
                                                              feed_server) -> None:
    """Teasers replaced by their article pages are detected again, by the
    same rules: a page that is mostly a key block keeps the item in the
    source's language; an English article page goes to en."""
    feed_server.serve("/articles/key", key_page(), content_type="text/html; charset=utf-8")
    feed_server.serve("/articles/en", (PAGES / "en-article.html").read_bytes(),
                      content_type="text/html; charset=utf-8")
    items = "".join(
        f"<item><title>{title}</title><link>{feed_server.base_url}/articles/{slug}</link>"
        f"<guid>{slug}</guid><description>{escape(teaser)}</description></item>"
        for slug, title, teaser in (
            ("key", "Our signing key", "Fingerprint …"),
            ("en", "Relief scheme announced", "The government set out a scheme …")))
    feed_server.serve("/teasers.rss", '<?xml version="1.0" encoding="utf-8"?><rss version="2.0">'
                      "<channel><title>T</title><link>https://t.example/</link>"
                      f"<description>d</description>{items}</channel></rss>")
    assert hub.run("add", feed_server.url("/teasers.rss"), "--name", "teasers").returncode == 0
    assert hub.run("poll").returncode == 0
    assert feed_server.requests_for("/articles/key")  # the page was extracted
    assert language_feeds(hub) == {"en"}
    detected = stored_detections(hub)
    assert detected["Our signing key"] == ("en", "zxx")
    assert detected["Relief scheme announced"] == ("en", "en")


def test_the_store_knows_a_sources_usual_language(tmp_path) -> None:
    """The most common language among the source's newest 50 items; codes
    that name no language do not count; None for a source with no items."""
    from datetime import UTC, datetime, timedelta

    from feedhub.models import Item
    from feedhub.store import open_store

    start = datetime(2025, 1, 1, tzinfo=UTC)

    def items(languages: str, offset: int) -> list[Item]:
        return [Item(upstream_id=f"{offset + n}", title="t", link=None, author=None,
                     published=start + timedelta(hours=offset + n), published_estimated=False,
                     updated=None, content="c", content_is_full=True, language=language)
                for n, language in enumerate(languages.split())]

    with open_store(tmp_path / "feedhub.db") as store:
        assert store.usual_language("s") is None
        # 60 German items, then the newest 50: 15 English, 5 pcm, 30 with no language
        for batch in (items("de " * 60, 0), items("en " * 15 + "pcm " * 5 + "zxx " * 30, 100)):
            store.save_items("s", batch, seen_at=start, id_authority="hub.example")
        assert store.usual_language("s") == "en"
        assert store.usual_language("other") is None
