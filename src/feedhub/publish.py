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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import lxml.html
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from feedhub import __version__
from feedhub._files import WriteBatch, atomic_write
from feedhub.credits import credit_template, render_credit
from feedhub.models import Config, FeedInfo, Link, StoredItem, is_rtl, primary_subtag

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
class FeedDocument:
    """What one published Atom document is: its address, name and place in
    an RFC 5005 archived feed."""

    url: str
    title: str
    language: str | None  # None: a mixed feed whose entries each carry their own
    feed_id: str  # archive pages share the id of the logical feed they belong to
    prev_archive: str | None = None
    current: str | None = None  # set on archive documents only

    @property
    def is_archive(self) -> bool:
        return self.current is not None


def language_document(config: Config, language: str, *, archived_pages: int = 0) -> FeedDocument:
    """The subscription document of a language feed (or of all.atom)."""
    url = feed_url(config, language)
    prev = f"{config.hub.base_url}{archive_path(language, archived_pages)}" if archived_pages else None
    return FeedDocument(url, _feed_title(config, language), None if language == ALL else language,
                        url, prev_archive=prev)


def archive_document(config: Config, language: str, page: int) -> FeedDocument:
    current = feed_url(config, language)
    prev = f"{config.hub.base_url}{archive_path(language, page - 1)}" if page > 1 else None
    return FeedDocument(f"{config.hub.base_url}{archive_path(language, page)}",
                        _feed_title(config, language), language, current,
                        prev_archive=prev, current=current)


def source_document(config: Config, source: str, slug: str) -> FeedDocument:
    url = f"{config.hub.base_url}{SOURCES_DIR}/{slug}.atom"
    return FeedDocument(url, f"{config.hub.title}: {source}", None, url)


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
    language = document.language
    settings = config.languages.get(language) if language else None
    fg = FeedGenerator()
    fg.register_extension("feedhub", _HubFeedExtension, _HubEntryExtension, atom=True, rss=False)
    fg.id(document.feed_id)
    fg.title(document.title)
    if settings and settings.subtitle:
        fg.subtitle(settings.subtitle)
    fg.link(href=document.url, rel="self", type="application/atom+xml")
    fg.link(href=f"{config.hub.base_url}index.html", rel="alternate", type="text/html")
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
    fg.updated(max((item.updated for item in items), default=emptied or _now()))
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
        policy = config.find_source(item.source)
        entry.content(_entry_html(item, name, template,
                                  policy.publish if policy else "full"), type="html")
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


SUMMARY_CHARACTERS = 400
# elements that start a paragraph of their own in an excerpt
_BLOCKS = frozenset({"p", "div", "li", "ul", "ol", "dl", "dt", "dd", "h1", "h2", "h3", "h4", "h5",
                     "h6", "blockquote", "pre", "table", "tr", "td", "th", "caption", "figure",
                     "figcaption", "section", "article", "aside", "header", "footer", "address",
                     "hr", "br"})
_PARAGRAPH_BREAK = re.compile(r"\n\s*\n")


def _entry_html(item: StoredItem, source_name: str, template: str, policy: str = "full") -> str:
    """The article (all of it, a summary, or nothing, as the source's
    `publish` policy allows) wrapped with its language and direction, and
    the credit line at the foot."""
    direction = ' dir="rtl"' if is_rtl(item.language) else ""
    lang = html.escape(item.language)
    credit = render_credit(template, source_name=source_name, link=item.link,
                           author=item.author or source_name, date=item.published)
    if policy == "summary":
        body = _summary_html(item)
    elif policy == "link":
        body = ""
    else:
        body = item.content
    return (f'<div lang="{lang}"{direction}>{body}'
            f'<p class="feedhub-credit"{direction}>{credit}</p></div>')


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
    batch = WriteBatch()
    token = _BATCH.set(batch)
    try:
        yield
        batch.commit()
    finally:
        _BATCH.reset(token)
        batch.discard()


def write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    if (batch := _BATCH.get()) is not None:
        batch.write(path, data)
    else:
        atomic_write(path, data)
    return True


def published_languages(output_dir: Path) -> list[str]:
    """Language feeds already on disk: a language whose last source was
    removed must be rewritten (empty), not left stale."""
    if not output_dir.is_dir():
        return []
    return sorted(m.group(1) for p in output_dir.iterdir()
                  if (m := _FEED_FILE.match(p.name)) and m.group(1) != ALL)


