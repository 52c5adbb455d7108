"""`feedhub db copy` (issue 16, "Moving"): a hub the real CLI built on SQLite,
copied to PostgreSQL and back to a fresh SQLite file, keeps every row of
every table (ids included) and publishes the very same files; the
PostgreSQL copy then polls on: new ids past the copied ones, and 304s,
because the validators came along. And the refusals: a target that
already holds a hub, a schema of another version, a running daemon, a
database that cannot be reached."""

from __future__ import annotations

import json
import shutil
import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest

from feedhub._files import DaemonLock
from feedhub.models import Item
from feedhub.store import open_store
from feedhub.store._copy import CLEARED, NOT_COPIED
from hubdir import HubDir, rss
from test_store_postgres_cli import DATED, ITEM, published, run_hub, serve_fixtures, without_clock


def sqlite_rows(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every table of a SQLite hub (but a cluster's own state,
    NOT_COPIED), in a stable order."""
    with sqlite3.connect(path) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            if row[0] not in NOT_COPIED]
        return {table: sorted(conn.execute(f'SELECT * FROM "{table}"'), key=repr)
                for table in tables}


def postgres_rows(url: str, columns: dict[str, list[str]]) -> dict[str, list[tuple[Any, ...]]]:
    """The same tables read from PostgreSQL, columns in SQLite's order."""
    with psycopg.connect(url) as conn:
        return {table: sorted(conn.execute(
            f'SELECT {", ".join(names)} FROM "{table}"').fetchall(), key=repr)
            for table, names in columns.items()}


def sqlite_columns(path: Path) -> dict[str, list[str]]:
    with sqlite3.connect(path) as conn:
        tables = [row[0] for row in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'")
            if row[0] not in NOT_COPIED]
        return {table: [row[1] for row in conn.execute(f'PRAGMA table_info("{table}")')]
                for table in tables}


def hub_like(original: HubDir, root: Path, database: str | None = None) -> HubDir:
    """A hub directory with the original's config (its sources), on
    `database` (a URL) or on root/feedhub.db."""
    root.mkdir()
    hub = HubDir(root)
    text = original.config.read_text(encoding="utf-8")
    if database:
        text = text.replace("[hub]\n", f'[hub]\ndatabase = "{database}"\n', 1)
    hub.config.write_text(text, encoding="utf-8")
    return hub


def dated_by_the_clock(name: str, one: dict[str, bytes], other: dict[str, bytes]) -> bool:
    """A document a takedown emptied (or its .gz/.br copy) is dated by the
    clock at each publish (see test_store_postgres_cli.without_clock): the
    same but for that date."""
    atom = name.removesuffix(".gz").removesuffix(".br")
    return (atom.endswith(".atom") and b"<entry" not in one[atom]
            and without_clock(one[atom]) == without_clock(other[atom]))


def copy(hub: HubDir, *args: str) -> Any:
    copied = hub.run("db", "copy", *args, "--json")
    assert copied.returncode == 0, copied.stderr + copied.stdout
    return json.loads(copied.stdout)


def test_a_hub_copied_to_postgresql_and_back_keeps_every_row_and_publishes_the_same_files(
        tmp_path: Path, feed_server, pg_database: str,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    serve_fixtures(feed_server)
    monkeypatch.delenv("FEEDHUB_DATABASE", raising=False)
    _, before = run_hub(tmp_path / "sqlite", feed_server)  # archives, validators, a takedown
    kept = (tmp_path / "sqlite" / "config.toml").read_text(encoding="utf-8")
    original = HubDir(tmp_path / "sqlite")  # the hub run_hub made, its config (sources) kept
    original.config.write_text(kept, encoding="utf-8")
    on_postgres = hub_like(original, tmp_path / "postgresql", pg_database)
    back = hub_like(original, tmp_path / "back")

    there = copy(original, str(original.database), pg_database)
    again = copy(original, pg_database, str(back.database))
    rows = sqlite_rows(original.database)
    assert there["tables"] == again["tables"] == {table: len(r) for table, r in rows.items()}
    assert there["rows"] > 0 and "password" not in json.dumps(there)

    # every row of every table, ids and all, on all three
    assert rows["items"] and any(row for row in rows["items"])
    columns = sqlite_columns(original.database)
    assert postgres_rows(pg_database, columns) == rows
    assert sqlite_rows(back.database) == rows
    withdrawn, archived = (columns["items"].index(name) for name in ("withdrawn", "archive_page"))
    assert any(row[withdrawn] for row in rows["items"])  # the takedown came along
    assert any(row[archived] is not None for row in rows["items"])  # and the archive pages
    assert rows["archive_sources"]  # with their sources' feed info, frozen when closed
    assert rows["source_slugs"] and rows["feed_stamps"] and rows["rendered_entries"]

    # each publishes the same files, file for file: over the original's feeds/
    # (a hub moved with its output directory), and into an empty one
    for fresh in (False, True):
        outputs = []
        for hub in (original, on_postgres, back):
            if fresh:
                shutil.rmtree(hub.feeds)
            elif hub is not original:
                shutil.copytree(original.feeds, hub.feeds)
            published_now = hub.run("publish")
            assert published_now.returncode == 0, published_now.stderr
            outputs.append(published(hub))
        assert sum(name.startswith("archive/") and name.endswith(".atom")
                   for name in outputs[0]) >= 3
        assert sum(name.startswith("sources/") and name.endswith(".atom")
                   for name in outputs[0]) >= 3  # the per-source feeds too
        for output in outputs[1:]:
            assert sorted(output) == sorted(outputs[0])
            assert [name for name in output if output[name] != outputs[0][name]
                    and not dated_by_the_clock(name, output, outputs[0])] == []
        if not fresh:  # and what the original published before the copy
            assert sorted(outputs[0]) == sorted(before)
            assert [name for name in before if before[name] != outputs[0][name]
                    and not dated_by_the_clock(name, before, outputs[0])] == []

    # the PostgreSQL copy polls on: new items get new ids, the rest answer 304
    top = max(row[0] for row in rows["items"])
    feed_server.serve("/dated.rss", DATED.format(items="".join(ITEM.format(n=n, day=n)
                                                               for n in range(1, 14))))
    feed_server.clear_requests()
    polled = on_postgres.run("poll", "--all", "--json")
    assert polled.returncode == 0, polled.stderr
    statuses = {report["source"]: report["status"] for report in json.loads(polled.stdout)}
    assert sorted(statuses.values()) == [200, 304, 304, 304], statuses
    assert all("if-none-match" in request.headers
               for request in feed_server.requests_for("/wsws.rss"))
    with psycopg.connect(pg_database) as conn:
        new = conn.execute("SELECT id FROM items WHERE id > %s ORDER BY id", [top]).fetchall()
        assert [row[0] for row in new] == [top + 1, top + 2]
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == len(rows["items"]) + 2


def test_copy_refuses_what_would_lose_or_mix_data(
        tmp_path: Path, feed_server, pg_database: str,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FEEDHUB_DATABASE", raising=False)
    hub = HubDir(tmp_path)
    feed_server.serve("/one.rss", rss("one", "1", "2"))
    assert hub.run("add", feed_server.url("/one.rss"), "--name", "one", "--no-check",
                   "--no-fulltext").returncode == 0
    assert hub.run("poll").returncode == 0
    source = str(hub.database)

    assert hub.run("db", "copy", source, pg_database).returncode == 0
    refused = hub.run("db", "copy", source, pg_database)  # the target holds a hub now
    assert refused.returncode == 2 and "already holds a hub" in refused.stderr, refused.stderr
    assert "Traceback" not in refused.stderr
    replaced = hub.run("db", "copy", source, pg_database, "--replace", "--json")
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout)["replaced_rows"] == json.loads(replaced.stdout)["rows"]

    into_sqlite = hub.run("db", "copy", pg_database, str(tmp_path / "copy.db"))
    assert into_sqlite.returncode == 0 and "Copied" in into_sqlite.stdout, into_sqlite.stderr
    refused = hub.run("db", "copy", pg_database, str(tmp_path / "copy.db"))
    assert refused.returncode == 2 and "already holds a hub" in refused.stderr, refused.stderr

    for missing in (str(tmp_path / "none.db"), source):
        refused = hub.run("db", "copy", missing, source)
        assert refused.returncode == 2, refused.stderr  # no such file; the same database

    newer = tmp_path / "newer.db"
    shutil.copy(hub.database, newer)
    with sqlite3.connect(newer) as conn:
        conn.execute("PRAGMA user_version = 999")
    refused = hub.run("db", "copy", str(newer), str(tmp_path / "other.db"))
    assert refused.returncode == 2 and "schema version 999" in refused.stderr, refused.stderr
    assert not (tmp_path / "other.db").exists()  # no empty hub left where the copy was to go

    with DaemonLock(hub.database):  # a daemon is running on it
        refused = hub.run("db", "copy", source, str(tmp_path / "third.db"))
    assert refused.returncode == 1 and "daemon" in refused.stderr, refused.stderr
    assert not (tmp_path / "third.db").exists()

    for unreachable in ("postgresql://feedhub:SECRET@127.0.0.1:1/feedhub",
                        "postgresql://feedhub:SECRET@/feedhub?host=/nonexistent&bogus=1"):
        failed = hub.run("db", "copy", source, unreachable)
        assert failed.returncode == 1, failed.stderr
        assert "Traceback" not in failed.stderr and "SECRET" not in failed.stderr, failed.stderr
        assert "cannot open postgresql://feedhub:***@" in failed.stderr, failed.stderr


def test_a_copied_hub_keeps_its_pending_takedown_rewrites(
        tmp_path: Path, pg_database: str, pg_cluster,  # type: ignore[no-untyped-def]
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Which queued archive rewrites each node has done (archive_rewrites_done)
    is NOT_COPIED: the copy's nodes are new publishers, and each rewrites
    every queued page once. The queue itself is copied, and a replaced
    target's own progress is emptied (CLEARED), so it hides none of them."""
    assert CLEARED <= NOT_COPIED and "archive_rewrites_done" in CLEARED
    monkeypatch.delenv("FEEDHUB_DATABASE", raising=False)
    hub = HubDir(tmp_path)
    start = datetime(2024, 5, 1, tzinfo=UTC)
    with open_store(pg_database) as store:
        for source in ("gone", "kept"):
            store.save_items(source, [Item(
                upstream_id=f"{source}-{n}", title=f"{source} {n}",
                link=f"https://{source}.example/{n}", author=None,
                published=start + timedelta(hours=n), published_estimated=False, updated=None,
                content="<p>text</p>", content_is_full=True, language="en")
                for n in range(3)], seen_at=start, id_authority="hub.example.org")
        assert store.close_archive_pages("en", ["gone", "kept"], keep=2, page_size=4) == [1]
        store.withdraw("gone", start)
        store.archive_rewritten("node-a", "en", 1, 1)  # node A rewrote it; node B not yet
        assert store.archive_rewrites("node-a") == []
        assert store.archive_rewrites("node-b") == [("en", 1, 1)]

    target = pg_cluster.create_database()
    try:
        assert copy(hub, pg_database, target)["tables"]["archive_rewrites"] == 1
        with open_store(target) as store:  # every node of the copy rewrites the page once
            assert store.archive_rewrites("node-a") == store.archive_rewrites("node-b") == [
                ("en", 1, 1)]
            store.archive_rewritten("node-a", "en", 1, 1)
        # copied over again (--replace): the target's own progress goes too
        copy(hub, pg_database, target, "--replace")
        with open_store(target) as store:
            assert store.archive_rewrites("node-a") == [("en", 1, 1)]
        # and to SQLite (one node): still to do there, then gone once done
        copy(hub, target, str(tmp_path / "copy.db"))
        with open_store(tmp_path / "copy.db") as store:
            assert store.archive_rewrites("") == [("en", 1, 1)]
            store.archive_rewritten("", "en", 1, 1)
            assert store.archive_rewrites("") == []
    finally:
        pg_cluster.drop_database(target)
