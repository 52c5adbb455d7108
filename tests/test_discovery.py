"""Feed discovery: `feedhub add https://site/` given a page finds the site's
feeds, through the real CLI against pages and feeds served on 127.0.0.1;
and the extraction of <link rel="alternate"> feeds from HTML."""

from __future__ import annotations

import asyncio
import time
import tomllib

import pytest

from feedhub.discover import DiscoveryError, discover_feeds
from feedhub.fetch import Fetcher
from feedhub.models import FetchResult
from feedhub.parse import feed_links, looks_like_html
from hubdir import FIXTURES, HubDir

HTML = "text/html; charset=utf-8"
WSWS = (FIXTURES / "seed_wsws.rss").read_bytes()  # "World Socialist Web Site", language en
GERMAN = (FIXTURES / "german.atom").read_bytes()  # "WSWS Deutsch", language de


def page(*links: str, base: str | None = None) -> str:
    """A home page whose <head> holds `links` (raw <link> elements)."""
    head = "\n".join(([f'<base href="{base}">'] if base else []) + list(links))
    return (f"<!DOCTYPE html>\n<html><head><meta charset='utf-8'><title>A site</title>\n{head}\n"
            "</head><body><h1>A site</h1><p><a href='/about/'>About</a></p></body></html>")


def rss_link(href: str, title: str = "Feed") -> str:
    return f'<link rel="alternate" type="application/rss+xml" title="{title}" href="{href}">'


def atom_link(href: str, title: str = "Feed") -> str:
    return f'<link rel="alternate" type="application/atom+xml" title="{title}" href="{href}">'


def sources(hub: HubDir) -> list[dict]:
    return tomllib.loads(hub.config.read_text(encoding="utf-8")).get("sources", [])


def probed(feed_server) -> list[str]:
    """The paths requested, in order, the home page's included."""
    return [request.path for request in feed_server.requests]


# --- the CLI ------------------------------------------------------------------


def test_page_with_one_feed_link_adds_that_feed_without_asking(hub: HubDir, feed_server) -> None:
    feed_server.serve("/", page(rss_link("/rss.xml", "All posts")), content_type=HTML)
    feed_server.serve("/rss.xml", WSWS)
    added = hub.run("add", feed_server.url("/"), input="")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == [
        f"Found 1 feed on {feed_server.url('/')}: {feed_server.url('/rss.xml')}",
        f"Added 'World Socialist Web Site' ({feed_server.url('/rss.xml')}), language en.",
    ]
    [source] = sources(hub)
    assert source["url"] == feed_server.url("/rss.xml")
    assert source["name"] == "World Socialist Web Site" and source["language"] == "en"
    # the page linked a feed: no guessing at common paths
    assert probed(feed_server) == ["/", "/rss.xml"]


def test_direct_feed_url_is_added_as_before(hub: HubDir, feed_server) -> None:
    feed_server.serve("/rss.xml", WSWS)
    added = hub.run("add", feed_server.url("/rss.xml"))
    assert added.returncode == 0, added.stderr
    assert added.stdout == (f"Added 'World Socialist Web Site' ({feed_server.url('/rss.xml')}), "
                            "language en.\n")
    assert probed(feed_server) == ["/rss.xml"]


def serve_two_feeds(feed_server) -> None:
    feed_server.serve("/", page(rss_link("/en.rss", "English"), atom_link("/de.atom", "Deutsch")),
                      content_type=HTML)
    feed_server.serve("/en.rss", WSWS)
    feed_server.serve("/de.atom", GERMAN, content_type="application/atom+xml")


def test_page_with_two_feeds_asks_which_and_adds_the_answer(hub: HubDir, feed_server) -> None:
    serve_two_feeds(feed_server)
    added = hub.run("add", feed_server.url("/"), input="2\n")
    assert added.returncode == 0, added.stderr
    lines = added.stdout.splitlines()
    assert lines[0] == f"Found 2 feeds on {feed_server.url('/')}:"
    assert lines[1].split() == ["#", "title", "url"]
    assert lines[3].split() == ["1", "World", "Socialist", "Web", "Site", feed_server.url("/en.rss")]
    assert lines[4].split() == ["2", "WSWS", "Deutsch", feed_server.url("/de.atom")]
    assert lines[5] == (f"Add which feed? (1-2): Added 'WSWS Deutsch' ({feed_server.url('/de.atom')}), "
                        "language de.")
    assert [s["url"] for s in sources(hub)] == [feed_server.url("/de.atom")]


