"""What the two stores share: every query written once, in the SQL that
SQLite and PostgreSQL both speak (`?` marks parameters; _postgres.py turns
them into psycopg's). A backend supplies its connection, its transactions,
its schema steps and the few answers that only its own engine gives
(size_bytes, integrity_check); the decisions are in _rules.py.

Items are keyed by (source, upstream id); the Atom id the hub publishes is
minted once, on insert, and never changes.
"""

from __future__ import annotations

import contextlib
import json
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, Self

from feedhub.models import (
    EntryRow,
    FeedInfo,
    Item,
    ItemBytes,
    NodeInfo,
    RenderedEntry,
    SourceFacts,
    SourceState,
    StoredItem,
    StoreOutcome,
    estimate_time,
    is_language,
    primary_subtag,
)
from feedhub.store._rules import (
    _ENTRY_VERSION,
    _FEED_KEYS,
    _ITEM_COLUMNS,
    _NEWEST_FIRST,
    PUBLISHED_TEXT,
    REFETCH,
    _archive,
    _changed_row,
    _content_hash,
    _current,
    _dt,
    _feed_info_of,
    _iso,
    _latest,
    _links_json,
    _new_row,
    _of_source,
    _pages_to_close,
    _refetched_row,
    _settle_slugs,
    _settles,
    _source_state,
    _stored_item,
)

# a source's upstream feed info (FeedInfo, read by _feed_info): the same
# columns in sources and in archive_sources
_FEED_COLUMNS = ", ".join(_FEED_KEYS)


def _feeds_by_name(cursor: Any) -> dict[str, FeedInfo]:
    """FeedInfo by name from rows of (name, _FEED_COLUMNS): archive pages
    share their sources' feeds, and a full publish reads 30,000 such rows
    at 1,000 sources, so equal rows are read once (_feed_info_of)."""
    return {row[0]: _feed_info_of(tuple(row[1:])) for row in cursor}


