"""The embedded store: SQLite (WAL mode) through sqlite-utils, one file
beside the config. The queries are SqlStore's (_sql.py); what is SQLite's
own is here: the connection, BEGIN IMMEDIATE, the schema steps' bodies,
the file's size and PRAGMA integrity_check."""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from feedhub.store._schema import SCHEMA_VERSION, STEPS, steps_after
from feedhub.store._sql import Rows, SqlStore

BUSY_TIMEOUT_MS = 30_000


@contextlib.contextmanager
def _numpy_refused() -> Iterator[None]:
    """sqlite_utils imports numpy when it can, only to map numpy scalar
    types to column types; we store none. numpy costs the daemon 15 MB PSS
    (issue 13's memory target), so it is refused for that one import;
    what needs numpy (the language model, in the workers) still gets it."""
    if "numpy" in sys.modules:
        yield
        return
    sys.modules["numpy"] = None  # type: ignore[assignment]  # `import numpy` fails
    try:
        yield
    finally:
        del sys.modules["numpy"]


with _numpy_refused():
    import sqlite_utils


class SqliteStore(SqlStore):
    """Open with `SqliteStore(path)` (or feedhub.store.open_store); one per
    thread (sqlite3 connections are not shared across threads)."""

    shared = False  # one daemon holds the file (DaemonLock): its claims always succeed

    def __init__(self, path: Path | str):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000)
        self.db = sqlite_utils.Database(conn)
        self.db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        self.db.enable_wal()
        self.db.execute("PRAGMA synchronous = NORMAL")
        self._migrate()

    @classmethod
    def reader(cls, path: Path | str) -> SqliteStore:
        """A read-only connection that any one thread at a time may use (the
        admin server answers each request on a thread of its own; the caller
        serializes): no migration, no write lock ever taken. The daemon's own
        store has migrated the database before anything is served."""
        store = cls.__new__(cls)
        store.path = Path(path)
        conn = sqlite3.connect(f"file:{quote(str(store.path.resolve()))}?mode=ro", uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False)
        store.db = sqlite_utils.Database(conn)
        return store

    def close(self) -> None:
        self.db.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self.db.conn.execute(sql, params)

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            self.db.conn.executemany(sql, rows)

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, taken with BEGIN IMMEDIATE so that a
        read-then-write never fails half-way under another process. Inside
        an open transaction it simply joins it."""
        if self.db.conn.in_transaction:
            yield
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.conn.rollback()
            raise
        else:
            self.db.conn.commit()

    def _migrate(self) -> None:
        """Bring the schema up to SCHEMA_VERSION, one step per version
        (_schema.STEPS), all in the same transaction as the version bump."""
        with self._write():
            version = self.db.execute("PRAGMA user_version").fetchone()[0]
            for step in steps_after(version):
                _STEPS[step.version](self.db)
            self.db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    @contextlib.contextmanager
    def publish_lock(self, *, wait: bool = True) -> Iterator[None]:
        """Nothing to lock: one machine holds a SQLite hub, and the publish
        lock file beside the database serializes its publishers."""
        yield

    # --- what `feedhub db copy` asks of a backend (see _copy.py) ----------
    def schema_version(self) -> int:
        """The version this database records (0: no hub in it)."""
        return int(self.db.execute("PRAGMA user_version").fetchone()[0])

    def table_columns(self) -> dict[str, list[str]]:
        """Every table of the hub and its columns, as the file holds them
        (what a copy must carry, whatever steps added them)."""
        tables = [row[0] for row in self.db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' "
            "AND name NOT LIKE 'sqlite_%' ORDER BY name")]
        return {table: [row[1] for row in self.db.execute(f'PRAGMA table_info("{table}")')]
                for table in tables}

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read transaction: every table read as of one moment, even
        if a command writes meanwhile (WAL readers see a fixed snapshot)."""
        conn = self.db.conn
        if conn.in_transaction:
            yield
            return
        conn.execute("BEGIN")
        try:
            yield
        finally:
            conn.rollback()  # it only read

    def stream(self, sql: str, size: int) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of a query, `size` at a time (sqlite3 cursors read lazily)."""
        cursor = self.db.conn.execute(sql)
        while rows := cursor.fetchmany(size):
            yield rows

    def after_copy(self) -> None:
        """Nothing to reset: an INTEGER PRIMARY KEY takes max(id) + 1."""

    def size_bytes(self) -> int:
        """The database on disk: the file and its write-ahead log."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            with contextlib.suppress(OSError):
                total += path.stat().st_size
        return total

    def integrity_check(self) -> str:
        return str(self.db.execute("PRAGMA integrity_check").fetchone()[0])