def test_a_wrong_answer_is_asked_again(hub: HubDir, feed_server) -> None:
    serve_two_feeds(feed_server)
    added = hub.run("add", feed_server.url("/"), input="3\n1\n")
    assert added.returncode == 0, added.stderr
    assert "3 is not in the range" in added.stdout + added.stderr
    assert [s["url"] for s in sources(hub)] == [feed_server.url("/en.rss")]


def test_pick_chooses_without_asking(hub: HubDir, feed_server) -> None:
    serve_two_feeds(feed_server)
    added = hub.run("add", feed_server.url("/"), "--pick", "2", "--name", "de", input="")
    assert added.returncode == 0, added.stderr
    assert "Add which feed?" not in added.stdout
    assert f"Picked 2: {feed_server.url('/de.atom')}" in added.stdout
    assert sources(hub) == [{"name": "de", "url": feed_server.url("/de.atom"), "language": "de"}]


def test_several_feeds_and_no_answer_fails_naming_pick(hub: HubDir, feed_server) -> None:
    serve_two_feeds(feed_server)
    before = hub.config.read_bytes()
    added = hub.run("add", feed_server.url("/"), input="")
    assert added.returncode == 1
    assert "no feed chosen; choose one with --pick N (1-2)" in added.stderr
    assert hub.config.read_bytes() == before


@pytest.mark.parametrize(("args", "message"), [
    (["--pick", "3"], "3 is not in the list: 2 found on the page"),
    (["--pick", "0"], "0 is not in the range x>=1"),
    (["--pick", "1", "--no-check"], "--pick chooses among the feeds found on a page"),
])
def test_bad_pick_is_a_usage_error(hub: HubDir, feed_server, args: list[str], message: str) -> None:
    serve_two_feeds(feed_server)
    before = hub.config.read_bytes()
    added = hub.run("add", feed_server.url("/"), *args, input="")
    assert added.returncode == 2, added.stderr
    assert message in added.stderr
    assert hub.config.read_bytes() == before


def test_page_without_links_is_found_at_a_common_path(hub: HubDir, feed_server) -> None:
    feed_server.serve("/", page(), content_type=HTML)
    feed_server.serve("/feed.xml", WSWS)
    feed_server.serve("/index.xml", GERMAN, content_type="application/atom+xml")
    added = hub.run("add", feed_server.url("/"), input="")
    assert added.returncode == 0, added.stderr
    assert f"Found 1 feed on {feed_server.url('/')}: {feed_server.url('/feed.xml')}" in added.stdout
    assert [s["url"] for s in sources(hub)] == [feed_server.url("/feed.xml")]
    # one request at a time, in the documented order, stopping at the first feed
    assert probed(feed_server) == ["/", "/feed", "/feed/", "/rss", "/rss.xml", "/atom.xml",
                                   "/feed.xml"]


def test_common_paths_next_to_the_page_come_before_the_root(hub: HubDir, feed_server) -> None:
    feed_server.serve("/blog/", page(), content_type=HTML)
    feed_server.serve("/blog/index.xml", GERMAN, content_type="application/atom+xml")
    feed_server.serve("/feed", WSWS)  # the whole site's feed, not the blog's
    added = hub.run("add", feed_server.url("/blog/"), input="")
    assert added.returncode == 0, added.stderr
    assert [s["url"] for s in sources(hub)] == [feed_server.url("/blog/index.xml")]


def test_page_with_no_feed_anywhere_fails_saying_what_was_tried(hub: HubDir, feed_server) -> None:
    feed_server.serve("/", page(), content_type=HTML)
    feed_server.serve("/rss", page(), content_type=HTML)  # a catch-all that answers with the page
    before = hub.config.read_bytes()
    added = hub.run("add", feed_server.url("/"), input="")
    assert added.returncode == 1
    assert added.stderr.strip() == (
        f"Error: {feed_server.url('/')} is not a feed but an HTML page (text/html), and no feed "
        "was found from it: the page links none, and none of /feed, /feed/, /rss, /rss.xml, "
        "/atom.xml, /feed.xml, /index.xml, /feeds/posts/default, /?feed=rss2, /feed.json under "
        f"{feed_server.url('/')} is a feed")
    assert hub.config.read_bytes() == before


