"""Hostile upstreams, generated and hand-made: ingest and publish never
raise, the output is well-formed Atom, and nothing that runs in a reader is
published."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

import feedparser
import httpcore
import lxml.etree
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pipeline
from atomcheck import assert_valid_atom
from feedhub.config import parse_config
from feedhub.fetch import BlockedAddressError, _GuardedBackend
from feedhub.models import FetchResult, LanguageContext, SourceConfig
from feedhub.store import open_store
from feedhub.worker import parse_and_enrich
from safety import assert_feed_is_safe

HOSTILE = [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>",
    '<a href="javascript:alert(1)">x</a>', '<a href="jav&#x09;ascript:alert(1)">x</a>',
    '<a href=" JaVaScRiPt:alert(1)">x</a>', '<iframe src="https://evil.example"></iframe>',
    "<object data=x></object>", "<form action=x><input></form>",
    '<p style="width:expression(alert(1))">x</p>',
    '<meta http-equiv="refresh" content="0;url=https://evil.example">',
    "<svg><script>alert(1)</script></svg>", "<svg onload=alert(1)>",
    '<a href="data:text/html;base64,PHNjcmlwdD4=">x</a>', "\x00\x01\x1f\ufffe", "]]>",
    "&amp;lt;script&amp;gt;", "<![CDATA[<script>x</script>]]>", "\u202e\u200c\u200f",
]
CONFIG = parse_config('[hub]\nbase_url = "https://hub.example.org/feeds/"\n', Path("config.toml"))
SOURCE = SourceConfig(name="src", url="http://127.0.0.1/feed", fulltext="never")

text = st.one_of(st.text(max_size=200), st.sampled_from(HOSTILE),
                 st.lists(st.sampled_from([*HOSTILE, "plain words", "ی\u200cک"]),
                          max_size=4).map("".join))
dates = st.one_of(st.none(), st.sampled_from([
    "Mon, 01 Jan 0001 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT", "2024-02-30T10:00:00",
    "yesterday", "", "Tue, 10 Jun 2003 04:00:00 +1400", "2003-06-10T04:00:00"]))
items = st.lists(st.fixed_dictionaries({
    "title": text, "body": text, "guid": st.one_of(st.none(), st.sampled_from(["a", "b", "a "])),
    "link": st.one_of(st.none(), st.sampled_from(["https://x.example/1", "/relative", "javascript:x",
                                                  "data:text/html,x"])),
    "date": dates, "cdata": st.booleans()}), max_size=6)


def rss(entries: list[dict]) -> bytes:
    out = ['<?xml version="1.0" encoding="utf-8"?><rss version="2.0" '
           'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>'
           "<title>t</title><link>https://x.example/</link><description>d</description>"]
    for e in entries:
        body = (f"<![CDATA[{e['body'].replace(']]>', '')}]]>" if e["cdata"]
                else escape(e["body"]))
        out.append("<item><title>" + escape(e["title"]) + "</title>"
                   + (f"<guid>{escape(e['guid'])}</guid>" if e["guid"] is not None else "")
                   + (f"<link>{escape(e['link'])}</link>" if e["link"] else "")
                   + (f"<pubDate>{escape(e['date'])}</pubDate>" if e["date"] is not None else "")
                   + f"<content:encoded>{body}</content:encoded></item>")
    out.append("</channel></rss>")
    return "".join(out).encode("utf-8", "surrogatepass")


def ingest_and_publish(body: bytes, tmp: Path) -> bytes | None:
    result = FetchResult(url=SOURCE.url, final_url=SOURCE.url, status=200, content=body,
                         headers={"content-type": "application/rss+xml"},
                         fetched_at=datetime(2026, 1, 1, tzinfo=UTC))
    documents = pipeline.ingest_and_publish(result, tmp, CONFIG, SOURCE)
    return None if documents is None else b"".join(documents)


def assert_safe_and_well_formed(document: bytes) -> None:
    for part in document.split(b"<?xml")[1:]:
        part = b"<?xml" + part
        root = lxml.etree.fromstring(part)  # well-formed, or this raises
        assert not feedparser.parse(part).bozo
        assert_valid_atom(part)  # RFC 4287: ids, IRIs, dates, xml:lang, whatever came in
        assert_feed_is_safe(root)


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(entries=items)
def test_generated_hostile_feeds_never_raise_and_publish_safely(tmp_path_factory, entries):
    tmp = tmp_path_factory.mktemp("h")
    document = ingest_and_publish(rss(entries), tmp)
    if document:
        assert_safe_and_well_formed(document)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=st.binary(max_size=400))
def test_arbitrary_bytes_are_refused_or_ingested_never_a_crash(tmp_path_factory, body):
    document = ingest_and_publish(b'<?xml version="1.0"?><rss version="2.0"><channel>' + body,
                                  tmp_path_factory.mktemp("b"))
    if document:
        assert_safe_and_well_formed(document)


def test_absurd_dates_huge_titles_and_ten_thousand_entries(tmp_path) -> None:
    entries = [{"title": f"t{n}", "body": "x", "guid": f"g{n}", "link": None, "cdata": False,
                "date": ["Mon, 01 Jan 0001 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT",
                         "2003-06-10T04:00:00"][n % 3]} for n in range(10_000)]
    entries[0]["title"] = "T" * 100_000
    document = ingest_and_publish(rss(entries), tmp_path)
    assert_safe_and_well_formed(document)
    with open_store(tmp_path / "hub.db") as store:
        assert store.source_states(["src"])[0].items == 10_000
        newest = store.latest_items("en", ["src"], 50)
    assert all(item.published <= datetime(2026, 1, 1, tzinfo=UTC) for item in newest)


def test_external_entities_are_never_read_or_fetched(tmp_path, feed_server) -> None:
    feed_server.serve("/evil.dtd", '<!ENTITY secret "LEAKED">', content_type="application/xml-dtd")
    secret = tmp_path / "secret.txt"
    secret.write_text("TOP-SECRET-CONTENT")
    for doctype in (f'<!DOCTYPE rss [<!ENTITY xxe SYSTEM "file://{secret}">]>',
                    f'<!DOCTYPE rss [<!ENTITY xxe SYSTEM "{feed_server.url("/evil.dtd")}">]>',
                    f'<!DOCTYPE rss SYSTEM "{feed_server.url("/evil.dtd")}">'):
        body = (f'<?xml version="1.0"?>{doctype}<rss version="2.0"><channel><title>t</title>'
                "<item><title>a &xxe; b</title><guid>1</guid><description>&xxe;</description>"
                "</item></channel></rss>").encode()
        document = ingest_and_publish(body, tmp_path / str(len(doctype)))
        assert document is None or (b"TOP-SECRET" not in document and b"LEAKED" not in document)
    assert feed_server.requests_for("/evil.dtd") == []


@pytest.mark.parametrize("address", ["10.0.0.1", "169.254.169.254", "192.168.1.1", "127.0.0.1",
                                     "::1", "fd00::1"])
def test_every_connection_and_so_every_redirect_hop_is_checked(address) -> None:
    """The guard sits in the network backend, under httpx's redirect handling:
    the first request and each hop alike connect only through it."""
    import asyncio

    backend = _GuardedBackend(allow_private=False)
    with pytest.raises(BlockedAddressError, match="allow_private_networks"):
        asyncio.run(backend.connect_tcp(address, 80, timeout=1))
    assert isinstance(backend, httpcore.AsyncNetworkBackend)


def test_lying_content_type_and_invalid_utf8_still_ingest(tmp_path) -> None:
    body = ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>'
            "<item><title>caf\u00e9 ok</title><guid>1</guid><description>x</description></item>"
            "</channel></rss>").encode() .replace(b"ok", b"\xff\xfe ok")
    result = FetchResult(url=SOURCE.url, final_url=SOURCE.url, status=200, content=body,
                         headers={"content-type": "text/plain; charset=iso-8859-7"},
                         fetched_at=datetime(2026, 1, 1, tzinfo=UTC))
    [item] = parse_and_enrich(result, SOURCE, LanguageContext()).items
    assert item.title.startswith("caf")
