"""Parse only what changed: a feed whose bytes changed because items were
added or edited is read in part -- feedparser gets the feed's own part and
the items whose bytes are new -- and that stores exactly what reading the
whole document stores. Every file of the shared corpus, polled with some of
its items missing, then whole, then with an item edited, then with its items
in reverse order, leaves the same items (every column) and the same
feed-level state with the shortcut as without it; and so do the cases the
corpus does not show (xml:base, undated items, a guid that changes under a
known link, repeated ids, a language decided by the source's other items, an
item dated ahead of the poll, a refetch request)."""

from __future__ import annotations

import logging
import re
import sqlite3
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest

from feedhub.models import FetchResult
from feedhub.parse import item_split
from test_corpus import CORPUS
from test_items_unchanged import poll_all, served_corpus

# items as the tests find them, independently of parse.item_split: good
# enough to make variants of a document (where it is wrong, both ways get
# the same broken document, and must still agree)
ITEM = re.compile(rb"<(item|entry)[\s>].*?</\1\s*>", re.DOTALL)
EDIT = b'<category term="edited">edited</category>'


def items_of(body: bytes) -> list[re.Match[bytes]]:
    return list(ITEM.finditer(body))


def without(body: bytes, drop: set[int]) -> bytes:
    spans = [match.span() for n, match in enumerate(items_of(body)) if n in drop]
    for start, end in reversed(spans):
        body = body[:start] + body[end:]
    return body


def edited(body: bytes, which: int) -> bytes:
    """The item at `which` with a category more, right after its start tag."""
    match = items_of(body)[which]
    at = body.index(b">", match.start()) + 1
    return body[:at] + EDIT + body[at:]


def reversed_items(body: bytes) -> bytes:
    matches = items_of(body)
    if len(matches) < 2:
        return body
    first, last = matches[0].start(), matches[-1].end()
    gap = body[matches[0].end():matches[1].start()]
    return body[:first] + gap.join(m[0] for m in reversed(matches)) + body[last:]


def versions(body: bytes, poll: int) -> bytes:
    """0: every other item missing (the second, fourth ...: new ones turn up
    between and after known ones); 1: whole; 2: its middle item edited; 3:
    its items in reverse order (the edit undone)."""
    count = len(items_of(body))
    if poll == 0:
        return without(body, set(range(1, count, 2)))
    if poll == 2:
        return edited(body, count // 2)
    if poll == 3:
        return reversed_items(body)
    return body


def corpus_files() -> list[tuple[str, bytes, dict[str, str]]]:
    """(name, body, headers) of every corpus file served as a plain 200 with
    items to take away, realworld feeds also undated."""
    files = served_corpus(UNDATED)
    return [f for f in files if items_of(f[1])]


UNDATED = re.compile(rb"<(pubDate|published|updated|dc:date)>[^<]*</\1>")


def read_in_part(caplog: pytest.LogCaptureFixture) -> Counter[str]:
    """Sources read in part, by name: the hub's debug line."""
    return Counter(match[1] for record in caplog.records
                   if (match := re.match(r"poll (\S+): read \d+ of \d+ items",
                                         record.getMessage())))


def both_ways(tmp_path: Path, feed_server, caplog: pytest.LogCaptureFixture, files, *,
              versions, polls: int, **kwargs) -> tuple[dict, dict, Counter[str]]:
    """Poll `files` with the shortcut and without; assert that the stored
    items and sources are the same; return them and the sources read in part."""
    caplog.set_level(logging.DEBUG, logger="feedhub")
    (tmp_path / "on").mkdir()
    (tmp_path / "off").mkdir()
    with_items, with_sources, _ = poll_all(tmp_path / "on", feed_server, files,
                                           parse_unchanged=False, versions=versions,
                                           polls=polls, **kwargs)
    partial = read_in_part(caplog)
    caplog.clear()
    without_items, without_sources, _ = poll_all(tmp_path / "off", feed_server, files,
                                                 parse_unchanged=True, versions=versions,
                                                 polls=polls, **kwargs)
    assert read_in_part(caplog) == Counter()
    assert with_items.keys() == without_items.keys()
    differ = [key for key in with_items if with_items[key] != without_items[key]]
    assert differ == [], [(files[int(key[0][1:])][0], key[1], {
        column: (value, without_items[key][column]) for column, value in with_items[key].items()
        if value != without_items[key][column]}) for key in differ[:5]]
    differ = [name for name in with_sources if with_sources[name] != without_sources[name]]
    assert differ == [], [(files[int(name[1:])][0], with_sources[name], without_sources[name])
                          for name in differ[:3]]
    return with_items, with_sources, partial


@pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").exists(),
                    reason="the shared corpus is not beside this checkout")
