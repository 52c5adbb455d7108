"""parse_feed and enrich on FetchResults built by hand: no network."""

import html
import re
import time
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import feedparser
import pytest

from feedhub.enrich import MIN_TEXT, Detection, decide, detect_language, enrich, poll_majority
from feedhub.models import FetchResult, Item, LanguageContext, ParsedFeed, SourceConfig
from feedhub.parse import ParseError, parse_feed
from shared import SHARED

FIXTURES = Path(__file__).parent / "fixtures"
FEED_URL = "https://example.org/feeds/world.xml"
FETCHED_AT = datetime(2024, 3, 1, 12, 0, tzinfo=UTC)
SOURCE = SourceConfig(name="Example", url=FEED_URL)

RSS_NS = (
    'xmlns:content="http://purl.org/rss/1.0/modules/content/" '
    'xmlns:dc="http://purl.org/dc/elements/1.1/"'
)


def fetched(body: str | bytes, content_type: str = "application/rss+xml; charset=utf-8",
            url: str = FEED_URL) -> FetchResult:
    return FetchResult(
        url=url,
        final_url=url,
        status=200,
        content=body.encode("utf-8") if isinstance(body, str) else body,
        headers={"content-type": content_type},
        fetched_at=FETCHED_AT,
    )


def rss(items: str, channel_extra: str = "") -> str:
    return (
        f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0" {RSS_NS}><channel>'
        f"<title>Example News</title><link>https://example.org/</link>{channel_extra}"
        f"{items}</channel></rss>"
    )


def atom(entries: str, feed_attrs: str = "") -> str:
    return (
        '<?xml version="1.0" encoding="utf-8"?>\n'
        f'<feed xmlns="http://www.w3.org/2005/Atom" {feed_attrs}>'
        "<title>Example Atom</title><id>urn:example:feed</id>"
        f"<updated>2023-01-01T00:00:00Z</updated>{entries}</feed>"
    )


def parse_one(body: str | bytes, content_type: str = "application/rss+xml") -> Item:
    (item,) = parse_feed(fetched(body, content_type)).items
    return item


def enriched(parsed: ParsedFeed, source: SourceConfig = SOURCE, default_language: str = "en",
             feed_url: str = FEED_URL, configured: frozenset[str] = frozenset(),
             usual: str | None = None) -> tuple[Item, ...]:
    languages = LanguageContext(default_language, configured, usual)
    return enrich(parsed, source, languages=languages, feed_url=feed_url)


def enrich_one(body: str, content_type: str = "application/rss+xml", **kwargs) -> Item:
    (item,) = enriched(parse_feed(fetched(body, content_type)), **kwargs)
    return item


# --- content choice -----------------------------------------------------------------


def test_rss_content_encoded_is_full_text():
    item = parse_one(rss(
        "<item><title>A</title><link>https://example.org/a</link>"
        "<description>A short teaser.</description>"
        "<content:encoded><![CDATA[<p>The <em>whole</em> article.</p>]]></content:encoded></item>"
    ))
    assert item.content == "<p>The <em>whole</em> article.</p>"
    assert item.content_is_full is True
    assert item.summary == "A short teaser."


def test_rss_description_only_is_not_full_text():
    item = parse_one(rss(
        "<item><title>A</title><link>https://example.org/a</link>"
        "<description>&lt;p&gt;Only a teaser.&lt;/p&gt;</description></item>"
    ))
    assert item.content == "<p>Only a teaser.</p>"
    assert item.content_is_full is False


def test_atom_content_only_is_not_published_twice():
    """feedparser copies a lone <content> into summary; the item must not."""
    item = parse_one(atom(
        "<entry><title>A</title><id>urn:a</id><updated>2023-01-02T00:00:00Z</updated>"
        '<content type="html">&lt;p&gt;Full text.&lt;/p&gt;</content></entry>'
    ), "application/atom+xml")
    assert item.content == "<p>Full text.</p>"
    assert item.content_is_full is True
    assert item.summary is None


def test_atom_summary_and_content_keeps_both():
    item = parse_one(atom(
        "<entry><title>A</title><id>urn:a</id><updated>2023-01-02T00:00:00Z</updated>"
        "<summary>Teaser.</summary>"
        '<content type="html">&lt;p&gt;Full text.&lt;/p&gt;</content></entry>'
    ), "application/atom+xml")
    assert item.content == "<p>Full text.</p>"
    assert item.summary is not None and "Teaser." in item.summary


