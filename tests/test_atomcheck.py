"""The Atom checker itself: a valid feed passes untouched, and each kind of
defect, put into an otherwise valid document, is reported by a sentence
naming the element. A checker that passes everything would pass the suite
too, so every case asserts the exact problem found and that nothing else was."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path

import lxml.etree
import pytest

from atomcheck import (
    ATOM_NS,
    FH_NS,
    XML_LANG,
    assert_valid_atom,
    assert_valid_atom_tree,
    atom_problems,
)
from feedhub.config import parse_config
from feedhub.models import FeedInfo, Link, StoredItem
from feedhub.publish import render_feed

pytestmark = pytest.mark.writes_invalid_atom

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
NS = {"a": ATOM_NS, "fh": FH_NS}
ID1 = "tag:hub.example.org,2024-05-01:item/1"
ID2 = "tag:hub.example.org,2024-05-01:item/2"
E1 = f"entry 1 (<id> {ID1})"
E2 = f"entry 2 (<id> {ID2})"
ENTRY1 = "/a:feed/a:entry[1]"
ENTRY2 = "/a:feed/a:entry[2]"
SOURCE1 = f"{ENTRY1}/a:source"

Mutation = Callable[[lxml.etree._Element], None]


def _config():
    return parse_config('[hub]\nbase_url = "https://hub.example.org/f/"\n'
                        '[languages.fa]\nsubtitle = "خبرها به فارسی"\n'
                        '[[sources]]\nname = "src"\nurl = "https://up.example/feed"\n', Path("config.toml"))


def stored(n: int, **changes: object) -> StoredItem:
    upstream = FeedInfo(id="urn:up", title="Upstream", updated=T0,
                        links=(Link("https://up.example/feed", rel="self"),
                               Link("https://up.example/", type="text/html")))
    fields: dict[str, object] = dict(
        atom_id=f"tag:hub.example.org,2024-05-01:item/{n}", source="src", title=f"Title {n}",
        link=f"https://up.example/{n}", author="Ann", published=T0 + timedelta(hours=n),
        updated=T0 + timedelta(hours=n), content=f"<p>Body {n}</p>", language="en", categories=("World",),
        enclosures=(), rights=None, feed=upstream)
    fields.update(changes)
    return StoredItem(**fields)  # type: ignore[arg-type]


@cache
def valid_feed() -> bytes:
    """What feedhub publishes: the all-languages feed, an English item with
    an enclosure and a Persian one (entry xml:lang fa-IR, RTL content)."""
    enclosure = Link("https://up.example/a.mp3", rel="enclosure", type="audio/mpeg", length=99)
    return render_feed(_config(), "all", [
        stored(1, enclosures=(enclosure,), rights="CC BY 4.0"),
        stored(2, title="تیتر خبر", author="نویسنده", language="fa-IR", content="<p>متن خبر</p>")])


ARCHIVE = f"""<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="{ATOM_NS}" xmlns:fh="{FH_NS}" xml:lang="fa">
  <fh:archive/>
  <id>https://hub.example.org/f/fa.atom</id>
  <title type="html">خبرها &amp;lt;بایگانی&amp;gt;</title>
  <subtitle type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml" dir="rtl">بایگانی <b>۱</b></div></subtitle>
  <updated>2024-05-01T12:00:00.250+03:30</updated>
  <author><name>feedhub</name><uri>https://hub.example.org/</uri><email>hub@example.org</email></author>
  <link rel="self" href="https://hub.example.org/f/archive/fa-2.atom"/>
  <link rel="current" href="https://hub.example.org/f/fa.atom"/>
  <link rel="prev-archive" href="https://hub.example.org/f/archive/fa-1.atom"/>
  <link rel="next-archive" href="https://hub.example.org/f/archive/fa-3.atom"/>
  <link rel="alternate" type="text/html" hreflang="fa-IR" href="https://hub.example.org/f/index.html"/>
  <link rel="alternate" type="text/html" hreflang="en" href="https://hub.example.org/f/en.html"/>
  <link rel="https://example.org/rel/mirror" href="https://mirror.example/fa.atom"/>
  <icon>https://hub.example.org/favicon.ico</icon>
  <generator uri="https://hub.example.org/about" version="1">feedhub</generator>
  <entry>
    <id>urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6</id>
    <title>بدون نویسنده</title>
    <updated>2016-12-31T23:59:60Z</updated>
    <published>2016-12-31T20:00:00-08:00</published>
    <link href="https://خبر.example/مقاله/%D8%A7"/>
    <category term="جهان" scheme="https://hub.example.org/categories"/>
    <contributor><name>Bob</name></contributor>
  </entry>
  <entry xml:lang="">
    <id>https://hub.example.org/items/2#v1</id>
    <title type="text">PDF</title>
    <updated>2024-02-29T00:00:00+00:00</updated>
    <summary type="html">&lt;p&gt;A report&lt;/p&gt;</summary>
    <content type="application/pdf">JVBERi0xLjQK</content>
    <source><id>urn:up</id><author><name>Upstream</name></author><updated>2024-01-01T00:00:00Z</updated></source>
  </entry>
  <entry>
    <id>tag:hub.example.org,2024:3</id>
    <title>Linked</title>
    <updated>2024-03-01T00:00:00Z</updated>
    <summary>Elsewhere</summary>
    <content type="video/mp4" src="https://up.example/v.mp4"/>
  </entry>
