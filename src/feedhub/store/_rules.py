"""The store's decisions and conversions, without SQL: written once for
both backends (_sqlite.py, _postgres.py), which differ only in how they ask.

Dates are stored as ISO 8601 text in UTC on both (see _iso): they sort as
they compare, and a hub moved between backends keeps them byte for byte.
"""

from __future__ import annotations

import functools
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any

from feedhub.models import (
    FeedInfo,
    Item,
    Link,
    SourceState,
    StoredItem,
    primary_subtag,
)

SCHEMA_VERSION = 12
# An item's published text. `content` holds it only where it differs from
# the text it is derived from: the extracted article if there is one, else
# the feed's text (NULL otherwise: most items, whose text would be stored
# twice). _published_column decides, on every write.
PUBLISHED_TEXT = "coalesce(items.content, items.extracted_content, items.feed_content)"
_NEWEST_FIRST = "ORDER BY items.published DESC, items.id DESC"
# what _stored_item reads of an item: not its texts but the one it publishes
_ITEM_COLUMNS = ", ".join(f"items.{column}" for column in (
    "id", "atom_id", "source", "title", "link", "author", "published", "updated", "language",
    "lang_group", "categories", "enclosures", "rights", "summary", "feed_content"))
REFETCH = "refetch requested"  # fulltext_status of items `feedhub refetch` marked


def _iso(value: datetime | None, *, exact: bool = False) -> str | None:
    """Upstream's dates to the second; the hub's own (first-seen estimates,
    edit times: `exact`) to the microsecond, where models.estimate_time and
    save_items keep them apart."""
    if not value:
        return None
    return value.astimezone(UTC).isoformat(timespec="microseconds" if exact else "seconds")


def _dt(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value) if value else None


def _links_json(links: Sequence[Link]) -> str:
    if not links:
        return "[]"  # the common case, without json's machinery
    return json.dumps([{k: v for k, v in asdict(link).items() if v is not None} for link in links])


def _json_list(values: Sequence[str]) -> str:
    return json.dumps(values) if values else "[]"


def _strings(value: str | None) -> tuple[str, ...]:
    """_json_list read back."""
    return tuple(json.loads(value)) if value and value != "[]" else ()


def _links(value: str | None) -> tuple[Link, ...]:
    if not value or value == "[]":  # the common case, without json's machinery
        return ()
    return tuple(Link(**raw) for raw in json.loads(value))


# What an item's rendered entry depends on besides its text, its source's
# feed (atom:source, put in when a document is assembled) and the settings:
# content_hash covers upstream's fields (title, link, author, dates, text,
# summary, language, categories, enclosures, rights), fulltext_at a new
# extraction, the rest what the hub decides. Changes with every change that
# could change the entry.
# (Joined by a literal U+001F, which both dialects read alike: SQLite's
# char(31) is PostgreSQL's chr(31).)
_ENTRY_VERSION = " || '\x1f' || ".join(f"coalesce({column}, '')" for column in (
    "items.updated", "items.published", "items.content_hash", "items.fulltext_at",
    "items.language", "items.lang_group", "items.atom_id"))
_Query = tuple[str, list[Any], int | None]


def _latest(lang_group: str | None, sources: Sequence[str], limit: int) -> _Query:
    marks = ",".join("?" * len(sources))
    return ("items.withdrawn IS NULL AND "
            + ("items.lang_group = ? AND " if lang_group is not None else "")
            + f"items.source IN ({marks})",
            [*([lang_group] if lang_group is not None else []), *sources], limit)


def _archive(lang_group: str, page: int) -> _Query:
    return ("items.withdrawn IS NULL AND items.archive_lang = ? AND items.archive_page = ?",
            [lang_group, page], None)


def _current(lang_group: str, sources: Sequence[str]) -> _Query:
    marks = ",".join("?" * len(sources))
    return (f"items.withdrawn IS NULL AND items.lang_group = ? AND "
            f"items.archive_page IS NULL AND items.source IN ({marks})",
            [lang_group, *sources], None)


def _of_source(source: str, limit: int) -> _Query:
    return "items.withdrawn IS NULL AND items.source = ?", [source], limit


