"""The shared store: PostgreSQL through psycopg 3, for hubs that outgrow
one machine (issue 16). The queries are SqlStore's (_sql.py), written with
`?` marks; here they become psycopg's `%s` (and a literal `%` becomes
`%%`). What is PostgreSQL's own is here: the connection, transactions, the
schema (_schema.POSTGRES_CREATE), the database's size.

The URL is handed to libpq as it is, so `sslmode=...`, a password and the
PG* environment variables (PGHOST, PGPASSWORD, PGSSLROOTCERT...) work as
libpq documents them.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Iterator, Sequence
from typing import Any

import psycopg
from psycopg.pq import TransactionStatus

from feedhub.store._schema import (
    POSTGRES_BASELINE,
    POSTGRES_CREATE,
    POSTGRES_STEPS,
    SCHEMA_VERSION,
    steps_after,
)
from feedhub.store._sql import Rows, SqlStore

# any constant: the key of the advisory lock that serializes two processes
# creating or migrating the same database at once
_MIGRATION_LOCK = 0x6665_6564_6875_62  # "feedhub"
# another: one publisher at a time across every node of the database
_PUBLISH_LOCK = 0x6665_6564_7075_62  # "feedpub"


@functools.lru_cache(maxsize=512)
def _dialect(sql: str) -> str:
    """`?` marks to psycopg's `%s`. No query of the store has a `?` inside a
    string literal; a `%` in one (LIKE 'x%') must be doubled."""
    return sql.replace("%", "%%").replace("?", "%s")


class PostgresStore(SqlStore):
    """Open with `PostgresStore(url)` (or feedhub.store.open_store): one per
    thread, like the SQLite store. Each statement outside a transaction()
    commits on its own (autocommit), as SQLite's reads and writes do."""

    def __init__(self, url: str, *, reader: bool = False):
        self.url = url
        # a reader is refused writes by the server itself, not by our care
        self.conn = psycopg.connect(url, autocommit=True, options=(
            "-c default_transaction_read_only=on" if reader else ""))
        if not reader:
            self._migrate()

    @classmethod
    def reader(cls, url: str) -> PostgresStore:
        """A read-only connection (see SqliteStore.reader): no migration."""
        return cls(url, reader=True)

    def close(self) -> None:
        self.conn.close()

    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        return self.conn.execute(_dialect(sql), list(params))

    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            with self.conn.cursor() as cursor:
                cursor.executemany(_dialect(sql), rows)

    @contextlib.contextmanager
    def _write(self) -> Iterator[None]:
        """One transaction; inside an open one it joins it. Read committed:
        one daemon writes (part 1 of issue 16 keeps the daemon lock), so a
        read-then-write cannot be raced here yet."""
        if self.conn.info.transaction_status != TransactionStatus.IDLE:
            yield
            return
        with self.conn.transaction():
            yield

    def _migrate(self) -> None:
        """Create the schema at POSTGRES_BASELINE in a new database, then take
        the steps after it (_schema.POSTGRES_STEPS), all with the version in
        one transaction, under a lock two starting processes share."""
        with self._write():
            self.conn.execute("SELECT pg_advisory_xact_lock(%s)", [_MIGRATION_LOCK])
            exists = self.conn.execute(
                "SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
            version = 0
            if exists and exists[0]:
                row = self.conn.execute("SELECT version FROM schema_version").fetchone()
                version = row[0] if row else 0
            if version > SCHEMA_VERSION:
                raise RuntimeError(f"the database is at schema version {version}, newer than "
                                   f"this feedhub's {SCHEMA_VERSION}: upgrade feedhub")
            if version < POSTGRES_BASELINE:
                for statement in POSTGRES_CREATE:
                    self.conn.execute(statement)
                self.conn.execute("CREATE TABLE schema_version (version integer NOT NULL)")
                self.conn.execute("INSERT INTO schema_version (version) VALUES (0)")
                version = POSTGRES_BASELINE
            for step in steps_after(version):
                for statement in POSTGRES_STEPS[step.version]:
                    self.conn.execute(statement)
            self.conn.execute("UPDATE schema_version SET version = %s", [SCHEMA_VERSION])

    @contextlib.contextmanager
    def publish_lock(self, *, wait: bool = True) -> Iterator[None]:
        """One publisher at a time across the cluster (the publish lock file
        beside the config only sees this machine): a session-level advisory
        lock, which the server frees if this process dies. wait=False:
        BlockingIOError at once when another node's publish holds it."""
        if wait:
            self.conn.execute("SELECT pg_advisory_lock(%s)", [_PUBLISH_LOCK])
        else:
            row = self.conn.execute("SELECT pg_try_advisory_lock(%s)", [_PUBLISH_LOCK]).fetchone()
            if not (row and row[0]):
                raise BlockingIOError("another node is publishing")
        try:
            yield
        finally:
            self.conn.execute("SELECT pg_advisory_unlock(%s)", [_PUBLISH_LOCK])

    # --- what `feedhub db copy` asks of a backend (see _copy.py) ----------
    def schema_version(self) -> int:
        """The version this database records (0: no hub in it)."""
        exists = self.conn.execute("SELECT to_regclass('schema_version') IS NOT NULL").fetchone()
        if not (exists and exists[0]):
            return 0
        row = self.conn.execute("SELECT version FROM schema_version").fetchone()
        return int(row[0]) if row else 0

    def table_columns(self) -> dict[str, list[str]]:
        """Every table of the hub and its columns (schema_version aside: each
        database records its own)."""
        tables: dict[str, list[str]] = {}
        for table, column in self.conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() AND table_name <> 'schema_version' "
                "ORDER BY table_name, ordinal_position"):
            tables.setdefault(table, []).append(column)
        return tables

    @contextlib.contextmanager
    def snapshot(self) -> Iterator[None]:
        """One read-only repeatable-read transaction: every table as of one
        moment, while a daemon may write (MVCC: it is not blocked)."""
        if self.conn.info.transaction_status != TransactionStatus.IDLE:
            yield
            return
        with self.conn.transaction():
            self.conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
            yield

    def stream(self, sql: str, size: int) -> Iterator[list[tuple[Any, ...]]]:
        """The rows of a query, `size` at a time, through a server-side
        cursor: a million items never sit in memory at once. Inside
        snapshot() (a named cursor lives in a transaction)."""
        with self.conn.cursor(name="feedhub_copy") as cursor:
            cursor.itersize = size
            cursor.execute(sql)
            while rows := cursor.fetchmany(size):
                yield rows

    def after_copy(self) -> None:
        """Move each identity (or serial) column's sequence past the ids
        copied in, so the next insert does not collide with one of them."""
        for table, column in self.conn.execute(
                "SELECT table_name, column_name FROM information_schema.columns "
                "WHERE table_schema = current_schema() "
                "AND (is_identity = 'YES' OR column_default LIKE 'nextval(%')").fetchall():
            self.conn.execute(
                f'SELECT setval(pg_get_serial_sequence(%s, %s), '
                f'coalesce((SELECT max("{column}") FROM "{table}"), 0) + 1, false)',
                [f'"{table}"', column])

    def size_bytes(self) -> int:
        """The whole database on the server (tables, indexes, TOAST)."""
        row = self.conn.execute("SELECT pg_database_size(current_database())").fetchone()
        return int(row[0]) if row else 0

    def integrity_check(self) -> str:
        """PostgreSQL has no PRAGMA integrity_check (its checksums and amcheck
        are the server operator's, and need privileges a hub lacks): 'ok' when
        the schema is at this feedhub's version and every table answers."""
        row = self.conn.execute("SELECT version FROM schema_version").fetchone()
        if not row or row[0] != SCHEMA_VERSION:
            return f"schema version {row[0] if row else None}, expected {SCHEMA_VERSION}"
        for table in ("sources", "items", "archive_rewrites", "source_slugs", "feed_stamps",
                      "item_bytes", "rendered_entries", "nodes", "changes",
                      "host_slots", "host_starts", "archive_sources", "archive_rewrites_done"):
            self.conn.execute(f"SELECT 1 FROM {table} LIMIT 1").fetchall()
        return "ok"