</feed>
""".encode()


# --- mutations: small edits of valid_feed() ----------------------------------------


def _all(root: lxml.etree._Element, xpath: str) -> list[lxml.etree._Element]:
    found = root.xpath(xpath, namespaces=NS)
    assert found, f"the mutation's xpath {xpath} matches nothing: the test is out of date"
    return found


def remove(xpath: str) -> Mutation:
    def apply(root: lxml.etree._Element) -> None:
        for element in _all(root, xpath):
            element.getparent().remove(element)
    return apply


def set_text(xpath: str, text: str) -> Mutation:
    def apply(root: lxml.etree._Element) -> None:
        for element in _all(root, xpath):
            element.text = text
    return apply


def set_attr(xpath: str, name: str, value: str) -> Mutation:
    def apply(root: lxml.etree._Element) -> None:
        for element in _all(root, xpath):
            element.set(name, value)
    return apply


def duplicate(xpath: str) -> Mutation:
    def apply(root: lxml.etree._Element) -> None:
        for element in _all(root, xpath):
            element.addnext(lxml.etree.fromstring(lxml.etree.tostring(element)))
    return apply


def add(xpath: str, markup: str) -> Mutation:
    """Append `markup` (Atom the default namespace, fh: bound) to each match."""
    def apply(root: lxml.etree._Element) -> None:
        for element in _all(root, xpath):
            element.append(lxml.etree.fromstring(
                f'<wrap xmlns="{ATOM_NS}" xmlns:fh="{FH_NS}">{markup}</wrap>')[0])
    return apply


def both(*mutations: Mutation) -> Mutation:
    def apply(root: lxml.etree._Element) -> None:
        for mutation in mutations:
            mutation(root)
    return apply


def mutated(mutation: Mutation, document: bytes | None = None) -> bytes:
    root = lxml.etree.fromstring(document or valid_feed())
    mutation(root)
    return lxml.etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def assert_exactly(problems: list[str], expected: tuple[str, ...]) -> None:
    """Each expected fragment is in exactly one problem, and no other problem was found."""
    for fragment in expected:
        assert len([p for p in problems if fragment in p]) == 1, (fragment, problems)
    assert len(problems) == len(expected), problems


# --- valid documents ---------------------------------------------------------------


def test_feedhub_output_is_valid() -> None:
    assert atom_problems(valid_feed()) == []
    root = lxml.etree.fromstring(valid_feed())
    assert root.xpath("a:entry[2]/@xml:lang", namespaces=NS) == ["fa-IR"]  # the test covers xml:lang


def test_a_persian_language_feed_is_valid() -> None:
    document = render_feed(_config(), "fa", [stored(3, title="تیتر", author="نویسنده", language="fa",
                                                    content='<p dir="rtl">متن</p>')])
    assert lxml.etree.fromstring(document).get(XML_LANG) == "fa"
    assert atom_problems(document) == []


def test_a_hand_written_archive_document_is_valid() -> None:
    """fh:archive with current/prev/next links, xhtml and html text, base64 and
    src content with summaries, authorship by the feed and by atom:source,
    IRIs with non-ASCII, a leap second."""
    assert atom_problems(ARCHIVE) == []


@pytest.mark.parametrize("tag", ["", "fa", "fa-IR", "zh-Hant-TW", "sr-Latn-RS", "es-419", "de-CH-1901",
                                 "sl-rozaj-biske", "en-US-x-twain", "x-whatever", "i-klingon",
                                 "zh-min-nan", "en-a-bbb-b-ccc", "ckb"])
def test_well_formed_language_tags_pass(tag: str) -> None:
    assert atom_problems(mutated(set_attr(ENTRY1, XML_LANG, tag))) == []


@pytest.mark.parametrize("date", ["2024-05-01T12:00:00Z", "2024-05-01T12:00:00.123456789+03:30",
                                  "2024-02-29T23:59:59-08:00", "2016-12-31T23:59:60Z"])
def test_rfc3339_dates_pass(date: str) -> None:
    assert atom_problems(mutated(set_text(f"{ENTRY1}/a:updated", date))) == []


@pytest.mark.parametrize("iri", ["urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6", "tag:هاب.example,2024:۱",
                                 "https://例え.テスト/パス?q=1#x", "http://[::1]:8080/a",
                                 "mailto:a@b.example", "https://hub.example.org/%D8%A7"])
def test_absolute_iris_pass(iri: str) -> None:
    assert atom_problems(mutated(set_text(f"{ENTRY1}/a:id", iri))) == []


@pytest.mark.parametrize("mutation", [
    pytest.param(both(remove(f"{ENTRY1}/a:content"), remove(f"{ENTRY1}/a:author"),
                      add("/a:feed", "<author><name>Hub</name></author>")),
                 id="no-content-but-alternate-link-and-feed-author"),
    pytest.param(both(remove(f"{ENTRY1}/a:author"), add(SOURCE1, "<author><name>Up</name></author>")),
                 id="author-in-source"),
    pytest.param(set_attr(f"{ENTRY1}/a:link[@rel='enclosure']", "rel", "https://example.org/rel/audio"),
                 id="rel-is-an-iri"),
    pytest.param(set_attr("/a:feed/a:link[@rel='alternate']", "dir", "rtl"), id="dir-is-ignored"),
])
def test_valid_variations_pass(mutation: Mutation) -> None:
    assert atom_problems(mutated(mutation)) == []


# --- each defect is found --------------------------------------------------------------


def case(name: str, mutation: Mutation, *expected: str) -> object:
    return pytest.param(mutation, expected, id=name)


DEFECTS = [
    # required feed elements and cardinality
    case("feed-id-missing", remove("/a:feed/a:id"), "feed: no <id> (RFC 4287 requires exactly one)"),
    case("feed-title-missing", remove("/a:feed/a:title"), "feed: no <title>"),
    case("feed-updated-missing", remove("/a:feed/a:updated"), "feed: no <updated>"),
    case("feed-updated-twice", duplicate("/a:feed/a:updated"), "feed: 2 <updated> elements"),
    case("feed-two-logos", both(add("/a:feed", "<logo>https://a.example/1.png</logo>"),
                                add("/a:feed", "<logo>https://a.example/2.png</logo>")),
         "feed: 2 <logo> elements (RFC 4287 allows at most one)"),
    case("feed-two-generators", duplicate("/a:feed/a:generator"), "feed: 2 <generator> elements"),
    case("feed-self-link-missing", remove("/a:feed/a:link[@rel='self']"), 'feed: no <link rel="self">'),
    case("feed-two-alternates-same-type", duplicate("/a:feed/a:link[@rel='alternate']"),
         "feed: 2 <link rel=\"alternate\"> elements with type 'text/html' and hreflang None"),
    case("unknown-atom-element", add("/a:feed", "<foo/>"), "feed: <foo> is not an Atom element here"),
    # required entry elements
    case("entry-id-missing", remove(f"{ENTRY1}/a:id"), "entry 1 (no <id>): no <id>"),
    case("entry-title-missing", remove(f"{ENTRY1}/a:title"), f"{E1}: no <title>"),
    case("entry-updated-missing", remove(f"{ENTRY1}/a:updated"), f"{E1}: no <updated>"),
    case("entry-two-published", duplicate(f"{ENTRY1}/a:published"), f"{E1}: 2 <published> elements"),
    case("entry-two-alternates-same-type", duplicate(f"{ENTRY1}/a:link[@rel='alternate']"),
         f"{E1}: 2 <link rel=\"alternate\"> elements with type 'text/html'"),
    case("no-author-anywhere", remove(f"{ENTRY1}/a:author"),
         f"{E1}: no <author>, in the entry or its <source>, and the feed has no <author> either"),
    case("author-name-empty", set_text(f"{ENTRY2}/a:author/a:name", " "),
         f"{E2}: <author> has an empty <name>"),
    case("author-name-missing", remove(f"{ENTRY1}/a:author/a:name"),
         f"{E1}: <author> has 0 <name> elements"),
    case("author-uri-relative", add(f"{ENTRY1}/a:author", "<uri>/ann</uri>"),
         f"{E1}: <author> <uri> '/ann' is not an absolute IRI"),
    case("author-email-bad", add(f"{ENTRY1}/a:author", "<email>ann at example</email>"),
         f"{E1}: <author> <email> 'ann at example' is not an e-mail address"),
    case("no-content-no-alternate", both(remove(f"{ENTRY1}/a:content"),
                                         remove(f"{ENTRY1}/a:link[@rel='alternate']")),
         f'{E1}: no <content> and no <link rel="alternate">'),
    # ids
    case("entry-id-relative", set_text(f"{ENTRY1}/a:id", "12345"),
         "entry 1 (<id> 12345): <id> '12345' is not an absolute IRI: it has no scheme"),
    case("entry-id-duplicate", set_text("/a:feed/a:entry[2]/a:id", ID1),
         f"entry 2 (<id> {ID1}): <id> '{ID1}' is also the id of entry 1"),
    case("feed-id-is-an-entry-id", set_text("/a:feed/a:id", ID2),
         f"feed: <id> '{ID2}' is also the id of entry 2"),
    case("entry-id-empty", set_text(f"{ENTRY1}/a:id", ""), "entry 1 (<id> ): <id> '' is empty"),
    case("entry-id-http-without-host", set_text(f"{ENTRY1}/a:id", "http:///item/1"),
         "<id> 'http:///item/1' is an http IRI with no host"),
    case("entry-id-with-space", set_text(f"{ENTRY1}/a:id", "tag:hub.example.org,2024:item 1"),
         "<id> 'tag:hub.example.org,2024:item 1' contains ' ', which an IRI cannot hold"),
    case("entry-id-with-rtl-mark", set_text(f"{ENTRY1}/a:id", "tag:hub.example.org,2024:\u200fخبر"),
         "contains '\\u200f', which an IRI cannot hold"),
    case("entry-id-bad-percent", set_text(f"{ENTRY1}/a:id", "https://hub.example.org/100%"),
         "has a '%' not followed by two hex digits"),
    # dates
    case("date-with-space-no-zone", set_text(f"{ENTRY1}/a:updated", "2024-01-01 10:00:00"),
         f"{E1}: <updated> '2024-01-01 10:00:00' is not an RFC 3339 date-time (date and time are "
         "separated by ' ', not 'T'; no time zone offset (Z or +hh:mm))"),
    case("date-not-in-calendar", set_text(f"{ENTRY1}/a:updated", "2024-02-30T00:00:00Z"),
         f"{E1}: <updated> '2024-02-30T00:00:00Z' is not an RFC 3339 date-time: day is out of range"),
    case("date-month-13", set_text(f"{ENTRY1}/a:published", "2024-13-01T00:00:00Z"),
         f"{E1}: <published> '2024-13-01T00:00:00Z' is not an RFC 3339 date-time: month must be in 1..12"),
    case("date-only", set_text(f"{ENTRY1}/a:updated", "2024-13-01"),
         f"{E1}: <updated> '2024-13-01' is not an RFC 3339 date-time"),
    case("date-hour-24", set_text(f"{ENTRY1}/a:updated", "2024-01-01T24:00:00Z"), "hour must be in 0..23"),
    case("date-offset-too-big", set_text(f"{ENTRY1}/a:updated", "2024-01-01T10:00:00+25:00"),
         "'2024-01-01T10:00:00+25:00' is not an RFC 3339 date-time: offset must be"),
    case("date-lowercase-t", set_text(f"{ENTRY1}/a:updated", "2024-01-01t10:00:00Z"),
         "'2024-01-01t10:00:00Z' is not an RFC 3339 date-time (date and time are separated by 't', not 'T')"),
    case("date-lowercase-z", set_text("/a:feed/a:updated", "2024-01-01T10:00:00z"),
         "feed: <updated> '2024-01-01T10:00:00z' is not an RFC 3339 date-time (a lower-case 'z', not 'Z')"),
    case("date-persian-digits", set_text(f"{ENTRY1}/a:updated", "۲۰۲۴-01-01T10:00:00Z"),
         "<updated> '۲۰۲۴-01-01T10:00:00Z' is not an RFC 3339 date-time"),
    case("date-whitespace", set_text(f"{ENTRY1}/a:updated", " 2024-01-01T10:00:00Z"),
         "(it has surrounding whitespace)"),
    # atom:source follows the same rules
    case("source-date", set_text(f"{SOURCE1}/a:updated", "yesterday"),
         f"{E1} <source>: <updated> 'yesterday' is not an RFC 3339 date-time"),
    case("source-id-relative", set_text(f"{SOURCE1}/a:id", "up"),
         f"{E1} <source>: <id> 'up' is not an absolute IRI"),
    case("source-id-empty", set_text(f"{SOURCE1}/a:id", ""), f"{E1} <source>: <id> '' is empty"),
    case("source-two-ids", duplicate(f"{SOURCE1}/a:id"),
         f"{E1} <source>: 2 <id> elements (RFC 4287 allows at most one)"),
    case("source-link-relative", set_attr(f"{SOURCE1}/a:link[@rel='self']", "href", "feed.xml"),
         f"{E1} <source>: <link rel=\"self\"> href 'feed.xml' is not an absolute IRI"),
    # links and other IRIs
    case("link-href-relative", set_attr(f"{ENTRY1}/a:link[@rel='alternate']", "href", "/a"),
         f"{E1}: <link rel=\"alternate\"> href '/a' is not an absolute IRI"),
    case("link-without-href", add(ENTRY1, '<link rel="related"/>'),
         f'{E1}: <link rel="related"> has no href'),
    case("link-rel-unknown", set_attr(f"{ENTRY1}/a:link[@rel='enclosure']", "rel", "podcast"),
         f"{E1}: <link rel=\"podcast\"> rel 'podcast' is neither a registered link relation nor an "
         "absolute IRI"),
    case("link-length-negative", set_attr(f"{ENTRY1}/a:link[@rel='enclosure']", "length", "-1"),
         "<link rel=\"enclosure\"> length '-1' is not a non-negative integer"),
    case("link-length-not-a-number", set_attr(f"{ENTRY1}/a:link[@rel='enclosure']", "length", "99 bytes"),
         "length '99 bytes' is not a non-negative integer"),
    case("link-type-not-mime", set_attr(f"{ENTRY1}/a:link[@rel='enclosure']", "type", "audio"),
         "<link rel=\"enclosure\"> type 'audio' is not a MIME media type"),
    case("link-hreflang-bad", set_attr("/a:feed/a:link[@rel='alternate']", "hreflang", "en_US"),
         "feed: <link rel=\"alternate\"> hreflang 'en_US' is not a well-formed BCP 47 language tag"),
    case("icon-relative", add("/a:feed", "<icon>/favicon.ico</icon>"),
         "feed: <icon> '/favicon.ico' is not an absolute IRI"),
    case("generator-uri-relative", set_attr("/a:feed/a:generator", "uri", "feedhub.example"),
         "feed: <generator> uri 'feedhub.example' is not an absolute IRI"),
    case("category-without-term", add(ENTRY1, '<category label="x"/>'), f"{E1}: <category> has no term"),
    case("category-scheme-relative", set_attr(f"{ENTRY1}/a:category", "scheme", "cats"),
         f"{E1}: <category> scheme 'cats' is not an absolute IRI"),
    # content
    case("content-type-unknown", set_attr(f"{ENTRY1}/a:content", "type", "html5"),
         f"{E1}: <content> type 'html5' is not text, html, xhtml or a MIME media type"),
    case("content-html-with-elements", add(f"{ENTRY1}/a:content", "<b>raw</b>"),
         f'{E1}: <content> type="html" holds child elements <b>'),
    case("content-src-relative-no-summary",
         both(set_attr(f"{ENTRY1}/a:content", "src", "/a.pdf"), set_attr(f"{ENTRY1}/a:content", "type",
                                                                            "application/pdf"),
              set_text(f"{ENTRY1}/a:content", "")),
         f"{E1}: <content> src '/a.pdf' is not an absolute IRI", f"{E1}: no <summary>"),
    case("content-src-type-html", set_attr(f"{ENTRY1}/a:content", "src", "https://up.example/1"),
         "<content> with a src has type 'html': it must be a MIME media type",
         "<content> with a src must be empty", f"{E1}: no <summary>"),
    case("content-base64-bad", both(set_attr(f"{ENTRY1}/a:content", "type", "application/pdf"),
                                    set_text(f"{ENTRY1}/a:content", "not base64!")),
         "<content> type 'application/pdf' is not base64 text", f"{E1}: no <summary>"),
    case("content-multipart", both(set_attr(f"{ENTRY1}/a:content", "type", "multipart/mixed"),
                                   add(ENTRY1, "<summary>s</summary>")),
         "<content> type 'multipart/mixed' is a composite type", "is not base64 text"),
    # text constructs
    case("title-type-unknown", set_attr("/a:feed/a:title", "type", "markdown"),
         "feed: <title> type 'markdown' is not text, html or xhtml"),
    case("title-xhtml-without-div", set_attr(f"{ENTRY1}/a:title", "type", "xhtml"),
         f'{E1}: <title> type="xhtml" must hold exactly one xhtml:div'),
    case("rights-xhtml-two-divs", both(
        set_attr(f"{ENTRY1}/a:rights", "type", "xhtml"), set_text(f"{ENTRY1}/a:rights", ""),
        add(f"{ENTRY1}/a:rights", '<div xmlns="http://www.w3.org/1999/xhtml">a</div>'),
        add(f"{ENTRY1}/a:rights", '<div xmlns="http://www.w3.org/1999/xhtml">b</div>')),
         '<rights> type="xhtml" must hold exactly one xhtml:div'),
    case("summary-text-with-elements", add(ENTRY1, "<summary>a<b>b</b></summary>"),
         f'{E1}: <summary> type="text" holds child elements <b>'),
    # xml:lang
    case("lang-underscore", set_attr(ENTRY1, XML_LANG, "en_US"),
         f"{E1}: xml:lang 'en_US' is not a well-formed BCP 47 language tag: subtags are separated by '-'"),
    case("lang-word", set_attr(ENTRY1, XML_LANG, "english"),
         f"{E1}: xml:lang 'english' is not a valid BCP 47 language tag: no 7-letter primary language"),
    case("lang-x", set_attr("/a:feed", XML_LANG, "x"),
         "feed: xml:lang 'x' is not a well-formed BCP 47 language tag (RFC 5646)"),
    case("lang-trailing-dash", set_attr(f"{ENTRY1}/a:content", XML_LANG, "fa-"),
         f"{E1} <content>: xml:lang 'fa-' is not a well-formed"),
    case("lang-in-source", set_attr(f"{SOURCE1}/a:title", XML_LANG, "de-1901-1901"),
         f"{E1} <source> <title>: xml:lang 'de-1901-1901' is not a valid BCP 47 language tag: a variant"),
    case("lang-repeated-singleton", set_attr(ENTRY1, XML_LANG, "en-a-bbb-a-ccc"),
         "an extension singleton is repeated"),
    case("lang-too-long-subtag", set_attr(ENTRY1, XML_LANG, "en-verylongsubtag"), "is not a well-formed"),
    # RFC 5005 archives
    case("archive-without-current", add("/a:feed", "<fh:archive/>"),
         'feed: is an archive document (<fh:archive>) with no <link rel="current">'),
    case("archive-marker-not-empty", both(add("/a:feed", "<fh:archive>yes</fh:archive>"),
                                          add("/a:feed", '<link rel="current" href="https://h.example/c"/>')),
         "feed <fh:archive>: <fh:archive> must be empty"),
    case("archive-two-prev", both(add("/a:feed", '<link rel="prev-archive" href="https://h.example/1"/>'),
                                  add("/a:feed", '<link rel="prev-archive" href="https://h.example/0"/>')),
         'feed: 2 <link rel="prev-archive"> elements (RFC 5005 allows at most one)'),
    case("archive-next-relative", add("/a:feed", '<link rel="next-archive" href="archive/3.atom"/>'),
         "feed: <link rel=\"next-archive\"> href 'archive/3.atom' is not an absolute IRI"),
]


@pytest.mark.parametrize(("mutation", "expected"), DEFECTS)
def test_each_defect_is_reported(mutation: Mutation, expected: tuple[str, ...]) -> None:
    assert_exactly(atom_problems(mutated(mutation)), expected)


@pytest.mark.parametrize(("mutation", "expected"), [
    case("archive-current-removed", remove("/a:feed/a:link[@rel='current']"),
         'feed: is an archive document (<fh:archive>) with no <link rel="current">'),
    case("archive-author-removed", remove("/a:feed/a:author"),  # entry 2 has one in its <source>
         "entry 1 (<id> urn:uuid:60a76c80-d399-11d9-b93C-0003939e0af6): no <author>",
         "entry 3 (<id> tag:hub.example.org,2024:3): no <author>"),
    case("archive-two-alternates-same-hreflang",
         set_attr("/a:feed/a:link[@hreflang='en']", "hreflang", "fa-IR"),
         "feed: 2 <link rel=\"alternate\"> elements with type 'text/html' and hreflang 'fa-IR'"),
    case("archive-base64-without-summary", remove("/a:feed/a:entry[2]/a:summary"), "entry 2 (<id> https:"),
    case("archive-src-without-summary", remove("/a:feed/a:entry[3]/a:summary"),
         "entry 3 (<id> tag:hub.example.org,2024:3): no <summary>"),
    case("archive-xhtml-loose-text", set_text("/a:feed/a:subtitle", "loose"),
         'feed: <subtitle> type="xhtml" must hold exactly one xhtml:div and nothing else'),
])
def test_defects_in_the_archive_document_are_reported(mutation: Mutation, expected: tuple[str, ...]) -> None:
    assert_exactly(atom_problems(mutated(mutation, ARCHIVE)), expected)


MINIMAL = (f'<feed xmlns="{ATOM_NS}"><id>urn:x</id><title>t</title><updated>2024-01-01T00:00:00Z</updated>'
           '<link rel="self" href="https://h.example/f.atom"/></feed>')


@pytest.mark.parametrize(("document", "expected"), [
    pytest.param(MINIMAL.encode(), None, id="minimal-valid"),
    pytest.param(MINIMAL.replace("</feed>", "").encode(), "document: not well-formed XML", id="unclosed"),
    pytest.param(MINIMAL.replace("<title>t", "<title>a & b").encode(), "document: not well-formed XML",
                 id="bare-ampersand"),
    pytest.param(b"", "document: not well-formed XML: Document is empty", id="empty"),
    pytest.param(b'<rss version="2.0"><channel/></rss>', "document: the root element is <rss>, not an Atom",
                 id="rss"),
    pytest.param(b"<feed/>", "document: the root element is <feed>, not an Atom <feed>", id="no-namespace"),
    pytest.param(MINIMAL.replace("<entry", "").replace("<feed", "<!DOCTYPE feed [<!ENTITY e 'x'>]><feed")
                 .replace("<title>t", "<title>&e;").encode(),
                 "feed <title>: unexpanded entity reference &e;", id="entity"),
])
def test_raw_documents(document: bytes, expected: str | None) -> None:
    problems = atom_problems(document)
    if expected is None:
        assert problems == []
    else:
        assert_exactly(problems, (expected,))


# --- the assert helpers ---------------------------------------------------------------


def test_name_prefixes_every_problem() -> None:
    document = mutated(both(remove("/a:feed/a:id"), set_attr(ENTRY1, XML_LANG, "en_US")))
    problems = atom_problems(document, name="feeds/all.atom")
    assert len(problems) == 2
    assert all(p.startswith("feeds/all.atom: ") for p in problems), problems


def test_assert_valid_atom_lists_every_problem() -> None:
    assert_valid_atom(valid_feed(), "all.atom")
    document = mutated(both(remove("/a:feed/a:title"), set_text(f"{ENTRY1}/a:id", "12345")))
    with pytest.raises(AssertionError) as failure:
        assert_valid_atom(document, "all.atom")
    message = str(failure.value)
    assert message.startswith("all.atom: 2 problem(s):")
    assert "all.atom: feed: no <title>" in message
    assert "all.atom: entry 1 (<id> 12345): <id> '12345' is not an absolute IRI" in message


def test_assert_valid_atom_tree_checks_every_atom_file(tmp_path: Path) -> None:
    (tmp_path / "archive" / "2024").mkdir(parents=True)
    (tmp_path / "all.atom").write_bytes(valid_feed())
    (tmp_path / "archive" / "2024" / "fa-1.atom").write_bytes(ARCHIVE)
    (tmp_path / "index.html").write_text("<p>not a feed</p>")
    assert assert_valid_atom_tree(tmp_path) == 2

    (tmp_path / "archive" / "2024" / "fa-2.atom").write_bytes(
        mutated(remove("/a:feed/a:link[@rel='current']"), ARCHIVE))
    (tmp_path / "broken.atom").write_bytes(b"<feed")
    with pytest.raises(AssertionError) as failure:
        assert_valid_atom_tree(tmp_path)
    message = str(failure.value)
    assert "2 of 4 Atom documents" in message
    assert "are invalid: archive/2024/fa-2.atom, broken.atom\n" in message
    assert ('archive/2024/fa-2.atom: feed: is an archive document (<fh:archive>) with no '
            '<link rel="current">') in message
    assert "broken.atom: document: not well-formed XML" in message
    assert not [line for line in message.splitlines() if line.strip().startswith("all.atom")]


def test_assert_valid_atom_tree_needs_a_directory(tmp_path: Path) -> None:
    assert assert_valid_atom_tree(tmp_path) == 0
    with pytest.raises(AssertionError, match="is not a directory"):
        assert_valid_atom_tree(tmp_path / "missing")