def _source_state(row: dict[str, Any], items: int = 0) -> SourceState:
    return SourceState(
        name=row["name"], url=row.get("url"), etag=row.get("etag"),
        last_modified=row.get("last_modified"), last_poll=_dt(row.get("last_poll")),
        last_status=row.get("last_status"), last_error=row.get("last_error"),
        error_count=row.get("error_count") or 0, next_poll=_dt(row.get("next_poll")),
        items=items, body_hash=row.get("body_hash"), ttl=row.get("ttl"),
        retired=row.get("retired"), redirect_url=row.get("redirect_url"),
        redirect_count=row.get("redirect_count") or 0, degraded=row.get("degraded"),
        entries=row.get("entries"),
    )


def _atom_id(authority: str, seen_at: datetime, source: str, upstream_id: str) -> str:
    """A tag: URI (RFC 4151) minted once per item: never reused, never
    changed by upstream edits."""
    digest = hashlib.sha256(f"{source}\n{upstream_id}".encode()).hexdigest()[:24]
    return f"tag:{authority},{seen_at:%Y-%m-%d}:item/{digest}"


def _content_hash(item: Item) -> str:
    # An estimated date is the fetch time: it must not make every poll an edit.
    published = None if item.published_estimated else _iso(item.published)
    # the feed's own text: a page extraction must not look like an upstream edit
    fields = [item.title, item.link, item.author, published, item.feed_content or item.content,
              item.summary, item.language, _json_list(item.categories),
              _links_json(item.enclosures), item.rights]
    return hashlib.sha256("\x1f".join(f or "" for f in fields).encode()).hexdigest()


def _own_text(text: str | None, extracted: str | None, feed_text: str | None) -> str | None:
    """What the `content` column stores of the published `text`: nothing
    when it is the text it was derived from (see PUBLISHED_TEXT)."""
    derived_from = extracted if extracted is not None else feed_text
    return None if text == derived_from else text


def _item_row(item: Item, digest: str, seen_at: datetime) -> dict[str, Any]:
    row = {
        "upstream_id": item.upstream_id, "title": item.title, "link": item.link,
        "author": item.author, "published": _iso(item.published, exact=item.published_estimated),
        "published_estimated": int(item.published_estimated), "content": item.content,
        "content_is_full": int(item.content_is_full), "summary": item.summary,
        "language": item.language, "lang_group": primary_subtag(item.language or "und"),
        "categories": _json_list(item.categories), "enclosures": _links_json(item.enclosures),
        "rights": item.rights, "content_hash": digest,
        "detected_language": item.detected_language,
        "language_confidence": item.language_confidence,
        "feed_content": item.feed_content,
    }
    if item.fulltext_status is not None:  # extraction was tried on this poll
        row.update(extracted_content=item.extracted_content, fulltext_status=item.fulltext_status,
                   fulltext_link=item.link, fulltext_at=_iso(seen_at))
    return row


def _feed_info(row: dict[str, Any]) -> FeedInfo:
    return FeedInfo(
        id=row["feed_id"], title=row["feed_title"], subtitle=row["feed_subtitle"],
        links=_links(row["feed_links"]), updated=_dt(row["feed_updated"]),
        language=row["feed_language"], rights=row["feed_rights"],
    )


_FEED_KEYS = ("feed_id", "feed_title", "feed_subtitle", "feed_links", "feed_updated",
              "feed_language", "feed_rights")


@functools.lru_cache(maxsize=4096)
def _feed_info_of(values: tuple[Any, ...]) -> FeedInfo:
    """_feed_info of the _FEED_KEYS' values: the items of a document come
    from a few dozen feeds, and a full publish reads 60,000 items at 1,000
    sources, so equal feed rows are read once (a third of reading an item)."""
    return _feed_info(dict(zip(_FEED_KEYS, values, strict=True)))


def _stored_item(row: dict[str, Any]) -> StoredItem:
    feed = _feed_info_of(tuple(row[key] for key in _FEED_KEYS))
    return StoredItem(
        atom_id=row["atom_id"], source=row["source"], title=row["title"] or "",
        link=row["link"], author=row["author"],
        # NOT NULL columns, always written by _iso from a datetime
        published=datetime.fromisoformat(row["published"]),
        updated=datetime.fromisoformat(row["updated"]), content=row["published_text"] or "",
        language=row["language"] or row["lang_group"],
        categories=_strings(row["categories"]),
        enclosures=_links(row["enclosures"]), rights=row["rights"], feed=feed,
        summary=row["summary"] or (teaser if (teaser := row["feed_content"]) and
                                   teaser != row["published_text"] else None),
    )


