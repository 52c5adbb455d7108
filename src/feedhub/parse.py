"""feedparser -> Items.

feedparser is given the bytes that fetch read and the response headers
(lower-case keys, `content-location` set to the final URL), never a URL: it
must not do network I/O of its own. Its sanitizer and URI resolution are
turned off here because enrich does both, faster and stricter.
"""

from __future__ import annotations

import calendar
import hashlib
import html
import re
import time
from datetime import UTC, datetime
from typing import Any

import feedparser

from feedhub.models import FeedInfo, FetchResult, Item, Link, ParsedFeed

# An internal DTD subset is where entity-expansion attacks live; real feeds
# do not need one, and feedparser's loose parser expands them without limit.
_INTERNAL_SUBSET = re.compile(rb"<!DOCTYPE[^\[>]*\[.*?\]\s*>", re.DOTALL | re.IGNORECASE)
_ENTITY = "<!ENTITY"
_WIDE_ENTITY = tuple(_ENTITY.encode(codec) for codec in ("utf-16-le", "utf-16-be", "utf-32-le",
                                                         "utf-32-be"))


def _without_entity_declarations(body: bytes) -> bytes:
    """Strip internal DTD subsets wherever they are; refuse a body that still
    declares entities (in a wide encoding, or hidden from the pattern)."""
    upper = body.upper()
    if any(marker in upper for marker in _WIDE_ENTITY):
        raise ParseError("the feed declares XML entities (<!ENTITY>) in a UTF-16/32 DTD: "
                         "refused as a possible entity-expansion attack")
    if _ENTITY.encode() not in upper:
        return body
    body = _INTERNAL_SUBSET.sub(b"", body)
    if _ENTITY.encode() in body.upper():
        raise ParseError("the feed declares XML entities (<!ENTITY>) outside a DOCTYPE we can "
                         "strip: refused as a possible entity-expansion attack")
    return body


class ParseError(Exception):
    """The body is not a feed we can read; the message says what it is instead."""


def parse_feed(result: FetchResult) -> ParsedFeed:
    body = result.content
    if not body.strip():
        raise ParseError("empty response body: not a feed")
    body = _without_entity_declarations(body)
    headers = dict(result.headers)
    headers["content-location"] = result.final_url
    headers.pop("content-encoding", None)  # fetch already decoded the body
    data = feedparser.parse(
        body, response_headers=headers, sanitize_html=False, resolve_relative_uris=False
    )
    if not data.get("version") and not data.entries:
        kind = headers.get("content-type", "no content type").split(";")[0].strip()
        if "html" in kind or re.match(rb"\s*(<!doctype html|<html)", body[:512], re.IGNORECASE):
            raise ParseError(f"it is an HTML page ({kind}), not an RSS or Atom feed")
        reason = data.get("bozo_exception")
        raise ParseError(
            f"not an RSS or Atom feed ({kind}" + (f"; {reason}" if reason else "") + ")"
        )
    fetched_at = result.fetched_at
    info = _feed_info(data.feed, result.final_url)
    items = tuple(_item(entry, fetched_at) for entry in data.entries)
    warning = None
    if data.bozo:
        warning = f"malformed feed, read what could be read: {data.get('bozo_exception')}"
    ttl = str(data.feed.get("ttl", "")).strip()
    return ParsedFeed(info=info, items=items, warning=warning,
                      ttl=int(ttl) * 60 if ttl.isdigit() else None)


def _date(parsed: time.struct_time | None) -> datetime | None:
    if not parsed:
        return None
    try:
        return datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    except (OverflowError, ValueError, OSError):
        return None


def _links(raw_links: list[dict[str, Any]]) -> tuple[Link, ...]:
    links = []
    for raw in raw_links or []:
        href = raw.get("href")
        if not href:
            continue
        length = raw.get("length")
        links.append(Link(
            href=href,
            rel=raw.get("rel") or "alternate",
            type=raw.get("type") or None,
            title=raw.get("title") or None,
            length=int(length) if str(length or "").isdigit() else None,
        ))
    return tuple(links)


def _feed_info(feed: Any, final_url: str) -> FeedInfo:
    links = list(_links(feed.get("links", [])))
    if not any(link.rel == "self" for link in links):
        links.append(Link(href=final_url, rel="self"))
    if feed.get("link") and not any(link.rel == "alternate" for link in links):
        links.append(Link(href=feed["link"]))
    return FeedInfo(
        id=feed.get("id") or None,
        title=_plain(feed.get("title")),
        subtitle=_plain(feed.get("subtitle")),
        links=tuple(links),
        updated=_date(dict.get(feed, "updated_parsed")),
        language=feed.get("language") or None,
        rights=_plain(feed.get("rights")),
    )


def _plain(text: str | None) -> str | None:
    """Titles may arrive as HTML; the hub publishes them as plain text."""
    if not text:
        return None
    text = html.unescape(re.sub(r"<[^>]*>", "", text)).strip()
    return text or None


def _as_html(detail: dict[str, Any]) -> str:
    value = detail.get("value", "")
    if detail.get("type") == "text/plain":
        return "<p>" + html.escape(value).replace("\n\n", "</p><p>") + "</p>"
    return value


def _item(entry: Any, fetched_at: datetime) -> Item:
    title = _plain(entry.get("title")) or ""
    link = entry.get("link") or None
    author_detail = entry.get("author_detail") or {}
    author = _plain(author_detail.get("name") or entry.get("author"))

    # dict.get: FeedParserDict would fall back from updated to published
    # (deprecated); the two mean different things here.
    updated = _date(dict.get(entry, "updated_parsed"))
    published = _date(dict.get(entry, "published_parsed")) or updated
    estimated = published is None
    if published is None or published > fetched_at:
        published = fetched_at
    if updated is not None and updated > fetched_at:
        updated = fetched_at

    # feedparser copies a lone <content> into summary too: "content" in entry
    # tells what upstream really sent.
    contents = entry.get("content") or []
    html_contents = [c for c in contents if c.get("type") in ("text/html", "application/xhtml+xml")]
    chosen = (html_contents or contents or [None])[0]
    summary_detail = entry.get("summary_detail") or {}
    summary = _as_html(summary_detail) if summary_detail.get("value") else None
    if chosen is not None and chosen.get("value"):
        content, is_full, base = _as_html(chosen), True, chosen.get("base")
        language = chosen.get("language")
    else:
        content, is_full, base = summary or "", False, summary_detail.get("base")
        language = summary_detail.get("language")
    language = language or (entry.get("title_detail") or {}).get("language")

    upstream_id = entry.get("id") or link
    if not upstream_id:
        stamp = dict.get(entry, "published") or dict.get(entry, "updated") or ""
        upstream_id = "sha256:" + hashlib.sha256(f"{title}\n{stamp}".encode()).hexdigest()

    enclosures = tuple(
        link_ for link_ in _links(entry.get("links", [])) if link_.rel == "enclosure"
    )
    categories = tuple(
        dict.fromkeys(t.get("term") for t in entry.get("tags", []) if t.get("term"))
    )
    return Item(
        upstream_id=upstream_id,
        title=title,
        link=link,
        author=author,
        published=published,
        published_estimated=estimated,
        updated=updated,
        content=content,
        content_is_full=is_full,
        summary=summary if is_full else None,
        language=language or None,
        content_base=base or link,
        categories=categories,
        enclosures=enclosures,
        rights=_plain(entry.get("rights")),
    )
