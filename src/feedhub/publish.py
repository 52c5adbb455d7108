"""Stored items -> feeds/<lang>.atom, index.opml and index.html.

The only module that writes the output directory. Every file is written
atomically and only when its bytes change, so a feed reader's conditional
GET on an unchanged feed stays a 304 and nobody reads half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import logging
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import brotli
import lxml.html
from feedgen.entry import FeedEntry
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from isal import igzip
from lxml import etree

from feedhub import __version__
from feedhub._files import WriteBatch
from feedhub.credits import credit_template, render_credit
from feedhub.models import (
    Config,
    FeedInfo,
    Link,
    RenderedEntry,
    StoredItem,
    is_rtl,
    primary_subtag,
)

log = logging.getLogger("feedhub.publish")

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
ALL = "all"  # feeds/all.atom: every language in one feed
_FEED_FILE = re.compile(r"^([a-z]{2,3})\.atom$")


@dataclass(frozen=True)
class PublishedFeed:
    language: str
    path: Path
    entries: int
    written: bool  # False: the file already had these exact bytes
    url: str = ""  # where subscribers fetch it (the WebSub topic)


class _HubFeedExtension(BaseExtension):
    """Marks an RFC 5005 archive document (<fh:archive/>); also carries the
    entry extension below."""

    def __init__(self) -> None:
        self.archive = False

    def extend_ns(self) -> dict[str, str]:
        return {"fh": HISTORY_NS} if self.archive else {}

    def extend_atom(self, feed: etree._Element) -> etree._Element:
        if self.archive:
            etree.SubElement(feed, f"{{{HISTORY_NS}}}archive")
        return feed


class _HubEntryExtension(BaseEntryExtension):
    """What feedgen cannot write itself: per-entry xml:lang, links with their
    rel/type/length kept (feedgen issue #135 drops them) and a full RFC 4287
    atom:source."""

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
            entry.insert(position + offset, _link_element(link))
        if self.source is not None:
            entry.append(_source_element(self.source))
        return entry


def _link_element(link: Link) -> etree._Element:
    element = etree.Element("link", href=link.href, rel=link.rel)
    if link.type:
        element.set("type", link.type)
    if link.title:
        element.set("title", link.title)
    if link.length is not None:
        element.set("length", str(link.length))
    return element


def _source_element(feed: FeedInfo) -> etree._Element:
    source = etree.Element("source")
    self_link = next((link.href for link in feed.links if link.rel == "self"), None)
    if source_id := feed.id or self_link or feed.alternate:  # never an empty atom:id
        etree.SubElement(source, "id").text = source_id
    if feed.title:
        etree.SubElement(source, "title").text = feed.title
    if feed.subtitle:
        etree.SubElement(source, "subtitle").text = feed.subtitle
    for link in feed.links:
        if link.rel in ("self", "alternate"):
            source.append(_link_element(link))
    if icon := next((link.href for link in feed.links if link.rel == "icon"), None):
        etree.SubElement(source, "icon").text = icon  # JSON Feed's icon (RFC 4287 4.2.5)
    if feed.updated:
        etree.SubElement(source, "updated").text = feed.updated.isoformat()
    if feed.rights:
        etree.SubElement(source, "rights").text = feed.rights
    return source


def feed_url(config: Config, language: str) -> str:
    return f"{config.hub.base_url}{language}.atom"


ARCHIVE_DIR = "archive"
SOURCES_DIR = "sources"
HISTORY_NS = "http://purl.org/syndication/history/1.0"  # RFC 5005
ATOM = "{http://www.w3.org/2005/Atom}"


def archive_path(language: str, page: int) -> str:
    """Where archive page `page` of a language lives, relative to feeds/."""
    return f"{ARCHIVE_DIR}/{language}/{page}.atom"


@dataclass(frozen=True)
class DocumentEntries:
    """A document's entries, rendered and ready to assemble: each rendered
    entry (the store keeps them) with the item's text."""

    entries: Sequence[tuple[RenderedEntry, str, bytes]]  # entry, its text, its atom:source
    updated: datetime | None  # the newest entry's; None: no entries
    error: str | None = None  # an entry could not be rendered: keep the file as it is
    ids: Sequence[int] = ()  # the items' row ids, in order (for the HTML page beside it)

    def __bool__(self) -> bool:  # like a list of items: is there anything to publish?
        return bool(self.entries or self.error)


Entries = Sequence[StoredItem] | DocumentEntries


@dataclass(frozen=True)
class FeedDocument:
    """What one published Atom document is: its address, name and place in
    an RFC 5005 archived feed."""

    url: str
    title: str
    language: str | None  # None: a mixed feed whose entries each carry their own
    feed_id: str  # archive pages share the id of the logical feed they belong to
    prev_archive: str | None = None
    current: str | None = None  # set on archive documents only
    page: str | None = None  # the HTML page with the same entries (None: pages are off)

    @property
    def is_archive(self) -> bool:
        return self.current is not None


def language_document(config: Config, language: str, *, archived_pages: int = 0) -> FeedDocument:
    """The subscription document of a language feed (or of all.atom)."""
    url = feed_url(config, language)
    prev = f"{config.hub.base_url}{archive_path(language, archived_pages)}" if archived_pages else None
    return FeedDocument(url, feed_title(config, language), None if language == ALL else language,
                        url, prev_archive=prev, page=_page_of(config, f"{language}.atom"))


def archive_document(config: Config, language: str, page: int) -> FeedDocument:
    current = feed_url(config, language)
    prev = f"{config.hub.base_url}{archive_path(language, page - 1)}" if page > 1 else None
    return FeedDocument(f"{config.hub.base_url}{archive_path(language, page)}",
                        feed_title(config, language), language, current,
                        prev_archive=prev, current=current,
                        page=_page_of(config, archive_path(language, page)))


def source_document(config: Config, source: str, slug: str) -> FeedDocument:
    url = f"{config.hub.base_url}{SOURCES_DIR}/{slug}.atom"
    return FeedDocument(url, f"{config.hub.title}: {source}", None, url,
                        page=_page_of(config, f"{SOURCES_DIR}/{slug}.atom"))


def _page_of(config: Config, document: str) -> str | None:
    """The address of the HTML page beside a document (pages.py writes it)."""
    return f"{config.hub.base_url}{document.removesuffix('.atom')}.html" if config.hub.pages \
        else None


def slugify(name: str) -> str:
    """A source name as a file name: lower-case ASCII letters, digits and
    dashes ("World Socialist" -> "world-socialist"); the store makes it
    unique and keeps it."""
    return (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:60]
            or f"source-{hashlib.sha1(name.encode()).hexdigest()[:8]}")  # "BBC فارسی" has "bbc"