# --- the schema steps' bodies (see _schema.STEPS for why each was taken) ---

def _v1(db: sqlite_utils.Database) -> None:
    db.table("sources").create({
        "name": str, "url": str, "etag": str, "last_modified": str,
        "last_poll": str, "last_status": int, "last_error": str,
        "error_count": int, "next_poll": str,
        "feed_id": str, "feed_title": str, "feed_subtitle": str, "feed_links": str,
        "feed_updated": str, "feed_language": str, "feed_rights": str,
    }, pk="name", not_null={"name"}, defaults={"error_count": 0})
    db.table("items").create({
        "id": int, "source": str, "upstream_id": str, "atom_id": str,
        "title": str, "link": str, "author": str,
        "published": str, "published_estimated": int, "updated": str,
        "first_seen": str, "content": str, "content_is_full": int, "summary": str,
        "language": str, "lang_group": str, "categories": str, "enclosures": str,
        "rights": str, "content_hash": str,
    }, pk="id", not_null={"source", "upstream_id", "atom_id", "published", "updated"})
    db.table("items").create_index(["source", "upstream_id"], unique=True)
    db.table("items").create_index(["atom_id"], unique=True)
    db.table("items").create_index(["lang_group", "published"])


def _v2(db: sqlite_utils.Database) -> None:
    for column, kind in (("body_hash", str), ("ttl", int), ("retired", str),
                         ("redirect_url", str), ("redirect_count", int)):
        db.table("sources").add_column(column, kind)
    db.table("sources").create_index(["next_poll"])


def _v3(db: sqlite_utils.Database) -> None:
    added: tuple[tuple[str, type], ...] = (
        ("detected_language", str), ("language_confidence", float),
        ("feed_content", str), ("extracted_content", str),
        ("fulltext_status", str), ("fulltext_link", str))
    for column, column_type in added:
        db.table("items").add_column(column, column_type)


def _v4(db: sqlite_utils.Database) -> None:
    db.table("items").create_index(["source", "link"], if_not_exists=True)


def _v5(db: sqlite_utils.Database) -> None:
    db.table("items").add_column("withdrawn", str)  # when a takedown removed it


def _v6(db: sqlite_utils.Database) -> None:
    # RFC 5005 archives: the page an item was filed in, for good
    # (NULL: still in its language's subscription feed)
    db.table("items").add_column("archive_lang", str)
    db.table("items").add_column("archive_page", int)
    db.table("items").create_index(["lang_group", "archive_page", "id"], if_not_exists=True)
    db.table("items").create_index(["archive_lang", "archive_page"], if_not_exists=True)
    db.table("items").create_index(["source", "published"], if_not_exists=True)
    # `requested` counts takedowns: a publish clears a row only if
    # no takedown came while it was writing the page
    db.table("archive_rewrites").create({"lang": str, "page": int, "requested": int},
                                  pk=("lang", "page"))
    # a per-source feed's file name, chosen once: it is a URL
    # subscribers keep, whatever sources come and go later
    db.table("source_slugs").create({"name": str, "slug": str}, pk="name")
    db.table("source_slugs").create_index(["slug"], unique=True)
    # what each per-source feed was last rendered from, so a full
    # publish skips the thousands that did not change
    db.table("feed_stamps").create({"name": str, "stamp": str}, pk="name")


def _v7(db: sqlite_utils.Database) -> None:
    # archives file the oldest waiting items by date, not by arrival
    db.execute("DROP INDEX IF EXISTS idx_items_lang_group_archive_page_id")
    db.table("items").create_index(["lang_group", "archive_page", "published", "id"],
                             if_not_exists=True)
    # when fulltext_status was last set, so that `status` names the
    # latest failure (NULL for outcomes older than this column)
    db.table("items").add_column("fulltext_at", str)


def _v8(db: sqlite_utils.Database) -> None:
    # a source that yields nothing, or only part of a broken
    # document, must not look healthy in `status`: why the last
    # parse was partial, and how many entries it read
    db.table("sources").add_column("degraded", str)
    db.table("sources").add_column("entries", int)


def _v9(db: sqlite_utils.Database) -> None:
    # each text once: `content` (the published text) only where it
    # differs from what it is derived from (PUBLISHED_TEXT)
    db.execute("UPDATE items SET content = NULL "
               "WHERE content = coalesce(extracted_content, feed_content)")


