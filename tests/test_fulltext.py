"""Full text from article pages, and items sorted into feeds by language,
through the real CLI against pages served on 127.0.0.1."""

from __future__ import annotations

import json
import re
import time
from html import escape
from pathlib import Path

import lxml.html
import pytest

from hubdir import FIXTURES, HubDir

PAGES = FIXTURES / "pages"
ARTICLES = {"en": "en-article", "de": "de-article", "fa": "fa-article"}


def normalized(text: str) -> str:
    return " ".join(text.split())


def text_of(fragment: str) -> str:
    return normalized(lxml.html.fragment_fromstring(fragment, create_parent="div").text_content())


def paragraphs(name: str) -> list[str]:
    return (PAGES / f"{name}.paragraphs.txt").read_text(encoding="utf-8").splitlines()


def title_of(name: str) -> str:
    page = (PAGES / f"{name}.html").read_text(encoding="utf-8")
    return re.search(r"<h1[^>]*>([^<]*)", page).group(1).strip()


def teaser_feed(base: str, names: dict[str, str]) -> str:
    """An RSS feed with no language whose items carry only a teaser: the
    first words of the article, cut with an ellipsis."""
    items = []
    for n, (slug, name) in enumerate(names.items()):
        teaser = " ".join(paragraphs(name)[0].split()[:12]) + " …"
        items.append(
            f"<item><title>{escape(title_of(name))}</title><link>{base}/articles/{slug}</link>"
            f"<guid>teaser-{slug}</guid><pubDate>Mon, 0{n + 1} Jan 2024 10:00:00 GMT</pubDate>"
            f"<description>{escape(teaser)}</description></item>")
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
            "<title>Teasers</title><link>https://teasers.example/</link><description>d</description>"
            + "".join(items) + "</channel></rss>")


def serve_pages(feed_server) -> None:
    for slug, name in ARTICLES.items():
        feed_server.serve(f"/articles/{slug}", (PAGES / f"{name}.html").read_bytes(),
                          content_type="text/html; charset=utf-8")


def entries_by_link(hub: HubDir, language: str) -> dict[str, object]:
    return {e.link: e for e in hub.feed(language).entries}


def test_teasers_are_replaced_by_the_full_article_without_page_chrome(hub: HubDir,
                                                                      feed_server) -> None:
    serve_pages(feed_server)
    feed_server.serve("/teasers.rss", teaser_feed(feed_server.base_url, ARTICLES))
    assert hub.run("add", feed_server.url("/teasers.rss"), "--name", "teasers").returncode == 0
    polled = hub.run("poll")
    assert polled.returncode == 0, polled.stderr

    for slug, name in ARTICLES.items():
        # no declared language: detected from the article, one feed per language
        entry = entries_by_link(hub, slug)[feed_server.url(f"/articles/{slug}")]
        content = entry.content[0].value
        text = text_of(content)
        for paragraph in paragraphs(name):
            assert normalized(paragraph) in text, (slug, paragraph[:50])
        for chrome in (PAGES / f"{name}.chrome.txt").read_text(encoding="utf-8").splitlines():
            assert chrome.strip() not in text, (slug, chrome)
        assert "<script" not in content
        assert f'src="{feed_server.base_url}/images/' in content  # made absolute
        if slug == "fa":
            assert 'dir="rtl"' in content
    # both texts are kept, each once (the published one is the extraction:
    # `content` holds nothing more), with the detected language
    import sqlite3

    from feedhub.store import PUBLISHED_TEXT

    with sqlite3.connect(hub.database) as db:
        rows = db.execute(f"SELECT link, content, {PUBLISHED_TEXT}, feed_content, extracted_content,"
                          " fulltext_status, detected_language, language_confidence FROM items"
                          ).fetchall()
    assert len(rows) == 3
    for link, content, published, feed_content, extracted, status, detected, confidence in rows:
        assert status == "extracted" and content is None and published == extracted
        assert feed_content.endswith("…") and len(feed_content) < len(extracted)
        assert detected == link.rsplit("/", 1)[1] and confidence >= 0.8
    # captions stay with their images
    caption = "Helen Marsh set out the scheme hours after new figures showed inflation falling"
    assert caption in entries_by_link(hub, "en")[feed_server.url("/articles/en")].content[0].value
    # each page was fetched once, with the hub's User-Agent
    for slug in ARTICLES:
        [request] = feed_server.requests_for(f"/articles/{slug}")
        assert request.headers["user-agent"].startswith("feedhub/")


