"""feedparser -> Items.

feedparser is given the bytes that fetch read and the response headers
(lower-case keys, `content-location` set to the final URL), never a URL: it
must not do network I/O of its own. Its sanitizer and URI resolution are
turned off here because enrich does both, faster and stricter. JSON Feed,
which feedparser does not read, is mapped onto the same Items by jsonfeed.py.
"""

from __future__ import annotations

import calendar
import functools
import hashlib
import html
import re
import time
from collections.abc import Callable, Container, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple
from urllib.parse import urljoin, urlsplit
from xml.sax import SAXParseException

import feedparser
import feedparser.api
import feedparser.mixin
import feedparser.urls
import lxml.etree
import lxml.html

from feedhub.models import FeedInfo, FetchResult, Item, Link, ParsedFeed, estimate_time

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


# feedparser's complaints about a document its XML parser still read to the
# end (a declared charset or Content-Type that was wrong): nothing was lost.
# Any other complaint means the XML parser gave up and the loose parser
# recovered what it could.
READ_IN_FULL = (feedparser.CharacterEncodingOverride, feedparser.NonXMLContentType)

# expat with its character data buffered (see _expat.py); and always expat:
# feedparser would prefer libxml2's driver where its bindings happen to be
# installed, and items must not read differently on such a machine
feedparser.api.PREFERRED_XML_PARSERS[:] = ["feedhub._expat"]

# feedparser tracks xml:base by joining the base with each element's own
# (most often none) at every start tag: 300,000 urllib joins for the bench's
# 1,000 feeds, 10-15% of a worker's CPU. Both joins are pure functions of
# their two strings (and of feedparser's fixed list of URI schemes), so a
# small cache of their results changes no item and skips nearly every join.


def _remembered(join: Callable[..., str]) -> Callable[..., str]:
    cached = functools.lru_cache(maxsize=1024)(join)

    def remembered(*args: Any) -> str:
        # a long argument (a hostile link text of megabytes) is not kept
        if any(not isinstance(arg, str | None) or (arg and len(arg) > _REMEMBERED_LENGTH)
               for arg in args):
            return join(*args)
        return cached(*args)
    return remembered


_REMEMBERED_LENGTH = 2048  # characters


feedparser.mixin.make_safe_absolute_uri = _remembered(feedparser.urls.make_safe_absolute_uri)
feedparser.mixin._urljoin = _remembered(feedparser.urls._urljoin)


def parse_feed(result: FetchResult, *, positions: Sequence[int] | None = None,
               document_base: str | None = None) -> ParsedFeed:
    """`positions`, `document_base`: for a document made of part of another
    (see parse_changed): where each of its entries is in the whole one (the
    hub's estimated dates depend on it), and the whole one's base."""
    body = result.content
    if not body.strip():
        raise ParseError("empty response body: not a feed")
    from feedhub import jsonfeed  # imported here: it builds on this module's helpers

    if jsonfeed.looks_like_json(result):  # before the XML guards: JSON text may say <!ENTITY
        return jsonfeed.parse_json_feed(result)
    body = _without_entity_declarations(body)
    headers = dict(result.headers)
    document_base = document_base or _document_base(body, result.final_url)
    headers["content-location"] = document_base
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
    broken = data.bozo and not isinstance(data.get("bozo_exception"), READ_IN_FULL)
    if broken and not data.entries:
        # the XML parser gave up and the loose one recovered nothing: an "ok"
        # with zero items would hide every article the feed really has
        raise ParseError(f"malformed XML, nothing could be read: {_complaint(data)}")
    fetched_at = result.fetched_at
    info = _feed_info(data.feed, result.final_url)
    # RFC 4287 4.2.1: Atom entries without an author inherit the feed's.
    # (RSS channel-level managingEditor is an editor, not the author.)
    feed_author = None
    if str(data.get("version", "")).startswith("atom"):
        feed_author = (data.feed.get("author_detail") or {}).get("name") or data.feed.get("author")
    if positions is None or len(positions) != len(data.entries):
        positions = range(len(data.entries))
    items = tuple(_item(entry, estimate_time(fetched_at, position), result.final_url,
                        document_base, feed_author)
                  for position, entry in zip(positions, data.entries, strict=True))
    # an item dated after the poll is read differently once that date has passed
    ahead = frozenset(n for n, (position, entry) in enumerate(zip(positions, data.entries,
                                                                   strict=True))
                      if _dated_ahead(entry, estimate_time(fetched_at, position)))
    warning = degraded = None
    if data.bozo:
        warning = f"malformed feed, read what could be read: {_complaint(data)}"
    if broken:  # what could be read is kept; the source is marked degraded
        degraded = f"malformed XML, {len(items)} entries recovered: {_complaint(data)}"
    ttl = str(data.feed.get("ttl", "")).strip()
    return ParsedFeed(info=info, items=items, warning=warning, degraded=degraded,
                      ttl=int(ttl) * 60 if ttl.isdigit() else None, ahead=ahead)