def _v10(db: sqlite_utils.Database) -> None:
    # parse only what changed: per source, the items whose bytes
    # the hub knows (see ItemBytes; JSON, read and written whole)
    db.execute("CREATE TABLE IF NOT EXISTS item_bytes (source TEXT PRIMARY KEY, "
               "skeleton TEXT, context TEXT, items TEXT)")


def _v11(db: sqlite_utils.Database) -> None:
    # each item's Atom entry as feedgen wrote it, without its
    # article text (see models.RenderedEntry): documents are
    # assembled from these, not rendered again
    db.table("rendered_entries").create({
        "item_id": int, "credit_language": str, "stamp": str, "head": bytes,
        "tail": bytes,
    }, pk=("item_id", "credit_language"), not_null={"stamp", "head"}, if_not_exists=True)


def _v12(db: sqlite_utils.Database) -> None:
    # /metrics: how long since each source last answered well, and
    # since when a failing one fails (a failing source's last good
    # poll was otherwise forgotten); an older failing streak counts
    # from its latest poll, the earliest time known
    columns = db.table("sources").columns_dict
    for column in ("last_success", "failing_since"):
        if column not in columns:  # a database put back to an older version
            db.table("sources").add_column(column, str)
    db.execute("UPDATE sources SET last_success = coalesce(last_success, last_poll) "
               "WHERE error_count = 0")
    db.execute("UPDATE sources SET failing_since = coalesce(failing_since, last_poll) "
               "WHERE error_count > 0")
    # withdrawn items per language at every scrape, without a table scan
    db.execute("CREATE INDEX IF NOT EXISTS idx_items_withdrawn_lang "
               "ON items (lang_group) WHERE withdrawn IS NOT NULL")


def _v13(db: sqlite_utils.Database) -> None:
    # one daemon holds a SQLite hub (DaemonLock), so its claims always
    # succeed; the columns are here so that one code path serves both
    columns = db.table("sources").columns_dict
    for column in ("claimed_by", "lease_until"):
        if column not in columns:  # a database put back to an older version has them
            db.table("sources").add_column(column, str)
    db.table("nodes").create({
        "node": str, "hostname": str, "pid": int, "config_hash": str,
        "started": str, "last_seen": str}, pk="node", not_null={"node"}, if_not_exists=True)
    db.table("changes").create({"id": int, "at": str, "languages": str, "sources": str},
                               pk="id", if_not_exists=True)
    # the cluster's politeness (PostgreSQL only; here for one schema on both)
    db.table("host_slots").create({"host": str, "slot": int, "node": str, "lease_until": float},
                                  pk=("host", "slot"), if_not_exists=True)
    db.table("host_starts").create({"host": str, "next_start": float}, pk="host",
                                   if_not_exists=True)


def _v14(db: sqlite_utils.Database) -> None:
    # each archive page's sources' upstream feed info (the sources
    # table's feed_* columns) as it was when the page was closed: the
    # page's atom:source elements, whenever and by whichever node it is
    # written. Pages closed before this step have none (their sources'
    # current info is used, as before)
    db.table("archive_sources").create({
        "lang": str, "page": int, "source": str, "feed_id": str, "feed_title": str,
        "feed_subtitle": str, "feed_links": str, "feed_updated": str, "feed_language": str,
        "feed_rights": str}, pk=("lang", "page", "source"), if_not_exists=True)


def _v15(db: sqlite_utils.Database) -> None:
    # which queued archive rewrites each publisher (a node's feeds/) has
    # done. One daemon writes a SQLite hub, whose archive_rewritten
    # deletes the queued row as before: the table stays empty here, and
    # is here for one schema (and one SQL text) on both backends
    db.table("archive_rewrites_done").create({
        "publisher": str, "lang": str, "page": int, "requested": int},
        pk=("publisher", "lang", "page"), if_not_exists=True)


_STEPS: dict[int, Callable[[sqlite_utils.Database], None]] = {
    1: _v1,
    2: _v2,
    3: _v3,
    4: _v4,
    5: _v5,
    6: _v6,
    7: _v7,
    8: _v8,
    9: _v9,
    10: _v10,
    11: _v11,
    12: _v12,
    13: _v13,
    14: _v14,
    15: _v15,
}
assert [step.version for step in STEPS] == list(_STEPS), "a step without its SQLite body"
