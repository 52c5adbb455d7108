"""Stored items -> feeds/<lang>.atom, index.opml and index.html.

The only module that writes the output directory. Every file is written
atomically and only when its bytes change, so a feed reader's conditional
GET on an unchanged feed stays a 304 and nobody reads half a file.
"""

from __future__ import annotations

import html
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from xml.etree import ElementTree as ET

import lxml.html
from feedgen.ext.base import BaseEntryExtension, BaseExtension
from feedgen.feed import FeedGenerator
from lxml import etree

from feedhub import __version__
from feedhub._files import atomic_write
from feedhub.credits import credit_template, render_credit
from feedhub.models import Config, FeedInfo, Link, StoredItem, is_rtl, primary_subtag

log = logging.getLogger("feedhub.publish")

XML_LANG = "{http://www.w3.org/XML/1998/namespace}lang"
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
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
    """Registered only to carry the entry extension below."""


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
    etree.SubElement(source, "id").text = feed.id or self_link or feed.alternate or ""
    if feed.title:
        etree.SubElement(source, "title").text = feed.title
    if feed.subtitle:
        etree.SubElement(source, "subtitle").text = feed.subtitle
    for link in feed.links:
        if link.rel in ("self", "alternate"):
            source.append(_link_element(link))
    if feed.updated:
        etree.SubElement(source, "updated").text = feed.updated.isoformat()
    if feed.rights:
        etree.SubElement(source, "rights").text = feed.rights
    return source


def feed_url(config: Config, language: str) -> str:
    return f"{config.hub.base_url}{language}.atom"


def render_feed(config: Config, language: str, items: Sequence[StoredItem]) -> bytes:
    """The Atom document for one language, byte-for-byte the same for the same
    items (its <updated> is the newest item's, not the clock's)."""
    settings = config.languages.get(language)
    fg = FeedGenerator()
    fg.register_extension("feedhub", _HubFeedExtension, _HubEntryExtension, atom=True, rss=False)
    url = feed_url(config, language)
    fg.id(url)
    fg.title(_feed_title(config, language))
    if settings and settings.subtitle:
        fg.subtitle(settings.subtitle)
    fg.link(href=url, rel="self", type="application/atom+xml")
    fg.link(href=f"{config.hub.base_url}index.html", rel="alternate", type="text/html")
    if language != ALL:  # the all-languages feed has no one language; its entries each do
        fg.language(language)
    fg.generator("feedhub", version=__version__)
    fg.updated(max((item.updated for item in items), default=EPOCH))
    for item in items:
        name = item.source
        credit_language = language if language != ALL else primary_subtag(item.language)
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


def _entry_html(item: StoredItem, source_name: str, template: str, policy: str = "full") -> str:
    """The article (all of it, a summary, or nothing, as the source's
    `publish` policy allows) wrapped with its language and direction, and
    the credit line at the foot."""
    direction = ' dir="rtl"' if is_rtl(item.language) else ""
    lang = html.escape(item.language)
    credit = render_credit(template, source_name=source_name, link=item.link,
                           author=item.author or source_name, date=item.published)
    if policy == "summary":
        text = " ".join(lxml.html.fragment_fromstring(
            item.content or "<p></p>", create_parent="div").text_content().split())
        if len(text) > SUMMARY_CHARACTERS:
            text = text[:SUMMARY_CHARACTERS].rsplit(" ", 1)[0] + " …"
        body = f"<p>{html.escape(text)}</p>"
    elif policy == "link":
        body = ""
    else:
        body = item.content
    return (f'<div lang="{lang}"{direction}>{body}'
            f'<p class="feedhub-credit"{direction}>{credit}</p></div>')


def write_if_changed(path: Path, data: bytes) -> bool:
    try:
        if path.read_bytes() == data:
            return False
    except FileNotFoundError:
        pass
    atomic_write(path, data)
    return True


def published_languages(output_dir: Path) -> list[str]:
    """Language feeds already on disk: a language whose last source was
    removed must be rewritten (empty), not left stale."""
    if not output_dir.is_dir():
        return []
    return sorted(m.group(1) for p in output_dir.iterdir()
                  if (m := _FEED_FILE.match(p.name)) and m.group(1) != ALL)


def publish_feeds(config: Config,
                  feeds: Mapping[str, Sequence[StoredItem]]) -> list[PublishedFeed]:
    output = config.hub.output_dir
    output.mkdir(parents=True, exist_ok=True)
    results = []
    for language, items in sorted(feeds.items()):
        path = output / f"{language}.atom"
        try:
            document = render_feed(config, language, items)
        except ValueError as exc:  # feedgen refuses what XML cannot carry
            log.error("cannot render %s, previous file kept: %s", path, exc)
            continue
        written = write_if_changed(path, document)
        results.append(PublishedFeed(language, path, len(items), written, feed_url(config, language)))
    all_languages = sorted((set(published_languages(output)) | set(feeds)) - {ALL})
    if (output / f"{ALL}.atom").exists():
        all_languages.append(ALL)
    write_if_changed(output / "index.opml", render_opml(config, all_languages))
    write_if_changed(output / "index.html", render_index_html(config, all_languages))
    return results


def _feed_title(config: Config, language: str) -> str:
    if language == ALL:
        return f"{config.hub.title} (all languages)"
    settings = config.languages.get(language)
    return (settings and settings.title) or f"{config.hub.title} ({language})"


def render_opml(config: Config, languages: Iterable[str]) -> bytes:
    opml = ET.Element("opml", version="2.0")
    head = ET.SubElement(opml, "head")
    ET.SubElement(head, "title").text = config.hub.title
    body = ET.SubElement(opml, "body")
    for language in languages:
        ET.SubElement(body, "outline", type="rss", text=_feed_title(config, language),
                      title=_feed_title(config, language), xmlUrl=feed_url(config, language),
                      htmlUrl=f"{config.hub.base_url}index.html", language=language)
    ET.indent(opml)
    return ET.tostring(opml, encoding="UTF-8", xml_declaration=True) + b"\n"


def render_index_html(config: Config, languages: Iterable[str]) -> bytes:
    title = html.escape(config.hub.title)
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
<p><a href="index.opml">All feeds as OPML</a></p>
</body>
</html>
"""
    return page.encode("utf-8")