def _dated_ahead(entry: Any, fetched_at: datetime) -> bool:
    return any((moment := _date(dict.get(entry, key))) is not None and moment > fetched_at
               for key in ("published_parsed", "updated_parsed"))


def _complaint(data: Any) -> str:
    """feedparser's reason, for an operator: an XML error's line and column
    after the message, not as an "<unknown>:1:237:" prefix."""
    exc = data.get("bozo_exception")
    if isinstance(exc, SAXParseException):
        return f"{exc.getMessage()} (line {exc.getLineNumber()}, column {exc.getColumnNumber()})"
    return str(exc)


# feedparser keeps xml:base scopes only in a document with a base URI of its
# own: without one, a base declared on one entry stays in force for every
# element after it (its stack restores only non-empty bases), links and guids
# included. UNRESOLVED is a base URI it cannot resolve against (no
# hierarchical scheme): scopes work, and every relative reference stays as
# written -- a guid that looks relative ("12345") too, so an item's identity
# does not change with the URL it was fetched from. A relative xml:base needs
# the real URL to resolve against: a document that declares one gets it.
UNRESOLVED = "feedhub:unresolved"
_RELATIVE_XML_BASE = re.compile(rb"xml:base\s*=\s*[\"'](?![A-Za-z][A-Za-z0-9+.-]*:|[\"'])")


def _document_base(body: bytes, final_url: str) -> str:
    return final_url if _RELATIVE_XML_BASE.search(body) else UNRESOLVED


def _declared_base(base: str | None, document_base: str) -> str | None:
    """The xml:base in scope, absolute; None where the document declares none
    (feedparser then reports the document's own base)."""
    return base if base and base != document_base else None


def _http_url(url: str | None) -> str | None:
    """An absolute http(s) URL, or None: only such a link can be a base."""
    try:
        parts = urlsplit(url or "")
    except ValueError:
        return None
    return url if parts.scheme.lower() in ("http", "https") and parts.netloc else None


# Placeholder dates stand for "no date": Go's zero time (year 1, written by
# Hugo sites with no date), the Unix epoch, and anything before the web had
# feeds. Treated like a missing date, not published as the article's date.
PLAUSIBLE_SINCE = datetime(1990, 1, 1, tzinfo=UTC)


def _date(parsed: time.struct_time | None) -> datetime | None:
    if not parsed:
        return None
    try:
        moment = datetime.fromtimestamp(calendar.timegm(parsed), UTC)
    except (OverflowError, ValueError, OSError):
        return None
    return moment if moment >= PLAUSIBLE_SINCE else None


_MEDIA_TYPE = re.compile(r"^[\w.+-]+/[\w.+-]+$")
# a scheme and no whitespace; http(s) also needs a host ("http:foo" is not)
_ABSOLUTE_IRI = re.compile(r"^(?!https?:(?!//[^/\s]))[A-Za-z][A-Za-z0-9+.-]*:"
                           r'[^\s<>"{}|\\^`\x00-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]+$',
                           re.IGNORECASE)