def test_an_item_is_extracted_once_unless_refetch_asks(hub: HubDir, feed_server) -> None:
    serve_pages(feed_server)
    feed_server.serve("/teasers.rss", teaser_feed(feed_server.base_url, {"en": "en-article"}))
    hub.run("add", feed_server.url("/teasers.rss"), "--name", "teasers")
    hub.run("poll")
    page = (PAGES / "en-article.html").read_text(encoding="utf-8")
    first = paragraphs("en-article")[0]
    feed_server.serve("/articles/en", page.replace(first, "UPDATED. " + first),
                      content_type="text/html; charset=utf-8")
    hub.run("poll", "--all")
    assert len(feed_server.requests_for("/articles/en")) == 1  # not fetched again
    assert "UPDATED." not in hub.feed("en").entries[0].content[0].value

    marked = hub.run("refetch", "teasers")
    assert marked.returncode == 0 and "Marked all 1 items of 'teasers'" in marked.stdout
    assert hub.run("poll").returncode == 0  # the source is due again
    assert len(feed_server.requests_for("/articles/en")) == 2
    assert "UPDATED." in hub.feed("en").entries[0].content[0].value
    assert hub.run("refetch", "https://nowhere.example/x").returncode == 2


@pytest.mark.parametrize(("trouble", "reason"), [
    ("slow", "no complete response within 2s"),
    ("pdf", "the article page is not HTML (application/pdf)"),
    ("huge", "the 300,000-byte cap"),
    ("missing", "HTTP 404 Not Found"),
])
def test_a_page_that_fails_keeps_the_feed_text_and_says_why(tmp_path: Path, feed_server,
                                                             trouble: str, reason: str) -> None:
    hub = HubDir(tmp_path)
    hub.config.write_text(hub.config.read_text(encoding="utf-8").replace(
        'timeout = "5s"', 'timeout = "2s"\nmax_response_bytes = 300000'), encoding="utf-8")
    page = (PAGES / "en-article.html").read_bytes()
    if trouble == "slow":
        feed_server.slow("/articles/en", page, first_byte_delay=5)
    elif trouble == "pdf":
        feed_server.serve("/articles/en", b"%PDF-1.4 ...", content_type="application/pdf")
    elif trouble == "huge":
        feed_server.serve("/articles/en", page + b"<!--" + b"x" * 400_000 + b"-->",
                          content_type="text/html")
    feed_server.serve("/teasers.rss", teaser_feed(feed_server.base_url, {"en": "en-article"}))
    hub.run("add", feed_server.url("/teasers.rss"), "--name", "teasers", "--language", "en")
    polled = hub.run("poll")
    assert polled.returncode == 0, polled.stderr  # the poll itself succeeded
    assert reason in polled.stderr  # logged
    [entry] = hub.feed("en").entries
    assert text_of(entry.content[0].value).startswith(" ".join(paragraphs("en-article")[0].split()[:12]))
    status = json.loads(hub.run("status", "--json").stdout)
    [source] = status["sources"]
    assert source["fulltext_failures"] == 1 and reason in source["last_fulltext_failure"]
    assert "full text not extracted for 1 items" in hub.run("status").stdout