def test_seed_fixture_parses_with_full_content():
    parsed = parse_feed(fetched((FIXTURES / "seed_wsws.rss").read_bytes()))
    assert parsed.items
    first = parsed.items[0]
    assert first.upstream_id == "wsws-2022-12-28-peru-d28"
    assert first.author == "Andrea Lobo"
    assert first.content_is_full
    assert first.published == datetime(2022, 12, 28, 21, 30, tzinfo=UTC)
    assert parsed.info.language == "en"


# --- dates ---------------------------------------------------------------------------------


def test_rfc822_date_with_offset_is_normalised_to_utc():
    item = parse_one(rss(
        "<item><title>A</title><guid>a</guid><pubDate>Wed, 28 Dec 2022 21:30:00 +0330</pubDate></item>"
    ))
    assert item.published == datetime(2022, 12, 28, 18, 0, tzinfo=UTC)
    assert item.published.utcoffset().total_seconds() == 0
    assert item.published_estimated is False


def test_missing_date_is_estimated_as_fetch_time():
    item = parse_one(rss("<item><title>A</title><guid>a</guid></item>"))
    assert item.published == FETCHED_AT
    assert item.published_estimated is True


def test_unparseable_date_is_estimated_as_fetch_time():
    item = parse_one(rss("<item><title>A</title><guid>a</guid><pubDate>last Tuesday</pubDate></item>"))
    assert item.published == FETCHED_AT
    assert item.published_estimated is True


def test_future_date_is_clamped_to_fetch_time():
    item = parse_one(rss(
        "<item><title>A</title><guid>a</guid><pubDate>Sat, 28 Dec 2030 21:30:00 +0000</pubDate></item>"
    ))
    assert item.published == FETCHED_AT


def test_atom_published_and_updated_are_kept():
    item = parse_one(atom(
        "<entry><title>A</title><id>urn:a</id>"
        "<published>2023-01-01T10:00:00+02:00</published>"
        "<updated>2023-01-05T09:30:00Z</updated>"
        '<content type="html">x</content></entry>'
    ), "application/atom+xml")
    assert item.published == datetime(2023, 1, 1, 8, 0, tzinfo=UTC)
    assert item.updated == datetime(2023, 1, 5, 9, 30, tzinfo=UTC)


def test_atom_updated_only_stands_in_for_published():
    item = parse_one(atom(
        "<entry><title>A</title><id>urn:a</id><updated>2023-01-05T09:30:00Z</updated>"
        '<content type="html">x</content></entry>'
    ), "application/atom+xml")
    assert item.published == datetime(2023, 1, 5, 9, 30, tzinfo=UTC)
    assert item.published_estimated is False


@pytest.mark.parametrize(("published", "updated", "expected", "expected_updated"), [
    ("0001-01-01T00:00:00Z", "2023-01-05T09:30:00Z", datetime(2023, 1, 5, 9, 30, tzinfo=UTC),
     datetime(2023, 1, 5, 9, 30, tzinfo=UTC)),  # the plausible one stands in
    ("2023-01-01T08:00:00Z", "1970-01-01T00:00:00Z", datetime(2023, 1, 1, 8, 0, tzinfo=UTC), None),
    ("1989-12-31T23:59:59Z", "0001-01-01T00:00:00Z", FETCHED_AT, None),  # both: estimated
])
def test_placeholder_dates_count_as_absent(published, updated, expected, expected_updated):
    item = parse_one(atom(
        f"<entry><title>A</title><id>urn:a</id><published>{published}</published>"
        f'<updated>{updated}</updated><content type="html">x</content></entry>'
    ), "application/atom+xml")
    assert (item.published, item.updated) == (expected, expected_updated)
    assert item.published_estimated is (expected == FETCHED_AT)


def test_placeholder_feed_date_is_absent():
    parsed = parse_feed(fetched(atom("").replace("2023-01-01T00:00:00Z", "0001-01-01T00:00:00Z"),
                                "application/atom+xml"))
    assert parsed.info.updated is None


# --- upstream ids -------------------------------------------------------------------------


def test_id_is_the_guid():
    item = parse_one(rss(
        "<item><title>A</title><link>https://example.org/a</link>"
        '<guid isPermaLink="false">tag:example.org,2024:42</guid></item>'
    ))
    assert item.upstream_id == "tag:example.org,2024:42"