def _join(base: str, href: str) -> str | None:
    """`href` made absolute, or None for one urllib cannot read
    ("http://[::1" raises ValueError): upstream's bad link is no link, and
    fails neither its feed nor a page's other links."""
    try:
        return urljoin(base, href)
    except ValueError:
        return None


def _links(raw_links: list[dict[str, Any]], base: str) -> tuple[Link, ...]:
    links = []
    for raw in raw_links or []:
        href = raw.get("href")
        if not href or href == UNRESOLVED:  # href="" resolved against UNRESOLVED
            continue
        if (href := _join(base, href.strip())) is None:  # "http://[::1": not a link
            continue
        length = str(raw.get("length") or "")
        media_type = raw.get("type") or ""
        links.append(Link(
            href=href,
            rel=raw.get("rel") or "alternate",
            type=media_type if _MEDIA_TYPE.match(media_type) else None,
            title=raw.get("title") or None,
            length=int(length) if length.isdigit() else None,
        ))
    return tuple(links)


def _feed_info(feed: Any, final_url: str) -> FeedInfo:
    links = list(_links(feed.get("links", []), final_url))
    if not any(link.rel == "self" for link in links):
        links.append(Link(href=final_url, rel="self"))
    if feed.get("link") not in (None, "", UNRESOLVED) and not any(
            link.rel == "alternate" for link in links) and (href := _join(final_url, feed["link"])):
        links.append(Link(href=href))
    feed_id = (feed.get("id") or "").strip()
    return FeedInfo(
        id=feed_id if _ABSOLUTE_IRI.match(feed_id) else None,  # atom:id must be an IRI
        title=_text_of(feed, "title"),
        subtitle=_text_of(feed, "subtitle"),
        links=tuple(links),
        updated=_date(dict.get(feed, "updated_parsed")),
        language=feed.get("language") or None,
        rights=_text_of(feed, "rights"),
    )


def _text_of(element: Any, key: str) -> str | None:
    """A title-like field as plain text: feedparser has already decoded text
    constructs; only an HTML one ("Kids &lt;5" is text, <b>x</b> is markup)
    needs its markup taken out."""
    value = element.get(key)
    if not value:
        return None
    detail = element.get(f"{key}_detail") or {}
    if detail.get("type") in ("text/html", "application/xhtml+xml"):
        value = _html_to_text(value)
    return " ".join(value.split()) or None


def _html_to_text(fragment: str) -> str:
    try:
        return lxml.html.fragment_fromstring(fragment, create_parent="div").text_content()
    except (lxml.etree.ParserError, ValueError):
        return html.unescape(re.sub(r"<[^>]*>", " ", fragment))


def _as_html(detail: dict[str, Any]) -> str:
    value = detail.get("value", "")
    if detail.get("type") == "text/plain":
        return "<p>" + html.escape(value).replace("\n\n", "</p><p>") + "</p>"
    return value


def item_dates(published: datetime | None, updated: datetime | None,
               fetched_at: datetime) -> tuple[datetime, bool, datetime | None]:
    """(published, estimated, updated) from an item's plausible upstream dates
    (see _date), the same for every format. No date, or one in the future:
    the hub's own estimate (first seen), which the store keeps from the first
    poll on; a future `updated` is of no use (the item's date stands in)."""
    published = published or updated
    estimated = published is None or published > fetched_at
    if published is None or estimated:  # the same test, spelt out for the type checker
        published = fetched_at
    if updated is not None and updated > fetched_at:
        updated = None
    return published, estimated, updated


# RSS 2.0's <author>: "address (Name)". feedparser cuts the name out of it
# with a pattern that ends an address's last label after four letters, so
# "desk@news.example (Desk)" gives the name "ple (Desk)"
_ADDRESS_AND_NAME = re.compile(r"^\s*[^\s@()<>]+@[^\s@()<>]+\s*\(([^()]*[^()\s][^()]*)\)\s*$")