class Rows(Protocol):
    """What both drivers' cursors give (sqlite3's and psycopg's)."""

    @property
    def rowcount(self) -> int: ...
    @property
    def description(self) -> Any: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class SqlStore:
    """The queries of both stores. One per thread: neither driver's
    connection is shared across threads (but see the readers)."""

    # several daemons may share this database (PostgreSQL). SQLite is held by
    # one daemon (DaemonLock): a claim there always succeeds, even over the
    # lease of a daemon killed before its poll was recorded
    shared = True

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        raise NotImplementedError

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def _write(self) -> contextlib.AbstractContextManager[None]:
        """One write transaction that a read-then-write inside cannot lose
        to another process; inside an open transaction it joins it."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def size_bytes(self) -> int:
        raise NotImplementedError

    def integrity_check(self) -> str:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Group several writes (a poll's items and its new state) into one
        transaction: one commit, and either all of it is stored or none."""
        return self._write()

    # --- sources -----------------------------------------------------------

    _SOURCE_FIELDS = frozenset({"etag", "last_modified", "body_hash", "ttl", "retired",
                                "redirect_url", "redirect_count", "degraded", "entries",
                                "feed_updated"})

    def record_poll(self, source: str, *, url: str, at: datetime, status: int | None,
                    error: str | None, next_poll: datetime | None,
                    feed: FeedInfo | None = None, **changes: Any) -> None:
        """Remember the outcome of one poll: an error grows the source's error
        streak, a success resets it. `changes` sets other state columns
        (etag, last_modified, body_hash, ttl, retired, redirect_url,
        redirect_count; degraded and entries, set by a poll that parsed;
        feed_updated, by one that skipped parsing a feed whose date changed).
        A `feed` without a date is dated by the newest of the source's
        stored items."""
        unknown = set(changes) - self._SOURCE_FIELDS
        if unknown:
            raise TypeError(f"unknown source fields: {sorted(unknown)}")
        row: dict[str, Any] = {
            "url": url, "last_poll": _iso(at), "last_status": status,
            "last_error": error, "next_poll": _iso(next_poll), **changes,
            # the poll is over: its claim ends with it (see claim)
            "claimed_by": None, "lease_until": None,
        }
        if isinstance(row.get("feed_updated"), datetime):
            row["feed_updated"] = _iso(row["feed_updated"])
        if feed is not None:
            row.update({
                "feed_id": feed.id, "feed_title": feed.title, "feed_subtitle": feed.subtitle,
                "feed_links": _links_json(feed.links), "feed_updated": _iso(feed.updated),
                "feed_language": feed.language, "feed_rights": feed.rights,
            })
        values = {column: "?" for column in row}
        if feed is not None and feed.updated is None:
            # No feed-level date upstream: the newest date the hub has from
            # the source, its newest item's (this poll's items are saved in
            # the same transaction), so that atom:source has its <updated>.
            # published, not updated: the (source, published) index answers.
            values["feed_updated"] = "(SELECT max(published) FROM items WHERE source = ?)"
            row["feed_updated"] = source
        # Plain SQL: this runs once per poll (1,000 sources, every few
        # minutes), and sqlite-utils' update() adds a schema look-up per call.
        streak = "error_count + 1" if error else "0"
        # a success is remembered; a failure marks when its streak began
        since = ("last_success = last_success, failing_since = coalesce(failing_since, ?)"
                 if error else "last_success = ?, failing_since = NULL")
        with self._write():
            updated = self._execute(
                f"UPDATE sources SET {', '.join(f'{c} = {v}' for c, v in values.items())}, "
                f"error_count = {streak}, {since} WHERE name = ?",
                [*row.values(), _iso(at), source]).rowcount
            if not updated:
                self._execute(
                    f"INSERT INTO sources (name, {', '.join(values)}, error_count, "
                    f"{'failing_since' if error else 'last_success'}) "
                    f"VALUES (?, {', '.join(values.values())}, ?, ?)",
                    [source, *row.values(), 1 if error else 0, _iso(at)])

    def source_state(self, name: str) -> SourceState:
        """One source's state, cheap (no item count): read before every poll."""
        cursor = self._execute("SELECT * FROM sources WHERE name = ?", [name])
        row = cursor.fetchone()
        if row is None:
            return SourceState(name=name)
        return _source_state(dict(zip([d[0] for d in cursor.description], row, strict=True)))

    def source_states(self, names: Sequence[str] | None = None) -> list[SourceState]:
        """States with item counts, for `list` and `status`."""
        counts = dict(self._execute("SELECT source, count(*) FROM items GROUP BY source"))
        cursor = self._execute("SELECT * FROM sources")
        columns = [d[0] for d in cursor.description]
        rows = {row[0]: dict(zip(columns, row, strict=True)) for row in cursor}
        return [
            _source_state(rows.get(name) or {"name": name}, counts.get(name, 0))
            for name in (names if names is not None else sorted(rows))
        ]

    def scrape_states(self, names: Sequence[str]) -> list[SourceFacts]:
        """What /metrics needs of each named source, cheap at 10,000 sources:
        no item count (see SourceFacts.items), no date parsed."""
        rows = {row[0]: row for row in self._execute(
            "SELECT name, retired IS NOT NULL, last_poll, error_count, degraded IS NOT NULL, "
            "entries, CASE WHEN entries IS NULL AND EXISTS (SELECT 1 FROM items "
            "WHERE items.source = sources.name) THEN 1 ELSE 0 END, last_success, failing_since "
            "FROM sources")}
        never = (False, None, 0, False, None, 0, None, None)
        return [SourceFacts._make(rows.get(name) or (name, *never)) for name in names]

    def withdrawn_per_language(self) -> dict[str, int]:
        """Items a takedown withdrew, per language group (a partial index answers)."""
        return dict(self._execute(
            "SELECT lang_group, count(*) FROM items WHERE withdrawn IS NOT NULL GROUP BY lang_group"))

    def items_per_day(self, sources: Sequence[str], since: datetime
                      ) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]:
        """Items by the day (UTC, 'YYYY-MM-DD') they were published, from
        `since` on: per source, and per language group."""
        wanted = set(sources)
        by_source: dict[str, dict[str, int]] = {}
        by_language: dict[str, dict[str, int]] = {}
        for source, group, day, count in self._execute(
                "SELECT source, lang_group, substr(published, 1, 10) AS day, count(*) FROM items "
                "WHERE published >= ? GROUP BY source, lang_group, day", [_iso(since)]):
            if source not in wanted:
                continue
            per_source = by_source.setdefault(source, {})
            per_source[day] = per_source.get(day, 0) + count
            per_language = by_language.setdefault(group, {})
            per_language[day] = per_language.get(day, 0) + count
        return by_source, by_language

    def soonest_next_poll(self) -> datetime | None:
        row = self._execute(
            "SELECT min(next_poll) FROM sources WHERE retired IS NULL").fetchone()
        return _dt(row[0]) if row and row[0] else None

    # --- claims: several daemons on one database (issue 16) ------------------

    def claim(self, source: str, *, url: str, node: str, now: datetime,
              until: datetime) -> bool:
        """Lease `source` to `node` until `until`, if it is due at `now`
        (next_poll unset or past, or its stored URL is not `url`: a config
        edit polls at once) and no other node holds an unexpired lease. One
        conditional statement, so of two daemons claiming at once exactly
        one wins: PostgreSQL re-checks the WHERE of an UPDATE on the row a
        concurrent one committed, and SQLite has one writer. record_poll
        ends the claim. A source never polled gets its row here. On a store
        that is not `shared` (SQLite) the claim always succeeds."""
        lease, now_text = _iso(until, exact=True), _iso(now, exact=True)
        with self._write():
            inserted = self._execute(
                "INSERT INTO sources (name, error_count, claimed_by, lease_until) "
                "VALUES (?, 0, ?, ?) ON CONFLICT (name) DO NOTHING RETURNING name",
                [source, node, lease]).fetchall()
            if inserted:
                return True
            return bool(self._execute(
                "UPDATE sources SET claimed_by = ?, lease_until = ? WHERE name = ? "
                "AND (? = 0 OR ((next_poll IS NULL OR next_poll <= ? OR url IS NULL OR url <> ?) "
                "AND (lease_until IS NULL OR lease_until <= ? OR claimed_by = ?))) "
                "RETURNING name",
                [node, lease, source, int(self.shared), _iso(now), url, now_text, node]
            ).fetchall())

    def renew(self, source: str, *, node: str, until: datetime) -> bool:
        """Extend `node`'s lease on `source` (a long poll); False if the
        claim is no longer its own (expired and taken, or ended)."""
        with self._write():
            return bool(self._execute(
                "UPDATE sources SET lease_until = ? WHERE name = ? AND claimed_by = ? "
                "RETURNING name", [_iso(until, exact=True), source, node]).fetchall())

    def release(self, source: str, *, node: str) -> None:
        """End `node`'s claim on `source` without a poll recorded (the poll
        failed unexpectedly or was cancelled): another node may take it."""
        with self._write():
            self._execute("UPDATE sources SET claimed_by = NULL, lease_until = NULL "
                          "WHERE name = ? AND claimed_by = ?", [source, node])

    def lease(self, source: str) -> tuple[str, datetime] | None:
        """Who holds `source` and until when, or None (expired leases too)."""
        row = self._execute("SELECT claimed_by, lease_until FROM sources WHERE name = ? "
                            "AND claimed_by IS NOT NULL", [source]).fetchone()
        until = _dt(row[1]) if row else None
        return (row[0], until) if row and until else None

    # --- the change log: every node publishes what any node stored ----------

    _CHANGES_KEPT = 100_000  # rows; a node further behind than this publishes everything

    def log_change(self, languages: Iterable[str] | None, sources: Iterable[str] | None,
                   at: datetime) -> int:
        """Record that `languages` and `sources` (None: all) changed, for
        the other nodes to publish; returns the change's id. Old rows go."""
        with self._write():
            row = self._execute(
                "INSERT INTO changes (at, languages, sources) VALUES (?, ?, ?) RETURNING id",
                [_iso(at, exact=True), None if languages is None else json.dumps(sorted(languages)),
                 None if sources is None else json.dumps(sorted(sources))]).fetchone()
            self._execute("DELETE FROM changes WHERE id < ?", [row[0] - self._CHANGES_KEPT])
        return int(row[0])

    def changes_after(self, after: int) -> list[tuple[int, list[str] | None, list[str] | None]]:
        """The changes logged after id `after`, oldest first. Ids are handed
        out before commit, so one may appear after a higher one: callers
        ask again from a little before the highest they saw (see Daemon)."""
        return [(int(id_), None if languages is None else json.loads(languages),
                 None if sources is None else json.loads(sources))
                for id_, languages, sources in self._execute(
                    "SELECT id, languages, sources FROM changes WHERE id > ? ORDER BY id",
                    [after])]

    def last_change(self) -> int:
        """The highest change id so far (0: none)."""
        row = self._execute("SELECT max(id) FROM changes").fetchone()
        return int(row[0]) if row and row[0] is not None else 0

    # --- politeness across daemons: per-host slots and start times -----------

    def take_host_slot(self, host: str, *, node: str, slots: int, now: float,
                       until: float) -> int | None:
        """One of `host`'s `slots` request slots for `node` until `until`
        (seconds since the epoch), or None when every one is held by a live
        lease. Each try is one conditional upsert: of two nodes after the
        same free slot, one gets it. A dead node's slots free themselves."""
        for slot in range(slots):
            with self._write():
                taken = self._execute(
                    "INSERT INTO host_slots (host, slot, node, lease_until) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (host, slot) DO UPDATE SET node = excluded.node, "
                    "lease_until = excluded.lease_until "
                    "WHERE host_slots.node IS NULL OR host_slots.lease_until <= ? RETURNING slot",
                    [host, slot, node, until, now]).fetchall()
            if taken:
                return slot
        return None

    def release_host_slot(self, host: str, slot: int, *, node: str) -> None:
        with self._write():
            self._execute("UPDATE host_slots SET node = NULL, lease_until = NULL "
                          "WHERE host = ? AND slot = ? AND node = ?", [host, slot, node])

    def book_host_start(self, host: str, *, now: float, spacing: float) -> float:
        """When the next request to `host` may start (seconds since the
        epoch): now, or `spacing` after the last one booked, whichever is
        later; booked in one atomic upsert, so no two nodes get one time."""
        with self._write():
            row = self._execute(
                "INSERT INTO host_starts (host, next_start) VALUES (?, ?) "
                "ON CONFLICT (host) DO UPDATE SET next_start = "
                "CASE WHEN host_starts.next_start > ? THEN host_starts.next_start ELSE ? END + ? "
                "RETURNING next_start", [host, now + spacing, now, now, spacing]).fetchone()
        return float(row[0]) - spacing

    # --- nodes: who runs, with which config (issue 16) ------------------------

    def node_seen(self, node: str, *, hostname: str, pid: int, config_hash: str,
                  started: datetime, at: datetime) -> None:
        """A daemon's heartbeat: it is alive at `at`, running the config
        whose hash is `config_hash` (a reload changes it)."""
        with self._write():
            self._execute(
                "INSERT INTO nodes (node, hostname, pid, config_hash, started, last_seen) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (node) DO UPDATE SET "
                "config_hash = excluded.config_hash, last_seen = excluded.last_seen",
                [node, hostname, pid, config_hash, _iso(started, exact=True),
                 _iso(at, exact=True)])

    def node_gone(self, node: str) -> None:
        """A daemon that stops leaves the list (one killed ages out)."""
        with self._write():
            self._execute("DELETE FROM nodes WHERE node = ?", [node])

    def live_nodes(self, since: datetime) -> list[NodeInfo]:
        """Nodes seen at or after `since`, oldest start first; older rows
        (nodes killed long ago) are deleted."""
        with self._write():
            self._execute("DELETE FROM nodes WHERE last_seen < ?", [_iso(since, exact=True)])
        return [NodeInfo(node, hostname, int(pid), config_hash, _dt(started) or since,
                         _dt(last_seen) or since)
                for node, hostname, pid, config_hash, started, last_seen in self._execute(
                    "SELECT node, hostname, pid, config_hash, started, last_seen FROM nodes "
                    "ORDER BY started, node")]

    def items_per_language(self, sources: Sequence[str]) -> dict[str, int]:
        if not sources:
            return {}
        marks = ",".join("?" * len(sources))
        return dict(self._execute(
            f"SELECT lang_group, count(*) FROM items WHERE source IN ({marks}) "
            "GROUP BY lang_group ORDER BY lang_group", list(sources)))

    USUAL_OF_LAST = 50  # items a source's usual language is counted over

    def usual_language(self, source: str) -> str | None:
        """The language group most common among the source's newest
        USUAL_OF_LAST items (on a tie, the one of the newest), leaving out
        codes that name no language; None for a source with no items. Read
        once per poll: the (source, published) index answers it."""
        groups = self._execute(
            "SELECT lang_group FROM (SELECT lang_group, published FROM items WHERE source = ? "
            "ORDER BY published DESC LIMIT ?) AS newest "
            "GROUP BY lang_group ORDER BY count(*) DESC, max(published) DESC",
            [source, self.USUAL_OF_LAST])
        return next((group for (group,) in groups if is_language(group)), None)

    # --- items -------------------------------------------------------------

    def save_items(self, source: str, items: Sequence[Item], *, seen_at: datetime,
                   id_authority: str, positions: Sequence[int] | None = None,
                   others: Sequence[tuple[str, str | None]] = (),
                   settled: set[str] | None = None) -> tuple[StoreOutcome, frozenset[str]]:
        """Insert new items, update changed ones in place (same Atom id, new
        `updated`), leave the rest. Returns the counts and the language groups
        that changed. A feed read in part (hub: parse only what changed, no
        two items of one id): `positions`, where each item is in the feed;
        `others`, (upstream id, link) of its items not given, whose rows are
        known to stay as they are. `settled` is given the upstream ids of the
        items whose row now holds exactly them: under that id (not matched by
        link), with their content hash, no full text due (see
        fulltext_candidates). Saving the same item again leaves such a row
        alone."""
        new = updated = unchanged = 0
        touched: set[str] = set()
        counts: Counter[tuple[str, str]] = Counter()  # (new or updated, language group)
        unique = list({item.upstream_id: item for item in reversed(items)}.values())[::-1]
        if positions is None or len(unique) != len(items):
            positions = range(len(unique))
        with self._write():
            existing = self._existing(source, [item.upstream_id for item in unique])
            self._match_by_link(source, unique, existing, others)
            inserts = []
            for position, item in zip(positions, unique, strict=True):
                hub_time = estimate_time(seen_at, position)  # when this item changed, if it did
                digest = _content_hash(item)
                group = primary_subtag(item.language or "und")
                previous = existing.get(item.upstream_id)
                if settled is not None and _settles(item, previous):
                    settled.add(item.upstream_id)
                if previous is None:
                    inserts.append(_new_row(item, digest, seen_at, source, id_authority))
                    touched.add(group)
                    new += 1
                    counts["new", group] += 1
                elif previous["content_hash"] != digest:
                    before = None
                    if item.fulltext_status is None:  # an earlier extraction may be kept
                        before = self._execute(
                            "SELECT extracted_content, fulltext_link FROM items WHERE id = ?",
                            [previous["id"]]).fetchone()
                    self._update_item(previous["id"], _changed_row(
                        item, digest, seen_at, hub_time, previous["updated"], before))
                    touched.update({group, previous["lang_group"]})
                    updated += 1
                    counts["updated", group] += 1
                elif item.fulltext_status is not None:
                    # same feed item, new extraction (refetch): its text may change
                    stored, feed_text = self._execute(
                        f"SELECT {PUBLISHED_TEXT}, feed_content FROM items WHERE id = ?",
                        [previous["id"]]).fetchone()
                    row, changed = _refetched_row(item, digest, seen_at, hub_time, stored, feed_text)
                    if changed:
                        touched.update({group, previous["lang_group"]})
                        updated += 1
                        counts["updated", group] += 1
                    else:
                        unchanged += 1
                    self._update_item(previous["id"], row)
                else:
                    unchanged += 1
            if inserts:
                # executemany, not insert_all: sqlite-utils' per-value checks
                # cost more than the insert itself (measured 2x on 30,000 rows)
                columns = list(inserts[0])
                self._executemany(
                    f"INSERT INTO items ({', '.join(columns)}) "
                    f"VALUES ({', '.join('?' * len(columns))})",
                    [[row[c] for c in columns] for row in inserts])
        return StoreOutcome(new, updated, unchanged, dict(counts)), frozenset(touched)

    def _update_item(self, item_id: int, row: dict[str, Any]) -> None:
        self._execute(f"UPDATE items SET {', '.join(f'{column} = ?' for column in row)} WHERE id = ?",
                      [*row.values(), item_id])

    def _match_by_link(self, source: str, items: Sequence[Item],
                       existing: dict[str, dict[str, Any]],
                       others: Sequence[tuple[str, str | None]] = ()) -> None:
        """Some feeds mint a new guid on every fetch while the link stays: an
        unknown guid whose link this source already has is that item, not a
        new one (else every poll would flood the feed with duplicates).
        `others`: the feed's other items (see save_items)."""
        shared = Counter(item.link for item in items)
        shared.update(link for _, link in others)
        ids = {item.upstream_id for item in items} | {upstream_id for upstream_id, _ in others}
        wanted = [item for item in items
                  if item.upstream_id not in existing and item.link and shared[item.link] == 1]
        by_link: dict[str, tuple[Any, ...]] = {}
        for start in range(0, len(wanted), 500):
            chunk = [item.link for item in wanted[start:start + 500]]
            marks = ",".join("?" * len(chunk))
            for row in self._execute(
                    "SELECT link, id, upstream_id, content_hash, updated, lang_group FROM items "
                    f"WHERE source = ? AND link IN ({marks})", [source, *chunk]):
                by_link.setdefault(row[0], row)
        for item in wanted:
            row = by_link.get(item.link)  # type: ignore[arg-type]
            if row and row[2] not in ids:
                existing[item.upstream_id] = {"id": row[1], "content_hash": row[3],
                                              "updated": row[4], "lang_group": row[5]}

    def _existing(self, source: str, upstream_ids: list[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(upstream_ids), 500):
            chunk = upstream_ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            cursor = self._execute(
                "SELECT id, upstream_id, content_hash, updated, lang_group, fulltext_status, "
                f"fulltext_link FROM items WHERE source = ? AND upstream_id IN ({marks})",
                [source, *chunk])
            for row in cursor:
                found[row[1]] = {"id": row[0], "content_hash": row[2], "updated": row[3],
                                 "lang_group": row[4], "fulltext_status": row[5],
                                 "fulltext_link": row[6]}
        return found

    # --- items whose bytes are known (parse only what changed) ----------------

    def item_bytes(self, source: str) -> ItemBytes | None:
        """The source's known items, but those `feedhub refetch` marked (their
        unchanged bytes must be read again for the extraction to happen)."""
        row = self._execute("SELECT skeleton, context, items FROM item_bytes WHERE source = ?",
                            [source]).fetchone()
        if row is None:
            return None
        marked = {uid for (uid,) in self._execute(
            "SELECT upstream_id FROM items WHERE source = ? AND fulltext_status = ?",
            [source, REFETCH])}
        items = {digest: (uid, link) for digest, (uid, link) in json.loads(row[2]).items()
                 if uid not in marked}
        return ItemBytes(row[0], row[1], items)

    def set_item_bytes(self, source: str, known: ItemBytes | None) -> None:
        with self._write():
            if known is None:
                self._execute("DELETE FROM item_bytes WHERE source = ?", [source])
            else:
                self._execute(
                    "INSERT INTO item_bytes (source, skeleton, context, items) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (source) DO UPDATE SET skeleton = excluded.skeleton, "
                    "context = excluded.context, items = excluded.items",
                    [source, known.skeleton, known.context, json.dumps(known.items)])

    def fulltext_candidates(self, source: str, items: Sequence[Item]) -> set[str]:
        """Upstream ids of the items whose article page may need fetching:
        new ones, ones whose link changed since their extraction, and ones
        marked by `feedhub refetch`. An item is not extracted twice."""
        stored = {}
        ids = [item.upstream_id for item in items]
        for start in range(0, len(ids), 500):
            chunk = ids[start:start + 500]
            marks = ",".join("?" * len(chunk))
            for upstream_id, link, status in self._execute(
                    "SELECT upstream_id, fulltext_link, fulltext_status FROM items "
                    f"WHERE source = ? AND upstream_id IN ({marks})", [source, *chunk]):
                stored[upstream_id] = (link, status)
        candidates = set()
        for item in items:
            if item.upstream_id not in stored:
                candidates.add(item.upstream_id)
                continue
            link, status = stored[item.upstream_id]
            if status == REFETCH or (status is not None and link != item.link):
                candidates.add(item.upstream_id)
        return candidates

    def mark_refetch(self, source: str, atom_id_or_link: str | None = None) -> int:
        """Mark one item (by its Atom id or link) or every item of a source
        for re-extraction at its next poll. Returns how many were marked."""
        with self._write():
            if atom_id_or_link is None:
                cursor = self._execute("UPDATE items SET fulltext_status = ? WHERE source = ?",
                                       [REFETCH, source])
            else:
                cursor = self._execute(
                    "UPDATE items SET fulltext_status = ? WHERE source = ? AND "
                    "(atom_id = ? OR link = ?)", [REFETCH, source, atom_id_or_link,
                                                  atom_id_or_link])
            return cursor.rowcount

    def find_item_source(self, atom_id_or_link: str) -> str | None:
        row = self._execute("SELECT source FROM items WHERE atom_id = ? OR link = ? LIMIT 1",
                            [atom_id_or_link, atom_id_or_link]).fetchone()
        return row[0] if row else None

    def withdraw(self, source: str, at: datetime) -> int:
        """A takedown: every item of `source` leaves the published feeds and
        archives (and stays in the database, marked). The archive pages that
        held them are queued for rewriting in the same transaction, so a
        crash cannot leave a withdrawn item in an archive. Returns how many
        items."""
        with self._write():
            self._execute("INSERT INTO archive_rewrites (lang, page, requested) "
                          "SELECT DISTINCT archive_lang, archive_page, 1 FROM items "
                          "WHERE source = ? AND withdrawn IS NULL AND archive_page IS NOT NULL "
                          "ON CONFLICT (lang, page) DO UPDATE SET requested = archive_rewrites.requested + 1",
                          [source])
            return self._execute("UPDATE items SET withdrawn = ? WHERE source = ? AND withdrawn IS NULL",
                                 [_iso(at), source]).rowcount

    def withdrawals(self) -> dict[str, tuple[int, str]]:
        """Per source: withdrawn items and the latest takedown time."""
        return {source: (count, when) for source, count, when in self._execute(
            "SELECT source, count(*), max(withdrawn) FROM items WHERE withdrawn IS NOT NULL "
            "GROUP BY source")}

    def fulltext_failures(self) -> dict[str, tuple[int, str | None]]:
        """Per source: items whose extraction failed (the feed's text is
        published instead) and the reason of the most recent failure (by
        when it happened; failures older than that record, by arrival)."""
        return {source: (count, reason) for source, count, reason in self._execute(
            "SELECT source, count, fulltext_status FROM ("
            "  SELECT source, fulltext_status, count(*) OVER (PARTITION BY source) AS count,"
            "         row_number() OVER (PARTITION BY source"
            "                            ORDER BY fulltext_at DESC NULLS LAST, id DESC) AS latest"
            "  FROM items WHERE fulltext_status LIKE 'kept feed text%'"
            ") AS failures WHERE latest = 1")}

    def language_groups(self, sources: Sequence[str]) -> list[str]:
        if not sources:
            return []
        marks = ",".join("?" * len(sources))
        cursor = self._execute(
            f"SELECT DISTINCT lang_group FROM items WHERE source IN ({marks}) ORDER BY lang_group",
            list(sources))
        return [row[0] for row in cursor]

    def latest_items(self, lang_group: str | None, sources: Sequence[str],
                     limit: int) -> list[StoredItem]:
        """The newest `limit` items of one language (None: of all) from the
        given sources, newest first."""
        return self._items(*_latest(lang_group, sources, limit)) if sources else []

    def latest_entries(self, lang_group: str | None, sources: Sequence[str],
                       limit: int) -> list[EntryRow]:
        """latest_items, as entries to assemble (see _entries)."""
        return self._entries(*_latest(lang_group, sources, limit), lang_group) if sources else []

    # --- archives (RFC 5005) --------------------------------------------------

    def close_archive_pages(self, lang_group: str, sources: Sequence[str], *, keep: int,
                            page_size: int) -> list[int]:
        """File the oldest waiting items of a language, by date (published,
        which is the first-seen time when upstream gave none), into new
        archive pages of `page_size` while more than `keep + page_size - 1`
        are left in the subscription feed. Filing by date, not arrival,
        keeps the newest `keep` items in the subscription feed: after each
        filing at least `keep` items wait, each newer than all it filed. An
        item that turns up dated before archived ones waits for the next
        page. A page, once filed, never gains or loses an item (only a
        takedown removes some). Returns the new page numbers."""
        if not sources or page_size <= 0:
            return []
        marks = ",".join("?" * len(sources))
        where = (f"lang_group = ? AND archive_page IS NULL AND withdrawn IS NULL "
                 f"AND source IN ({marks})")
        params = [lang_group, *sources]
        with self._write():
            waiting = self._execute(f"SELECT count(*) FROM items WHERE {where}", params).fetchone()[0]
            pages = _pages_to_close(waiting, self.last_archive_page(lang_group), keep=keep,
                                    page_size=page_size)
            for page in pages:
                self._execute(f"UPDATE items SET archive_lang = ?, archive_page = ? WHERE id IN ("
                              f"SELECT id FROM items WHERE {where} ORDER BY published, id LIMIT ?)",
                              [lang_group, page, *params, page_size])
                # its sources' upstream feed info as it is now, in the same
                # transaction: the page's atom:source whenever it is written
                self._execute(f"INSERT INTO archive_sources (lang, page, source, {_FEED_COLUMNS}) "
                              f"SELECT ?, ?, name, {_FEED_COLUMNS} FROM sources WHERE name IN ("
                              "SELECT source FROM items WHERE archive_lang = ? AND archive_page = ?) "
                              "ON CONFLICT (lang, page, source) DO NOTHING",
                              [lang_group, page, lang_group, page])
        return pages

    def archive_feeds(self, lang_group: str, page: int) -> dict[str, FeedInfo]:
        """The upstream feed info of an archive page's sources, frozen when
        it was closed (what its atom:source elements show), by source; a
        page closed before schema step 14 has none (its sources' current
        info is used then)."""
        return _feeds_by_name(self._execute(f"SELECT source, {_FEED_COLUMNS} FROM archive_sources "
                                            "WHERE lang = ? AND page = ?", [lang_group, page]))

    def last_archive_page(self, lang_group: str) -> int:
        """The newest archive page of a language; 0 when it has none."""
        return self._execute("SELECT coalesce(max(archive_page), 0) FROM items "
                             "WHERE archive_lang = ?", [lang_group]).fetchone()[0]

    def archive_items(self, lang_group: str, page: int) -> list[StoredItem]:
        """The items filed in one archive page, removed sources' included (an
        archive is history), withdrawn ones not."""
        return self._items(*_archive(lang_group, page))

    def archive_entries(self, lang_group: str, page: int) -> list[EntryRow]:
        return self._entries(*_archive(lang_group, page), lang_group)

    def current_items(self, lang_group: str, sources: Sequence[str]) -> list[StoredItem]:
        """The items of a language not filed in an archive yet: its
        subscription feed, newest first."""
        return self._items(*_current(lang_group, sources)) if sources else []

    def current_entries(self, lang_group: str, sources: Sequence[str]) -> list[EntryRow]:
        return self._entries(*_current(lang_group, sources), lang_group) if sources else []

    def archive_rewrites(self, publisher: str) -> list[tuple[str, int, int]]:
        """Archive pages a takedown changed that `publisher` (a node's
        feeds/, see Hub) has still to write again: (language, page,
        takedowns so far). On a shared database every node writes its own
        copy of each page, so the queue is kept per publisher (a node that
        was down rewrites them at its next publish)."""
        return [tuple(row) for row in self._execute(
            "SELECT lang, page, requested FROM archive_rewrites AS queued WHERE NOT EXISTS ("
            "  SELECT 1 FROM archive_rewrites_done AS done WHERE done.publisher = ? "
            "  AND done.lang = queued.lang AND done.page = queued.page "
            "  AND done.requested >= queued.requested) "
            "ORDER BY lang, page", [publisher])]

    def archive_rewritten(self, publisher: str, lang: str, page: int, requested: int) -> None:
        """`publisher` wrote the page: done for it, unless another takedown
        touched the page meanwhile (then it is written again at its next
        publish). On a store that is not `shared` (SQLite: one node, one
        feeds/) the queued row goes, as nobody else has to write it; on a
        shared one it stays (one row per page ever taken down), for the
        other nodes, and this publisher's progress is recorded."""
        with self._write():
            if not self.shared:
                self._execute("DELETE FROM archive_rewrites WHERE lang = ? AND page = ? "
                              "AND requested = ?", [lang, page, requested])
                return
            self._execute(
                "INSERT INTO archive_rewrites_done (publisher, lang, page, requested) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (publisher, lang, page) DO UPDATE "
                "SET requested = excluded.requested "
                "WHERE archive_rewrites_done.requested < excluded.requested",
                [publisher, lang, page, requested])

    def source_slugs(self, names: Sequence[str], make: Callable[[str], str]) -> dict[str, str]:
        """Each source's feed file name: the one it was given first, else
        `make(name)`, with a short hash of the name added if another source
        (configured or not) ever had that one."""
        wanted = list(dict.fromkeys(names))
        slugs = dict(self._execute("SELECT name, slug FROM source_slugs"))
        missing = [name for name in wanted if name not in slugs]
        if missing:
            with self._write():
                slugs = dict(self._execute("SELECT name, slug FROM source_slugs"))
                given = _settle_slugs(missing, slugs, make)
                self._executemany("INSERT INTO source_slugs (name, slug) VALUES (?, ?)",
                                  list(given.items()))
                slugs.update(given)
        return {name: slugs[name] for name in wanted}

    def source_items(self, source: str, limit: int) -> list[StoredItem]:
        """The newest `limit` items of one source: its own feed."""
        return self._items(*_of_source(source, limit))

    def source_entries(self, source: str, limit: int) -> list[EntryRow]:
        return self._entries(*_of_source(source, limit), None)

    def source_feed_inputs(self, source: str, limit: int) -> list[tuple[Any, ...]]:
        """What a source's own feed is made of, cheaply (no article text):
        its newest items' ids, change times and content hashes, and the
        upstream feed's fields its atom:source shows."""
        rows = self._execute(
            "SELECT id, updated, content_hash, published FROM items WHERE withdrawn IS NULL "
            "AND source = ? ORDER BY published DESC, id DESC LIMIT ?", [source, limit]).fetchall()
        feed = self._execute(
            "SELECT feed_id, feed_title, feed_subtitle, feed_links, feed_updated, feed_rights "
            "FROM sources WHERE name = ?", [source]).fetchone()
        return [tuple(row) for row in rows] + [tuple(feed or ())]

    def feed_stamps(self) -> dict[str, str]:
        return dict(self._execute("SELECT name, stamp FROM feed_stamps"))

    def set_feed_stamps(self, stamps: dict[str, str]) -> None:
        if stamps:
            with self._write():
                self._executemany("INSERT INTO feed_stamps (name, stamp) VALUES (?, ?) "
                                  "ON CONFLICT (name) DO UPDATE SET stamp = excluded.stamp",
                                    list(stamps.items()))

    def _items(self, where: str, params: list[Any], limit: int | None = None) -> list[StoredItem]:
        return [_stored_item(row) for row in self._item_rows(where, params, limit)]

    def _item_rows(self, where: str, params: list[Any], limit: int | None = None, *,
                   order: str = _NEWEST_FIRST) -> Iterator[dict[str, Any]]:
        cursor = self._execute(
            f"SELECT {_ITEM_COLUMNS}, {PUBLISHED_TEXT} AS published_text, sources.feed_id, "
            "sources.feed_title, sources.feed_subtitle, sources.feed_links, sources.feed_updated, "
            f"sources.feed_language, sources.feed_rights, {_ENTRY_VERSION} AS entry_version "
            f"FROM items LEFT JOIN sources ON sources.name = items.source WHERE {where} "
            f"{order}" + (" LIMIT ?" if limit is not None else ""),
            [*params, *([limit] if limit is not None else [])])
        names = [d[0] for d in cursor.description]
        return (dict(zip(names, row, strict=True)) for row in cursor)

    def items_by_id(self, ids: Sequence[int]) -> dict[int, StoredItem]:
        """Items whose entries are to be rendered, by row id."""
        return self._items_by_id(ids)

    def page_items(self, ids: Sequence[int]) -> list[StoredItem]:
        """The items an HTML page shows, in the order of `ids` (a document's)."""
        found = self._items_by_id(ids)
        return [found[item_id] for item_id in ids if item_id in found]

    def _items_by_id(self, ids: Sequence[int]) -> dict[int, StoredItem]:
        found: dict[int, StoredItem] = {}
        for start in range(0, len(ids), 500):  # SQLite's limit on parameters
            chunk = list(ids[start:start + 500])
            marks = ",".join("?" * len(chunk))
            found.update((row["id"], _stored_item(row))
                         for row in self._item_rows(f"items.id IN ({marks})", chunk))
        return found

    def items_without_entries(self, after: int, limit: int) -> list[tuple[int, str, StoredItem]]:
        """Published items with no rendered entry kept for their own language
        (the first publish, or the first after an upgrade), by id from
        `after` on: (id, version, item)."""
        return [(row["id"], row["entry_version"], _stored_item(row)) for row in self._item_rows(
            "items.withdrawn IS NULL AND items.id > ? AND NOT EXISTS (SELECT 1 FROM "
            "rendered_entries r WHERE r.item_id = items.id AND "
            "r.credit_language = items.lang_group)", [after], limit, order="ORDER BY items.id")]

    def _entries(self, where: str, params: list[Any], limit: int | None,
                 credit_language: str | None) -> list[EntryRow]:
        """The items `where` selects, newest first, each with its rendered
        entry for `credit_language` (None: each item's own language group)
        if one is kept, and the version of the item its entry depends on: the
        columns that change with what it shows, and its source's feed."""
        cursor = self._execute(
            f"SELECT items.id, items.source, coalesce(items.language, items.lang_group), "
            f"items.updated, {PUBLISHED_TEXT}, {_ENTRY_VERSION} AS version, "
            "r.stamp, r.credit_language, r.head, r.tail "
            "FROM items LEFT JOIN rendered_entries r ON r.item_id = items.id "
            "AND r.credit_language = coalesce(?, items.lang_group) "
            f"WHERE {where} {_NEWEST_FIRST}" + (" LIMIT ?" if limit is not None else ""),
            [credit_language, *params, *([limit] if limit is not None else [])])
        return [EntryRow(item_id, source, language, _dt(updated), text or "",  # type: ignore[arg-type]
                         version, RenderedEntry(stamp, credit, head, tail)
                         if head is not None else None)
                for item_id, source, language, updated, text, version, stamp, credit, head, tail
                in cursor]

    def feeds(self) -> dict[str, FeedInfo]:
        """Each source's upstream feed, as its items' atom:source shows it."""
        return _feeds_by_name(self._execute(f"SELECT name, {_FEED_COLUMNS} FROM sources"))

    def save_rendered_entries(self, entries: Sequence[tuple[int, RenderedEntry]]) -> None:
        """Keep rendered entries (item id, entry), replacing older versions."""
        if entries:
            with self._write():
                self._executemany(
                    "INSERT INTO rendered_entries (item_id, credit_language, stamp, head, tail) "
                    "VALUES (?, ?, ?, ?, ?) ON CONFLICT (item_id, credit_language) DO UPDATE SET "
                    "stamp = excluded.stamp, head = excluded.head, tail = excluded.tail",
                    [(item_id, e.credit_language, e.stamp, e.head, e.tail)
                     for item_id, e in entries])
