"""Publishing must keep its bytes when its renderer changes (issue 13).

`old_render_document` below is a frozen copy of the renderer feedhub used up
to issue 13: every document built with feedgen, every entry rendered again
for each document it appears in. The tests build one realistic database
through the real code (parse, enrich, store: farm feeds in en/de/fr/fa,
Latin-1, HTML with scripts; the fixture feeds; summary and link policies,
rights, enclosures, categories, archives, a withdrawn source), publish it
twice from two copies of that database -- once with today's renderer, once
with the frozen one patched in -- and compare every file byte for byte.
Do not "fix" the frozen copy: it is the reference."""

from __future__ import annotations

import gzip
import shutil
import sys
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import brotli
import pytest
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from feedhub import __version__
from feedhub import publish as publish_module
from feedhub.config import parse_config
from feedhub.credits import credit_template
from feedhub.hub import Hub
from feedhub.models import (
    Config,
    EntryRow,
    FeedInfo,
    FetchResult,
    LanguageContext,
    Link,
    StoredItem,
    primary_subtag,
)
from feedhub.publish import FeedDocument, render_document
from feedhub.store import open_store
from feedhub.store._sql import SqlStore
from feedhub.worker import parse_and_enrich
from hubdir import FIXTURES, files_under

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from farm import Farm

# --- the frozen renderer (feedhub before issue 13) ---------------------------

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
HISTORY_NS = "http://purl.org/syndication/history/1.0"


class _OldFeedExtension(BaseExtension):
    def __init__(self) -> None:
        self.archive = False

    def extend_ns(self) -> dict[str, str]:
        return {"fh": HISTORY_NS} if self.archive else {}

    def extend_atom(self, feed: etree._Element) -> etree._Element:
        if self.archive:
            etree.SubElement(feed, f"{{{HISTORY_NS}}}archive")
        return feed


class _OldEntryExtension(BaseEntryExtension):
    def __init__(self) -> None:
        self.language: str | None = None
        self.links: Sequence[Link] = ()
        self.source: FeedInfo | None = None

    def extend_atom(self, entry: etree._Element) -> etree._Element:
        if self.language:
            entry.set(XML_LANG, self.language)
        anchor = entry.find("content")
        position = list(entry).index(anchor) + 1 if anchor is not None else len(entry)
        for offset, link in enumerate(self.links):
            entry.insert(position + offset, _old_link_element(link))
        if self.source is not None:
            entry.append(_old_source_element(self.source))
        return entry


def _old_link_element(link: Link) -> etree._Element:
    element = etree.Element("link", href=link.href, rel=link.rel)
    if link.type:
        element.set("type", link.type)
    if link.title:
        element.set("title", link.title)
    if link.length is not None:
        element.set("length", str(link.length))
    return element


def _old_source_element(feed: FeedInfo) -> etree._Element:
    source = etree.Element("source")
    self_link = next((link.href for link in feed.links if link.rel == "self"), None)
    if source_id := feed.id or self_link or feed.alternate:
        etree.SubElement(source, "id").text = source_id
    if feed.title:
        etree.SubElement(source, "title").text = feed.title
    if feed.subtitle:
        etree.SubElement(source, "subtitle").text = feed.subtitle
    for link in feed.links:
        if link.rel in ("self", "alternate"):
            source.append(_old_link_element(link))
    if icon := next((link.href for link in feed.links if link.rel == "icon"), None):
        etree.SubElement(source, "icon").text = icon
    if feed.updated:
        etree.SubElement(source, "updated").text = feed.updated.isoformat()
    if feed.rights:
        etree.SubElement(source, "rights").text = feed.rights
    return source


def old_render_document(config: Config, document: FeedDocument, items: Sequence[StoredItem], *,
                        emptied: datetime | None = None, **_ignored: object) -> bytes:
    language = document.language
    settings = config.languages.get(language) if language else None
    fg = FeedGenerator()
    fg.register_extension("feedhub", _OldFeedExtension, _OldEntryExtension, atom=True, rss=False)
    fg.id(document.feed_id)
    fg.title(document.title)
    if settings and settings.subtitle:
        fg.subtitle(settings.subtitle)
    fg.link(href=document.url, rel="self", type="application/atom+xml")
    # issue 14: a feed's alternate is its HTML page where pages are written
    fg.link(href=document.page or f"{config.hub.base_url}index.html", rel="alternate",
            type="text/html")
    if document.current:
        fg.link(href=document.current, rel="current", type="application/atom+xml")
    if document.prev_archive:
        fg.link(href=document.prev_archive, rel="prev-archive", type="application/atom+xml")
    if not document.is_archive:
        for hub_url in config.hub.websub_hubs:
            fg.link(href=hub_url, rel="hub")
    fg.feedhub.archive = document.is_archive
    if language:
        fg.language(language)
    fg.generator("feedhub", version=__version__)
    fg.updated(max((item.updated for item in items), default=emptied or publish_module._now()))
    for item in items:
        name = item.source
        credit_language = language or primary_subtag(item.language)
        credit_settings = config.languages.get(credit_language)
        template = credit_template(credit_language,
                                   credit_settings.credit if credit_settings else None)
        entry = fg.add_entry(order="append")
        entry.id(item.atom_id)
        entry.title(item.title or "(untitled)")
        entry.author(name=item.author or name)
        entry.published(item.published)
        entry.updated(item.updated)
        policy = next((s for s in config.sources if item.source in (s.name, s.url)), None)
        entry.content(publish_module._entry_html(item, name, template,
                                                 policy.publish if policy else "full"),
                      type="html")
        for term in item.categories:
            entry.category(term=term)
        rights = (policy.rights if policy else None) or item.rights
        if rights:
            entry.rights(rights)
        ext = entry.feedhub
        ext.language = item.language
        ext.links = ([Link(href=item.link, type="text/html")] if item.link else []) + list(
            item.enclosures)
        ext.source = item.feed
    return fg.atom_str(pretty=True, encoding="UTF-8", xml_declaration=True)