def test_id_falls_back_to_the_link():
    item = parse_one(rss("<item><title>A</title><link>https://example.org/a</link></item>"))
    assert item.upstream_id == "https://example.org/a"


def _id_without_guid_or_link(title: str, date: str = "Wed, 28 Dec 2022 21:30:00 +0000") -> str:
    return parse_one(rss(f"<item><title>{title}</title><pubDate>{date}</pubDate></item>")).upstream_id


def test_id_without_guid_or_link_is_a_stable_hash():
    first = _id_without_guid_or_link("Storm closes passes")
    assert first == _id_without_guid_or_link("Storm closes passes")
    assert first != _id_without_guid_or_link("Fuel prices rise")
    assert first != _id_without_guid_or_link("Storm closes passes", "Thu, 29 Dec 2022 08:00:00 +0000")
    assert "Storm" not in first


# --- language --------------------------------------------------------------------------------

LANG_ATOM = atom(
    '<entry xml:lang="de"><title>A</title><id>urn:a</id><updated>2023-01-02T00:00:00Z</updated>'
    '<content type="html">Text</content></entry>',
    'xml:lang="fr"',
)


def test_source_language_beats_entry_and_feed():
    source = SourceConfig(name="Example", url=FEED_URL, language="fa")
    assert enrich_one(LANG_ATOM, "application/atom+xml", source=source).language == "fa"


def test_entry_xml_lang_beats_feed_language():
    assert enrich_one(LANG_ATOM, "application/atom+xml").language == "de"


def test_feed_xml_lang_beats_default():
    body = atom(
        "<entry><title>A</title><id>urn:a</id><updated>2023-01-02T00:00:00Z</updated>"
        '<content type="html">Text</content></entry>',
        'xml:lang="fr"',
    )
    assert enrich_one(body, "application/atom+xml").language == "fr"


def test_rss_language_element_beats_default():
    body = rss("<item><title>A</title><guid>a</guid><description>x</description></item>",
               "<language>ps</language>")
    assert enrich_one(body, default_language="en").language == "ps"


def test_default_language_when_nothing_is_declared():
    body = rss("<item><title>A</title><guid>a</guid><description>x</description></item>")
    assert enrich_one(body, default_language="de").language == "de"


def test_declared_language_tag_is_normalised():
    body = rss("<item><title>A</title><guid>a</guid><description>x</description></item>",
               "<language>fa_ir</language>")
    assert enrich_one(body).language == "fa-IR"


# --- sanitizing -----------------------------------------------------------------------------

HOSTILE = [
    "<script>alert(1)</script>",
    "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">',
    '<a href="jav&#x09;ascript:alert(1)">',
    '<a href="&#106;avascript:alert(1)">',
    '<a href=" JaVaScRiPt:alert(1)">',
    '<iframe src="https://evil.example"></iframe>',
    "<object data=x></object>",
    "<form action=x><input></form>",
    '<p style="width:expression(alert(1))">',
    '<meta http-equiv="refresh" content="0;url=https://evil.example">',
    "<svg><script>alert(1)</script></svg>",
    "<svg onload=alert(1)>",
    '<a href="data:text/html;base64,PHNjcmlwdD4=">',
]

_FORBIDDEN_TAGS = ("<script", "<iframe", "<object", "<embed", "<form", "<style", "<meta", "<svg")


def assert_harmless(fragment: str) -> None:
    for text in (fragment.lower(), html.unescape(fragment).lower()):
        for tag in _FORBIDDEN_TAGS:
            assert tag not in text, f"{tag} in {fragment!r}"
        assert "javascript:" not in text, fragment
        assert "expression(" not in text, fragment
        assert not re.search(r"<[^>]*\son[a-z]+\s*=", text), f"event handler in {fragment!r}"
        assert not re.search(r"""(href|src)\s*=\s*["']?\s*data:""", text), f"data: URL in {fragment!r}"


@pytest.mark.parametrize("wrapping", ["cdata", "escaped"])
@pytest.mark.parametrize("hostile", HOSTILE)
def test_hostile_markup_is_removed(hostile, wrapping):
    payload = f"<![CDATA[<p>Before</p>{hostile}]]>" if wrapping == "cdata" \
        else html.escape(f"<p>Before</p>{hostile}")
    item = enrich_one(rss(
        "<item><title>A</title><link>https://example.org/a</link><guid>a</guid>"
        f"<description>{payload}</description><content:encoded>{payload}</content:encoded></item>"
    ))
    assert_harmless(item.content)
    assert item.summary is not None
    assert_harmless(item.summary)
    assert "<p>Before</p>" in item.content


