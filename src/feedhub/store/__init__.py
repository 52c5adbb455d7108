"""The only package that speaks SQL: the hub's memory, on SQLite (the
embedded default: a file) or PostgreSQL (a `postgresql://` URL: several
machines, one database; issue 16).

`Store` is the contract both keep, `open_store` picks one. The contract
tests (tests/test_store_contract.py) run every method on both.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, Self
from urllib.parse import urlsplit

from feedhub.models import (
    EntryRow,
    FeedInfo,
    Item,
    ItemBytes,
    RenderedEntry,
    SourceFacts,
    SourceState,
    StoredItem,
    StoreOutcome,
)
from feedhub.store._copy import CopyFailed, CopyRefused, CopyReport, copy_database, copy_hub
from feedhub.store._rules import PUBLISHED_TEXT, REFETCH
from feedhub.store._schema import SCHEMA_VERSION

__all__ = ["DATABASE_ENV", "PUBLISHED_TEXT", "REFETCH", "SCHEMA_VERSION", "CopyFailed",
           "CopyRefused", "CopyReport", "Store", "copy_database", "copy_hub", "is_database_url",
           "open_store", "redacted"]

DATABASE_ENV = "FEEDHUB_DATABASE"  # wins over [hub] database: a password need not sit in config.toml
_URL_SCHEMES = ("postgresql://", "postgres://")


def is_database_url(database: Path | str) -> bool:
    """A PostgreSQL URL (postgresql:// or postgres://), not a SQLite path."""
    return isinstance(database, str) and database.lower().startswith(_URL_SCHEMES)


class Store(Protocol):
    """What the hub asks of its memory, on either backend. Datetimes given
    and returned are timezone-aware; they are stored as ISO text in UTC, so
    a hub's feeds are byte-identical whichever backend holds it. One store
    per thread; writes outside transaction() commit one by one.

    Future methods (issue 16, part 2) join here, e.g.
    `claim_due(node, limit, lease)`: sources due now, leased to one daemon
    (FOR UPDATE SKIP LOCKED on PostgreSQL; trivial on SQLite, which one
    daemon holds under its DaemonLock)."""

    # --- the connection --------------------------------------------------
    def close(self) -> None: ...
    def __enter__(self) -> Self: ...
    def __exit__(self, *exc: object) -> None: ...
    def transaction(self) -> contextlib.AbstractContextManager[None]:
        """Several writes, one commit: all stored or none."""
    def size_bytes(self) -> int: ...
    def integrity_check(self) -> str:
        """'ok', or what is wrong."""

    # --- sources: polling state, validators, schedule ---------------------
    def record_poll(self, source: str, *, url: str, at: datetime, status: int | None,
                    error: str | None, next_poll: datetime | None,
                    feed: FeedInfo | None = None, **changes: Any) -> None: ...
    def source_state(self, name: str) -> SourceState: ...
    def source_states(self, names: Sequence[str] | None = None) -> list[SourceState]: ...
    def scrape_states(self, names: Sequence[str]) -> list[SourceFacts]: ...
    def soonest_next_poll(self) -> datetime | None: ...
    def usual_language(self, source: str) -> str | None: ...
    def item_bytes(self, source: str) -> ItemBytes | None: ...
    def set_item_bytes(self, source: str, known: ItemBytes | None) -> None: ...
    def source_slugs(self, names: Sequence[str], make: Callable[[str], str]) -> dict[str, str]: ...
    def feeds(self) -> dict[str, FeedInfo]: ...

    # --- items: what is new, changed or unchanged; full text; takedowns ----
    def save_items(self, source: str, items: Sequence[Item], *, seen_at: datetime,
                   id_authority: str, positions: Sequence[int] | None = None,
                   others: Sequence[tuple[str, str | None]] = (),
                   settled: set[str] | None = None) -> tuple[StoreOutcome, frozenset[str]]: ...
    def fulltext_candidates(self, source: str, items: Sequence[Item]) -> set[str]: ...
    def mark_refetch(self, source: str, atom_id_or_link: str | None = None) -> int: ...
    def find_item_source(self, atom_id_or_link: str) -> str | None: ...
    def withdraw(self, source: str, at: datetime) -> int: ...
    def withdrawals(self) -> dict[str, tuple[int, str]]: ...
    def fulltext_failures(self) -> dict[str, tuple[int, str | None]]: ...

    # --- counts for status and /metrics -----------------------------------
    def withdrawn_per_language(self) -> dict[str, int]: ...
    def items_per_day(self, sources: Sequence[str], since: datetime
                      ) -> tuple[dict[str, dict[str, int]], dict[str, dict[str, int]]]: ...
    def items_per_language(self, sources: Sequence[str]) -> dict[str, int]: ...
    def language_groups(self, sources: Sequence[str]) -> list[str]: ...

    # --- what publishing reads: feeds, archives, per-source feeds ----------
    def latest_items(self, lang_group: str | None, sources: Sequence[str],
                     limit: int) -> list[StoredItem]: ...
    def latest_entries(self, lang_group: str | None, sources: Sequence[str],
                       limit: int) -> list[EntryRow]: ...
    def close_archive_pages(self, lang_group: str, sources: Sequence[str], *, keep: int,
                            page_size: int) -> list[int]: ...
    def last_archive_page(self, lang_group: str) -> int: ...
    def archive_items(self, lang_group: str, page: int) -> list[StoredItem]: ...
    def archive_entries(self, lang_group: str, page: int) -> list[EntryRow]: ...
    def current_items(self, lang_group: str, sources: Sequence[str]) -> list[StoredItem]: ...
    def current_entries(self, lang_group: str, sources: Sequence[str]) -> list[EntryRow]: ...
    def archive_rewrites(self) -> list[tuple[str, int, int]]: ...
    def archive_rewritten(self, lang: str, page: int, requested: int) -> None: ...
    def source_items(self, source: str, limit: int) -> list[StoredItem]: ...
    def source_entries(self, source: str, limit: int) -> list[EntryRow]: ...
    def source_feed_inputs(self, source: str, limit: int) -> list[tuple[Any, ...]]: ...
    def feed_stamps(self) -> dict[str, str]: ...
    def set_feed_stamps(self, stamps: dict[str, str]) -> None: ...
    def items_by_id(self, ids: Sequence[int]) -> dict[int, StoredItem]: ...
    def page_items(self, ids: Sequence[int]) -> list[StoredItem]: ...
    def items_without_entries(self, after: int, limit: int) -> list[tuple[int, str, StoredItem]]: ...
    def save_rendered_entries(self, entries: Sequence[tuple[int, RenderedEntry]]) -> None: ...


def open_store(database: Path | str, *, reader: bool = False) -> Store:
    """The store `database` names: a postgresql:// (or postgres://) URL opens
    PostgreSQL, anything else is a SQLite file. `reader`: a read-only
    connection, never migrating, that one thread at a time may use (see
    SqliteStore.reader). psycopg is imported only for PostgreSQL."""
    if is_database_url(database):
        from feedhub.store._postgres import PostgresStore

        return PostgresStore(str(database), reader=reader)
    from feedhub.store._sqlite import SqliteStore

    return SqliteStore.reader(database) if reader else SqliteStore(database)


def redacted(url: str) -> str:
    """A database URL fit for a log or a terminal: its password (before the
    host, or as a `password=` parameter) replaced. Edited as text: urllib
    would drop the empty host of `postgresql:///db?host=/run/postgresql`."""
    password = urlsplit(url).password
    if password is not None:
        url = url.replace(f":{password}@", ":***@", 1)
    return re.sub(r"([?&]password=)[^&#]*", r"\1***", url, flags=re.IGNORECASE)


if TYPE_CHECKING:  # mypy proves both backends keep the contract
    from feedhub.store._postgres import PostgresStore
    from feedhub.store._sqlite import SqliteStore

    def _both_keep_the_contract(sqlite: SqliteStore, postgres: PostgresStore) -> tuple[Store, Store]:
        return sqlite, postgres