def test_a_site_too_slow_to_search_is_given_up_within_the_deadline(feed_server) -> None:
    feed_server.serve("/", page(rss_link("/a.rss"), rss_link("/b.rss")), content_type=HTML)
    for path in ("/a.rss", "/b.rss"):
        feed_server.slow(path, WSWS, first_byte_delay=3)

    async def discover() -> None:
        async with Fetcher(user_agent="feedhub-test", allow_private=True, timeout=10) as fetcher:
            await discover_feeds(fetcher, feed_server.url("/"), deadline=1.5)

    started = time.monotonic()
    with pytest.raises(DiscoveryError, match=r"gave up looking for feeds on .* after 1.5s"):
        asyncio.run(discover())
    assert time.monotonic() - started < 3  # not two 3-second waits, let alone 39 timeouts


def test_relative_href_is_resolved_against_the_page(hub: HubDir, feed_server) -> None:
    feed_server.serve("/news/index.html", page(rss_link("feed.rss")), content_type=HTML)
    feed_server.serve("/news/feed.rss", WSWS)
    added = hub.run("add", feed_server.url("/news/index.html"), input="")
    assert added.returncode == 0, added.stderr
    assert [s["url"] for s in sources(hub)] == [feed_server.url("/news/feed.rss")]


def test_href_is_resolved_against_base_href(hub: HubDir, feed_server) -> None:
    feed_server.serve("/news/index.html", page(rss_link("main.rss"), base="/feeds/"),
                      content_type=HTML)
    feed_server.serve("/news/main.rss", GERMAN)  # where the href would point without <base>
    feed_server.serve("/feeds/main.rss", WSWS)
    added = hub.run("add", feed_server.url("/news/index.html"), input="")
    assert added.returncode == 0, added.stderr
    assert [s["url"] for s in sources(hub)] == [feed_server.url("/feeds/main.rss")]


def test_linked_targets_that_are_not_feeds_are_not_offered(hub: HubDir, feed_server) -> None:
    feed_server.serve("/", page(rss_link("/gone.rss", "Old"), rss_link("/comments", "Comments"),
                                atom_link("/real.atom", "Posts")), content_type=HTML)
    feed_server.serve("/comments", page(), content_type=HTML)
    feed_server.serve("/real.atom", GERMAN, content_type="application/atom+xml")
    added = hub.run("add", feed_server.url("/"), input="")
    assert added.returncode == 0, added.stderr
    assert added.stdout.startswith(
        f"Found 1 feed on {feed_server.url('/')}: {feed_server.url('/real.atom')}\n")
    assert "gone.rss" not in added.stdout and "/comments" not in added.stdout
    assert [s["url"] for s in sources(hub)] == [feed_server.url("/real.atom")]


def test_only_broken_links_and_no_common_path_fails_naming_the_link(hub: HubDir,
                                                                    feed_server) -> None:
    feed_server.serve("/", page(rss_link("/gone.rss")), content_type=HTML)
    added = hub.run("add", feed_server.url("/"), input="")
    assert added.returncode == 1
    assert (f"the one it links is not ({feed_server.url('/gone.rss')}: HTTP 404 Not Found)"
            in added.stderr)
    assert sources(hub) == []


@pytest.mark.parametrize("order", [("/tracked", "/feed.rss"), ("/feed.rss", "/tracked")])
def test_two_links_to_one_feed_are_offered_once(hub: HubDir, feed_server,
                                                order: tuple[str, str]) -> None:
    feed_server.serve("/", page(*map(rss_link, order)), content_type=HTML)
    feed_server.redirect("/tracked", "/feed.rss", status=302)
    feed_server.serve("/feed.rss", WSWS)
    added = hub.run("add", feed_server.url("/"), input="")
    assert added.returncode == 0, added.stderr
    assert "Found 1 feed" in added.stdout and "Add which feed?" not in added.stdout
    # the feed's own address, not the one that reaches it through a redirect
    assert [s["url"] for s in sources(hub)] == [feed_server.url("/feed.rss")]


@pytest.mark.parametrize(("status", "kept"), [(301, "/feed.rss"), (308, "/feed.rss"),
                                              (302, "/old-feed"), (307, "/old-feed")])
def test_a_permanent_redirect_is_followed_a_temporary_one_kept(hub: HubDir, feed_server,
                                                               status: int, kept: str) -> None:
    feed_server.serve("/", page(rss_link("/old-feed")), content_type=HTML)
    feed_server.redirect("/old-feed", "/feed.rss", status=status)
    feed_server.serve("/feed.rss", WSWS)
    added = hub.run("add", feed_server.url("/"), input="")
    assert added.returncode == 0, added.stderr
    assert [s["url"] for s in sources(hub)] == [feed_server.url(kept)]