@pytest.mark.timeout(1800)
def test_reading_in_part_stores_exactly_what_a_full_parse_stores(tmp_path, feed_server,
                                                                 caplog):
    files = corpus_files()
    assert len(files) > 1000
    items, _, partial = both_ways(tmp_path, feed_server, caplog, files, versions=versions,
                                  polls=4)
    assert len(items) > 1000
    # the edit at poll 2 undone at poll 3 (at 03:00, less a microsecond a place)
    assert sum(1 for item in items.values() if item["updated"][:16] in (
        "2026-12-01T02:59", "2026-12-01T03:00")) > 500
    # and the shortcut was taken: most files split into items
    assert len(partial) > 1000, len(partial)
    # realworld feeds of many items among them, at the edit and its undoing
    assert {files[int(name[1:])][0]: count for name, count in partial.items()}[
        "gamersnexus.xml"] == 2


FEED = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"{attributes}><channel><title>Changes</title>
<link>https://changes.example/</link><description>d</description>{language}
<lastBuildDate>Mon, 30 Nov 2026 10:00:00 GMT</lastBuildDate>
{items}
</channel></rss>"""


def feed(items: list[str], *, attributes: str = "", language: str = "<language>en</language>"
         ) -> bytes:
    return FEED.format(attributes=attributes, language=language,
                       items="\n".join(items)).encode()


def item(n: int, *, guid: str | None = None, date: str | None = "Mon, 02 Nov 2026 10:00:00 GMT",
         link: str | None = None, extra: str = "", text: str = "", attributes: str = "") -> str:
    return (f"<item{attributes}><title>Item {n}</title>"
            f"<link>{link or f'https://changes.example/{n}'}</link>"
            + (f"<guid>{guid or f'changes-{n}'}</guid>" if guid != "" else "")
            + (f"<pubDate>{date}</pubDate>" if date else "")
            + f"<description>{text or f'Text {n}'}</description>{extra}</item>")


def serve_each(*bodies: bytes):
    """A `versions` that serves the n-th body at poll n (the file is a stand-in)."""
    def version(_: bytes, poll: int) -> bytes:
        return bodies[poll]
    return version


def one(*bodies: bytes) -> list[tuple[str, bytes, dict[str, str]]]:
    return [("changes.xml", bodies[0], {"Content-Type": "application/rss+xml"})]


def test_new_items_are_read_alone_and_stored_as_a_full_parse_stores(tmp_path, feed_server,
                                                                    caplog):
    bodies = (feed([item(2), item(1)]), feed([item(3), item(2), item(1)]),
              feed([item(4), item(3), item(2, extra="<category>c</category>"), item(1)]))
    items, sources, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                        versions=serve_each(*bodies), polls=3)
    assert partial == Counter({"c0": 2})
    assert sorted(upstream_id for _, upstream_id in items) == [f"changes-{n}" for n in range(1, 5)]
    assert items["c0", "changes-2"]["categories"] == '["c"]'
    assert sources["c0"]["entries"] == 4


def test_xml_base_of_a_known_item_does_not_leak_into_new_ones(tmp_path, feed_server, caplog):
    based = item(1, link="one.html", attributes=' xml:base="https://other.example/dir/"',
                 text="&lt;img src=&quot;a.png&quot;&gt;")
    bodies = (feed([based]), feed([item(3, link="three.html", text="&lt;img src=&quot;b.png"
                                        "&quot;&gt;", guid="rel-3"), item(2, link="two.html"),
                                   based]),
              feed([item(4, link="/four.html", guid="4"), item(3, link="three.html", guid="rel-3"),
                    item(2, link="two.html"), based]))
    items, _, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                  versions=serve_each(*bodies), polls=3)
    assert partial == Counter({"c0": 2})
    # feedparser resolves the guid against the item's xml:base too
    assert items["c0", "https://other.example/dir/changes-1"]["link"] == (
        "https://other.example/dir/one.html")
    assert items["c0", "rel-3"]["link"] == feed_server.url("/corpus/three.html")
    assert "https://other.example/dir/a.png" in items["c0", "https://other.example/dir/changes-1"][
        "feed_content"]
    assert "other.example" not in items["c0", "rel-3"]["feed_content"]


def test_a_relative_xml_base_in_a_new_item_is_read_in_full(tmp_path, feed_server, caplog):
    """A relative xml:base anywhere makes feedparser resolve against the
    feed's URL (see parse._document_base), guids of the known items too."""
    bodies = (feed([item(1, guid="1")]),
              feed([item(2, guid="2", attributes=' xml:base="sub/"', link="two.html"),
                    item(1, guid="1")]))
    items, _, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                  versions=serve_each(*bodies), polls=2)
    assert partial == Counter()
    [two] = [row for row in items.values() if row["title"] == "Item 2"]
    assert (two["upstream_id"], two["link"]) == (feed_server.url("/corpus/sub/2"),
                                                 feed_server.url("/corpus/sub/two.html"))