# --- a realistic database, built by the real code -----------------------------

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)

ODD_RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0"><channel><title>Odd &amp; "quoted" &lt;feed&gt;</title>
<link>https://odd.example/</link><description>tabs\tand &amp;amp; more</description>
<language>en</language><copyright>© Odd Ltd &amp; co</copyright>
{items}</channel></rss>"""
ODD_ITEM = """<item><title>{n}: a &lt;b&gt; &amp; "c" 'd' — ünïcödé 🎉</title>
<link>https://odd.example/a?x=1&amp;y="{n}"</link><guid>odd-{n}</guid>
<author>ed@odd.example (Ed "the" Editor)</author>
<category>a "quoted" &amp; term</category><category>Zweite</category>
<pubDate>Mon, 0{d} Feb 2026 10:00:00 +0000</pubDate>
<description>&lt;p&gt;Line one\r\nline two &amp;amp; &lt;em&gt;three&lt;/em&gt;&lt;/p&gt;</description>
<enclosure url="https://cdn.odd.example/{n}.mp3" length="{length}" type="audio/mpeg"/>
</item>"""


def _odd_feed() -> bytes:
    return ODD_RSS.format(items="".join(ODD_ITEM.format(n=n, d=n + 1, length=1000 * n + 7)
                                        for n in range(1, 8))).encode()


CONFIG = """\
[hub]
title = "Identity hub"
base_url = "https://hub.example.org/feeds/"
items_per_feed = 4
archive_page_size = 3
websub_hubs = ["https://websub.example.org/"]

[languages.fa]
title = "خبرها"
subtitle = "همه‌ی خبرها"