def test_hostile_markup_in_atom_xhtml_content_is_removed():
    item = enrich_one(atom(
        "<entry><title>A</title><id>urn:a</id><updated>2023-01-02T00:00:00Z</updated>"
        '<content type="xhtml"><div xmlns="http://www.w3.org/1999/xhtml"><p>Text</p>'
        '<script>alert(1)</script><a href="javascript:alert(1)" onclick="x()">l</a>'
        "</div></content></entry>"
    ), "application/atom+xml")
    assert_harmless(item.content)
    assert "Text" in item.content


def test_ordinary_markup_survives():
    markup = (
        "<h2>Heading</h2><p>Some <strong>strong</strong> and <em>emphasised</em> text with "
        '<a href="https://example.org/more">a link</a>.</p>'
        '<figure><img src="https://example.org/pic.jpg" alt="A picture">'
        "<figcaption>The caption</figcaption></figure>"
        "<blockquote>A quotation</blockquote><ul><li>one</li><li>two</li></ul>"
    )
    item = enrich_one(rss(
        f"<item><title>A</title><guid>a</guid><content:encoded><![CDATA[{markup}]]></content:encoded></item>"
    ))
    for fragment in ("<h2>Heading</h2>", "<strong>strong</strong>", "<em>emphasised</em>",
                     'href="https://example.org/more"', 'src="https://example.org/pic.jpg"',
                     'alt="A picture"', "<figure>", "<figcaption>The caption</figcaption>",
                     "<blockquote>A quotation</blockquote>", "<ul>", "<li>one</li>", "<p>"):
        assert fragment in item.content


def test_hostile_title_markup_becomes_plain_text():
    item = enrich_one(rss(
        "<item><title>&lt;script&gt;alert(1)&lt;/script&gt;Headline</title><guid>a</guid></item>"
    ))
    assert "<script" not in item.title
    assert "Headline" in item.title


def test_javascript_item_link_is_dropped():
    item = enrich_one(rss("<item><title>A</title><guid>a</guid><link>javascript:alert(1)</link></item>"))
    assert item.link is None


# --- relative URLs ----------------------------------------------------------------------------


def test_relative_urls_in_rss_content_resolve_against_the_item_link():
    item = enrich_one(rss(
        "<item><title>A</title><link>https://news.example.net/2024/story.html</link>"
        '<content:encoded><![CDATA[<img src="/a.png"><a href="b.html">b</a>]]></content:encoded></item>'
    ))
    assert 'src="https://news.example.net/a.png"' in item.content
    assert 'href="https://news.example.net/2024/b.html"' in item.content
    assert item.link == "https://news.example.net/2024/story.html"


def test_relative_urls_without_an_item_link_resolve_against_the_feed_url():
    item = enrich_one(rss(
        "<item><title>A</title><guid isPermaLink=\"false\">a</guid>"
        '<content:encoded><![CDATA[<a href="b.html">b</a>]]></content:encoded></item>'
    ))
    assert 'href="https://example.org/feeds/b.html"' in item.content


def test_an_xml_base_ends_with_its_element():
    """feedparser, given no document URL, keeps a base declared on one entry
    for every element after it: links, content and guids of later entries."""
    first, second = parse_feed(fetched(rss(
        '<item xml:base="https://cdn.example.net/media/"><title>A</title><guid>a1</guid>'
        '<link>a.html</link><description>x</description></item>'
        "<item><title>B</title><guid>12345</guid><link>/2024/b.html</link>"
        '<description>&lt;a href="c.html"&gt;c&lt;/a&gt;</description>'
        '<enclosure url="d.mp3" type="audio/mpeg" length="1"/></item>'
    ))).items
    assert first.link == "https://cdn.example.net/media/a.html"
    assert first.upstream_id == "https://cdn.example.net/media/a1"  # a permalink guid, under it
    assert second.upstream_id == "12345"  # as written: not resolved against anything
    assert second.link == "https://example.org/2024/b.html"
    assert second.content_base == "https://example.org/2024/b.html"
    assert [e.href for e in second.enclosures] == ["https://example.org/2024/d.mp3"]