def test_a_discovered_feed_already_configured_is_refused(hub: HubDir, feed_server) -> None:
    serve_two_feeds(feed_server)
    assert hub.run("add", feed_server.url("/en.rss"), "--name", "wsws").returncode == 0
    before = hub.config.read_bytes()

    again = hub.run("add", feed_server.url("/"), "--pick", "1", input="")
    assert again.returncode == 1
    assert again.stderr == f"Error: {feed_server.url('/en.rss')} is already a source (named 'wsws')\n"
    assert hub.config.read_bytes() == before

    marked = hub.run("add", feed_server.url("/"), input="2\n")
    assert marked.returncode == 0, marked.stderr
    [row] = [line for line in marked.stdout.splitlines() if feed_server.url("/en.rss") in line]
    assert "already a source, named 'wsws'" in row
    assert [s["url"] for s in sources(hub)] == [feed_server.url("/en.rss"),
                                                feed_server.url("/de.atom")]

    nothing_left = hub.run("add", feed_server.url("/"), input="1\n")
    assert nothing_left.returncode == 1
    assert (f"every feed found on {feed_server.url('/')} is already a source: "
            f"{feed_server.url('/en.rss')}, {feed_server.url('/de.atom')}") in nothing_left.stderr
    assert "Add which feed?" not in nothing_left.stdout


def test_a_single_discovered_duplicate_is_refused(hub: HubDir, feed_server) -> None:
    feed_server.serve("/", page(rss_link("/rss.xml")), content_type=HTML)
    feed_server.serve("/rss.xml", WSWS)
    assert hub.run("add", feed_server.url("/rss.xml"), "--name", "wsws").returncode == 0
    again = hub.run("add", feed_server.url("/"), input="")
    assert again.returncode == 1
    assert again.stderr == f"Error: {feed_server.url('/rss.xml')} is already a source (named 'wsws')\n"
    assert len(sources(hub)) == 1


def test_a_non_html_non_feed_is_refused_without_probing(hub: HubDir, feed_server) -> None:
    feed_server.serve("/api", '{"items": []}', content_type="application/json")
    added = hub.run("add", feed_server.url("/api"), input="")
    assert added.returncode == 1
    assert f"{feed_server.url('/api')} is not a feed" in added.stderr
    assert probed(feed_server) == ["/api"]


def test_no_check_adds_the_page_url_without_fetching(hub: HubDir, feed_server) -> None:
    feed_server.serve("/", page(rss_link("/rss.xml")), content_type=HTML)
    added = hub.run("add", feed_server.url("/"), "--no-check", "--name", "site")
    assert added.returncode == 0, added.stderr
    assert [s["url"] for s in sources(hub)] == [feed_server.url("/")]
    assert feed_server.requests == []


def test_add_help_documents_discovery_and_pick(hub: HubDir) -> None:
    helped = hub.run("add", "--help")
    assert helped.returncode == 0
    assert "--pick N" in helped.stdout
    assert "feedhub add https://blog.example.org/ --pick 2" in helped.stdout


# --- finding the feed links of a page -----------------------------------------

PAGE_URL = "https://site.example/news/today.html"


def hrefs(html: str | bytes, url: str = PAGE_URL) -> list[str]:
    return [link.href for link in feed_links(html, url)]


@pytest.mark.parametrize("rel", ["alternate", "ALTERNATE", "Alternate feed", "home alternate",
                                 "  alternate\n"])
def test_rel_is_a_case_insensitive_token_list(rel: str) -> None:
    html = f'<link rel="{rel}" type="application/rss+xml" href="/rss">'
    assert hrefs(html) == ["https://site.example/rss"]


@pytest.mark.parametrize("rel", ["", "alternative", "stylesheet", "alternate-feed", "feed"])
def test_other_rels_are_not_feeds(rel: str) -> None:
    assert hrefs(f'<link rel="{rel}" type="application/rss+xml" href="/rss">') == []


@pytest.mark.parametrize(("media_type", "found"), [
    ("application/rss+xml", True),
    ("application/atom+xml", True),
    ("Application/Atom+XML", True),
    ("application/rss+xml; charset=utf-8", True),
    ("application/feed+json", True),  # JSON Feed 1.1
    ("application/json", True),  # JSON Feed 1.0, when nothing else is linked
    ("text/html", False),  # a translation of the page (hreflang)
    ("", False),
])
def test_only_rss_atom_and_json_feed_types_are_feeds(media_type: str, found: bool) -> None:
    html = f'<link rel="alternate" type="{media_type}" href="/x">'
    assert hrefs(html) == (["https://site.example/x"] if found else [])