def _author_name(entry: Any) -> str | None:
    if match := _ADDRESS_AND_NAME.match(entry.get("author") or ""):
        return match.group(1).strip()
    return (entry.get("author_detail") or {}).get("name") or entry.get("author")


def _item(entry: Any, fetched_at: datetime, feed_url: str, document_base: str,
          feed_author: str | None) -> Item:
    """`fetched_at`: when the feed was read, made this entry's own by
    estimate_time."""
    title = _text_of(entry, "title") or ""
    # feedparser has resolved the link against the xml:base in scope, if any
    raw_link = (entry.get("link") or "").strip()
    link = _join(feed_url, raw_link) if raw_link not in ("", UNRESOLVED) else None
    author = (_author_name(entry) or feed_author or "").strip() or None

    # dict.get: FeedParserDict would fall back from updated to published
    # (deprecated); the two mean different things here.
    published, estimated, updated = item_dates(_date(dict.get(entry, "published_parsed")),
                                               _date(dict.get(entry, "updated_parsed")), fetched_at)

    # feedparser copies a lone <content> into summary too: "content" in entry
    # tells what upstream really sent.
    contents = entry.get("content") or []
    html_contents = [c for c in contents if c.get("type") in ("text/html", "application/xhtml+xml")]
    chosen = (html_contents or contents or [None])[0]
    summary_detail = entry.get("summary_detail") or {}
    summary = _as_html(summary_detail) if summary_detail.get("value") else None
    if chosen is not None and chosen.get("value"):
        content, is_full, detail = _as_html(chosen), True, chosen
    else:
        content, is_full, detail = summary or "", False, summary_detail
    language = detail.get("language") or (entry.get("title_detail") or {}).get("language")

    upstream_id = entry.get("id") or link
    if not upstream_id:
        stamp = dict.get(entry, "published") or dict.get(entry, "updated") or ""
        upstream_id = "sha256:" + hashlib.sha256(f"{title}\n{stamp}".encode()).hexdigest()

    # RSS defines no base: relative URLs resolve where the author meant them,
    # against xml:base where declared, else the article's own page (a feed
    # served from FeedBurner or a feeds. host is not where its images live),
    # else the feed URL -- as Miniflux does.
    page = _http_url(link) or feed_url
    entry_base = _declared_base((entry.get("title_detail") or summary_detail).get("base"),
                                document_base)
    enclosures = tuple(link_ for link_ in _links(entry.get("links", []), entry_base or page)
                       if link_.rel == "enclosure")
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
        content_base=_declared_base(detail.get("base"), document_base) or page,
        summary_base=_declared_base(summary_detail.get("base"), document_base) or page,
        categories=categories,
        enclosures=enclosures,
        rights=_text_of(entry, "rights"),
    )


# --- feed discovery: the feeds an HTML page points to ---------------------------

# The media types of <link rel="alternate"> that announce a feed we read:
# RSS, Atom and JSON Feed. Plain application/json only when the page links
# nothing else (JSON Feed 1.1: prefer application/feed+json, fall back to
# application/json): WordPress links its REST API with it on every page.
FEED_LINK_TYPES = frozenset({"application/rss+xml", "application/atom+xml",
                             "application/feed+json", "application/json"})
_FALLBACK_LINK_TYPE = "application/json"
_HTML_START = re.compile(rb"^(?:\xef\xbb\xbf)?\s*(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html[\s>])",
                         re.IGNORECASE | re.DOTALL)


def looks_like_html(result: FetchResult) -> bool:
    """Whether a body that parse_feed refused is a web page, where feed
    discovery has something to look at (a JSON error or an image has not)."""
    kind = result.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind in ("text/html", "application/xhtml+xml"):
        return True
    return bool(_HTML_START.match(result.content[:1024]))


