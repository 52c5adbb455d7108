"""`feedhub db copy`: a whole hub from one database to another (SQLite to
PostgreSQL and back), nothing lost. Every table and every column is
copied as it is, ids included (item row ids, which the archive pages and
rendered entries refer to; Atom ids; slugs; schedule; validators;
withdrawals; stamps), so the target publishes the very bytes the source
does.

Safe by construction: the source is read through a read-only connection
in one snapshot (it is never migrated or written); the target is written
in one transaction (all or nothing); the two must be at this feedhub's
schema version and hold the same tables and columns; a target that
already holds a hub is refused unless `replace` is asked for.
"""

from __future__ import annotations

import contextlib
import sqlite3
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, cast
from urllib.parse import urlsplit

from feedhub.store._schema import SCHEMA_VERSION

BATCH_ROWS = 1000  # rows read and written at a time: memory stays flat on a million items
# Tables of a running cluster's own state (leases, node registrations, a
# backend's bookkeeping), which mean nothing in another database: neither
# copied nor compared. Every other table is hub data and is copied whole.
NOT_COPIED: frozenset[str] = frozenset({
    "nodes",  # daemons' heartbeats and config hashes
    "changes",  # the change log each node publishes from
    "host_slots", "host_starts",  # politeness across daemons: request slots, next starts
    # each publisher's (a node's feeds/) progress through the takedown queue,
    # archive_rewrites, which is copied: the copied hub's nodes are new
    # publishers, and each rewrites every queued page once (the same bytes).
    # Emptied on the target (CLEARED), or a replaced hub's progress would
    # hide rewrites the copy brought: no pending rewrite is lost
    "archive_rewrites_done",
})
# NOT_COPIED tables the copy empties on the target, in its transaction
CLEARED: frozenset[str] = frozenset({"archive_rewrites_done"})


class CopyRefused(Exception):
    """The copy would be wrong or unsafe; nothing was written (usage: exit 2)."""


class CopyFailed(Exception):
    """A database could not be reached or refused the work; the target's
    transaction was rolled back (exit 1)."""


@dataclass
class CopyReport:
    """What was copied: rows per table, and the schema version of both."""

    schema_version: int
    tables: dict[str, int] = field(default_factory=dict)
    replaced: int = 0  # rows the target held before (--replace)

    @property
    def rows(self) -> int:
        return sum(self.tables.values())


class _Copyable(Protocol):
    """What both backends give a copy (SqliteStore and PostgresStore)."""

    def schema_version(self) -> int: ...
    def table_columns(self) -> dict[str, list[str]]: ...
    def snapshot(self) -> contextlib.AbstractContextManager[None]: ...
    def stream(self, sql: str, size: int) -> Iterator[list[tuple[Any, ...]]]: ...
    def after_copy(self) -> None: ...
    def _write(self) -> contextlib.AbstractContextManager[None]: ...
    def _execute(self, sql: str, params: Sequence[Any] = ()) -> Any: ...
    def _executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...
    def close(self) -> None: ...


Progress = Callable[[int, int], None]  # (rows just copied, rows in all)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _row_counts(store: _Copyable, tables: Sequence[str]) -> dict[str, int]:
    return {table: int(store._execute(f"SELECT count(*) FROM {_quoted(table)}").fetchone()[0])
            for table in tables}


def _source_version(source: _Copyable) -> int:
    """The source's schema version, if a copy can start from it."""
    version = source.schema_version()
    if version == 0:
        raise CopyRefused("the source holds no hub (no feedhub schema in it)")
    if version != SCHEMA_VERSION:
        raise CopyRefused(
            f"the source is at schema version {version}, this feedhub at {SCHEMA_VERSION}: "
            + ("upgrade feedhub first" if version > SCHEMA_VERSION else
               "migrate it first (any feedhub command on it does, e.g. `feedhub status`)"))
    return version