def render_feed(config: Config, language: str, items: Sequence[StoredItem], *,
                archived_pages: int = 0) -> bytes:
    """The subscription document of one language (ALL: of every language)."""
    return render_document(config, language_document(config, language,
                                                     archived_pages=archived_pages), items)


def render_document(config: Config, document: FeedDocument, items: Sequence[StoredItem], *,
                    emptied: datetime | None = None) -> bytes:
    """One Atom document, byte-for-byte the same for the same items (its
    <updated> is the newest item's, not the clock's). With no items it is
    `emptied`, when the document became empty (default: now)."""
    sources: dict[FeedInfo, bytes] = {}
    entries = [entry_bytes(render_entry(config, item, credit_language(document, item.language)),
                           item.content, sources.get(item.feed) or sources.setdefault(
                               item.feed, source_xml(item.feed))) for item in items]
    return assemble(config, document, entries,
                    max((item.updated for item in items), default=emptied or _now()))


def credit_language(document: FeedDocument, item_language: str) -> str:
    """The language of an entry's credit line: the document's, or in a
    mixed feed the item's own. In practice an item's group, so an entry has
    the same bytes in every document it appears in."""
    return document.language or primary_subtag(item_language)


def assemble(config: Config, document: FeedDocument, entries: Sequence[bytes],
             updated: datetime) -> bytes:
    """The document feedgen writes for `document` with these entries
    (each one as render_entry made it): its own elements, rendered by
    feedgen without entries, then the entries' bytes."""
    language = document.language
    settings = config.languages.get(language) if language else None
    fg = FeedGenerator()
    fg.register_extension("feedhub", _HubFeedExtension, _HubEntryExtension, atom=True, rss=False)
    fg.id(document.feed_id)
    fg.title(document.title)
    if settings and settings.subtitle:
        fg.subtitle(settings.subtitle)
    fg.link(href=document.url, rel="self", type="application/atom+xml")
    # the page a person reads the same entries on; without pages, the index
    fg.link(href=document.page or f"{config.hub.base_url}index.html", rel="alternate",
            type="text/html")
    if document.current:
        fg.link(href=document.current, rel="current", type="application/atom+xml")
    if document.prev_archive:
        fg.link(href=document.prev_archive, rel="prev-archive", type="application/atom+xml")
    if not document.is_archive:  # a hub is told about subscription documents only
        for hub_url in config.hub.websub_hubs:
            fg.link(href=hub_url, rel="hub")
    fg.feedhub.archive = document.is_archive
    if language:  # a mixed feed has no one language; its entries each do
        fg.language(language)
    fg.generator("feedhub", version=__version__)
    fg.updated(updated)
    head = fg.atom_str(pretty=True, encoding="UTF-8", xml_declaration=True)
    if not head.endswith(_FEED_END):
        raise ValueError(f"feedgen ended {document.url} unexpectedly: {head[-40:]!r}")
    return b"".join((head[:-len(_FEED_END)], *entries, _FEED_END))