def _settle_slugs(missing: Sequence[str], slugs: dict[str, str],
                  make: Callable[[str], str]) -> dict[str, str]:
    """The slugs to give the `missing` sources, given those already given
    (`slugs`, by name): `make(name)`, with a short hash of the name added
    if another source (configured or not) ever had that one."""
    taken = set(slugs.values())
    given: dict[str, str] = {}
    for name in missing:
        if name in slugs or name in given:
            continue
        slug = make(name)
        if slug in taken:
            slug = f"{slug}-{hashlib.sha1(name.encode()).hexdigest()[:8]}"
        given[name] = slug
        taken.add(slug)
    return given


def _pages_to_close(waiting: int, last_page: int, *, keep: int, page_size: int) -> list[int]:
    """The archive pages to file now, each of `page_size` items, while more
    than `keep + page_size - 1` items wait in the subscription feed (see
    Store.close_archive_pages)."""
    pages: list[int] = []
    if page_size <= 0:
        return pages
    while waiting >= keep + page_size:
        last_page += 1
        pages.append(last_page)
        waiting -= page_size
    return pages


# --- save_items' decisions: what a saved item does to its row ---------------------


def _settles(item: Item, previous: dict[str, Any] | None) -> bool:
    """Whether the item's row will hold exactly it after saving (see
    Store.save_items `settled`): a new item, or one found by its id (not by
    link) with no full text due."""
    return previous is None or (
        "fulltext_status" in previous  # found by id, not by link
        and (item.fulltext_status is not None or (
            previous["fulltext_status"] != REFETCH and (
                previous["fulltext_status"] is None
                or previous["fulltext_link"] == item.link))))


def _new_row(item: Item, digest: str, seen_at: datetime, source: str,
             id_authority: str) -> dict[str, Any]:
    """A new item's row: its atom id minted now, once; `updated` upstream's,
    else its published date."""
    row = _item_row(item, digest, seen_at)
    row["content"] = _own_text(row["content"], row.get("extracted_content"), row["feed_content"])
    row.update(
        source=source, first_seen=_iso(seen_at),
        atom_id=_atom_id(id_authority, seen_at, source, item.upstream_id),
        updated=_iso(item.updated) if item.updated else _iso(
            item.published, exact=item.published_estimated),
    )
    return row


def _changed_row(item: Item, digest: str, seen_at: datetime, hub_time: datetime,
                 previous_updated: str | None,
                 before: tuple[str | None, str | None] | None) -> dict[str, Any]:
    """The columns an edited item (new content hash) rewrites: not its
    identity, nor a first-seen date estimate; `updated` upstream's when it is
    newer, else the hub's time of the change. `before`: the stored
    (extracted text, link it was extracted from), read when this poll did
    not extract: an extraction of the same link is kept."""
    row = _item_row(item, digest, seen_at)
    extracted = row.get("extracted_content")
    if before is not None:
        extracted, link = before
        if extracted is not None and item.link is not None and link == item.link:
            row["content"] = extracted
    row["content"] = _own_text(row["content"], extracted, row["feed_content"])
    if item.published_estimated:  # keep the first-seen estimate
        del row["published"], row["published_estimated"]
    prior = _dt(previous_updated)
    if item.updated and (prior is None or item.updated > prior):
        row["updated"] = _iso(item.updated)
    else:
        row["updated"] = _iso(hub_time, exact=True)
    row.pop("upstream_id")  # matched by link: keep the identity it has
    return row


_REFETCHED_COLUMNS = frozenset({
    "content", "extracted_content", "fulltext_status", "fulltext_link", "fulltext_at", "language",
    "lang_group", "detected_language", "language_confidence"})


def _refetched_row(item: Item, digest: str, seen_at: datetime, hub_time: datetime,
                   stored_text: str | None, feed_text: str | None) -> tuple[dict[str, Any], bool]:
    """An unchanged feed item extracted again (refetch): the columns to
    rewrite, and whether its published text changed (then it is updated)."""
    row = {k: v for k, v in _item_row(item, digest, seen_at).items() if k in _REFETCHED_COLUMNS}
    row["content"] = _own_text(row["content"], row["extracted_content"], feed_text)
    changed = stored_text != item.content
    if changed:
        row["updated"] = _iso(hub_time, exact=True)
    return row, changed