def test_a_relative_xml_base_in_a_known_item_reads_new_ones_against_the_feeds_url(
        tmp_path, feed_server, caplog):
    """The document's base is the whole document's, also where the item
    that declares the relative xml:base is not read again."""
    based = item(1, guid="1", attributes=' xml:base="sub/"', link="one.html")
    bodies = (feed([based]), feed([item(2, guid="2"), based]),
              feed([item(3, guid="3"), item(2, guid="2"), based]))
    items, _, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                  versions=serve_each(*bodies), polls=3)
    assert partial == Counter({"c0": 2})
    assert ("c0", feed_server.url("/corpus/3")) in items  # a relative guid, resolved


def test_undated_items_are_dated_by_their_place_in_the_whole_document(tmp_path, feed_server,
                                                                      caplog):
    undated = [item(n, date=None) for n in range(6, 0, -1)]
    bodies = (feed(undated[1::2]), feed(undated),
              feed([item(7, date=None), *undated[:2], item(4, date=None, extra=EDIT.decode()),
                    *undated[3:]]))
    items, _, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                  versions=serve_each(*bodies), polls=3)
    assert partial == Counter({"c0": 2})
    assert len({row["published"] for row in items.values()}) == 7
    assert items["c0", "changes-4"]["updated"] != items["c0", "changes-4"]["published"]


def test_a_guid_minted_anew_under_a_known_link_is_the_known_item(tmp_path, feed_server, caplog):
    """The store matches an unknown guid to the item of its link (unless the
    feed shares the link, or the old guid is still in it): it must see the
    items that were not read too."""
    shared = "https://changes.example/shared"
    matched = item(4, guid="fresh-4", link="https://changes.example/1")
    bodies = (feed([item(2, link=shared), item(1)]),
              feed([item(3, guid="fresh-3", link=shared), item(2, link=shared), item(1)]),
              feed([matched, item(3, guid="fresh-3", link=shared), item(2, link=shared)]),
              feed([item(5), matched, item(3, guid="fresh-3", link=shared),
                    item(2, link=shared)]))
    # full text on: an item stored under another id is a candidate at every
    # poll (fulltext_candidates), so its bytes are never known
    items, _, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                  versions=serve_each(*bodies), polls=4, fulltext="always")
    assert partial == Counter({"c0": 3})
    assert ("c0", "fresh-3") in items  # the shared link's old guid is still in the feed
    assert ("c0", "fresh-4") not in items  # matched to changes-1, whose guid left the feed
    assert items["c0", "changes-1"]["fulltext_at"] == "2026-12-01T03:00:00+00:00"


def test_an_id_twice_in_a_feed_is_read_in_full(tmp_path, feed_server, caplog):
    bodies = (feed([item(1)]), feed([item(2, guid="changes-1"), item(1)]),
              feed([item(3), item(2, guid="changes-1"), item(1)]))
    items, _, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                  versions=serve_each(*bodies), polls=3)
    assert partial == Counter()
    assert items["c0", "changes-1"]["title"] == "Item 2"


ENGLISH = ("The committee met on Tuesday to discuss the new budget for the coming year, and "
           "after a long debate the members agreed to raise the funds for public schools and "
           "hospitals across the region, while the opposition asked for more time to read it.")
GERMAN = ("Der Ausschuss traf sich am Dienstag, um den neuen Haushalt für das kommende Jahr zu "
          "besprechen, und nach einer langen Debatte einigten sich die Mitglieder darauf, die "
          "Mittel für öffentliche Schulen und Krankenhäuser in der Region zu erhöhen.")