def publish_feeds(config: Config, feeds: Mapping[str, Sequence[StoredItem]], *,
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
                    items: Sequence[StoredItem]) -> PublishedFeed | None:
    """Write one archive page. Called when the page is new, lost from disk
    or changed by a takedown: otherwise an archive is never touched."""
    return _publish(archive_document(config, language, page),
                    config.hub.output_dir / archive_path(language, page), items, config, language)


def missing_archive_pages(config: Config, language: str, last: int) -> list[int]:
    """Pages 1..last of a language with no file (a new page, or an output
    directory restored without its archive/)."""
    folder = config.hub.output_dir / ARCHIVE_DIR / language
    present = {p.name for p in folder.iterdir()} if folder.is_dir() else set()
    return [page for page in range(1, last + 1) if f"{page}.atom" not in present]


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
                        items: Sequence[StoredItem]) -> PublishedFeed | None:
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
        wanted = {f"{slug}.atom" for slug in slugs.values()}
        for stale in folder.glob("*.atom"):
            if stale.name not in wanted:
                stale.unlink(missing_ok=True)
                log.info("removed %s: its source is no longer configured", stale)


def _publish(document: FeedDocument, path: Path, items: Sequence[StoredItem], config: Config,
             label: str) -> PublishedFeed | None:
    try:
        data = render_document(config, document, items,
                               emptied=None if items else _emptied_at(path))
    except ValueError as exc:  # feedgen refuses what XML cannot carry
        log.error("cannot render %s, previous file kept: %s", path, exc)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    written = write_if_changed(path, data)
    return PublishedFeed(label, path, len(items), written, document.url)


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


def publish_index(config: Config, slugs: Mapping[str, str]) -> None:
    """index.html and index.opml: every feed on disk, by language and by
    source (`slugs`: the file name of every configured source)."""
    output = config.hub.output_dir
    languages = published_languages(output)
    if (output / f"{ALL}.atom").exists():
        languages.append(ALL)
    present = source_feed_files(config)
    sources = [(name, slug) for name, slug in slugs.items() if f"{slug}.atom" in present]
    write_if_changed(output / "index.opml", render_opml(config, languages, sources))
    write_if_changed(output / "index.html", render_index_html(config, languages, sources))


def _feed_title(config: Config, language: str) -> str:
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
        ET.SubElement(body, "outline", type="rss", text=_feed_title(config, language),
                      title=_feed_title(config, language), xmlUrl=feed_url(config, language),
                      htmlUrl=f"{config.hub.base_url}index.html", language=language)
    if sources:
        group = ET.SubElement(body, "outline", text="By source", title="By source")
        for name, slug in sources:
            document = source_document(config, name, slug)
            ET.SubElement(group, "outline", type="rss", text=name, title=document.title,
                          xmlUrl=document.url, htmlUrl=f"{config.hub.base_url}index.html")
    ET.indent(opml)
    return ET.tostring(opml, encoding="UTF-8", xml_declaration=True) + b"\n"


def render_index_html(config: Config, languages: Iterable[str],
                      sources: Sequence[tuple[str, str]] = ()) -> bytes:
    title = html.escape(config.hub.title)
    source_rows = "\n".join(
        f'<li><a href="{SOURCES_DIR}/{slug}.atom" type="application/atom+xml">{html.escape(name)}</a></li>'
        for name, slug in sources)
    by_source = f"<h2>By source</h2>\n<ul>\n{source_rows}\n</ul>\n" if sources else ""
    rows = []
    for language in languages:
        direction = ' dir="rtl"' if is_rtl(language) else ""
        rows.append(
            f'<li lang="{language}"{direction}><a href="{language}.atom" type="application/atom+xml">'
            f"{html.escape(_feed_title(config, language))}</a> <code>{language}</code></li>")
    links = "\n".join(
        f'<link rel="alternate" type="application/atom+xml" hreflang="{language}" '
        f'title="{html.escape(_feed_title(config, language))}" href="{language}.atom">'
        for language in languages)
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{title}</title>
{links}
</head>
<body>
<h1>{title}</h1>
<p>Subscribe to a feed in your feed reader:</p>
<ul>
{chr(10).join(rows)}
</ul>
{by_source}<p><a href="index.opml">All feeds as OPML</a></p>
</body>
</html>
"""
    return page.encode("utf-8")