_FEED_END = b"</feed>\n"
_WRAPPER_START = b"<feed>\n"
# Where the article text goes in a cached entry: private-use characters, which
# XML escaping leaves alone; an entry whose other fields hold it is kept whole.
_TEXT_MARK = "\ue000feedhub:text\ue000"
_TEXT_MARK_BYTES = _TEXT_MARK.encode()


def render_entry(config: Config, item: StoredItem, credit_language: str,
                 stamp: str = "") -> RenderedEntry:
    """An item's entry, rendered by feedgen as it appears in a document
    (indented one level), without its atom:source (source_xml: the same for
    every item of a source, and it changes with the upstream feed's date)
    and without its article text when the source publishes the full text:
    the store keeps that text, and entry_bytes puts both back. Raises
    ValueError for what XML cannot carry."""
    policy = config.find_source(item.source)
    if (policy.publish if policy else "full") == "full":
        parts = _entry_xml(config, item, credit_language, _TEXT_MARK).split(_TEXT_MARK_BYTES)
        if len(parts) == 2:
            _check_xml_text(item.content)
            return RenderedEntry(stamp, credit_language, parts[0], parts[1])
    return RenderedEntry(stamp, credit_language, _entry_xml(config, item, credit_language))


def render_entries(config: Config, jobs: Sequence[tuple[StoredItem, str, str]],
                   ) -> list[RenderedEntry | str]:
    """render_entry for each (item, credit language, stamp); an item XML
    cannot carry gives the reason instead (the documents it is in are not
    written). Runs in a parser worker when there are many."""
    rendered: list[RenderedEntry | str] = []
    for item, language, stamp in jobs:
        try:
            rendered.append(render_entry(config, item, language, stamp))
        except ValueError as exc:
            rendered.append(f"{item.atom_id}: {exc}")
    return rendered


def entry_settings(config: Config, source: str, credit_language: str) -> str:
    """The settings that shape an entry: the source's policy and rights,
    the credit line's language and template, feedhub's version (see
    entry_stamp)."""
    policy = config.find_source(source)
    credit = config.languages.get(credit_language)
    return repr((policy.publish if policy else "full", policy.rights if policy else None,
                 credit_language, credit_template(credit_language, credit.credit if credit else None),
                 __version__, RENDERING))


def entry_stamp(settings: str, version: str) -> str:
    """What an entry is rendered from: the item's version (see the store)
    and entry_settings. Same stamp, same bytes."""
    return hashlib.blake2b(f"{settings}\x1f{version}".encode(), digest_size=16).hexdigest()


def entry_bytes(entry: RenderedEntry, text: str, source: bytes, *,
                checked: bool = False) -> bytes:
    """The entry with the item's text in place, as lxml would have escaped
    it (a text node: &, <, > and CR; measured identical over U+0009 to
    U+2FFF), and its atom:source (source_xml) as its last element. Raises
    ValueError for text XML cannot carry, as lxml does, unless the text is
    `checked` (render_entry did, for this version)."""
    if entry.tail is None:
        return b"".join((entry.head[:-len(_ENTRY_END)], source, _ENTRY_END))
    if not checked:
        _check_xml_text(text)
    return b"".join((entry.head, text.replace("&", "&amp;").replace("<", "&lt;")
                     .replace(">", "&gt;").replace("\r", "&#13;").encode(),
                     entry.tail[:-len(_ENTRY_END)], source, _ENTRY_END))


_ENTRY_END = b"  </entry>\n"
_SOURCE_START = b"<feed>\n  <entry>\n"