def test_a_language_decided_by_the_sources_other_items_is_decided_alike(tmp_path, feed_server,
                                                                        caplog):
    """Items that declare no language and are too short to detect get the
    source's usual one, which the stored items decide: when it changes, the
    known items' languages would change too, and the feed is read in full."""
    german = [item(n, text=GERMAN, guid=f"de-{n}") for n in range(10, 14)]
    short = [item(n, text="Kurz.", guid=f"short-{n}") for n in range(1, 3)]
    english = [item(n, text=ENGLISH, guid=f"en-{n}") for n in range(20, 30)]
    bodies = (feed([*german, *short], language=""),
              feed([item(14, text=GERMAN, guid="de-14"), *german, *short], language=""),
              feed([*english, *german, *short], language=""),
              feed([item(30, text=ENGLISH, guid="en-30"), *english, *german, *short],
                   language=""))
    items, _, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                  versions=serve_each(*bodies), polls=4)
    assert items["c0", "short-1"]["language"] == "en"  # usual: en by the last poll
    assert items["c0", "de-10"]["language"] == "de"
    # poll 1 knows the items of the first poll, read in the context of their
    # vote (de), which the stored items agree with; poll 3 finds the usual
    # language changed (en): read in full
    assert partial == Counter({"c0": 2})


def test_an_item_dated_ahead_of_the_poll_is_read_again(tmp_path, feed_server, caplog):
    """An item dated after the poll gets the poll's time; once its date has
    passed, its own: its unchanged bytes are read again."""
    ahead = item(2, date="Tue, 01 Dec 2026 05:30:00 GMT")
    bodies = (feed([ahead, item(1)]), feed([item(3), ahead, item(1)]),
              feed([item(4), item(3), ahead, item(1)]))
    items, _, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                  versions=serve_each(*bodies), polls=3, hours=(1, 24))
    assert partial == Counter({"c0": 2})
    row = items["c0", "changes-2"]
    assert (row["published"], row["published_estimated"]) == ("2026-12-01T05:30:00+00:00", 0)


def test_an_item_marked_for_refetch_is_read_again(tmp_path, feed_server, caplog):
    """`feedhub refetch` between polls: its unchanged bytes must be read for
    the extraction to happen, as a full parse would."""
    caplog.set_level(logging.DEBUG, logger="feedhub")
    page = ("<html><body><article><h1>One</h1>" + "<p>The whole article, paragraph.</p>" * 40
            + "</article></body></html>")
    feed_server.serve("/article/1", page, content_type="text/html; charset=utf-8")
    link = feed_server.url("/article/1")
    bodies = (feed([item(1, link=link)]), feed([item(2), item(1, link=link)]),
              feed([item(3), item(2), item(1, link=link)]))
    results = {}
    for parse_unchanged in (False, True):
        directory = tmp_path / str(parse_unchanged)
        directory.mkdir()

        def version(_: bytes, poll: int, directory=directory) -> bytes:
            if poll == 2:  # between the second and the third poll
                with sqlite3.connect(directory / "feedhub.db") as db:
                    db.execute("UPDATE items SET fulltext_status = 'refetch requested' "
                               "WHERE upstream_id = 'changes-1'")
            return bodies[poll]

        results[parse_unchanged] = poll_all(
            directory, feed_server, one(*bodies), parse_unchanged=parse_unchanged,
            versions=version, polls=3, fulltext="always")[0]
    assert results[False] == results[True]
    row = results[False]["c0", "changes-1"]
    assert row["fulltext_status"] == "extracted" and "refetch" not in row["fulltext_status"]
    assert read_in_part(caplog)["c0"] == 2


def test_a_namespace_prefix_declared_in_an_item_is_read_in_full(tmp_path, feed_server, caplog):
    """feedparser keeps the first namespace it saw a prefix bound to for the
    rest of the document: a known item's declaration changes how a later
    new item reads."""
    known = item(1, attributes=' xmlns:x="http://purl.org/rss/1.0/modules/content/"',
                 extra="<x:encoded>&lt;p&gt;Full text one&lt;/p&gt;</x:encoded>")
    new = item(2, attributes=' xmlns:x="urn:example:other"',
               extra="<x:encoded>&lt;p&gt;Something else&lt;/p&gt;</x:encoded>")
    bodies = (feed([known]), feed([known, new]))
    _, _, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                              versions=serve_each(*bodies), polls=2)
    assert partial == Counter()