def feed_links(page: bytes | str, page_url: str, *, encoding: str | None = None) -> tuple[Link, ...]:
    """The feeds a page announces with <link rel="alternate" type=RSS|Atom|JSON>,
    in document order without repeats, hrefs made absolute (against <base
    href> when the page has one). `encoding` is the charset of the response
    header, if any: without it a UTF-8 body is read as UTF-8 (libxml2 would
    guess Latin-1 for a page without <meta charset>), anything else as the
    page declares."""
    if isinstance(page, str):  # lxml refuses text with an <?xml encoding?> declaration
        page, encoding = page.encode("utf-8"), "utf-8"
    if encoding is None:
        try:
            page.decode("utf-8")
            encoding = "utf-8"
        except UnicodeDecodeError:
            pass
    try:
        parser = lxml.html.HTMLParser(encoding=encoding) if encoding else None
    except LookupError:  # a charset the server made up: let the page say
        parser = None
    try:
        root = lxml.html.document_fromstring(page, parser=parser)
    except (lxml.etree.ParserError, ValueError, LookupError):
        return ()
    base = page_url
    for element in root.iter("base"):
        if (href := (element.get("href") or "").strip()):
            base = _join(page_url, href) or page_url
            break  # HTML: only the first <base href> counts
    links: dict[str, Link] = {}
    for element in root.iter("link"):
        rel = (element.get("rel") or "").lower().split()
        media_type = (element.get("type") or "").split(";")[0].strip().lower()
        href = (element.get("href") or "").strip()
        if "alternate" not in rel or media_type not in FEED_LINK_TYPES or not href:
            continue
        url = (_join(base, href) or "").split("#", 1)[0]
        if not url.lower().startswith(("http://", "https://")) or url in links:
            continue
        title = " ".join((element.get("title") or "").split()) or None
        links[url] = Link(href=url, rel="alternate", type=media_type, title=title)
    found = tuple(links.values())
    preferred = tuple(link for link in found if link.type != _FALLBACK_LINK_TYPE)
    return preferred or found


# --- items unchanged: a body that differs only in the feed's own dates ---------

# Many publishers rewrite <lastBuildDate> or the feed's <updated> on every
# request: the body hash never matches though no item changed. The
# fingerprint is the body's hash with the text of those feed-level date
# elements left out, so such a body is recognised without feedparser; the
# one thing they feed (FeedInfo.updated: atom:source's <updated>) is read
# from the element by feedparser's own date parser. Conservative by
# construction: only a plain element (no attributes, no prefix, text without
# markup or entities) before the first item, DOCTYPE or processing
# instruction, and outside comments and CDATA sections, is left out;
# everything else, items included, is hashed as it came. Encodings in which
# those bytes might not be those characters (UTF-16/32, ISO-2022, ...) are
# hashed whole.
_FEED_DATE_SCAN = re.compile(
    rb"<!--.*?-->|<!\[CDATA\[.*?\]\]>"  # skipped over, hashed as they are
    rb"|<(lastBuildDate|pubDate|updated)>([\t\x20-\x25\x27-\x3b\x3d-\x7e]*)</\1>"  # left out
    rb"|<(?:[A-Za-z_][\w.-]*:)?(?:item|entry)[\s/>]|<[!?]",  # the end of the feed's own part
    re.DOTALL)
