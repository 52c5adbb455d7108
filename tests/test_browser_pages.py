"""The HTML pages as a person sees them: a hub polls feeds served on
127.0.0.1 (the seed article, a Persian source quoting English, a source with
a picture wider than any phone and enough articles for archive pages),
`feedhub serve` serves its output, and Debian's Chromium renders it
(tests/browser.py). Every page is also checked by the Nu Html Checker.

One screenshot per language page is kept as the run's artifact, in
$FEEDHUB_ARTIFACTS or build/screenshots/ (README, "Web pages")."""

from __future__ import annotations

import os
import re
import signal
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from browser import DESKTOP, PHONE, computed_style, has_horizontal_scroll, screenshot, visible_text
from feedserver import FeedServer
from htmlcheck import assert_valid_html5
from hubdir import FIXTURES, HubDir, wait_for

ARTIFACTS = Path(os.environ.get("FEEDHUB_ARTIFACTS") or
                 Path(__file__).resolve().parents[1] / "build" / "screenshots")
SEED_TITLE = "US-backed coup regime in Peru extends emergency rule and military repression"
QUOTE = "We will not be silenced, said the striking workers in English."


def png(width: int, height: int) -> bytes:
    """A plain PNG of this size (a photograph wider than any phone)."""
    row = b"\x00" + b"\x30\x60\x90" * width
    chunk = lambda kind, data: (struct.pack(">I", len(data)) + kind + data  # noqa: E731
                                + struct.pack(">I", zlib.crc32(kind + data)))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


def local_feed(base: str, count: int) -> str:
    """English articles on 127.0.0.1, each with a 1600-pixel picture, a long
    unbroken URL and a wide table: what would push a phone's page sideways."""
    items = "".join(
        f"<item><title>Local story {n}</title><link>{base}/story/{n}</link><guid>local-{n}</guid>"
        f"<pubDate>{n:02d} Mar 2021 08:00:00 GMT</pubDate><author>desk@local.example (Desk)</author>"
        "<description><![CDATA["
        f'<p>Story {n} begins here, with a picture.</p><img src="/img/wide.png" alt="wide">'
        f"<p>See {base}/a/very/long/address/that/never/breaks/{'x' * 120} for more.</p>"
        "<table><tr>" + "".join(f"<td>column{c}wide</td>" for c in range(30)) + "</tr></table>"
        "]]></description></item>" for n in range(1, count + 1))
    return ('<?xml version="1.0"?><rss version="2.0"><channel><title>Local</title>'
            f"<link>{base}/</link><description>d</description><language>en</language>"
            f"{items}</channel></rss>")


def persian_feed() -> bytes:
    """The Persian fixture, its first article quoting a sentence in English."""
    return (FIXTURES / "persian.rss").read_bytes().replace(
        "متوقف شد.</p>".encode(),
        f'متوقف شد.</p><blockquote lang="en"><p>{QUOTE}</p></blockquote>'.encode(), 1)


@dataclass(frozen=True)
class ServedHub:
    base: str  # http://127.0.0.1:PORT/ (feedhub serve)
    feeds: Path


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedHub]:
    hub = HubDir(tmp_path_factory.mktemp("browser-hub"), items_per_feed=3)
    text = hub.config.read_text(encoding="utf-8").replace(
        "[hub]\n", "[hub]\narchive_page_size = 2\n", 1)
    hub.config.write_text(text + '\n[languages.en]\ncredit = "{source} {date:%d.%m.%Y}"\n',
                          encoding="utf-8")
    with FeedServer() as upstream:
        base = upstream.url("").rstrip("/")
        upstream.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
        upstream.serve("/persian.rss", persian_feed())
        upstream.serve("/local.rss", local_feed(base, 8))
        upstream.serve("/img/wide.png", png(1600, 400), content_type="image/png")
        for path, name in (("/wsws.rss", "World Socialist Web Site"),
                           ("/persian.rss", "خبرگزاری نمونه"), ("/local.rss", "Local")):
            added = hub.run("add", upstream.url(path), "--name", name, "--no-fulltext")
            assert added.returncode == 0, added.stderr
        polled = hub.run("poll", "--all")
        assert polled.returncode == 0, polled.stdout + polled.stderr
        port = _free_port()
        server = hub.start("serve", "--address", f"127.0.0.1:{port}")
        served = ServedHub(f"http://127.0.0.1:{port}/", hub.feeds)
        wait_for(lambda: _up(served.base))
        try:
            yield served
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=10)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _up(base: str) -> bool:
    try:
        return httpx.get(base + "index.html").status_code == 200
    except httpx.HTTPError:
        return False


def pages_of(served: ServedHub) -> list[str]:
    return sorted(p.relative_to(served.feeds).as_posix() for p in served.feeds.rglob("*.html"))


def keep_screenshot(page, name: str) -> None:  # type: ignore[no-untyped-def]
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    screenshot(page, ARTIFACTS / name)


def test_every_page_is_valid_html5(served: ServedHub) -> None:
    assert len(pages_of(served)) >= 10
    assert_valid_html5(served.feeds)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_every_page_renders_without_errors_requests_elsewhere_or_sideways_scrolling(
        served: ServedHub, open_page, viewport: tuple[int, int]) -> None:
    for name in pages_of(served):
        visit = open_page(served.base + name, viewport)
        assert visit.response is not None and visit.response.status == 200, name
        assert visit.response.headers["content-type"] == "text/html; charset=utf-8"
        assert visit.console_errors == [], name
        # nothing of the page's own leaves 127.0.0.1; the seed's photograph is
        # upstream's, linked from its article (and so is asked for, and aborted)
        assert {request for request in visit.external_requests
                if not request.startswith("https://www.wsws.org/asset/")} == set(), name
        assert not has_horizontal_scroll(visit.page), f"{name} scrolls sideways at {viewport}"
        visit.close()