def test_feed_elements_between_items_are_read_in_full(tmp_path, feed_server, caplog):
    """Reading in part leaves out what is between items: only whitespace may be."""
    bodies = (feed([item(1)]), feed([item(2), "<ttl>60</ttl>", item(1)]))
    _, sources, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                    versions=serve_each(*bodies), polls=2)
    assert partial == Counter()
    assert sources["c0"]["ttl"] == 3600


def test_a_new_item_feedparser_complains_about_is_read_in_full(tmp_path, feed_server, caplog):
    """A complaint (here an undefined entity) makes feedparser read the whole
    document with its loose parser, and the source degraded, with a count of
    entries and a line and column of the whole document."""
    bodies = (feed([item(2), item(1)]),
              feed([item(3, extra="<category>A&nbsp;B</category>"), item(2), item(1)]))
    _, sources, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                    versions=serve_each(*bodies), polls=2)
    assert partial == Counter()
    assert sources["c0"]["degraded"].startswith("malformed XML, 3 entries recovered")


def test_an_item_whose_language_the_article_decided_is_read_again(tmp_path, feed_server,
                                                                  caplog):
    """Its language was detected again from the extracted article: its row is
    not what its bytes read, so a full parse of them changes the row (today
    it goes back to the teaser's language), and reading in part must too."""
    page = ("<html><body><article><h1>Eins</h1>" + f"<p>{GERMAN}</p>" * 6
            + "</article></body></html>")
    feed_server.serve("/article/de", page, content_type="text/html; charset=utf-8")
    link = feed_server.url("/article/de")
    teaser = item(1, link=link, text="Kurz …", guid="de-1")
    english = [item(n, text=ENGLISH, guid=f"en-{n}") for n in range(20, 24)]
    bodies = (feed([teaser, *english], language=""),
              feed([item(30, text=ENGLISH, guid="en-30"), teaser, *english], language=""),
              feed([item(31, text=ENGLISH, guid="en-31"), item(30, text=ENGLISH, guid="en-30"),
                    teaser, *english], language=""))
    items, _, partial = both_ways(tmp_path, feed_server, caplog, one(*bodies),
                                  versions=serve_each(*bodies), polls=3, fulltext="always")
    assert partial == Counter({"c0": 2})
    assert items["c0", "de-1"]["fulltext_status"] == "extracted"
    assert items["c0", "de-1"]["language"] == "en"  # the teaser's, as a full parse has it


def fetched(body: bytes, content_type: str = "application/rss+xml") -> FetchResult:
    return FetchResult(url="https://changes.example/feed", final_url="https://changes.example/feed",
                       status=200, content=body, headers={"content-type": content_type},
                       fetched_at=datetime(2026, 12, 1, tzinfo=UTC))


@pytest.mark.parametrize("body", [
    feed([item(1)]).replace(b"<rss", b"<!DOCTYPE rss>\n<rss"),  # a DOCTYPE
    feed([item(1), "<!-- an open comment", item(2)]),
    feed([item(1), "<!-- a comment between items -->", item(2)]),
    feed([item(1)]).replace(b"<item>", b"<rss:item>").replace(b"</item>", b"</rss:item>"),
    feed([item(1), "<item/>"]),
    feed([item(1).replace("</item>", item(2))]),  # one item inside another
    feed([item(1, attributes=' xmlns:x="urn:x"')]),
    feed([item(1)]).replace(b"utf-8", b"utf-16"),
    b'{"version": "https://jsonfeed.org/version/1.1", "title": "J", "items": '
    b'[{"id": "1", "content_html": "<item>1</item>"}]}',
], ids=["doctype", "open comment", "comment between", "prefixed", "empty", "nested",
        "namespace prefix", "utf-16", "json"])
def test_a_document_that_might_not_split_as_feedparser_reads_it_is_not_split(body):
    assert item_split(fetched(body)) is None


def test_a_plain_document_splits_into_its_items():
    body = feed([item(2, attributes=' xml:lang="de"'), item(1, text="<![CDATA[</item>]]>")])
    split = item_split(fetched(body))
    assert split is not None
    assert [body[start:end][:20] for start, end in split.spans] == [
        b'<item xml:lang="de">', b"<item><title>Item 1<"]
    assert item_split(fetched(body.replace(b"Nov 2026 10:00:00", b"Nov 2026 11:00:00"))
                      ).skeleton == split.skeleton  # the feed's date left out