def test_never_and_full_feeds_fetch_no_page(hub: HubDir, feed_server) -> None:
    serve_pages(feed_server)
    feed_server.serve("/teasers.rss", teaser_feed(feed_server.base_url, {"en": "en-article"}))
    feed_server.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    hub.run("add", feed_server.url("/teasers.rss"), "--name", "teasers", "--no-fulltext")
    hub.run("add", feed_server.url("/wsws.rss"), "--name", "wsws")  # full text in the feed
    assert 'fulltext = "never"' in hub.config.read_text(encoding="utf-8")
    assert hub.run("poll").returncode == 0
    assert feed_server.requests_for("/articles/en") == []
    assert not [r for r in feed_server.requests if "peru" in r.path]


def test_a_mixed_language_feed_is_split_into_the_right_language_feeds(hub: HubDir,
                                                                        feed_server) -> None:
    """No language declared anywhere: each item's language is detected from
    its title and text (English, German, French, Persian, Pashto)."""
    feed_server.serve("/mixed.rss", (FIXTURES / "mixed.rss").read_bytes())
    assert hub.run("add", feed_server.url("/mixed.rss"), "--name", "mixed").returncode == 0
    assert hub.run("poll").returncode == 0
    found = {}
    for feed in hub.feeds.glob("*.atom"):
        if feed.stem == "all":
            continue
        for entry in hub.feed(feed.stem).entries:
            found[entry.title] = feed.stem
    expected = {}
    body = (FIXTURES / "mixed.rss").read_text(encoding="utf-8")
    for title, guid in re.findall(r"<title>([^<]*)</title>.*?<guid[^>]*>mixed-(\w+)-\d+</guid>",
                                  body.split("<item>", 1)[1], re.DOTALL):
        expected[title.strip()] = guid
    assert len(expected) == 10
    assert found == expected
    for language in ("fa", "ps"):
        for entry in hub.feed(language).entries:
            assert 'dir="rtl"' in entry.content[0].value


def deep_page(base_href: str | None = None) -> str:
    """The English article with a link that climbs the page's path, a
    page-relative image (with its caption) and, if given, a <base href>
    before a second one that must not count."""
    page = (PAGES / "en-article.html").read_text(encoding="utf-8")
    page = page.replace('src="/images/treasury-briefing.jpg"', 'src="photos/treasury-briefing.jpg"')
    page = page.replace("<p>The scheme will be paid for largely",
                        '<p>As with <a href="../../health/hospital.html">hospital funding</a>, '
                        "the scheme will be paid for largely")
    if base_href:
        page = page.replace("<head>", f'<head><base href="{base_href}"><base href="/wrong/">', 1)
    return page


def test_extracted_links_resolve_against_the_page_and_its_base_href(hub: HubDir,
                                                                     feed_server) -> None:
    """trafilatura alone resolves links against the site root (../../x.html
    on a deep page came out as /x.html) and ignores <base href>."""
    pages = {"/news/2024/05/14/story.html": None,  # no <base>: the page URL
             "/news/2024/05/15/based.html": "../../archive/"}  # a relative <base href>
    for path, base_href in pages.items():
        feed_server.serve(path, deep_page(base_href), content_type="text/html; charset=utf-8")
    teaser = " ".join(paragraphs("en-article")[0].split()[:12]) + " …"
    items = "".join(
        f"<item><title>Story {n}</title><link>{feed_server.url(path)}</link><guid>deep-{n}</guid>"
        f"<pubDate>Mon, 0{n + 1} Jan 2024 10:00:00 GMT</pubDate>"
        f"<description>{escape(teaser)}</description></item>" for n, path in enumerate(pages))
    feed_server.serve("/deep.rss", '<?xml version="1.0" encoding="utf-8"?><rss version="2.0">'
                      "<channel><title>Deep</title><link>https://deep.example/</link>"
                      f"<description>d</description>{items}</channel></rss>")
    assert hub.run("add", feed_server.url("/deep.rss"), "--name", "deep", "--language", "en",
                   "--fulltext").returncode == 0
    polled = hub.run("poll", "--all")
    assert polled.returncode == 0, polled.stderr
    entries = entries_by_link(hub, "en")
    caption = "Helen Marsh set out the scheme hours after new figures showed inflation falling"

    plain = entries[feed_server.url("/news/2024/05/14/story.html")].content[0].value
    assert "the scheme will be paid for largely" in plain  # extracted, not the teaser
    assert f'href="{feed_server.url("/news/2024/health/hospital.html")}"' in plain
    assert f'src="{feed_server.url("/news/2024/05/14/photos/treasury-briefing.jpg")}"' in plain
    assert f'href="{feed_server.url("/business/2025/mar/12/inflation-february")}"' in plain
    assert caption in plain

    based = entries[feed_server.url("/news/2024/05/15/based.html")].content[0].value
    # the first <base href>, itself resolved against the page URL: /news/2024/archive/
    assert f'href="{feed_server.url("/news/health/hospital.html")}"' in based
    assert f'src="{feed_server.url("/news/2024/archive/photos/treasury-briefing.jpg")}"' in based
    assert caption in based
    assert "/wrong/" not in based