def test_relative_urls_in_atom_content_resolve_against_xml_base():
    item = enrich_one(atom(
        '<entry xml:base="https://cdn.example.net/news/"><title>A</title><id>urn:a</id>'
        '<updated>2023-01-02T00:00:00Z</updated><link href="story.html"/>'
        '<content type="html">&lt;img src="/a.png"&gt;&lt;a href="b.html"&gt;b&lt;/a&gt;</content></entry>'
    ), "application/atom+xml")
    assert 'src="https://cdn.example.net/a.png"' in item.content
    assert 'href="https://cdn.example.net/news/b.html"' in item.content
    assert item.link == "https://cdn.example.net/news/story.html"


# --- control characters -------------------------------------------------------------------------

CONTROLS = "".join(chr(c) for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20)])


def _has_controls(text: str) -> bool:
    return any(ch in CONTROLS for ch in text)


def test_control_characters_are_removed_from_parsed_title_and_content():
    item = enrich_one(rss(
        f"<item><title>Bad{CONTROLS}title</title><guid>a</guid>"
        f"<content:encoded><![CDATA[<p>Bad{CONTROLS}content</p>]]></content:encoded></item>"
    ))
    assert not _has_controls(item.title)
    assert not _has_controls(item.content)
    assert "Bad" in item.title and "title" in item.title


def test_control_characters_are_removed_by_enrich():
    """Hand-built item: whatever feedparser does, enrich alone must clean up."""
    item = Item(
        upstream_id="a", title=f"Bad{CONTROLS}title", link="https://example.org/a",
        author=f"A{CONTROLS}uthor", published=FETCHED_AT, published_estimated=False, updated=None,
        content=f"<p>Bad{CONTROLS}content</p>", content_is_full=True,
        summary=f"Bad{CONTROLS}summary", categories=(f"Cat{CONTROLS}",),
    )
    parsed = parse_feed(fetched(rss("")))
    (clean,) = enriched(ParsedFeed(info=parsed.info, items=(item,)))
    assert clean.title == "Badtitle"
    assert clean.author == "Author"
    assert clean.content == "<p>Badcontent</p>"
    assert clean.summary == "Badsummary"
    assert clean.categories == ("Cat",)


# --- not a feed, broken feeds ---------------------------------------------------------------------


def test_html_page_is_not_a_feed():
    body = (FIXTURES / "not_a_feed.html").read_bytes()
    with pytest.raises(ParseError, match="HTML"):
        parse_feed(fetched(body, "text/html; charset=utf-8"))


def test_html_page_with_xml_content_type_is_still_reported_as_html():
    body = (FIXTURES / "not_a_feed.html").read_bytes()
    with pytest.raises(ParseError, match="HTML"):
        parse_feed(fetched(body, "application/xml"))


@pytest.mark.parametrize("body", [b"", b"  \n\t "])
def test_empty_body_is_a_parse_error(body):
    with pytest.raises(ParseError, match="empty"):
        parse_feed(fetched(body))


def test_plain_text_is_a_parse_error():
    with pytest.raises(ParseError):
        parse_feed(fetched(b"Service temporarily unavailable", "text/plain"))


def test_malformed_feed_returns_items_and_a_warning():
    body = (
        '<?xml version="1.0"?><rss version="2.0"><channel><title>Broken &nbsp; feed</title>'
        "<item><title>First</title><guid>1</guid><description>one &amp two</description></item>"
        "<item><title>Second</title><guid>2</guid><description>unclosed <b>bold</description></item>"
        "</channel>"
    )
    parsed = parse_feed(fetched(body))
    assert [item.title for item in parsed.items] == ["First", "Second"]
    assert parsed.warning
    assert "malformed" in parsed.warning


def test_well_formed_feed_has_no_warning():
    parsed = parse_feed(fetched(rss("<item><title>A</title><guid>a</guid></item>")))
    assert parsed.warning is None and parsed.degraded is None


def test_entries_recovered_from_a_broken_document_say_so():
    body = rss("<item><title>A</title><guid>a</guid></item>"
               "<item><title>B&nbsp;</title><guid>b</guid></item>").removesuffix("</channel></rss>")
    parsed = parse_feed(fetched(body))
    assert len(parsed.items) == 2
    assert parsed.degraded == ("malformed XML, 2 entries recovered: undefined entity "
                               "(line 2, column 246)")