def test_plain_json_links_count_only_where_nothing_else_is_linked() -> None:
    """JSON Feed 1.1: prefer application/feed+json, fall back to
    application/json. WordPress links its REST API as application/json on
    every page: beside a real feed it is not one worth fetching."""
    api = '<link rel="alternate" type="application/json" href="/wp-json/wp/v2/pages/7">'
    assert hrefs(api + rss_link("/feed/")) == ["https://site.example/feed/"]
    assert hrefs(api + '<link rel="alternate" type="application/feed+json" href="/f.json">') == [
        "https://site.example/f.json"]
    assert hrefs(api) == ["https://site.example/wp-json/wp/v2/pages/7"]


def test_links_in_document_order_without_repeats_with_titles() -> None:
    html = page(atom_link("/atom.xml", " Posts \n (Atom) "),
                rss_link("../news/feed.rss", "Posts"),
                rss_link("https://site.example/atom.xml", "Again"),
                rss_link("https://feeds.example.net/site#top", "Elsewhere"),
                rss_link("https://feeds.example.net/site", "Elsewhere again"),
                '<link rel="alternate" type="application/rss+xml">')  # no href
    links = feed_links(page_bytes := html.encode(), PAGE_URL)
    assert [(link.href, link.type, link.title) for link in links] == [
        ("https://site.example/atom.xml", "application/atom+xml", "Posts (Atom)"),
        ("https://site.example/news/feed.rss", "application/rss+xml", "Posts"),
        ("https://feeds.example.net/site", "application/rss+xml", "Elsewhere"),
    ]
    assert feed_links(page_bytes.decode(), PAGE_URL) == links


@pytest.mark.parametrize(("base", "href", "expected"), [
    (None, "feed.rss", "https://site.example/news/feed.rss"),
    ("/feeds/", "feed.rss", "https://site.example/feeds/feed.rss"),
    ("https://cdn.example.org/s/", "feed.rss", "https://cdn.example.org/s/feed.rss"),
    ("../", "feed.rss", "https://site.example/feed.rss"),  # a relative <base> is relative to the page
    ("/feeds/", "/top.rss", "https://site.example/top.rss"),
    ("/feeds/", "https://other.example/x", "https://other.example/x"),
])
def test_hrefs_resolve_against_base_href_then_page(base: str | None, href: str, expected: str) -> None:
    assert hrefs(page(rss_link(href), base=base)) == [expected]


def test_only_the_first_base_href_counts() -> None:
    html = '<base target="_blank"><base href="/a/"><base href="/b/">' + rss_link("f.rss")
    assert hrefs(html) == ["https://site.example/a/f.rss"]


def test_non_http_hrefs_are_skipped() -> None:
    html = rss_link("javascript:subscribe()") + rss_link("mailto:x@site.example") + rss_link("/ok")
    assert hrefs(html) == ["https://site.example/ok"]


def test_titles_are_read_in_the_page_encoding() -> None:
    declared = ('<meta charset="windows-1252">' + rss_link("/f", "Café")).encode("cp1252")
    undeclared = rss_link("/f", "خبرها").encode("utf-8")  # UTF-8 without <meta charset>
    assert [link.title for link in feed_links(declared, PAGE_URL)] == ["Café"]
    assert [link.title for link in feed_links(undeclared, PAGE_URL)] == ["خبرها"]
    latin = rss_link("/f", "Café").encode("latin-1")
    assert [link.title for link in feed_links(latin, PAGE_URL, encoding="latin-1")] == ["Café"]


@pytest.mark.parametrize("body", [b"", b"   ", b"\x00\x01\x02", b"<html></html>"])
def test_pages_without_feeds_give_none(body: bytes) -> None:
    assert feed_links(body, PAGE_URL) == ()


@pytest.mark.parametrize(("content_type", "body", "html"), [
    ("text/html; charset=utf-8", b"<p>hi", True),
    ("application/xhtml+xml", b"<html/>", True),
    ("text/plain", b"\xef\xbb\xbf\n<!-- served wrong -->\n<!DOCTYPE html><html>", True),
    ("", b"<HTML lang=en><body>", True),
    ("application/json", b'{"a": 1}', False),
    ("text/plain", b"<htmlish>", False),
    ("image/png", b"\x89PNG", False),
])
def test_looks_like_html(content_type: str, body: bytes, html: bool) -> None:
    from datetime import UTC, datetime

    result = FetchResult(url=PAGE_URL, final_url=PAGE_URL, status=200, content=body,
                         headers={"content-type": content_type} if content_type else {},
                         fetched_at=datetime.now(UTC))
    assert looks_like_html(result) is html