[languages.de]
credit = "Quelle: {source}, {date}"
"""


def _sources(farm: Farm) -> list[tuple[str, str, bytes, str]]:
    """(name, url, body, extra config lines)"""
    farm_sources = [(f"farm {i}", f"https://farm.example/{i}.xml", farm.body(i), "")
                     for i in range(farm.n_feeds)]
    farm_sources[2] = (*farm_sources[2][:3], 'publish = "link"\n')
    farm_sources[3] = (*farm_sources[3][:3], 'rights = "https://creativecommons.org/licenses/by/4.0/"\n')
    fixtures = [
        ("wsws", "https://wsws.example/rss", (FIXTURES / "seed_wsws.rss").read_bytes(),
         'publish = "summary"\nrights = "https://creativecommons.org/licenses/by-nc-nd/4.0/"\n'),
        ("BBC فارسی", "https://bbc.example/persian.rss", (FIXTURES / "persian.rss").read_bytes(),
         ""),
        ("german", "https://de.example/atom", (FIXTURES / "german.atom").read_bytes(), ""),
        ("mixed", "https://mixed.example/rss", (FIXTURES / "mixed.rss").read_bytes(),
         'publish = "summary"\n'),
        ("json", "https://json.example/feed.json", (FIXTURES / "jsonfeed-1.1.json").read_bytes(),
         ""),
        ("odd", "https://odd.example/rss", _odd_feed(), ""),
        ("gone", "https://gone.example/rss", farm.body(5), ""),
    ]
    return farm_sources + fixtures


def build_hub(root: Path) -> Config:
    farm = Farm(12, 8, seed=13)
    sources = _sources(farm)
    text = CONFIG + "".join(f'\n[[sources]]\nname = "{name}"\nurl = "{url}"\nfulltext = "never"\n'
                            + extra for name, url, _, extra in sources)
    (root / "config.toml").write_text(text, encoding="utf-8")
    config = parse_config(text, root / "config.toml")
    with open_store(config.hub.database) as store:
        for n, (name, url, body, _) in enumerate(sources):
            source = config.find_source(name)
            assert source is not None
            fetched = NOW - timedelta(hours=len(sources) - n)
            parsed = parse_and_enrich(FetchResult(url, url, 200, body, {}, fetched), source,
                                      LanguageContext())
            store.save_items(name, parsed.items, seen_at=fetched, id_authority="hub.example.org")
            store.record_poll(name, url=url, at=fetched, status=200, error=None, next_poll=None,
                              feed=parsed.info)
    return config


def _items_for_the_old_renderer(hub: Hub, rows: Sequence[EntryRow], _language: str | None,
                                frozen: dict[str, FeedInfo] | None = None) -> list[StoredItem]:
    """The reference run: the same documents, each given its items to
    render whole (old_render_document) instead of rendered entries (an
    archive page's with its sources' feeds as they were when it was closed)."""
    items = hub.store.items_by_id([row.item_id for row in rows])
    frozen = frozen or {}
    return [replace(items[row.item_id], feed=frozen[row.source]) if row.source in frozen
            else items[row.item_id] for row in rows]


def publish_twice(config: Config, monkeypatch: pytest.MonkeyPatch) -> None:
    """Publish, take one source down, publish again (archive rewrites, an
    emptied source feed), then publish a third time (nothing to write)."""
    monkeypatch.setattr(publish_module, "_now", lambda: NOW)
    with open_store(config.hub.database) as store:
        hub = Hub(config, store, None)  # type: ignore[arg-type]
        hub.publish()
        assert store.withdraw("gone", NOW) > 0
        hub.publish()
        hub.publish()


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("identity")
    build_hub(root)
    return root


def _copy(built: Path, to: Path) -> Config:
    shutil.copytree(built, to)
    text = (to / "config.toml").read_text(encoding="utf-8")
    return parse_config(text, to / "config.toml")


def _files(root: Path) -> dict[str, bytes]:
    return files_under(root, hidden=False)


def test_publishing_gives_the_bytes_the_feedgen_renderer_gave(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    new_config = _copy(built, tmp_path / "new")
    old_config = _copy(built, tmp_path / "old")
    publish_twice(new_config, monkeypatch)
    with monkeypatch.context() as patched:
        patched.setattr(publish_module, "render_document", old_render_document)
        patched.setattr(Hub, "_entries", _items_for_the_old_renderer)
        publish_twice(old_config, patched)
    new, old = _files(new_config.hub.output_dir), _files(old_config.hub.output_dir)
    assert sorted(new) == sorted(old)
    assert [name for name in new if new[name] != old[name]] == []
    # the database is realistic: every kind of document and entry is there
    names = set(new)
    assert {"all.atom", "en.atom", "de.atom", "fr.atom", "fa.atom", "index.html",
            "index.opml"} <= names
    assert any(name.startswith("archive/fa/") for name in names)
    assert sum(name.startswith("archive/") for name in names) >= 10
    everything = b"".join(new.values())
    for marker in (b'dir="rtl"', b'rel="enclosure"', b'length="7007"', b"<rights>", b"<category",
                   b"<fh:archive/>", b'rel="hub"', b'rel="prev-archive"',
                   b"Quelle:", "همه‌ی خبرها".encode()):
        assert marker in everything, marker
    assert b"<entry" not in new["sources/gone.atom"]  # withdrawn: emptied


def _item(**changes: object) -> StoredItem:
    feed = FeedInfo(id="urn:x", title="T & <t>", subtitle='s "q"',
                    links=(Link("https://x.example/", "alternate", "text/html"),
                           Link("https://x.example/feed", "self"),
                           Link("https://x.example/i.png", "icon")),
                    updated=NOW, rights="© x")
    item = StoredItem(atom_id="tag:x,2026:1", source="odd", title="t", link="https://x.example/1",
                      author=None, published=NOW, updated=NOW, content="<p>x</p>", language="en",
                      categories=("", "a\tb", 'q"'), enclosures=(
                          Link("https://x.example/a.mp3", "enclosure", "audio/mpeg", "a\nb", 0),),
                      rights=None, feed=feed)
    return replace(item, **changes)


@pytest.mark.parametrize("changes", [
    {},
    {"title": "", "author": "", "link": None, "enclosures": (), "categories": ()},
    {"title": "a\r\nb\tc ]]> &amp; \x85 \u2028 \U0001f600", "language": "fa-IR"},
    {"feed": FeedInfo()},
    {"feed": FeedInfo(links=(Link("https://only.example/", "alternate"),), title="")},
    {"content": "bad \x01 control"},
    {"title": "bad \ufffe"},
    {"categories": ("bad \x0b",)},
    {"published": datetime(2026, 1, 1)},  # no timezone
    {"updated": datetime(2026, 1, 1, tzinfo=UTC), "published": NOW + timedelta(microseconds=5)},
    {"atom_id": ""},
    {"rights": "r & <r>", "source": "nobody configured"},
])
def test_hostile_items_render_as_before_or_fail_as_before(changes: dict[str, object],
                                                          tmp_path: Path) -> None:
    config = parse_config(CONFIG + '\n[[sources]]\nname = "odd"\nurl = "https://odd.example/"\n'
                          'publish = "summary"\n', tmp_path / "config.toml")
    item = _item(**changes)
    other = _item(atom_id="tag:x,2026:2", language="de", title="zwei")
    documents = [publish_module.language_document(config, "en", archived_pages=2),
                 publish_module.archive_document(config, "fa", 3),
                 publish_module.language_document(config, publish_module.ALL),
                 publish_module.source_document(config, "odd", "odd")]
    for document in documents:
        for items in ([item, other], [item], []):
            expected: bytes | type[Exception]
            try:
                expected = old_render_document(config, document, items, emptied=NOW)
            except ValueError:
                expected = ValueError
            if expected is ValueError:
                with pytest.raises(ValueError):
                    render_document(config, document, items, emptied=NOW)
            else:
                assert render_document(config, document, items, emptied=NOW) == expected


def test_a_kept_entry_never_outlives_what_it_was_rendered_from(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Publish (every entry rendered and kept), then change what entries are
    made of: an item edited upstream, an article extracted for another, a
    source's feed retitled (atom:source), a source's policy and rights and a
    language's credit line in the config. The next publish, from the kept
    entries, must give the bytes of the frozen renderer rendering every
    entry afresh from the same database."""
    config = _copy(built, tmp_path / "new")
    monkeypatch.setattr(publish_module, "_now", lambda: NOW)
    with open_store(config.hub.database) as store:
        Hub(config, store, None).publish()  # type: ignore[arg-type]
        later = NOW + timedelta(days=1)
        farm = Farm(12, 8, seed=13)
        for name, url, index, change in (
                ("farm 0", "https://farm.example/0.xml", 0, "edit"),
                ("farm 1", "https://farm.example/1.xml", 1, "extract")):
            source = config.find_source(name)
            assert source is not None
            parsed = parse_and_enrich(FetchResult(url, url, 200, farm.body(index), {}, later),
                                      source, LanguageContext())
            first = parsed.items[0]
            if change == "edit":
                first = replace(first, title=first.title + " (corrected)")
            else:
                first = replace(first, content="<p>The whole article &amp; more</p>",
                                extracted_content="<p>The whole article &amp; more</p>",
                                fulltext_status="ok")
            outcome, _ = store.save_items(name, [first, *parsed.items[1:]], seen_at=later,
                                          id_authority="hub.example.org")
            assert outcome.updated == 1
        store.record_poll("farm 4", url="https://farm.example/4.xml", at=later, status=200,
                          error=None, next_poll=None,
                          feed=FeedInfo(title="Farm four, renamed", updated=later))
    text = (tmp_path / "new" / "config.toml").read_text(encoding="utf-8")
    text = text.replace('credit = "Quelle: {source}, {date}"', 'credit = "Nach {source} ({date})"')
    text = text.replace('name = "farm 5"\nurl = "https://farm.example/5.xml"\nfulltext = "never"\n',
                        'name = "farm 5"\nurl = "https://farm.example/5.xml"\nfulltext = "never"\n'
                        'publish = "summary"\nrights = "All rights reserved"\n')
    assert "Nach {source}" in text and 'rights = "All rights reserved"' in text
    (tmp_path / "new" / "config.toml").write_text(text, encoding="utf-8")
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    new_config = parse_config(text, tmp_path / "new" / "config.toml")
    old_config = parse_config(text, tmp_path / "old" / "config.toml")
    with open_store(new_config.hub.database) as store:
        Hub(new_config, store, None).publish()  # type: ignore[arg-type]
    with monkeypatch.context() as patched, open_store(old_config.hub.database) as store:
        patched.setattr(publish_module, "render_document", old_render_document)
        patched.setattr(Hub, "_entries", _items_for_the_old_renderer)
        Hub(old_config, store, None).publish()  # type: ignore[arg-type]
    new, old = _files(new_config.hub.output_dir), _files(old_config.hub.output_dir)
    assert sorted(new) == sorted(old)
    assert [name for name in new if new[name] != old[name]] == []
    everything = b"".join(new.values())
    for marker in (b"(corrected)", b"The whole article &amp;amp; more", b"Farm four, renamed",
                   b"Nach ", b"All rights reserved"):
        assert marker in everything, marker