def test_a_broken_document_nothing_could_be_read_from_is_a_parse_error():
    body = ('<?xml?xml version="1.0"?>\n<rss version="2.0"><channel><title>t</title>'
            "<rss:item><rss:title>A</rss:title></rss:item></channel></rss>")
    with pytest.raises(ParseError, match=r"^malformed XML, nothing could be read: unbound prefix "
                                         r"\(line 2, column \d+\)$"):
        parse_feed(fetched(body))


def test_a_wrong_charset_loses_nothing_so_an_empty_channel_stays_an_empty_feed():
    declared = rss("").replace("utf-8", "us-ascii").replace("Example", "Caf\u00e9")
    parsed = parse_feed(fetched(declared.encode(), "application/rss+xml"))
    assert parsed.items == () and parsed.info.title == "Caf\u00e9 News"
    assert "declared as us-ascii" in parsed.warning and parsed.degraded is None
    assert parse_feed(fetched(rss(""))).items == ()  # a new blog: no error either


# --- entity bombs ------------------------------------------------------------------------------------


def _entity_doc(entities: list[str], reference: str, prologue: str = "") -> str:
    return (
        f'<?xml version="1.0"?>\n{prologue}\n<!DOCTYPE rss [\n' + "\n".join(entities) + "\n]>\n"
        '<rss version="2.0"><channel><title>Bomb</title><item><title>x</title><guid>b</guid>'
        f"<description>{reference}</description></item></channel></rss>"
    )


def billion_laughs(prologue: str = "") -> str:
    entities = ['<!ENTITY lol0 "lol">'] + [
        f'<!ENTITY lol{n} "{f"&lol{n - 1};" * 10}">' for n in range(1, 10)
    ]
    return _entity_doc(entities, "&lol9;", prologue)


def quadratic_blowup(references: int = 10_000, prologue: str = "") -> str:
    return _entity_doc([f'<!ENTITY a "{"a" * 10_000}">'], "&a;" * references, prologue)


def assert_parses_without_expanding(body: bytes, content_type: str = "application/rss+xml") -> None:
    tracemalloc.start()
    started = time.monotonic()
    try:
        try:
            parsed = parse_feed(fetched(body, content_type))
        except ParseError:
            parsed = None
        elapsed = time.monotonic() - started
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 5, f"took {elapsed:.1f}s"
    if parsed is not None:
        for item in parsed.items:
            assert len(item.content) < len(body), "entities were expanded"
            assert len(item.title) < len(body), "entities were expanded"
    assert peak < 50_000_000, f"peak memory {peak:,} bytes"


def test_billion_laughs_is_not_expanded():
    assert_parses_without_expanding(billion_laughs().encode())


def test_quadratic_blowup_is_not_expanded():
    assert_parses_without_expanding(quadratic_blowup().encode())


def test_quadratic_blowup_after_a_long_prologue_is_not_expanded():
    body = quadratic_blowup(3_000, prologue="<!--" + "x" * 70_000 + "-->").encode()
    assert_parses_without_expanding(body)


def test_quadratic_blowup_in_utf16_is_not_expanded():
    body = quadratic_blowup(3_000).replace('version="1.0"?>', 'version="1.0" encoding="utf-16"?>', 1)
    # No charset in Content-Type (common): the BOM and the XML declaration decide.
    assert_parses_without_expanding(body.encode("utf-16"), "application/rss+xml")


# --- language detection (issue 5) ------------------------------------------------

PERSIAN = ("<item><title>مجلس کلیات بودجه را تصویب کرد</title><guid>p</guid><description>"
           "نمایندگان مجلس روز یکشنبه کلیات لایحه‌ی بودجه‌ی سال آینده را با اکثریت آرا تصویب "
           "کردند و قرار است جزئیات آن در هفته‌ی آینده بررسی شود.</description></item>")


def test_undeclared_language_is_detected_and_stored_with_its_confidence():
    # under MIN_TEXT characters: detection files it only in a language the hub knows
    item = enrich_one(rss(PERSIAN), configured=frozenset({"fa"}))
    assert item.language == "fa"
    assert item.detected_language == "fa" and item.language_confidence >= 0.8


