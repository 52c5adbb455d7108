"""JSON Feed 1.0 and 1.1 -> the same Items and FeedInfo as RSS and Atom.

feedparser reads no JSON Feed, so the json module reads it and this maps
its fields onto the models that parse.py fills from XML: enrich, store,
publish, full text and credits cannot tell the formats apart. Identity,
dates, content choice and relative URLs follow the rules parse.py applies
to XML (and reuse its helpers), with JSON Feed's own bases: the item's
url, else the feed's home_page_url or feed_url, else the fetch URL.

Upstream JSON is as hostile as upstream XML. Every field is type-checked:
a field of the wrong type is ignored, an item that is not an object or has
no identity is skipped, and both are counted in ParsedFeed.warning; what
cannot be read at all (not JSON, not a JSON Feed, no items list, nesting
deeper than the parser takes, no readable item) is a ParseError. A number
too large to be anything (over MAX_DIGITS digits, an infinity) is read as
a value of no type, so its field is ignored instead of failing the
document; NaN and Infinity (not JSON, but Python's json takes them) too.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections import Counter
from datetime import datetime
from typing import Any
from urllib.parse import urljoin, urlsplit

from feedparser.datetimes import _parse_date

from feedhub.models import FeedInfo, FetchResult, Item, Link, ParsedFeed, estimate_time
from feedhub.parse import (
    _ABSOLUTE_IRI,
    _MEDIA_TYPE,
    ParseError,
    _as_html,
    _date,
    _http_url,
    item_dates,
)

# application/feed+json since 1.1; application/json before, and still common
JSON_FEED_TYPES = frozenset({"application/feed+json", "application/json"})
VERSION_PREFIXES = ("https://jsonfeed.org/version/", "http://jsonfeed.org/version/")
MAX_ITEMS = 10_000  # read; the rest of a feed listing more is left (with a warning)
MAX_DIGITS = 64  # a number longer than this is no id, size or date: null
MAX_DATE_LENGTH = 64  # a longer "date" is none (and the date parser's regexes stay fast)
# What no XML document can hold but JSON strings can ("\u0000", "\ud800",
# "\ufffe"), and the C1 controls (which no IRI can hold; an XML feed's
# &#x80; comes out of feedparser as "€"): gone from every string read, as
# enrich.clean_text takes them out of text. lxml refuses the first kind in
# the Atom we write, UTF-8 (and so SQLite) refuses lone surrogates.
_NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x84\x86-\x9f\ud800-\udfff"
                       "\ufffe\uffff]")


def looks_like_json(result: FetchResult) -> bool:
    """JSON by its first character ({ or [), or served as JSON and not
    starting like XML (a mislabelled RSS feed is still read as RSS)."""
    kind = result.headers.get("content-type", "").split(";")[0].strip().lower()
    body = result.content[:256]
    try:
        head = body.decode(json.detect_encoding(body), "ignore")
    except LookupError:  # pragma: no cover - detect_encoding names codecs Python has
        return False
    head = head.lstrip("\ufeff \t\r\n")
    if head.startswith("<"):
        return False
    return head[:1] in ("{", "[") or kind in JSON_FEED_TYPES or kind.endswith("+json")


def parse_json_feed(result: FetchResult) -> ParsedFeed:
    document, notes = _load(result)
    if not isinstance(document, dict) or not _is_json_feed_version(document.get("version")):
        raise ParseError("JSON, but not a JSON Feed (no version https://jsonfeed.org/version/…)")
    raw_items = document.get("items")
    if not isinstance(raw_items, list):
        found = "none" if raw_items is None else _kind(raw_items)
        raise ParseError(f"a JSON Feed without an items list (items: {found})")

    problems = _Problems()
    info, base = _feed_info(document, result.final_url, problems)
    feed_author = _authors(document, problems)
    items: list[Item] = []
    for raw in raw_items[:MAX_ITEMS]:
        item = _item(raw, estimate_time(result.fetched_at, len(items)), base, feed_author,
                     problems)
        if item is not None:
            items.append(item)
    if raw_items and not items:
        raise ParseError(f"no item of the JSON Feed could be read: {problems.describe()}")
    if len(raw_items) > MAX_ITEMS:
        notes.append(f"the feed lists {len(raw_items):,} items: read the first {MAX_ITEMS:,}")
    if problems:
        notes.append(problems.describe())
    # items left unread (skipped, or past the cap) make the source degraded,
    # as entries lost to broken XML do; fields ignored alone do not
    degraded = (f"JSON Feed, {len(items)} items read: " + "; ".join(notes)
                if problems.skipped or len(raw_items) > MAX_ITEMS else None)
    return ParsedFeed(info=info, items=tuple(items), warning="; ".join(notes) or None,
                      degraded=degraded)


def _load(result: FetchResult) -> tuple[Any, list[str]]:
    """The parsed document and notes on what had to be forgiven (the
    encoding). JSON is UTF-8 (RFC 8259; UTF-16/32 are detected), else the
    charset the server declares, else UTF-8 with undecodable bytes replaced:
    what feedparser does with XML in a wrong encoding."""
    body, notes = result.content, []
    try:
        text = body.decode(json.detect_encoding(body))
    except UnicodeDecodeError:
        charset = _charset(result.headers.get("content-type", ""))
        try:
            text = body.decode(charset or "utf-8", "strict" if charset else "replace")
            notes.append(f"not UTF-8: read as {charset}" if charset
                         else "not valid UTF-8: undecodable bytes replaced")
        except (LookupError, UnicodeDecodeError):
            text = body.decode("utf-8", "replace")
            notes.append("not valid UTF-8: undecodable bytes replaced")
    try:
        return json.loads(text.lstrip("\ufeff"), parse_int=_integer, parse_float=_float,
                          parse_constant=lambda _: UNREADABLE), notes
    except RecursionError:
        raise ParseError("JSON nested too deeply to be a feed") from None
    except json.JSONDecodeError as exc:
        raise ParseError(f"not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
                         ) from None


class _Unreadable:
    """A number too large to be anything: of no type a field accepts."""


UNREADABLE = _Unreadable()


def _integer(digits: str) -> int | _Unreadable:
    # int() of 4,300+ digits raises (CVE-2020-10735): the document must not
    return int(digits) if len(digits) <= MAX_DIGITS else UNREADABLE


def _float(text: str) -> float | _Unreadable:
    if len(text) > MAX_DIGITS:
        return UNREADABLE
    value = float(text)
    return value if value - value == 0 else UNREADABLE  # 1e999 is inf


def _charset(content_type: str) -> str | None:
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"'):
            return value.strip().strip('"')
    return None


def _is_json_feed_version(version: object) -> bool:
    return isinstance(version, str) and version.strip().startswith(VERSION_PREFIXES)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            int: "a number", float: "a number", type(None): "null",
            _Unreadable: "an unreadable number"}.get(type(value), type(value).__name__)


class _Problems:
    """What was skipped or ignored, counted by reason, for the warning."""

    def __init__(self) -> None:
        self.skipped: Counter[str] = Counter()
        self.ignored: Counter[str] = Counter()

    def __bool__(self) -> bool:
        return bool(self.skipped or self.ignored)

    def describe(self) -> str:
        parts = []
        if self.skipped:
            reasons = ", ".join(f"{reason}: {n}" for reason, n in self.skipped.most_common())
            total = self.skipped.total()
            parts.append(f"{total} item{'s' if total != 1 else ''} skipped ({reasons})")
        if self.ignored:
            fields = ", ".join(f"{key} ({n})" for key, n in self.ignored.most_common())
            parts.append(f"fields of the wrong type ignored: {fields}")
        return "; ".join(parts)


def _field(obj: dict[str, Any], key: str, kind: type | tuple[type, ...],
           problems: _Problems) -> Any:
    """obj[key] if it is of `kind`, else None; a value of another kind (not
    null) is counted as ignored."""
    value = obj.get(key)
    if value is None:
        return None
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, kinds) and (bool in kinds or not isinstance(value, bool)):
        return value  # (JSON true is no number, though Python's bool is an int)
    problems.ignored[key] += 1
    return None


def _text(obj: dict[str, Any], key: str, problems: _Problems) -> str | None:
    """A string field, stripped, without what XML cannot hold; None if empty."""
    value = _field(obj, key, str, problems)
    if value is None:
        return None
    return _NOT_TEXT.sub("", value).strip() or None


def _url(obj: dict[str, Any], key: str, base: str, problems: _Problems) -> str | None:
    """A URL field resolved against `base`, if the result is http(s)."""
    value = _text(obj, key, problems)
    try:
        return _http_url(urljoin(base, value)) if value else None
    except ValueError:  # "http://[::1" and the like
        return None


def _feed_info(feed: dict[str, Any], final_url: str, problems: _Problems) -> tuple[FeedInfo, str]:
    """The feed for atom:source, and the base for its relative item URLs:
    home_page_url, else feed_url, else where it was fetched (JSON Feed has
    no xml:base; Miniflux resolves against the same). feed_url "serves as
    the unique identifier for the feed": it is the id and the self link.
    The icon (square, 512px; else the favicon, 64px) goes to atom:icon,
    which RFC 4287 allows in atom:source and fits: both are square."""
    home = _url(feed, "home_page_url", final_url, problems)
    self_url = _url(feed, "feed_url", final_url, problems)
    # no type on the self link: application/feed+json is true, but the W3C
    # validator warns of a self link that is not RSS or Atom (SelfNotAtom)
    links = [Link(href=self_url or final_url, rel="self")]
    if home:
        links.append(Link(href=home, type="text/html"))
    base = home or self_url or final_url
    icon = _url(feed, "icon", base, problems) or _url(feed, "favicon", base, problems)
    if icon:
        links.append(Link(href=icon, rel="icon"))
    title = _text(feed, "title", problems)
    return FeedInfo(
        id=self_url if self_url and _ABSOLUTE_IRI.match(self_url) else None,
        title=" ".join(title.split()) if title else None,
        subtitle=_text(feed, "description", problems),
        links=tuple(links),
        language=_text(feed, "language", problems),
    ), base


def _authors(obj: dict[str, Any], problems: _Problems) -> str | None:
    """The names of `authors` (1.1, preferred as the spec says) else of
    `author` (1.0), joined with ", "."""
    names = [name for author in _field(obj, "authors", list, problems) or []
             if isinstance(author, dict) and (name := _text(author, "name", problems))]
    if not names and (author := _field(obj, "author", dict, problems)):
        names = [name] if (name := _text(author, "name", problems)) else []
    return ", ".join(dict.fromkeys(" ".join(name.split()) for name in names)) or None


def _identity(value: object) -> str | None:
    """The item id: a string, or a number coerced to one (the spec asks
    readers to); blank or anything else is no id."""
    if isinstance(value, str):
        return _NOT_TEXT.sub("", value).strip() or None
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    return None


def _item(raw: object, fetched_at: datetime, feed_base: str, feed_author: str | None,
          problems: _Problems) -> Item | None:
    """One item, or None (counted) when it is not an object or has neither
    an id nor a url: without an identity it would come back as new on every
    poll (the spec has readers discard items without an id; the url, a
    permalink, is the stand-in other formats use too)."""
    if not isinstance(raw, dict):
        problems.skipped[f"not an object but {_kind(raw)}"] += 1
        return None
    url = _url(raw, "url", feed_base, problems)
    link = url or _url(raw, "external_url", feed_base, problems)
    if raw.get("id") is not None and _identity(raw["id"]) is None:
        problems.ignored["id"] += 1
    upstream_id = _identity(raw.get("id")) or url
    if not upstream_id:
        problems.skipped["no id or url"] += 1
        return None
    page = link or feed_base  # what relative URLs in the item mean

    published, estimated, updated = item_dates(_when(raw, "date_published", problems),
                                               _when(raw, "date_modified", problems), fetched_at)
    html = _text(raw, "content_html", problems)
    text = _text(raw, "content_text", problems)
    summary_text = _text(raw, "summary", problems)
    summary = _as_html({"value": summary_text, "type": "text/plain"}) if summary_text else None
    full = html or (_as_html({"value": text, "type": "text/plain"}) if text else None)
    title = _text(raw, "title", problems)
    tags = _field(raw, "tags", list, problems) or []
    return Item(
        upstream_id=upstream_id,
        title=" ".join(title.split()) if title else "",
        link=link,
        author=_authors(raw, problems) or feed_author,
        published=published,
        published_estimated=estimated,
        updated=updated,
        # the spec requires content_html or content_text; a summary alone is a teaser
        content=full or summary or "",
        content_is_full=full is not None,
        summary=summary if full else None,
        language=_text(raw, "language", problems),
        content_base=page,
        summary_base=page,
        categories=tuple(dict.fromkeys(
            tag for t in tags if isinstance(t, str) and (tag := " ".join(
                _NOT_TEXT.sub("", t).split())))),
        enclosures=_enclosures(raw, page, problems),
    )


def _when(obj: dict[str, Any], key: str, problems: _Problems) -> datetime | None:
    """An RFC 3339 date, read by feedparser's date parser (the one RSS and
    Atom dates go through, so the same mistakes are forgiven: RFC 822 dates,
    lower-case t/z) and held to the same plausibility rule (parse._date)."""
    value = _text(obj, key, problems)
    if not value or len(value) > MAX_DATE_LENGTH:
        return None
    try:
        return _date(_parse_date(value))
    except (ValueError, OverflowError, TypeError, IndexError):  # pragma: no cover - defensive
        return None


def _enclosures(item: dict[str, Any], page: str, problems: _Problems) -> tuple[Link, ...]:
    """attachments, then image and banner_image, as Atom enclosures. The
    images are enclosures rather than an <img> put into the content: the
    spec says image may already be in content_html (it would show twice),
    and the content stays what upstream wrote; an image enclosure is how RSS
    feeds carry a featured image, and readers show it as such."""
    found: dict[str, Link] = {}
    for raw in _field(item, "attachments", list, problems) or []:
        if not isinstance(raw, dict):
            problems.ignored["attachments"] += 1
            continue
        href = _url(raw, "url", page, problems)
        if not href:
            continue
        media_type = _text(raw, "mime_type", problems) or ""
        size = _field(raw, "size_in_bytes", (int, float), problems)
        found.setdefault(href, Link(
            href=href, rel="enclosure",
            type=media_type if _MEDIA_TYPE.match(media_type) else None,
            title=_text(raw, "title", problems),
            length=int(size) if size is not None and 0 <= size < 2**63 and size == int(size)
            else None,
        ))
    for key in ("image", "banner_image"):
        if (href := _url(item, key, page, problems)) and href not in found:
            guessed, _ = mimetypes.guess_type(urlsplit(href).path)
            found[href] = Link(href=href, rel="enclosure",
                               type=guessed if guessed and guessed.startswith("image/") else None)
    return tuple(found.values())