@pytest.mark.parametrize("release_workers", [False, True])
def test_entries_rendered_by_the_parser_workers_give_the_same_bytes(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        release_workers: bool) -> None:
    """The first publish of a hub with parser workers renders its entries
    there, in chunks (made small here so that this small hub has several):
    the documents then render nothing themselves, and every file is what
    the frozen renderer gives. A command's publish (release_workers, as
    `feedhub poll` does it) ends the workers once the entries are rendered:
    the documents are written without them."""
    import feedhub.hub as hub_module

    new_config = _copy(built, tmp_path / "new")
    old_config = _copy(built, tmp_path / "old")
    monkeypatch.setattr(publish_module, "_now", lambda: NOW)
    monkeypatch.setattr(hub_module, "RENDER_CHUNK", 10)
    rendered_here: list[int] = []  # the items documents had to render themselves
    real_items_by_id = SqlStore.items_by_id
    monkeypatch.setattr(SqlStore, "items_by_id", lambda store, ids: (
        rendered_here.append(len(ids)), real_items_by_id(store, ids))[1])
    with open_store(new_config.hub.database) as store:
        hub = Hub(new_config, store, None, workers=2)  # type: ignore[arg-type]
        try:
            hub.publish(release_workers=release_workers)
            assert (hub.executor is None) is release_workers
        finally:
            hub.close()
        assert store.items_without_entries(0, 10_000) == []
    assert sum(rendered_here) == 0  # all of it in the workers
    monkeypatch.setattr(SqlStore, "items_by_id", real_items_by_id)
    with monkeypatch.context() as patched, open_store(old_config.hub.database) as store:
        patched.setattr(publish_module, "render_document", old_render_document)
        patched.setattr(Hub, "_entries", _items_for_the_old_renderer)
        Hub(old_config, store, None).publish()  # type: ignore[arg-type]
    new, old = _files(new_config.hub.output_dir), _files(old_config.hub.output_dir)
    assert len(new) > 20 and sorted(new) == sorted(old)
    assert [name for name in new if new[name] != old[name]] == []