def test_declared_languages_win_over_detection():
    atom_body = atom('<entry xml:lang="ps"><title>مجلس کلیات بودجه را تصویب کرد</title>'
                     "<id>urn:p</id><updated>2023-01-01T00:00:00Z</updated>"
                     '<content type="text">نمایندگان مجلس روز یکشنبه کلیات بودجه را تصویب کردند'
                     "</content></entry>")
    assert enrich_one(atom_body, "application/atom+xml").language == "ps"  # entry xml:lang
    assert enrich_one(rss(PERSIAN, "<language>de</language>")).language == "de"  # the feed's
    source = SourceConfig(name="s", url=FEED_URL, language="ar")
    item = enrich_one(rss(PERSIAN), source=source)
    assert item.language == "ar" and item.detected_language is None  # the source's setting


def test_an_unsure_detection_falls_back_to_the_hub_default():
    item = enrich_one(rss("<item><title>OK</title><guid>x</guid>"
                          "<description>2-1</description></item>"), default_language="de")
    assert item.language == "de"
    assert item.language_confidence is None or item.language_confidence < 0.8


# --- language on short or odd texts (issue 12) -------------------------------------

LONG = 500  # characters: enough text for detection to decide


@pytest.mark.parametrize(("detection", "known", "usual", "expected"), [
    (Detection("de", 0.95, LONG), {"en"}, "en", "de"),  # sure, long: its own feed
    (Detection("de", 0.85, LONG), {"en"}, "en", "en"),  # no [languages.de]: not sure enough
    (Detection("de", 0.85, LONG), {"en", "de"}, "en", "de"),  # configured: ordinary confidence
    (Detection("de", 0.85, LONG), {"en"}, "de", "de"),  # the source's usual language
    (Detection("de", 1.0, MIN_TEXT - 1), {"en", "de"}, "fa", "fa"),  # too little text
    (Detection("en", 0.65, LONG), {"en"}, "fa", "fa"),  # unsure: the usual language
    (Detection("zxx", 1.0, LONG), {"en"}, "fa", "fa"),  # no language at all
    (Detection("pcm", 0.59, 40), {"en"}, None, "en"),  # nothing known: the hub default
    (None, {"en"}, "fa", "fa"),  # no text
])
def test_detection_decides_only_on_enough_sure_text(detection, known, usual, expected):
    languages = LanguageContext("en", frozenset(known), usual)
    language, detected, confidence = decide(detection, languages)
    assert language == expected
    # what the detector said is kept, whether or not it decided
    assert (detected, confidence) == ((detection.language, detection.confidence)
                                      if detection else (None, None))


def test_a_new_sources_usual_language_is_its_polls_sure_majority():
    known = LanguageContext("en", frozenset({"fa"}))
    urdu = Detection("ur", 0.99, 40)  # a headline; no [languages.ur]
    # many agreeing short texts are enough text together; one is not
    assert poll_majority([None] * 5, [urdu] * 5, known) == "ur"
    assert poll_majority([None], [urdu], known) is None
    # a known language needs no length; unsure and non-language answers do not vote
    assert poll_majority([None] * 4, [Detection("fa", 0.85, 30), Detection("en", 0.6, LONG),
                                      Detection("zxx", 1.0, LONG), None], known) == "fa"
    # declared languages vote too; a tie goes to the first seen
    assert poll_majority(["de-AT", None], [None, Detection("en", 0.99, LONG)], known) == "de"


def caption_feed(*items: tuple[str, str], language: str = "") -> str:
    return rss("".join(f"<item><title>{html.escape(title)}</title><guid>{n}</guid>"
                       f"<description>{html.escape(text)}</description></item>"
                       for n, (title, text) in enumerate(items)), language)


ENGLISH_ARTICLE = (
    "Container traffic at the country's second-largest port was halted for a third consecutive "
    "day on Monday after dock workers extended their walkout over pay and the introduction of "
    "automated cranes. Shipping companies said more than forty vessels were waiting offshore.")
PGP_KEY = ("-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGQx3FwBEADJk2Fz1p6b2cWq9nE7P0k5QwL4x0kq5fVJ"
           "tq3h2hKfqE8s8C9yxR7zZQ0bA6uT4h9hJvL2k3m5N8pQ1rS7tU0vW3xY6zA9bC2dE5fG8hI1jK4lM7nO0pQ3rS6"
           "tU9vW2xY5zA8bC1dE4fG7hI0jK3lM6nO9pQ2rS5tU8vW1xY4zA7bC0dE3\n=Xy7Q\n"
           "-----END PGP PUBLIC KEY BLOCK-----")