def source_xml(feed: FeedInfo) -> bytes:
    """An entry's atom:source element as it appears in a document (indented
    two levels), rendered once per source and publish: every entry of the
    source carries the same one."""
    wrapper = etree.Element("feed")
    etree.SubElement(wrapper, "entry").append(_source_element(feed))
    data = etree.tostring(wrapper, pretty_print=True, encoding="UTF-8", xml_declaration=False)
    return data[len(_SOURCE_START):-len(_ENTRY_END + _FEED_END)]


# What XML 1.0 cannot carry (lxml refuses it with this message)
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _check_xml_text(text: str) -> None:
    if _NOT_XML.search(text):
        raise ValueError("All strings must be XML compatible: Unicode or ASCII, "
                         "no NULL bytes or control characters")


def _entry_xml(config: Config, item: StoredItem, credit_language: str,
               body: str | None = None) -> bytes:
    """The entry feedgen writes for the item (`body`: in place of the text
    its policy publishes)."""
    name = item.source
    credit_settings = config.languages.get(credit_language)
    template = credit_template(credit_language, credit_settings.credit if credit_settings else None)
    policy = config.find_source(item.source)
    entry = FeedEntry()
    entry.register_extension("feedhub", _HubEntryExtension, atom=True, rss=False)
    entry.id(item.atom_id)
    entry.title(item.title or "(untitled)")
    entry.author(name=item.author or name)
    entry.published(item.published)
    entry.updated(item.updated)
    entry.content(_entry_html(item, name, template, policy.publish if policy else "full", body),
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
    wrapper = etree.Element("feed")  # at the depth it has in a document
    wrapper.append(entry.atom_entry())
    data = etree.tostring(wrapper, pretty_print=True, encoding="UTF-8", xml_declaration=False)
    return data[len(_WRAPPER_START):-len(_FEED_END)]


SUMMARY_CHARACTERS = 400
# elements that start a paragraph of their own in an excerpt
_BLOCKS = frozenset({"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5",
                     "h6", "blockquote", "pre", "table", "tr", "td", "th", "caption", "figure",
                     "figcaption", "section", "article", "aside", "header", "footer", "address",
                     "hr", "br"})
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def _entry_html(item: StoredItem, source_name: str, template: str, policy: str = "full",
                body: str | None = None) -> str:
    """The article (all of it, a summary, or nothing, as the source's
    `publish` policy allows; `body` in its place) wrapped with its language
    and direction, and the credit line at the foot."""
    direction = ' dir="rtl"' if is_rtl(item.language) else ""
    lang = html.escape(item.language)
    credit = _credit(item, source_name, template)
    if body is None:
        body = published_body(item, policy)
    return (f'<div lang="{lang}"{direction}>{body}'
            f'<p class="feedhub-credit"{direction}>{credit}</p></div>')


def _credit(item: StoredItem, source_name: str, template: str) -> str:
    return render_credit(template, source_name=source_name, link=item.link,
                         author=item.author or source_name, date=item.published)


def published_body(item: StoredItem, policy: str) -> str:
    """What the source's `publish` policy lets the hub show of an article:
    all of it, a summary, or nothing but the link."""
    return _summary_html(item) if policy == "summary" else "" if policy == "link" else item.content


def entry_parts(config: Config, item: StoredItem, credit_language: str) -> tuple[str, str]:
    """The article as published (published_body) and its credit line in
    `credit_language`: what an Atom entry's content carries, for a page."""
    settings = config.languages.get(credit_language)
    template = credit_template(credit_language, settings.credit if settings else None)
    policy = config.find_source(item.source)
    return (published_body(item, policy.publish if policy else "full"),
            _credit(item, item.source, template))


def _summary_html(item: StoredItem) -> str:
    """What a licence that allows summaries only lets us publish, never the
    article itself: upstream's own summary when it is shorter than the
    article (kept as the sanitized HTML upstream wrote), else an excerpt."""
    article = _paragraphs(item.content)
    length = len(" ".join(article))
    if item.summary and 0 < len(" ".join(_paragraphs(item.summary))) < length:  # so: not the article
        return item.summary
    return _excerpt(article, min(SUMMARY_CHARACTERS, length // 2))


def _paragraphs(fragment: str | None) -> list[str]:
    """The text of an HTML fragment, one string per paragraph (block
    elements and <br> separate them), whitespace collapsed."""
    try:
        root = lxml.html.fragment_fromstring(fragment or "", create_parent="div")
    except (etree.ParserError, ValueError):
        return []
    for element in root.iter():
        if element.tag in _BLOCKS:
            element.tail = "\n\n" + (element.tail or "")
            if element.tag not in ("br", "hr"):
                element.text = "\n\n" + (element.text or "")
    return [text for part in _PARAGRAPH_BREAK.split(root.text_content())
            if (text := " ".join(part.split()))]


def _excerpt(paragraphs: Sequence[str], limit: int) -> str:
    """The first paragraphs, at most `limit` characters in all (a paragraph
    break counted as one), the last cut at a word boundary, ending " …"."""
    if not paragraphs:
        return ""
    room = max(limit - len(" …"), 0)
    kept: list[str] = []
    for paragraph in paragraphs:
        used = sum(len(p) + 1 for p in kept)  # a break after each
        if used + len(paragraph) <= room:
            kept.append(paragraph)
            continue
        space = room - used
        head = paragraph[:space + 1]  # one more: a space there means the word ends at `space`
        cut = head.rsplit(" ", 1)[0] if " " in head else ""
        if not cut and not kept and space > 0:  # no spaces to cut at (Chinese, Japanese …)
            cut = paragraph[:space]
        if cut:
            kept.append(cut)
        break
    if not kept:
        return "<p>…</p>"
    kept[-1] += " …"
    return "".join(f"<p>{html.escape(text)}</p>" for text in kept)


_BATCH: ContextVar[WriteBatch | None] = ContextVar("feedhub_publish_batch", default=None)


@contextlib.contextmanager
def batched_writes() -> Iterator[None]:
    """Within it, the files publishing writes (write_if_changed) replace
    their targets together when it ends: each still atomically, all made
    durable by one sync and one fsync per directory, not two fsyncs each.
    Files written in one batch appear only when it ends: what must be on
    disk before something else is written (archive pages before the feeds
    that link to them) goes in an earlier batch. Nested, it joins the
    outer batch. On an error nothing of the batch is renamed into place."""
    if _BATCH.get() is not None:
        yield
        return
    with _batch(WriteBatch()) as batch:
        yield
        batch.commit()


@contextlib.contextmanager
def _batch(batch: WriteBatch) -> Iterator[WriteBatch]:
    token = _BATCH.set(batch)
    try:
        yield batch
    finally:
        _BATCH.reset(token)
        batch.discard()


# What a document worker process names its temp files: what one that was
# killed leaves behind is told apart from the publishing process's own.
WORKER_TEMP = ".part.tmp"


@contextlib.contextmanager
def handed_over_writes() -> Iterator[list[tuple[str, Path]]]:
    """batched_writes in a worker process: the files are written to temp
    files, which are not renamed but handed over (the list it yields, filled
    when it ends: temp file and target, in order) for the publishing process
    to commit with its own batch (adopt_writes). On an error they are removed."""
    temps: list[tuple[str, Path]] = []
    with _batch(WriteBatch(temp_suffix=WORKER_TEMP)) as batch:
        yield temps
        temps.extend(batch.handover())


def adopt_writes(temps: Sequence[tuple[str, Path]]) -> None:
    """Commit a worker's temp files (handed_over_writes) with the current
    batch, after the files written in it so far."""
    batch = _BATCH.get()
    assert batch is not None, "adopt_writes outside batched_writes"
    batch.adopt(temps)


_LATER_COPIES: ContextVar[dict[Path, None] | None] = ContextVar("feedhub_later_copies",
                                                                  default=None)


@contextlib.contextmanager
def copies_later() -> Iterator[dict[Path, None]]:
    """Within it, write_if_changed leaves a document's compressed copies
    for later: the documents whose copies are due, in order, are kept in
    what it yields, for write_copies once every feed is on disk (a first
    publish at 1,000 sources: the feeds exist 2 s sooner). A document that
    changes loses its old copies in the same batch, just before it is
    replaced, so no copy is ever sent for a document it does not hold
    (nginx's gzip_static does not compare dates); until its new copies
    are written, it is sent uncompressed."""
    later: dict[Path, None] = {}
    token = _LATER_COPIES.set(later)
    try:
        yield later
    finally:
        _LATER_COPIES.reset(token)


def leaving_copies_for_later() -> bool:
    """Whether write_if_changed leaves copies for later here (copies_later)."""
    return _LATER_COPIES.get() is not None


def leave_copies_for_later(paths: Iterable[Path]) -> None:
    """Documents a worker wrote within its copies_later, handed to the publishing process's."""
    later = _LATER_COPIES.get()
    assert later is not None, "leave_copies_for_later outside copies_later"
    later.update(dict.fromkeys(paths))


def write_copies(path: Path) -> bool:
    """A document's compressed copies, made from the document on disk
    (copies_later left them for later), in the current batch. False if
    the document is gone (removed since: nothing to copy)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return False
    _write(path, None, _derived(compressed_copies(path)), data)
    return True


def remove_worker_temps(folders: Iterable[Path], keep: Iterable[str]) -> None:
    """Remove what document workers that died left in these folders (temp
    files of theirs that are not in `keep`, the ones handed over)."""
    kept = set(keep)
    for folder in folders:
        for leftover in folder.glob(f".*{WORKER_TEMP}") if folder.is_dir() else ():
            if str(leftover) not in kept:
                leftover.unlink(missing_ok=True)


# Documents that get precompressed copies beside them (NAME.gz, NAME.br), for
# the server (server.py) and nginx's gzip_static/brotli_static to send as
# they are: compressing a 600 KB feed on every request held a server to 62
# requests a second. Deterministic (gzip mtime 0): the same bytes for the
# same document on the same machine. The levels are a publish's cost, and
# copies were most of a cold publish's (issue 13): on the bench's 257 MB of
# feeds, gzip 4 took 2.9 s of CPU and brotli 3 1.6 s; ISA-L's gzip level 3
# (isal) takes 0.85 s for copies 7% larger, brotli 1 0.74 s for copies 5%
# larger than brotli 3 (still smaller than gzip 4's). bench/compression.py
# measures them. ISA-L picks its code by CPU (one output for every x86-64
# CPU with SSE4.2, another below it and on ARM): nodes of another
# architecture may write other gzip bytes for the same document, and so
# another ETag for its gzip copy (the document's own ETag is the same).
COMPRESSED_TYPES = (".atom", ".html", ".opml", ".json")
ENCODINGS = {".br": lambda data: brotli.compress(data, quality=1),
             ".gz": lambda data: igzip.compress(data, compresslevel=3, mtime=0)}


def compressed_copies(path: Path) -> list[Path]:
    """NAME.br and NAME.gz beside a document that has them, else nothing."""
    if path.suffix not in COMPRESSED_TYPES:
        return []
    return [path.with_name(path.name + suffix) for suffix in ENCODINGS]


def has_copies(present: set[str], name: str) -> bool:
    """Whether a directory listing holds NAME and its compressed copies."""
    return name in present and (not name.endswith(COMPRESSED_TYPES) or
                                all(name + suffix in present for suffix in ENCODINGS))


def _stale_copies(path: Path) -> list[Path]:
    """Compressed copies missing (an output dir from before them) or older
    than the document (it was replaced by other means)."""
    copies = compressed_copies(path)
    if not copies:
        return []
    try:
        written = path.stat().st_mtime_ns
    except FileNotFoundError:
        return copies
    stale = []
    for copy in copies:
        try:
            if copy.stat().st_mtime_ns < written:
                stale.append(copy)
        except FileNotFoundError:
            stale.append(copy)
    return stale


def write_if_changed(path: Path, data: bytes) -> bool:
    """Write the document if its bytes changed, with its compressed copies
    in the same batch (they appear with it); a copy missing on disk is
    written even when the document is unchanged. True if the document was."""
    try:
        changed = path.read_bytes() != data
    except FileNotFoundError:
        changed = True
    copies = compressed_copies(path) if changed else _stale_copies(path)
    if not changed and not copies:
        return False
    if (later := _LATER_COPIES.get()) is not None and copies:
        later[path] = None
        # any old copies go as it is replaced (even a lost document's), and
        # an unchanged document's outdated ones now: none waits to be sent
        _write(path, data if changed else None, [], data, removed=copies)
        return changed
    _write(path, data if changed else None, _derived(copies), data)
    return changed


def _derived(copies: Iterable[Path]) -> list[tuple[Path, Callable[[bytes], bytes]]]:
    """Each copy with what makes it of its document's bytes."""
    return [(copy, ENCODINGS[copy.name[-3:]]) for copy in copies]


def _write(path: Path, data: bytes | None, derived: list[tuple[Path, Callable[[bytes], bytes]]],
           source: bytes, removed: Sequence[Path] = ()) -> None:
    """WriteBatch.write in the current batch, or in a batch of its own."""
    with batched_writes():
        _BATCH.get().write(path, data, derived=derived,  # type: ignore[union-attr]
                           source=source, removed=removed)


def remove_document(path: Path) -> None:
    """Delete a document and its compressed copies."""
    for copy in compressed_copies(path):
        copy.unlink(missing_ok=True)
    path.unlink(missing_ok=True)


def published_languages(output_dir: Path) -> list[str]:
    """Language feeds already on disk: a language whose last source was
    removed must be rewritten (empty), not left stale."""
    if not output_dir.is_dir():
        return []
    return sorted(m.group(1) for p in output_dir.iterdir()
                  if (m := _FEED_FILE.match(p.name)) and m.group(1) != ALL)


def publish_feeds(config: Config, feeds: Mapping[str, Entries], *,
                  archived_pages: Mapping[str, int] | None = None) -> list[PublishedFeed]:
    """Write the subscription documents of the given languages.
    `archived_pages`: each language's newest archive page, for
    its prev-archive link."""
    output = config.hub.output_dir
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for language, items in sorted(feeds.items()):
        pages = (archived_pages or {}).get(language, 0)
        published = _publish(language_document(config, language, archived_pages=pages),
                             output / f"{language}.atom", items, config, language)
        if published:
            results.append(published)
    return results


def publish_archive(config: Config, language: str, page: int,
                    items: Entries) -> PublishedFeed | None:
    """Write one archive page. Called when the page is new, lost from disk
    or changed by a takedown: otherwise an archive is never touched."""
    return _publish(archive_document(config, language, page),
                    config.hub.output_dir / archive_path(language, page), items, config, language)


def missing_archive_pages(config: Config, language: str, last: int) -> list[int]:
    """Pages 1..last of a language with no file, or no HTML page beside it
    (a new page, an output directory restored without its archive/, or a
    hub that has just begun to write pages)."""
    folder = config.hub.output_dir / ARCHIVE_DIR / language
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    wanted = (".atom", ".html") if config.hub.pages else (".atom",)
    return [page for page in range(1, last + 1)
            if not all(has_copies(present, f"{page}{suffix}") for suffix in wanted)]


# Raised when the same items come out differently (issue 11: summaries),
# so that per-source feeds stamped by an older feedhub are rendered again.
RENDERING = 2


def source_feed_stamp(config: Config, name: str, inputs: Sequence[tuple[object, ...]]) -> str:
    """A fingerprint of everything a source's own feed is rendered from:
    its items (ids, change times, hashes), the upstream feed's fields, and
    the settings that shape the document (hub, languages and credits, the
    source's policy, feedhub's version). Same fingerprint, same bytes."""
    settings = (config.hub.title, config.hub.base_url, config.hub.items_per_feed,
                config.hub.websub_hubs, sorted(config.languages.items()),
                config.find_source(name), __version__, RENDERING)
    return hashlib.sha256(repr((settings, list(inputs))).encode()).hexdigest()


def source_feed_files(config: Config) -> set[str]:
    """The per-source feed files on disk (one directory read)."""
    folder = config.hub.output_dir / SOURCES_DIR
    return {p.name for p in folder.iterdir()} if folder.is_dir() else set()


def publish_source_feed(config: Config, name: str, slug: str,
                        items: Entries) -> PublishedFeed | None:
    """Write one source's own feed, feeds/sources/<slug>.atom."""
    return _publish(source_document(config, name, slug), _source_feed_path(config, slug), items,
                    config, name)


def unchanged_source_feed(config: Config, name: str, slug: str, entries: int) -> PublishedFeed:
    """A source feed left as it is (its inputs did not change), for the report."""
    return PublishedFeed(name, _source_feed_path(config, slug), entries, False,
                         source_document(config, name, slug).url)


def _source_feed_path(config: Config, slug: str) -> Path:
    return config.hub.output_dir / SOURCES_DIR / f"{slug}.atom"


def remove_stale_source_feeds(config: Config, slugs: Mapping[str, str]) -> None:
    """Delete the feeds of sources no longer configured (`slugs`: every
    configured source's file name): their items have left every feed."""
    folder = config.hub.output_dir / SOURCES_DIR
    if folder.is_dir():
        wanted = {f"{slug}{suffix}" for slug in slugs.values() for suffix in (".atom", ".html")}
        for stale in [*folder.glob("*.atom"), *folder.glob("*.html")]:
            if stale.name not in wanted:
                remove_document(stale)
                log.info("removed %s: its source is no longer configured", stale)
        for orphan in [*folder.glob("*.atom.*"), *folder.glob("*.html.*")]:  # a copy left alone
            if orphan.suffix in ENCODINGS and orphan.name[:-3] not in wanted:
                orphan.unlink(missing_ok=True)


def _publish(document: FeedDocument, path: Path, items: Entries, config: Config,
             label: str) -> PublishedFeed | None:
    try:
        if isinstance(items, DocumentEntries):
            if items.error:
                raise ValueError(items.error)
            data = assemble(config, document, [entry_bytes(entry, text, source, checked=True)
                                               for entry, text, source in items.entries],
                            items.updated or _emptied_at(path))
        else:
            data = render_document(config, document, items,
                                   emptied=None if items else _emptied_at(path))
    except ValueError as exc:  # feedgen refuses what XML cannot carry
        log.error("cannot render %s, previous file kept: %s", path, exc)
        return None
    written = write_if_changed(path, data)  # its folder made if missing (WriteBatch)
    count = len(items.entries) if isinstance(items, DocumentEntries) else len(items)
    return PublishedFeed(label, path, count, written, document.url)


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


def _emptied_at(path: Path) -> datetime:
    """When the document at `path`, about to be written with no entries,
    became empty: the <updated> of the file on disk if it has no entries
    either (so that publishing again leaves its bytes alone), else now."""
    updated = None
    try:
        for event, element in etree.iterparse(
                str(path), events=("start", "end"), tag=(f"{ATOM}entry", f"{ATOM}updated"),
                resolve_entities=False, no_network=True):
            if element.tag == f"{ATOM}entry":  # it had entries: it becomes empty now
                return _now()
            parent = element.getparent()
            if event == "end" and parent is not None and parent.getparent() is None:
                updated = datetime.fromisoformat(element.text or "")  # the feed's own
    except (OSError, etree.XMLSyntaxError, ValueError):
        return _now()  # no file yet (or none we can read): empty from now on
    return updated or _now()


def publish_index(config: Config, slugs: Mapping[str, str],
                  ) -> tuple[list[str], list[tuple[str, str]]]:
    """index.opml: every feed on disk, by language and by source (`slugs`:
    the file name of every configured source). Returns them, for
    index.html (pages.py): the languages, and each source's name and slug."""
    output = config.hub.output_dir
    languages = published_languages(output)
    if (output / f"{ALL}.atom").exists():
        languages.append(ALL)
    present = source_feed_files(config)
    sources = [(name, slug) for name, slug in slugs.items() if f"{slug}.atom" in present]
    write_if_changed(output / "index.opml", render_opml(config, languages, sources))
    return languages, sources


def publish_page(path: Path, data: bytes) -> bool:
    """Write an HTML page (pages.py renders it) if its bytes changed."""
    return write_if_changed(path, data)  # its folder made if missing (WriteBatch)


def feed_title(config: Config, language: str) -> str:
    if language == ALL:
        return f"{config.hub.title} (all languages)"
    settings = config.languages.get(language)
    return (settings and settings.title) or f"{config.hub.title} ({language})"


def render_opml(config: Config, languages: Iterable[str],
                sources: Sequence[tuple[str, str]] = ()) -> bytes:
    opml = ET.Element("opml", version="2.0")
    head = ET.SubElement(opml, "head")
    ET.SubElement(head, "title").text = config.hub.title
    body = ET.SubElement(opml, "body")
    for language in languages:
        outline = ET.SubElement(body, "outline", type="rss", text=feed_title(config, language),
                                title=feed_title(config, language),
                                xmlUrl=feed_url(config, language),
                                htmlUrl=_page_of(config, f"{language}.atom") or
                                f"{config.hub.base_url}index.html")
        if language != ALL:  # OPML's language is a language code: all.atom's are many
            outline.set("language", language)
    if sources:  # a folder: a text alone (more would need a type)
        group = ET.SubElement(body, "outline", text="By source")
        for name, slug in sources:
            document = source_document(config, name, slug)
            ET.SubElement(group, "outline", type="rss", text=name, title=document.title,
                          xmlUrl=document.url,
                          htmlUrl=document.page or f"{config.hub.base_url}index.html")
    ET.indent(opml)
    return ET.tostring(opml, encoding="UTF-8", xml_declaration=True) + b"\n"