def test_a_feed_that_only_redates_itself_renders_no_entry_again(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Many publishers move their feed's date on every request: every entry
    of the source shows it (atom:source), but the kept entries stay good:
    the next publish renders nothing again and gives the frozen renderer's
    bytes, the new date in every entry of that source."""
    config = _copy(built, tmp_path / "new")
    monkeypatch.setattr(publish_module, "_now", lambda: NOW)
    later = NOW + timedelta(days=1)
    with open_store(config.hub.database) as store:
        Hub(config, store, None).publish()  # type: ignore[arg-type]
        store.record_poll("farm 0", url="https://farm.example/0.xml", at=later, status=200,
                          error=None, next_poll=None, feed_updated=later)
    shutil.copytree(tmp_path / "new", tmp_path / "old")
    old_config = parse_config((tmp_path / "old" / "config.toml").read_text(encoding="utf-8"),
                              tmp_path / "old" / "config.toml")
    rendered_again: list[int] = []
    real_items_by_id = SqlStore.items_by_id
    with monkeypatch.context() as patched, open_store(config.hub.database) as store:
        patched.setattr(SqlStore, "items_by_id", lambda store, ids: (
            rendered_again.append(len(ids)), real_items_by_id(store, ids))[1])
        Hub(config, store, None).publish()  # type: ignore[arg-type]
    assert sum(rendered_again) == 0
    with monkeypatch.context() as patched, open_store(old_config.hub.database) as store:
        patched.setattr(publish_module, "render_document", old_render_document)
        patched.setattr(Hub, "_entries", _items_for_the_old_renderer)
        Hub(old_config, store, None).publish()  # type: ignore[arg-type]
    new, old = _files(config.hub.output_dir), _files(old_config.hub.output_dir)
    assert [name for name in new if new[name] != old[name]] == []
    assert later.isoformat().encode() in new["sources/farm-0.atom"]


def _publish_everything(config: Config, monkeypatch: pytest.MonkeyPatch, *,
                        workers_from: int) -> list[str]:
    """One full publish; documents made in worker processes once a publish
    has `workers_from` archive pages or source feeds to make. Returns what
    it logged about its workers failing (else it makes their documents
    itself: the same bytes, so the bytes alone do not show the workers did)."""
    import logging

    import feedhub.hub as hub_module

    failures: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: failures.append(record.getMessage())  # type: ignore[method-assign]
    logging.getLogger("feedhub").addHandler(handler)
    try:
        with monkeypatch.context() as patched, open_store(config.hub.database) as store:
            patched.setattr(publish_module, "_now", lambda: NOW)
            patched.setattr(hub_module, "DOCUMENT_WORKERS_FROM", workers_from)
            Hub(config, store, None).publish()  # type: ignore[arg-type]
            assert store.items_without_entries(0, 10_000) == []  # what workers rendered is kept
    finally:
        logging.getLogger("feedhub").removeHandler(handler)
    return [message for message in failures if "document worker failed" in message]


def _leftovers(root: Path) -> list[Path]:
    return [path for path in root.rglob(".*") if path.name.endswith(".tmp")]


def test_documents_made_in_worker_processes_give_the_same_bytes(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A full publish makes its archive pages and source feeds (and their
    pages and compressed copies) in worker processes: every file is what
    this process alone writes, and no temp file is left."""
    here, there = _copy(built, tmp_path / "here"), _copy(built, tmp_path / "workers")
    _publish_everything(here, monkeypatch, workers_from=10**9)
    assert _publish_everything(there, monkeypatch, workers_from=1) == []
    new, old = _files(there.hub.output_dir), _files(here.hub.output_dir)
    assert len(new) > 20 and any("/archive/" in f"/{name}" for name in new)
    assert sorted(new) == sorted(old)
    assert [name for name in new if new[name] != old[name]] == []
    assert _leftovers(there.hub.output_dir) == []


@pytest.mark.parametrize("workers_from", [10**9, 1])
def test_every_atom_document_is_in_place_before_the_first_html_page_is_made(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, workers_from: int) -> None:
    """A publish into an empty directory writes the feeds first: once they
    are done, every Atom document the publish writes (the archive pages,
    the language and source feeds) is on disk, and no compressed copy and
    no page is yet; the copies and pages follow, every copy holds its
    document's bytes, and every file is the one a publish made before (the
    byte tests above), in one process or with document workers."""
    import feedhub.hub as hub_module

    config = _copy(built, tmp_path / "hub")
    output = config.hub.output_dir
    seen: dict[str, set[str]] = {}
    real_render_page, real_write_later = hub_module.render_page, Hub._write_later

    def render_page(*args: Any, **kwargs: Any) -> bytes:
        seen.setdefault("first page", set(_files(output)))
        return real_render_page(*args, **kwargs)

    def write_later(hub: Hub, *args: Any) -> Any:
        seen["feeds done"] = set(_files(output))
        return real_write_later(hub, *args)

    monkeypatch.setattr(hub_module, "render_page", render_page)
    monkeypatch.setattr(Hub, "_write_later", write_later)
    assert _publish_everything(config, monkeypatch, workers_from=workers_from) == []
    written = _files(output)
    feeds = {name for name in written if name.endswith(".atom")}
    assert len(feeds) > 20 and any(name.startswith("archive/") for name in feeds)
    assert seen["feeds done"] == feeds  # the feeds alone
    assert seen["first page"] >= feeds
    assert not any(".html" in name for name in seen["first page"])
    assert any(name.endswith(".html") for name in written)
    for name in feeds:  # the copies came after them, whole
        assert brotli.decompress(written[f"{name}.br"]) == written[name], name
        assert gzip.decompress(written[f"{name}.gz"]) == written[name], name


def test_a_changed_feed_is_never_beside_the_copies_of_its_old_bytes(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A feed's copies are written after every feed is: a feed that
    changes loses its old copies as it is replaced, so that in between a
    server (ours, or nginx's gzip_static, which compares no dates) sends it
    uncompressed, never a copy of what it held before. Then its new copies
    are written."""
    config = _copy(built, tmp_path / "hub")
    output = config.hub.output_dir
    mismatched: list[str] = []
    seen: dict[str, set[str]] = {}
    real_write_later = Hub._write_later

    def write_later(hub: Hub, *args: Any) -> Any:
        on_disk = _files(output)
        seen["feeds done"] = set(on_disk)
        mismatched.extend(name for name, data in on_disk.items() if name.endswith(".br")
                          and brotli.decompress(data) != on_disk[name.removesuffix(".br")])
        mismatched.extend(name for name, data in on_disk.items() if name.endswith(".gz")
                          and gzip.decompress(data) != on_disk[name.removesuffix(".gz")])
        return real_write_later(hub, *args)

    monkeypatch.setattr(publish_module, "_now", lambda: NOW)
    with open_store(config.hub.database) as store:
        Hub(config, store, None).publish()  # type: ignore[arg-type]
        before = _files(output)
        later = NOW + timedelta(days=1)  # farm 0's upstream feed changes: its entries' atom:source
        store.record_poll("farm 0", url="https://farm.example/0.xml", at=later, status=200,
                          error=None, next_poll=None, feed_updated=later)
        monkeypatch.setattr(Hub, "_write_later", write_later)
        Hub(config, store, None).publish()  # type: ignore[arg-type]
    after = _files(output)
    changed = {name for name in after if name.endswith(".atom") and after[name] != before[name]}
    assert changed == {"sources/farm-0.atom"}
    assert mismatched == []
    for name in changed:
        assert f"{name}.br" not in seen["feeds done"] and f"{name}.gz" not in seen["feeds done"]
        assert brotli.decompress(after[f"{name}.br"]) == after[name]
        assert gzip.decompress(after[f"{name}.gz"]) == after[name]
    unchanged = [name for name in after if name.endswith(".atom") and name not in changed]
    assert unchanged and all(f"{name}.br" in seen["feeds done"] for name in unchanged)


def test_a_source_feed_whose_page_failed_is_made_again_at_the_next_publish(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The pages come after the feeds, so a source feed's stamp (what lets
    the next publish skip it) is recorded only once its page is on disk: a
    source whose page could not be made again (its old page still there)
    is made again by the next publish."""
    import feedhub.hub as hub_module
    from feedhub.pages import TemplateError

    config = _copy(built, tmp_path / "hub")
    real_render_page = hub_module.render_page
    made: list[str] = []

    def render_page(templates: Any, config: Config, page: Any, entries: Any) -> bytes:
        made.append(page.kind)
        if page.kind == "source" and failing:
            raise TemplateError("templates/page.html line 1: made to fail")
        return real_render_page(templates, config, page, entries)

    monkeypatch.setattr(publish_module, "_now", lambda: NOW)
    monkeypatch.setattr(hub_module, "render_page", render_page)
    sources = config.hub.output_dir / "sources"
    with open_store(config.hub.database) as store:
        failing = False
        Hub(config, store, None).publish()  # type: ignore[arg-type]
        feeds = len(sorted(sources.glob("*.atom")))
        assert feeds > 5 and len(sorted(sources.glob("*.html"))) == feeds
        later = NOW + timedelta(days=1)  # one source's feed changes: its feed and page are due
        store.record_poll("farm 0", url="https://farm.example/0.xml", at=later, status=200,
                          error=None, next_poll=None, feed_updated=later)
        for failing in (True, False):
            made.clear()
            Hub(config, store, None).publish()  # type: ignore[arg-type]
            assert made.count("source") == 1, failing  # farm 0's, failing, then made
        assert later.isoformat().encode() in (sources / "farm-0.atom").read_bytes()
        made.clear()
        Hub(config, store, None).publish()  # type: ignore[arg-type]
        assert made.count("source") == 0  # its stamp is recorded now


def make_documents_then_die(*args: object) -> object:
    """A document worker killed once it has written its temp files."""
    import os

    from feedhub import documents

    documents.make_documents(*args)  # type: ignore[arg-type]
    os._exit(9)


def test_a_document_worker_that_dies_leaves_nothing_half_written(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker dies (the OOM killer) after writing its documents' temp
    files: the publishing process makes those documents itself, and the
    output is whole, byte for byte, with none of the dead worker's files."""
    from feedhub import documents

    here, there = _copy(built, tmp_path / "here"), _copy(built, tmp_path / "workers")
    _publish_everything(here, monkeypatch, workers_from=10**9)
    monkeypatch.setattr(documents, "make_documents", make_documents_then_die)
    assert _publish_everything(there, monkeypatch, workers_from=1)  # it did die
    new, old = _files(there.hub.output_dir), _files(here.hub.output_dir)
    assert sorted(new) == sorted(old)
    assert [name for name in new if new[name] != old[name]] == []
    assert _leftovers(there.hub.output_dir) == []


def make_top_level_copies_then_die(*args: Any) -> object:
    """A document worker killed once it has written the temp files of a
    language feed's copies, in the output directory itself."""
    import os

    from feedhub import documents

    made = documents.make_documents(*args)
    config, jobs = args[1], args[4]
    if any(kind == "copies" and job[0].parent == config.hub.output_dir for kind, job in jobs):
        os._exit(9)
    return made


def test_a_document_worker_that_dies_in_the_copies_round_leaves_no_temp_file(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The copies round covers the language feeds in the output directory
    itself: a worker that dies there leaves no temp file in it, and the
    publishing process makes those copies itself."""
    from feedhub import documents

    here, there = _copy(built, tmp_path / "here"), _copy(built, tmp_path / "workers")
    _publish_everything(here, monkeypatch, workers_from=10**9)
    monkeypatch.setattr(documents, "make_documents", make_top_level_copies_then_die)
    monkeypatch.setattr(documents, "MIN_CHUNK", 1)  # a job a chunk: some are the worker's
    assert _publish_everything(there, monkeypatch, workers_from=1)  # it did die
    new, old = _files(there.hub.output_dir), _files(here.hub.output_dir)
    assert sorted(new) == sorted(old)
    assert [name for name in new if new[name] != old[name]] == []
    assert _leftovers(there.hub.output_dir) == []


def test_documents_made_in_worker_processes_on_postgresql_give_the_same_bytes(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        pg_database: str) -> None:
    """The workers read PostgreSQL with stores of their own: the hub copied
    there publishes, through them, what the SQLite hub publishes alone."""
    import subprocess

    here, there = _copy(built, tmp_path / "here"), _copy(built, tmp_path / "pg")
    copied = subprocess.run([sys.executable, "-m", "feedhub", "--config",
                             str(tmp_path / "pg" / "config.toml"), "db", "copy",
                             str(there.hub.database), pg_database],
                            capture_output=True, text=True, timeout=60, check=False)
    assert copied.returncode == 0, copied.stderr
    there = replace(there, hub=replace(there.hub, database=pg_database))
    _publish_everything(here, monkeypatch, workers_from=10**9)
    assert _publish_everything(there, monkeypatch, workers_from=1) == []
    new, old = _files(there.hub.output_dir), _files(here.hub.output_dir)
    assert sorted(new) == sorted(old)
    assert [name for name in new if new[name] != old[name]] == []


FORKED_PUBLISH = """
import json, logging, os, sys
from datetime import datetime
from pathlib import Path
import feedhub.hub as hub_module
from feedhub import publish
from feedhub.config import load_config
from feedhub.hub import Hub, forked_parser_pool
from feedhub.store import open_store

failures = []
handler = logging.Handler()
handler.emit = lambda record: failures.append(record.getMessage())
logging.getLogger("feedhub").addHandler(handler)
publish._now = lambda: datetime.fromisoformat(sys.argv[2])  # the forked workers' too
hub_module.DOCUMENT_WORKERS_FROM = 1
config = load_config(Path(sys.argv[1]))
with forked_parser_pool(config, 2) as pool:  # before the store, as the daemon's
    forked = [pid for task in os.listdir("/proc/self/task")
              for pid in Path(f"/proc/self/task/{task}/children").read_text().split()]
    with open_store(config.hub.database) as store:
        hub = Hub(config, store, None, workers=2, pool=pool)
        try:
            hub.publish()
            lent = [hub.executor.submit(os.getpid).result() for _ in range(4)]
        finally:
            hub.close()
print(json.dumps({"forked": sorted(map(int, forked)), "lent": sorted(set(lent)),
                  "failed": [m for m in failures if "document worker failed" in m]}))
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_parser_workers_forked_from_the_daemon_make_documents_with_the_same_bytes(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The daemon forks its parser workers before it opens its store, then
    lends them to publishing, where each opens a store of its own: the
    documents they make are the one-process publish's, byte for byte."""
    import json
    import subprocess

    here, there = _copy(built, tmp_path / "here"), _copy(built, tmp_path / "forked")
    _publish_everything(here, monkeypatch, workers_from=10**9)
    done = subprocess.run([sys.executable, "-c", FORKED_PUBLISH, str(there.path), NOW.isoformat()],
                          capture_output=True, text=True, timeout=600, check=True)
    found = json.loads(done.stdout)
    # the owner's own children (which of them answers a submit is up to the pool)
    assert len(found["forked"]) == 2 and found["lent"] and set(found["lent"]) <= set(found["forked"])
    assert found["failed"] == []
    new, old = _files(there.hub.output_dir), _files(here.hub.output_dir)
    assert sorted(new) == sorted(old)
    assert [name for name in new if new[name] != old[name]] == []


def test_a_publishs_own_worker_leaves_another_hubs_parser_workers_alone(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish with no parser workers to lend spawns its document worker
    and stops the forkserver, whose pages no document needs, but only when
    no worker of any pool is left: a hub polling in the same process keeps
    its parser workers (they die with the forkserver)."""
    import os

    here, there = _copy(built, tmp_path / "here"), _copy(built, tmp_path / "workers")
    _publish_everything(here, monkeypatch, workers_from=10**9)
    with open_store(here.hub.database) as store:
        polling = Hub(here, store, None, workers=1)  # type: ignore[arg-type]
        try:
            assert polling.executor is not None
            first = polling.executor.submit(os.getpid).result(timeout=60)
            assert _publish_everything(there, monkeypatch, workers_from=1) == []
            assert polling.executor.submit(os.getpid).result(timeout=60) == first
        finally:
            polling.close()
    new, old = _files(there.hub.output_dir), _files(here.hub.output_dir)
    assert [name for name in new if new[name] != old[name]] == []


def test_document_workers_start_before_the_first_document_only_where_many_are_missing(
        built: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A publish into an empty directory starts its document workers before
    it makes anything (they take half a second to import feedhub); a
    publish with the source feeds on disk starts none ahead (and, having
    fewer documents than DOCUMENT_WORKERS_FROM to make, none at all)."""
    import feedhub.hub as hub_module
    from feedhub import documents

    config = _copy(built, tmp_path / "hub")
    events: list[str] = []
    real_start, real_document = documents.start_workers, Hub._document

    def start_workers(hub: Hub) -> None:
        events.append("workers")
        real_start(hub)

    def document(hub: Hub, kind: str, args: Any) -> Any:
        events.append("document")
        return real_document(hub, kind, args)

    monkeypatch.setattr(documents, "start_workers", start_workers)
    monkeypatch.setattr(Hub, "_document", document)
    monkeypatch.setattr(hub_module, "DOCUMENT_WORKERS_FROM", 3)
    monkeypatch.setattr(publish_module, "_now", lambda: NOW)
    with open_store(config.hub.database) as store:
        Hub(config, store, None).publish()  # type: ignore[arg-type]
        assert events[0] == "workers" and events.count("workers") == 1
        feeds = sorted((config.hub.output_dir / "sources").glob("*.atom"))
        assert len(feeds) >= 3
        events.clear()
        Hub(config, store, None).publish()  # type: ignore[arg-type]
        assert "workers" not in events
        # sources that never had an item have no feed: missing, but not due
        path = tmp_path / "hub" / "config.toml"
        path.write_text(path.read_text(encoding="utf-8") + "".join(
            f'\n[[sources]]\nname = "silent {n}"\nurl = "https://silent.example/{n}.xml"\n'
            for n in range(3)), encoding="utf-8")
        config = parse_config(path.read_text(encoding="utf-8"), path)
        Hub(config, store, None).publish()  # type: ignore[arg-type]
        assert "workers" not in events
        for feed in feeds:  # an emptied sources/: those are due again
            feed.unlink()
        events.clear()
        Hub(config, store, None).publish()  # type: ignore[arg-type]
        assert events[0] == "workers"