def copy_hub(source: _Copyable, target: _Copyable, *, replace: bool = False,
             progress: Progress | None = None, batch: int = BATCH_ROWS) -> CopyReport:
    """Copy every row of every table of `source` into `target`, which must be
    empty (or `replace`: emptied in the same transaction). Both at
    SCHEMA_VERSION with the same columns, else CopyRefused; the target's
    sequences are then moved past the copied ids."""
    version = _source_version(source)
    if target.schema_version() != SCHEMA_VERSION:
        raise CopyRefused(f"the target is at schema version {target.schema_version()}, "
                          f"this feedhub at {SCHEMA_VERSION}")
    with source.snapshot():
        columns = {t: c for t, c in source.table_columns().items() if t not in NOT_COPIED}
        held_tables = target.table_columns()
        wanted = {t: c for t, c in held_tables.items() if t not in NOT_COPIED}
        if set(columns) != set(wanted):
            raise CopyRefused(f"the two databases hold different tables: source {sorted(columns)}, "
                              f"target {sorted(wanted)}")
        for table, names in columns.items():
            if set(names) != set(wanted[table]):
                raise CopyRefused(f"table {table} has different columns: source {names}, "
                                  f"target {wanted[table]}")
        tables = sorted(columns)
        counts = _row_counts(source, tables)
        total = sum(counts.values())
        report = CopyReport(version)
        with target._write():
            held = sum(_row_counts(target, tables).values())
            if held and not replace:
                raise CopyRefused(f"the target already holds a hub ({held} rows); "
                                  "pass --replace to overwrite it")
            for table in [*tables, *sorted(CLEARED & set(held_tables))]:
                target._execute(f"DELETE FROM {_quoted(table)}")
            report.replaced = held
            for table in tables:
                listed = ", ".join(_quoted(name) for name in columns[table])
                insert = (f"INSERT INTO {_quoted(table)} ({listed}) "
                          f"VALUES ({', '.join('?' for _ in columns[table])})")
                copied = 0
                # ordered by the first column (each table's key, or its first
                # part): ids go in rising, as they were inserted
                for rows in source.stream(f"SELECT {listed} FROM {_quoted(table)} ORDER BY 1",
                                          batch):
                    target._executemany(insert, rows)
                    copied += len(rows)
                    if progress:
                        progress(len(rows), total)
                report.tables[table] = copied
            landed = _row_counts(target, tables)
            if landed != report.tables:  # e.g. a row dropped by a conflict: never commit that
                raise CopyFailed(f"rows copied {report.tables}, but the target holds {landed}")
            target.after_copy()
    return report


def _driver_errors() -> tuple[type[Exception], ...]:
    """The errors a database driver raises (psycopg's only if it was loaded)."""
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)
    psycopg = sys.modules.get("psycopg")
    if psycopg is not None:
        errors += (psycopg.Error,)
    return errors


def _scrubbed(message: str, *databases: Path | str) -> str:
    """A driver's message without any password from the URLs (libpq may
    quote a bad connection string back)."""
    for database in databases:
        if isinstance(database, str):
            with contextlib.suppress(ValueError):
                password = urlsplit(database).password
                if password:
                    message = message.replace(password, "***")
    return message


def copy_database(source: Path | str, target: Path | str, *, replace: bool = False,
                  progress: Progress | None = None) -> CopyReport:
    """`feedhub db copy`: open `source` read-only (a SQLite path must name an
    existing file) and `target` (created, at this schema version, if new),
    and copy_hub between them. Errors: CopyRefused (nothing done, usage) or
    CopyFailed (a database failed; the target is as it was)."""
    from feedhub.store import is_database_url, open_store
    from feedhub.store import shown_database as shown

    if not is_database_url(source) and not Path(source).is_file():
        raise CopyRefused(f"no SQLite database at {source}")
    if is_database_url(source) == is_database_url(target) and (
            source == target if is_database_url(source)
            else Path(source).resolve() == Path(target).resolve()):
        raise CopyRefused("the source and the target are the same database")
    opened: list[Any] = []
    where = f"cannot read {shown(source)}"  # what failed, should a driver raise
    # a SQLite TO this copy creates is removed again if the copy fails: no
    # empty hub is left behind to be mistaken for a copy
    new_file = None if is_database_url(target) or Path(target).exists() else Path(target)
    copied = False
    try:
        # both backends have what a copy asks (mypy checks _Copyable against them below)
        reader = cast(_Copyable, open_store(source, reader=True))
        opened.append(reader)
        _source_version(reader)  # before TO is created: refused, nothing is made
        where = f"cannot open {shown(target)}"
        if not is_database_url(target) and Path(target).is_file():
            # an existing SQLite file is checked before opening it to write:
            # opening would stamp this feedhub's version on a newer one
            existing = cast(_Copyable, open_store(target, reader=True))
            opened.append(existing)
            found = existing.schema_version()
            if found > SCHEMA_VERSION:
                raise CopyRefused(f"the target is at schema version {found}, newer than this "
                                  f"feedhub's {SCHEMA_VERSION}: upgrade feedhub")
        writer = cast(_Copyable, open_store(target))  # creates or migrates the schema
        opened.append(writer)
        where = f"copying {shown(source)} to {shown(target)} failed (the target is unchanged)"
        report = copy_hub(reader, writer, replace=replace, progress=progress)
        copied = True
        return report
    except _driver_errors() as exc:
        raise CopyFailed(f"{where}: {_scrubbed(str(exc).strip(), source, target)}") from None
    except RuntimeError as exc:  # PostgresStore: a database newer than this feedhub
        raise CopyRefused(_scrubbed(str(exc), source, target)) from None
    finally:
        for store in reversed(opened):
            with contextlib.suppress(Exception):
                store.close()
        if new_file is not None and not copied:
            for leftover in (new_file, new_file.with_name(new_file.name + "-wal"),
                             new_file.with_name(new_file.name + "-shm")):
                leftover.unlink(missing_ok=True)


if TYPE_CHECKING:  # mypy proves both backends give a copy what it asks
    from feedhub.store._postgres import PostgresStore
    from feedhub.store._sqlite import SqliteStore

    def _both_copy(sqlite: SqliteStore, postgres: PostgresStore) -> tuple[_Copyable, _Copyable]:
        return sqlite, postgres