_XML_DECLARATION = re.compile(rb"(?:\xef\xbb\xbf)?<\?xml[^<>]*\?>")
_DECLARED_ENCODING = re.compile(rb"""^(?:\xef\xbb\xbf)?<\?xml[^<>]*?encoding\s*=\s*["']([^"']*)""")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([^\"';\s]*)", re.IGNORECASE)
_BYTE_SAFE_CHARSETS = frozenset({"utf-8", "utf8", "us-ascii", "ascii", "iso-8859-1", "latin-1",
                                 "latin1", "iso-8859-15", "windows-1252", "cp1252"})
FINGERPRINT = "v2:"  # v1 was SHA-256: a stored v1 digest never matches, one parse, then this


def plain_hash(body: bytes) -> str:
    """A body's hash, for "body unchanged". SHA-1, like the fingerprint: a
    poll hashes every body it gets (94 MB in a round of 1,000 feeds), and
    SHA-1 runs at three times SHA-256's speed on this hardware; what it
    guards is no secret (upstream controls its own bytes anyway)."""
    return hashlib.sha1(body, usedforsecurity=False).hexdigest()


class Fingerprint(NamedTuple):
    digest: str
    dated: bool  # whether feed-level dates were left out of the digest
    updated: datetime | None  # the feed's updated they say (None: they say none)


def _byte_safe(body: bytes, content_type: str) -> bool:
    """Whether the body's markup can be read from its bytes as ASCII: not a
    wide or stateful encoding, by its BOM, declaration or Content-Type."""
    declared = _DECLARED_ENCODING.match(body)
    charset = _CHARSET.search(content_type)
    return not (b"\x00" in body[:4] or b"\x1b" in body or body[:2] in (b"\xff\xfe", b"\xfe\xff")
                or (declared and declared[1].decode("ascii", "replace").lower()
                    not in _BYTE_SAFE_CHARSETS)
                or (charset and charset[1].lower() not in _BYTE_SAFE_CHARSETS))


def body_fingerprint(result: FetchResult) -> Fingerprint:
    """The body's hash, but for the feed-level dates of a plain RSS or Atom
    document (see above). The final URL and the Content-Type go into it: both
    change how the same bytes are read."""
    body = result.content
    content_type = result.headers.get("content-type", "")
    digest = hashlib.sha1(f"{FINGERPRINT}{result.final_url}\n{content_type}\n".encode(),
                          usedforsecurity=False)  # see plain_hash
    start = declaration.end() if (declaration := _XML_DECLARATION.match(body)) else 0
    matches = []
    if _byte_safe(body, content_type):
        for match in _FEED_DATE_SCAN.finditer(body, start):
            if match[1] is not None:
                matches.append(match)
            elif not match[0].startswith((b"<!--", b"<![CDATA[")):
                break
    updated = None
    for match in matches:
        if match[1] != b"pubDate":  # feedparser: both are the feed's updated; the last one wins
            text = match[2].decode("ascii").strip()
            updated = _date(feedparser.datetimes._parse_date(text)) if text else None
            if updated is None:  # feedparser would leave it unset: hashed as it is
                matches = []
                break
    position = 0
    for match in matches:
        digest.update(body[position:match.start(2)])
        position = match.end(2)
    digest.update(body[position:])
    return Fingerprint(digest.hexdigest(), bool(matches), updated if matches else None)


# --- parse only what changed: a document split into its feed part and items ----

# A feed that gained a few items (or had one edited) is mostly bytes the hub
# has read before. item_split cuts a document into its own part (everything
# but the items) and each item's bytes; parse_changed gives feedparser the
# document without the items whose bytes are known, which reads the new ones
# exactly as in the whole document: an item element is read from its own
# bytes and the elements around it (namespaces, xml:base, xml:lang, the
# feed's language and author), and those are the feed's own part, which must
# be the one the known items were read in (its digest, dates left out as in
# body_fingerprint). Conservative by construction: any of these and there is
# no split (the whole document is parsed): JSON Feed; a wide or stateful encoding; a
# DOCTYPE, or a comment, CDATA section or processing instruction left open;
# an item with a namespace prefix (<atom:entry>), one inside another, an empty
# one (<item/>); anything but whitespace between two items; an item that
# declares a namespace prefix (feedparser keeps the prefix it saw first for a
# namespace for the rest of the document; a default namespace, xmlns="...",
# it keeps under no name, and so reads in scope). The caller checks the rest:
# that feedparser read as many entries as there are items, and did not
# complain.
_ITEM_SCAN = re.compile(
    rb"<!--.*?-->|<!\[CDATA\[.*?\]\]>|<\?.*?\?>"  # skipped over
    rb"|<(/?)(item|entry)(?=[\s/>])"  # an item's start or end
    rb"|<[!?]|</?[A-Za-z_][\w.-]*:(?:item|entry)[\s/>]",  # no split
    re.DOTALL)
_ITEM_START = re.compile(rb"""<(item|entry)(?:\s+[^\s=/<>"']+\s*=\s*(?:"[^"<]*"|'[^'<]*'))*\s*>""")
_ITEM_END = re.compile(rb"</(item|entry)\s*>")
SPLIT = "v1:"  # a new way of splitting changes every digest: one full parse, then this


class ItemSplit(NamedTuple):
    skeleton: str  # the feed's own part, final URL, Content-Type and base: what items are read in
    base: str  # the document's base (see _document_base): the whole document's
    spans: tuple[tuple[int, int], ...]  # each item's bytes, in document order
    digests: tuple[str, ...]  # and their digests


def item_split(result: FetchResult) -> ItemSplit | None:
    """The document cut into its own part and its items, or None where the
    cut might not be the one feedparser reads (see above)."""
    from feedhub import jsonfeed  # imported here: it builds on this module's helpers

    body = result.content
    if jsonfeed.looks_like_json(result) or not _byte_safe(
            body, result.headers.get("content-type", "")):
        return None
    spans: list[tuple[int, int]] = []
    start = None
    for match in _ITEM_SCAN.finditer(body):
        if match[2] is None:
            if match[0].startswith((b"<!--", b"<![CDATA[")) or (
                    match[0].startswith(b"<?") and match[0].endswith(b"?>")):
                continue
            return None
        if not match[1]:  # a start tag
            tag = _ITEM_START.match(body, match.start())
            if start is not None or tag is None:
                return None
            start = (match.start(), tag[1])
        else:
            end = _ITEM_END.match(body, match.start())
            if start is None or end is None or end[1] != start[1]:
                return None
            if spans and body[spans[-1][1]:start[0]].strip():
                return None
            spans.append((start[0], end.end()))
            start = None
    if start is not None:
        return None
    chunks = [body[begin:end] for begin, end in spans]
    if any(b"xmlns:" in chunk for chunk in chunks):
        return None
    first, last = (spans[0][0], spans[-1][1]) if spans else (len(body), len(body))
    base = _document_base(body, result.final_url)
    own = body_fingerprint(FetchResult(
        url=result.url, final_url=result.final_url, status=result.status,
        content=body[:first] + b"<entry/>" + body[last:], headers=result.headers,
        fetched_at=result.fetched_at))
    skeleton = hashlib.sha256(f"{SPLIT}{own.digest}\n{base}".encode()).hexdigest()
    return ItemSplit(skeleton, base, tuple(spans),
                     tuple(hashlib.sha256(chunk).hexdigest()[:32] for chunk in chunks))


def parse_changed(result: FetchResult, split: ItemSplit,
                  known: Container[str]) -> tuple[ParsedFeed, tuple[int, ...]] | None:
    """feedparser on the document without the items whose digest is `known`:
    the feed and the other items, read as in the whole document, and where
    each of those items is in it. None where that reading might differ: a
    complaint, or entries that are not the items given."""
    changed = tuple(n for n, digest in enumerate(split.digests) if digest not in known)
    body, spans = result.content, split.spans
    first, last = (spans[0][0], spans[-1][1]) if spans else (len(body), len(body))
    part = (body[:first] + b"\n".join(body[spans[n][0]:spans[n][1]] for n in changed)
            + body[last:])
    try:
        parsed = parse_feed(FetchResult(
            url=result.url, final_url=result.final_url, status=result.status, content=part,
            headers=result.headers, fetched_at=result.fetched_at),
            positions=changed, document_base=split.base)
    except ParseError:
        return None
    if parsed.warning is not None or len(parsed.items) != len(changed):
        return None
    return parsed, changed