def test_the_seed_article_reads_as_on_the_seed_page(served: ServedHub, open_page) -> None:
    visit = open_page(served.base + "en.html", DESKTOP)
    seen = visible_text(visit.page)
    assert SEED_TITLE in seen and "Andrea Lobo" in seen
    for paragraph in (FIXTURES / "seed_article.txt").read_text(encoding="utf-8").splitlines():
        assert " ".join(paragraph.split()) in " ".join(seen.split()), paragraph[:60]
    seed = visit.page.locator("article", has_text=SEED_TITLE)
    credit = seed.locator(".credit")
    assert credit.inner_text().strip() == "World Socialist Web Site 28.12.2022"
    assert credit.locator("a").get_attribute("href") == \
        "https://www.wsws.org/en/articles/2022/12/28/peru-d28.html"
    assert computed_style(visit.page, "html", "direction") == "ltr"
    keep_screenshot(visit.page, "en.png")


def test_persian_reads_right_to_left_and_the_quoted_english_left_to_right(
        served: ServedHub, open_page) -> None:
    visit = open_page(served.base + "fa.html", PHONE)
    page = visit.page
    assert computed_style(page, "html", "direction") == "rtl"
    assert computed_style(page, "article", "direction") == "rtl"
    assert computed_style(page, "article .content > p", "direction") == "rtl"
    assert computed_style(page, "article .credit", "direction") == "rtl"
    assert computed_style(page, 'blockquote[lang="en"]', "direction") == "ltr"
    # a date after Persian words: Arabic-letter context would show 2023-01-02 as 02-01-2023
    assert computed_style(page, "article time", "direction") == "ltr"
    assert computed_style(page, "article time", "unicode-bidi") == "isolate"
    assert QUOTE in visible_text(page) and "منبع:" in visible_text(page)
    # the text starts at the right edge: the heading's right side is the column's
    box = page.locator("article h2").first.bounding_box()
    column = page.locator("main").bounding_box()
    assert box and column and abs((box["x"] + box["width"]) - (column["x"] + column["width"])) < 20
    keep_screenshot(page, "fa.png")
    # on the all-languages page (left to right) the Persian articles stay right to left
    mixed = open_page(served.base + "all.html", PHONE).page
    directions = mixed.eval_on_selector_all(
        "article", "els => els.map(e => [e.lang, getComputedStyle(e).direction])")
    assert {lang.split("-")[0]: direction for lang, direction in directions} == {
        "en": "ltr", "fa": "rtl"}


def test_pictures_are_scaled_to_the_column(served: ServedHub, open_page) -> None:
    page = open_page(served.base + "sources/local.html", PHONE).page
    page.wait_for_function("() => [...document.images].every(i => i.complete && i.naturalWidth)")
    widths = page.eval_on_selector_all(
        "article img", "els => els.map(e => [e.naturalWidth, e.getBoundingClientRect().width])")
    assert widths and all(natural == 1600 and 0 < shown <= 375 for natural, shown in widths)


def test_older_and_newer_links_lead_through_the_archive(served: ServedHub, open_page) -> None:
    page = open_page(served.base + "en.html", PHONE).page
    visited = []
    while page.locator("nav.pager a.older").count():
        with page.expect_navigation() as navigation:
            page.locator("nav.pager a.older").click()
        assert navigation.value is not None and navigation.value.status == 200
        visited.append(page.url.removeprefix(served.base))
        assert page.locator("article").count() >= 1
    assert visited and visited[-1] == "archive/en/1.html"
    assert visited == [f"archive/en/{n}.html" for n in range(len(visited), 0, -1)]
    while page.locator("nav.pager a.newer").count():
        page.locator("nav.pager a.newer").click()
        page.wait_for_load_state()
        visited.append(page.url.removeprefix(served.base))
    assert visited[-1] == "en.html"
    # an article linked by its anchor from an archive page is there
    anchor = page.locator("article").first.get_attribute("id")
    assert anchor and re.fullmatch(r"a-[0-9a-f]{12}", anchor)


def test_index_and_pages_announce_their_feeds(served: ServedHub, open_page) -> None:
    page = open_page(served.base + "index.html", DESKTOP).page
    feeds = page.eval_on_selector_all('link[rel="alternate"][type="application/atom+xml"]',
                                      "els => els.map(e => e.href)")
    assert {f.removeprefix(served.base) for f in feeds} == {"en.atom", "fa.atom", "all.atom"}
    for link in page.locator("main a").all():
        href = link.get_attribute("href") or ""
        if not href.startswith("http"):
            assert httpx.get(served.base + href).status_code == 200, href


def test_print_leaves_out_the_navigation(served: ServedHub, open_page) -> None:
    page = open_page(served.base + "en.html", DESKTOP).page
    page.emulate_media(media="print")
    assert computed_style(page, "nav.pager", "display") == "none"
    assert computed_style(page, "article", "display") == "block"


def test_one_screenshot_per_language_is_kept(served: ServedHub, open_page) -> None:
    languages = sorted(p.stem for p in served.feeds.glob("*.html") if p.stem not in ("index",))
    for language in languages:
        keep_screenshot(open_page(served.base + f"{language}.html", PHONE).page,
                        f"{language}.png")
    assert sorted(p.stem for p in ARTIFACTS.glob("*.png")) >= languages