def test_summary_policy_publishes_the_feeds_teaser_not_the_extracted_article(
        hub: HubDir, feed_server) -> None:
    """The feed's own teaser is upstream's summary: with publish = "summary"
    it is what goes out, though the article was extracted (issue 11)."""
    serve_pages(feed_server)
    feed_server.serve("/teasers.rss", teaser_feed(feed_server.base_url, {"en": "en-article"}))
    hub.run("add", feed_server.url("/teasers.rss"), "--name", "teasers", "--language", "en")
    hub.config.write_text(hub.config.read_text(encoding="utf-8") + 'publish = "summary"\n',
                          encoding="utf-8")
    assert hub.run("poll").returncode == 0
    assert len(feed_server.requests_for("/articles/en")) == 1  # extracted all the same
    [entry] = hub.feed("en").entries
    teaser = " ".join(paragraphs("en-article")[0].split()[:12]) + " …"
    assert text_of(entry.content[0].value).startswith(teaser + "Originally published by")


def test_status_reports_the_latest_fulltext_failure_by_time(hub: HubDir, feed_server) -> None:
    """Reasons whose alphabetical order is the opposite of their order in
    time: status names the one that happened last (issue 11)."""
    def item(guid: str, link: str) -> str:
        return (f"<item><title>Story {guid}</title>{link}<guid isPermaLink='false'>{guid}</guid>"
                "<pubDate>Mon, 01 Jan 2024 10:00:00 GMT</pubDate>"
                "<description>A teaser that ends the way teasers end …</description></item>")

    def serve(*items: str) -> None:
        feed_server.serve("/teasers.rss", '<?xml version="1.0"?><rss version="2.0"><channel>'
                          "<title>T</title><link>https://t.example/</link><description>d</description>"
                          + "".join(items) + "</channel></rss>")

    def latest() -> str:
        [source] = json.loads(hub.run("status", "--json").stdout)["sources"]
        return source["last_fulltext_failure"]

    unlinked = item("a", "")
    serve(unlinked)
    hub.run("add", feed_server.url("/teasers.rss"), "--name", "teasers", "--language", "en")
    assert hub.run("poll").returncode == 0
    assert latest() == "kept feed text: the item has no link"
    time.sleep(1.1)
    serve(unlinked, item("b", f"<link>{feed_server.url('/articles/gone')}</link>"))
    assert hub.run("poll", "--all").returncode == 0
    assert "answered HTTP 404" in latest()  # later, though alphabetically first
    assert "full text not extracted for 2 items; latest: kept feed text: the article page " \
        "answered HTTP 404" in hub.run("status").stdout
    time.sleep(1.1)
    [first] = [e.id for e in hub.feed("en").entries if e.title == "Story a"]
    assert hub.run("refetch", first).returncode == 0  # the first item fails again, last
    assert hub.run("poll").returncode == 0
    assert latest() == "kept feed text: the item has no link"