def test_short_and_odd_texts_of_a_new_source_take_its_majority_language():
    """Nothing declared, nothing stored yet: the poll's own sure detections
    (long English) decide for a caption py3langid calls pcm, a key block it
    calls zxx and a title it calls de; no feed nobody configured."""
    items = enriched(parse_feed(fetched(caption_feed(
        ("Port strike", ENGLISH_ARTICLE), ("Dock strike, day four", ENGLISH_ARTICLE + " Again."),
        ("Queue for fuel in Lagos", ""), ("Our new PGP key", PGP_KEY),
        ("Kindergarten Report 2024", "")))), default_language="fa")
    assert [item.language for item in items] == ["en"] * 5
    assert [item.detected_language for item in items][2:] == ["pcm", "zxx", "de"]


def test_a_short_text_in_a_language_nobody_configured_goes_to_the_default():
    item = enrich_one(rss(PERSIAN))  # fa, sure, but short, and no [languages.fa]
    assert item.language == "en" and item.detected_language == "fa"


def test_tags_that_name_no_language_count_as_undeclared():
    body = rss("<item><title>Key</title><guid>k</guid><description>"
               + html.escape(PGP_KEY) + "</description></item>", "<language>zxx</language>")
    item = enrich_one(body, usual="fa")
    assert item.language == "fa" and item.detected_language == "zxx"


def test_arabic_varieties_count_as_arabic():
    # py3langid alone: ary 0.56 (a feed nobody configured); ar, arz and ary together: ar
    language, confidence = detect_language("منظر عام لميناء الإسكندرية عند الفجر")
    assert language == "ar" and confidence >= 0.9


def test_links_are_published_as_valid_iris_c1_controls_included() -> None:
    """RFC 3987 has no room for C0/C1 controls, spaces or bidi marks in an
    IRI: a raw U+0081 in an upstream <link> came out as it was."""
    from feedhub.enrich import safe_url

    assert safe_url("https://x.example/a\x81b c") == "https://x.example/a%C2%81b%20c"
    assert safe_url("https://x.example/\u200fx") == "https://x.example/%E2%80%8Fx"
    assert safe_url("javascript:alert(1)") is None


@pytest.mark.parametrize(("written", "name"), [
    ("desk@news.example (The Desk)", "The Desk"),  # feedparser: "ple (The Desk"
    ("editor@bbc.co.uk (John Smith)", "John Smith"),
    ("a.b+c@mail.international (Ana)", "Ana"),
    ("Jane Doe", "Jane Doe"),
    ("jane@example.org", "jane@example.org"),
])
def test_an_rss_author_is_named_as_written(written: str, name: str) -> None:
    """RSS 2.0's <author> is "address (Name)": the name, whatever the length of
    the address's last label (feedparser's own split assumes at most four)."""
    item = parse_one(rss(f"<item><title>t</title><link>https://x.example/1</link>"
                         f"<author>{html.escape(written)}</author></item>"))
    assert item.author == name


@pytest.mark.skipif(not (SHARED / "corpus").is_dir(), reason="the shared corpus is not beside this checkout")
def test_plain_text_without_markup_reads_as_through_nh3():
    """plain_text skips nh3 for a text with no "<", "&" or BOM: the
    reference is nh3's own reading (enrich._shown_text), on odd whitespace
    and characters and on every title, author and category of the corpus."""
    from feedhub.enrich import _shown_text, clean_text, plain_text

    texts = ["a\r\nb", "\rx\r", "\xa0nbsp\xa0 ", "3 > 2", 'say "hi"', "it's", "tab\tx",
             "line\u2028sep", "\u3000wide\u3000", "emoji 🎉", "", "  ", "zero\u200bwidth",
             "\ufeffbom", " \ufeffx", "a\ufeff", "nel\x85x", "\x00nul\x1f", "a  b\n\nc",
             "ملی‌شدن", "\u00adsoft"]
    for path in sorted((SHARED / "corpus").rglob("*")):
        if path.is_file():
            for entry in feedparser.parse(path.read_bytes()).entries:
                texts += [entry.get("title", ""), entry.get("author", "")]
                texts += [tag.get("term") or "" for tag in entry.get("tags", [])]
    plain = [t for t in texts if "<" not in t and "&" not in t]
    assert len(plain) > 1000
    assert [plain_text(t) for t in plain] == [_shown_text(clean_text(t) or "") for t in plain]
