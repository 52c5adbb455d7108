"""The source list as OPML 2.0, out and in: how feed readers and other hubs
exchange subscriptions. Extra outline attributes (language, interval,
fulltext) carry feedhub's per-source settings; other readers ignore them."""

from __future__ import annotations

from collections.abc import Iterable
from xml.etree import ElementTree as ET

from feedhub.config import format_duration, parse_duration
from feedhub.models import SourceConfig, normalize_language


class OpmlError(Exception):
    pass


def export_opml(sources: Iterable[SourceConfig], title: str) -> bytes:
    opml = ET.Element("opml", version="2.0")
    ET.SubElement(ET.SubElement(opml, "head"), "title").text = title
    body = ET.SubElement(opml, "body")
    for source in sources:
        outline = ET.SubElement(body, "outline", type="rss", text=source.name, title=source.name,
                                xmlUrl=source.url)
        if source.language:
            outline.set("language", source.language)
        if source.interval:
            outline.set("interval", format_duration(source.interval))
        if source.fulltext != "auto":
            outline.set("fulltext", source.fulltext)
    ET.indent(opml)
    return ET.tostring(opml, encoding="UTF-8", xml_declaration=True) + b"\n"


def import_opml(data: bytes) -> list[SourceConfig]:
    """Every outline with an xmlUrl, folders included. A DOCTYPE is refused:
    ElementTree would expand its entities."""
    if b"<!DOCTYPE" in data.upper() or b"<!ENTITY" in data.upper():
        raise OpmlError("the OPML file declares a DOCTYPE or entities: refused")
    try:
        root = ET.fromstring(data)
    except ET.ParseError as exc:
        raise OpmlError(f"not well-formed OPML: {exc}") from None
    if root.tag != "opml":
        raise OpmlError(f"not an OPML file (root element <{root.tag}>)")
    sources = []
    for outline in root.iter("outline"):
        url = (outline.get("xmlUrl") or "").strip()
        if not url:
            continue
        name = (outline.get("title") or outline.get("text") or url).strip()
        language = normalize_language(outline.get("language") or "") or None
        try:
            interval = parse_duration(outline.get("interval")) if outline.get("interval") else None
        except ValueError:
            interval = None
        fulltext = outline.get("fulltext") or ""
        if fulltext not in ("always", "never"):
            fulltext = "auto"
        sources.append(SourceConfig(name=name, url=url, language=language, interval=interval,
                                    fulltext=fulltext))
    return sources
