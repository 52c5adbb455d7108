"""The store's contract (feedhub.store.Store), kept by both backends: every
test runs on a real SQLite file and on a real PostgreSQL database (a
throwaway cluster, tests/pg.py). A behaviour that differs between them
fails here, not in a hub that moved."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from feedhub.models import FeedInfo, Item, ItemBytes, Link, RenderedEntry
from feedhub.store import REFETCH, SCHEMA_VERSION, Store, is_database_url, open_store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
FEED = FeedInfo(id="urn:up", title="Upstream", subtitle="All of it",
                links=(Link("https://up.example/feed", rel="self"),), language="en",
                rights="CC BY")


def item(n: int, **changes: object) -> Item:
    base = Item(upstream_id=f"guid-{n}", title=f"Title {n}", link=f"https://up.example/{n}",
                author="Ann", published=T0 + timedelta(hours=n), published_estimated=False,
                updated=None, content=f"<p>Body {n}</p>", content_is_full=True, language="en",
                feed_content=f"<p>Body {n}</p>")
    return replace(base, **changes)


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a store lives: a SQLite file, or a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return tmp_path / "hub.db"
    url: str = request.getfixturevalue("pg_database")
    return url


@pytest.fixture
def store(database: str | Path) -> Iterator[Store]:
    with open_store(database) as store:
        yield store


def poll(store: Store, source: str = "src", *, at: datetime = T0, error: str | None = None,
         feed: FeedInfo | None = FEED, **changes: object) -> None:
    store.record_poll(source, url=f"https://up.example/{source}.xml", at=at,
                      status=None if error else 200, error=error,
                      next_poll=at + timedelta(minutes=30), feed=None if error else feed,
                      **changes)


def save(store: Store, items: list[Item], *, at: datetime = T0, source: str = "src",
         **options: object) -> tuple[int, int, int]:
    outcome, _ = store.save_items(source, items, seen_at=at, id_authority="hub.example.org",
                                  **options)  # type: ignore[arg-type]
    return outcome.new, outcome.updated, outcome.unchanged


# --- opening ------------------------------------------------------------------


def test_the_database_names_the_backend(tmp_path: Path) -> None:
    assert is_database_url("postgresql://db.example/hub")
    assert is_database_url("postgres://u:p@db.example:5433/hub?sslmode=require")
    assert not is_database_url(tmp_path / "postgresql:" / "hub.db")  # a path stays a path
    assert not is_database_url("feedhub.db")


def test_a_new_store_is_at_the_schema_version_and_reopens(database: str | Path) -> None:
    with open_store(database) as store:
        assert store.integrity_check() == "ok"
        poll(store)
    with open_store(database) as store:  # migrating again changes nothing
        assert store.integrity_check() == "ok"
        assert store.source_state("src").last_status == 200
        assert store.size_bytes() > 0
    assert SCHEMA_VERSION == 15


def test_a_reader_reads_and_never_writes(database: str | Path) -> None:
    with open_store(database) as store:
        poll(store)
    with open_store(database, reader=True) as reader:
        assert [s.name for s in reader.source_states()] == ["src"]
        with pytest.raises(Exception):  # noqa: B017 - each driver raises its own
            poll(reader, "other")


def test_a_transaction_stores_all_or_nothing(store: Store) -> None:
    with pytest.raises(RuntimeError), store.transaction():
        poll(store)
        save(store, [item(1)])
        raise RuntimeError("the poll failed half-way")
    assert store.source_states() == []
    assert store.latest_items(None, ["src"], 10) == []
    with store.transaction():
        poll(store)
        save(store, [item(1)])
    assert len(store.latest_items(None, ["src"], 10)) == 1


# --- sources: state, validators, schedule -------------------------------------


def test_poll_outcomes_keep_validators_errors_and_schedule(store: Store) -> None:
    assert store.source_state("src").last_poll is None  # never polled: an empty state
    poll(store, etag='"v1"', last_modified="Wed, 01 May 2024 12:00:00 GMT", ttl=3600,
         body_hash="abc", entries=2)
    state = store.source_state("src")
    assert (state.etag, state.last_modified, state.ttl, state.body_hash, state.entries) == (
        '"v1"', "Wed, 01 May 2024 12:00:00 GMT", 3600, "abc", 2)
    assert state.last_poll == T0 and state.next_poll == T0 + timedelta(minutes=30)
    assert state.error_count == 0 and state.last_status == 200

    later = T0 + timedelta(hours=1)
    poll(store, at=later, error="timed out")
    poll(store, at=later + timedelta(hours=1), error="timed out")
    state = store.source_state("src")
    assert state.error_count == 2 and state.last_error == "timed out"
    assert state.etag == '"v1"'  # a failure keeps the validators
    [facts] = store.scrape_states(["src"])
    assert facts.error_count == 2 and facts.last_success == T0.isoformat()
    assert facts.failing_since == later.isoformat()

    poll(store, at=later + timedelta(hours=2), retired="gone (410)")
    state = store.source_state("src")
    assert state.error_count == 0 and state.retired == "gone (410)"
    assert store.soonest_next_poll() is None  # a retired source is never due
    with pytest.raises(TypeError):
        poll(store, colour="blue")


def test_source_states_count_items_and_name_unknown_sources(store: Store) -> None:
    poll(store, "b")
    poll(store, "a", at=T0 + timedelta(minutes=5))
    save(store, [item(1), item(2)], source="a")
    states = store.source_states()
    assert [(s.name, s.items) for s in states] == [("a", 2), ("b", 0)]
    assert [(s.name, s.items, s.last_poll) for s in store.source_states(["a", "new"])] == [
        ("a", 2, T0 + timedelta(minutes=5)), ("new", 0, None)]
    assert store.soonest_next_poll() == T0 + timedelta(minutes=30)
    facts = {f.name: f for f in store.scrape_states(["a", "b", "never"])}
    assert facts["never"].last_poll is None and facts["never"].items == 0
    assert not facts["a"].retired and not facts["a"].degraded


def test_a_feed_without_a_date_is_dated_by_its_newest_item(store: Store) -> None:
    with store.transaction():
        save(store, [item(1), item(5)])
        poll(store, feed=replace(FEED, updated=None))
    feed = store.feeds()["src"]
    assert feed.updated == item(5).published
    assert feed.links == FEED.links and feed.rights == "CC BY"
    poll(store, feed=replace(FEED, updated=T0))
    assert store.feeds()["src"].updated == T0
    poll(store, feed=None, feed_updated=T0 + timedelta(days=1))  # a poll that skipped parsing
    assert store.feeds()["src"].updated == T0 + timedelta(days=1)


def test_item_bytes_are_kept_replaced_and_forgotten(store: Store) -> None:
    assert store.item_bytes("src") is None
    store.set_item_bytes("src", ItemBytes("<rss/>", "ctx", {"d1": ("guid-1", "https://up.example/1")}))
    store.set_item_bytes("src", ItemBytes("<rss2/>", "ctx2", {"d2": ("guid-2", None)}))
    known = store.item_bytes("src")
    assert known is not None
    assert (known.skeleton, known.context) == ("<rss2/>", "ctx2")
    assert {k: tuple(v) for k, v in known.items.items()} == {"d2": ("guid-2", None)}
    save(store, [item(2)])
    store.mark_refetch("src")  # a marked item's bytes must be read again
    known = store.item_bytes("src")
    assert known is not None and known.items == {}
    store.set_item_bytes("src", None)
    assert store.item_bytes("src") is None


def test_usual_language_is_the_most_common_among_the_newest(store: Store) -> None:
    assert store.usual_language("src") is None
    save(store, [item(1, language="fr"), item(2, language="de"), item(3, language="de"),
                 item(4, language="und")])
    assert store.usual_language("src") == "de"


# --- items: new, changed, unchanged; ids ----------------------------------------


def test_new_changed_and_unchanged_items_and_ids_that_never_change(store: Store) -> None:
    assert save(store, [item(1), item(2)]) == (2, 0, 0)
    before = {i.title: i for i in store.latest_items("en", ["src"], 10)}
    later = T0 + timedelta(days=1)
    assert save(store, [item(1, title="Title 1 (fixed)"), item(2)], at=later) == (0, 1, 1)
    after = {i.title: i for i in store.latest_items("en", ["src"], 10)}
    assert after["Title 1 (fixed)"].atom_id == before["Title 1"].atom_id
    assert after["Title 1 (fixed)"].atom_id.startswith("tag:hub.example.org,2024-05-01:item/")
    assert after["Title 1 (fixed)"].updated == later
    assert after["Title 1 (fixed)"].published == before["Title 1"].published
    assert after["Title 2"] == before["Title 2"]
    assert save(store, [item(1, title="Title 1 (fixed)"), item(2)], at=later) == (0, 0, 2)
    # an upstream `updated` newer than the stored one is kept as it is
    edited = T0 + timedelta(days=3)
    save(store, [item(2, title="Title 2 bis", updated=edited)], at=later)
    assert {i.title: i.updated for i in store.latest_items("en", ["src"], 10)}["Title 2 bis"] == edited


def test_duplicates_in_one_fetch_and_the_same_guid_from_two_sources(store: Store) -> None:
    assert save(store, [item(1), item(1, title="dup")]) == (1, 0, 0)
    assert [i.title for i in store.latest_items(None, ["src"], 10)] == ["Title 1"]
    save(store, [item(1)], source="other")
    assert len({i.atom_id for i in store.latest_items(None, ["src", "other"], 10)}) == 2


def test_a_new_guid_with_a_known_link_is_the_same_item(store: Store) -> None:
    save(store, [item(1)])
    [before] = store.latest_items(None, ["src"], 10)
    assert save(store, [item(1, upstream_id="guid-1-minted-again", title="Edited")],
                at=T0 + timedelta(hours=1)) == (0, 1, 0)
    [after] = store.latest_items(None, ["src"], 10)
    assert after.atom_id == before.atom_id and after.title == "Edited"


def test_settled_items_and_estimated_dates(store: Store) -> None:
    settled: set[str] = set()
    undated = item(3, published=T0 + timedelta(minutes=1), published_estimated=True)
    save(store, [item(1), undated], settled=settled)
    assert settled == {"guid-1", "guid-3"}
    # an estimated date is not an edit: the next poll's estimate differs
    moved = replace(undated, published=T0 + timedelta(hours=5))
    assert save(store, [moved], at=T0 + timedelta(hours=5)) == (0, 0, 1)
    dates = {i.title: i.published for i in store.latest_items(None, ["src"], 10)}
    assert dates["Title 3"] == T0 + timedelta(minutes=1)


def test_positions_and_others_read_a_feed_in_part(store: Store) -> None:
    save(store, [item(1), item(2), item(3)])
    outcome, _ = store.save_items("src", [item(2, title="two")], seen_at=T0 + timedelta(hours=1),
                                  id_authority="h", positions=[1],
                                  others=[("guid-1", "https://up.example/1"),
                                          ("guid-3", "https://up.example/3")])
    assert (outcome.new, outcome.updated, outcome.unchanged) == (0, 1, 0)
    assert outcome.by_language == {("updated", "en"): 1}


def test_full_text_candidates_refetch_marks_and_extraction(store: Store) -> None:
    save(store, [item(1), item(2)])
    assert store.fulltext_candidates("src", [item(1), item(2), item(3)]) == {"guid-3"}
    extracted = item(1, content="<p>Whole article</p>", extracted_content="<p>Whole article</p>",
                     fulltext_status="extracted")
    assert save(store, [extracted], at=T0 + timedelta(hours=1)) == (0, 1, 0)
    [one] = [i for i in store.latest_items(None, ["src"], 10) if i.title == "Title 1"]
    assert one.content == "<p>Whole article</p>"
    assert store.fulltext_candidates("src", [item(1), item(2)]) == set()
    moved = item(1, link="https://up.example/moved")
    assert store.fulltext_candidates("src", [moved]) == {"guid-1"}  # its link changed

    assert store.mark_refetch("src", one.atom_id) == 1
    assert store.fulltext_candidates("src", [item(1), item(2)]) == {"guid-1"}
    assert store.mark_refetch("src", "https://up.example/2") == 1  # by link
    assert store.mark_refetch("src") == 2
    assert store.mark_refetch("src", "https://nowhere.example/") == 0
    assert store.find_item_source(one.atom_id) == "src"
    assert store.find_item_source("https://up.example/2") == "src"
    assert store.find_item_source("urn:nothing") is None

    failed = item(2, fulltext_status="kept feed text: 404", extracted_content=None)
    save(store, [failed], at=T0 + timedelta(hours=2))
    assert store.fulltext_failures() == {"src": (1, "kept feed text: 404")}
    assert REFETCH == "refetch requested"


# --- counts for status and /metrics --------------------------------------------


def test_counts_per_language_and_day(store: Store) -> None:
    save(store, [item(1), item(2, language="fr-CA"), item(30, language="fr")])
    save(store, [item(4, language="de")], source="other")
    assert store.items_per_language(["src"]) == {"en": 1, "fr": 2}
    assert store.items_per_language([]) == {}
    assert store.language_groups(["src", "other"]) == ["de", "en", "fr"]
    by_source, by_language = store.items_per_day(["src"], T0)
    assert by_source == {"src": {"2024-05-01": 2, "2024-05-02": 1}}
    assert by_language == {"en": {"2024-05-01": 1}, "fr": {"2024-05-01": 1, "2024-05-02": 1}}


# --- takedowns ------------------------------------------------------------------


def test_a_withdrawal_hides_items_and_queues_their_archive_pages(store: Store) -> None:
    save(store, [item(n) for n in range(1, 8)])
    save(store, [item(8)], source="other")
    assert store.close_archive_pages("en", ["src", "other"], keep=2, page_size=3) == [1, 2]
    assert store.withdraw("src", T0 + timedelta(days=1)) == 7
    assert store.withdraw("src", T0 + timedelta(days=2)) == 0  # already withdrawn
    assert store.withdrawals() == {"src": (7, (T0 + timedelta(days=1)).isoformat())}
    assert store.withdrawn_per_language() == {"en": 7}
    assert [i.source for i in store.latest_items("en", ["src", "other"], 10)] == ["other"]
    assert store.archive_items("en", 1) == [] and store.archive_entries("en", 2) == []
    assert store.archive_rewrites("") == [("en", 1, 1), ("en", 2, 1)]
    store.archive_rewritten("", "en", 1, 1)
    store.archive_rewritten("", "en", 2, 0)  # a takedown came meanwhile: still to do
    assert store.archive_rewrites("") == [("en", 2, 1)]


def test_on_a_shared_store_each_publisher_rewrites_the_pages_a_takedown_changed(
        store: Store) -> None:
    """Several nodes on one database each write their own feeds/: a page a
    takedown changed is rewritten by each publisher, not by the first one
    only. SQLite (one node) deletes the queued row instead (above); its
    `shared` is forced here, for the SQL is one text that both must run."""
    store.shared = True
    save(store, [item(0, upstream_id="old")], source="other")
    save(store, [item(n) for n in range(1, 7)])
    assert store.close_archive_pages("en", ["src", "other"], keep=4, page_size=3) == [1]
    assert store.withdraw("src", T0 + timedelta(days=1)) == 6
    queued = [("en", 1, 1)]
    assert store.archive_rewrites("node-a") == store.archive_rewrites("node-b") == queued
    store.archive_rewritten("node-a", "en", 1, 1)
    assert store.archive_rewrites("node-a") == []
    assert store.archive_rewrites("node-b") == queued  # node B has still to do it
    store.archive_rewritten("node-a", "en", 1, 1)  # twice: the same
    assert store.archive_rewrites("node-a") == []

    assert store.withdraw("other", T0 + timedelta(days=2)) == 1  # page 1 again
    again = [("en", 1, 2)]
    assert store.archive_rewrites("node-a") == store.archive_rewrites("node-b") == again
    assert store.archive_rewrites("a node that was down") == again
    store.archive_rewritten("node-b", "en", 1, 1)  # a publish begun before the second
    assert store.archive_rewrites("node-b") == again  # still to do
    store.archive_rewritten("node-b", "en", 1, 2)
    store.archive_rewritten("node-b", "en", 1, 1)  # a late, older one does not undo it
    assert store.archive_rewrites("node-b") == []
    assert store.archive_rewrites("node-a") == again


# --- archives (RFC 5005) --------------------------------------------------------


def test_archive_pages_are_filed_by_date_and_never_change(store: Store) -> None:
    save(store, [item(n) for n in (5, 1, 4, 2, 3, 6, 7)])
    assert store.last_archive_page("en") == 0
    assert store.close_archive_pages("en", ["src"], keep=3, page_size=2) == [1, 2]
    assert store.close_archive_pages("en", ["src"], keep=3, page_size=2) == []
    assert store.last_archive_page("en") == 2
    assert [i.title for i in store.archive_items("en", 1)] == ["Title 2", "Title 1"]
    assert [i.title for i in store.archive_items("en", 2)] == ["Title 4", "Title 3"]
    assert [i.title for i in store.current_items("en", ["src"])] == [
        "Title 7", "Title 6", "Title 5"]
    # an item dated before the archived ones waits for the next page
    save(store, [item(0), item(8)], at=T0 + timedelta(days=1))
    assert store.close_archive_pages("en", ["src"], keep=3, page_size=2) == [3]
    assert [i.title for i in store.archive_items("en", 3)] == ["Title 5", "Title 0"]
    assert [e.item_id for e in store.archive_entries("en", 3)] == [
        i for i in _ids(store, ["Title 5", "Title 0"])]
    assert [e.item_id for e in store.current_entries("en", ["src"])] == _ids(
        store, ["Title 8", "Title 7", "Title 6"])
    assert store.close_archive_pages("en", ["src"], keep=3, page_size=0) == []
    assert store.close_archive_pages("en", [], keep=3, page_size=2) == []


def test_a_closed_archive_page_keeps_its_sources_feed_info_as_it_was(store: Store) -> None:
    first = replace(FEED, updated=T0, links=(*FEED.links, Link("https://up.example/")))
    other = FeedInfo(id="urn:other", title="Other", updated=T0 + timedelta(hours=1))
    poll(store, feed=first)
    poll(store, "other", feed=other)
    save(store, [item(n) for n in (1, 2, 3, 5)])
    save(store, [item(4)], source="other")
    assert store.archive_feeds("en", 1) == {}  # not closed yet
    assert store.close_archive_pages("en", ["src", "other"], keep=1, page_size=2) == [1, 2]
    # upstream changes its title and date afterwards: the pages keep what they were closed with
    later = replace(first, title="Renamed", updated=T0 + timedelta(days=3))
    poll(store, at=T0 + timedelta(days=3), feed=later)
    assert store.feeds()["src"] == later
    assert store.archive_feeds("en", 1) == {"src": first}  # items 1 and 2
    assert store.archive_feeds("en", 2) == {"src": first, "other": other}  # items 3 and 4
    assert store.archive_feeds("en", 3) == {} and store.archive_feeds("fr", 1) == {}
    # a page closed now freezes the feed info of now
    save(store, [item(6), item(7)], at=T0 + timedelta(days=3))
    assert store.close_archive_pages("en", ["src", "other"], keep=1, page_size=2) == [3]
    assert store.archive_feeds("en", 3) == {"src": later}
    assert store.archive_feeds("en", 1) == {"src": first}


def _ids(store: Store, titles: list[str]) -> list[int]:
    rows = {row.item_id: row for row in store.latest_entries(None, ["src"], 100)}
    found = store.items_by_id(list(rows))
    by_title = {item.title: item_id for item_id, item in found.items()}
    return [by_title[title] for title in titles]


# --- what publishing reads ----------------------------------------------------------


def test_latest_items_and_entries_newest_first_from_the_given_sources(store: Store) -> None:
    poll(store)
    save(store, [item(n) for n in range(1, 6)])
    save(store, [item(9, language="fr")], source="other")
    assert [i.title for i in store.latest_items("en", ["src", "other"], 3)] == [
        "Title 5", "Title 4", "Title 3"]
    assert [i.title for i in store.latest_items(None, ["src", "other"], 2)] == ["Title 9", "Title 5"]
    assert store.latest_items("en", [], 3) == [] and store.latest_entries("en", [], 3) == []
    [newest] = store.latest_items("en", ["src"], 1)
    assert newest.feed == FEED and newest.language == "en" and newest.author == "Ann"
    assert newest.content == "<p>Body 5</p>" and newest.link == "https://up.example/5"
    entries = store.latest_entries("en", ["src"], 2)
    assert [(e.source, e.language, e.updated, e.text, e.cached) for e in entries] == [
        ("src", "en", item(5).published, "<p>Body 5</p>", None),
        ("src", "en", item(4).published, "<p>Body 4</p>", None)]
    assert [i.title for i in store.source_items("src", 2)] == ["Title 5", "Title 4"]
    assert [e.item_id for e in store.source_entries("src", 5)] == [e.item_id for e in
                                                                    store.latest_entries(None, ["src"], 5)]
    inputs = store.source_feed_inputs("src", 2)
    assert len(inputs) == 3 and inputs[-1][:2] == ("urn:up", "Upstream")
    ids = [e.item_id for e in store.latest_entries(None, ["src"], 5)]
    assert [i.title for i in store.page_items(ids[::-1])] == [f"Title {n}" for n in range(1, 6)]
    assert set(store.items_by_id([*ids, 10_000])) == set(ids)


def test_rendered_entries_are_kept_replaced_and_versioned(store: Store) -> None:
    save(store, [item(1), item(2)])
    waiting = store.items_without_entries(0, 10)
    assert [i.title for _, _, i in waiting] == ["Title 1", "Title 2"]
    (first, version, _), (second, _, _) = waiting
    store.save_rendered_entries([(first, RenderedEntry("s1", "en", b"<entry>", b"</entry>"))])
    store.save_rendered_entries([(first, RenderedEntry("s2", "en", b"<entry2>", None)),
                                 (second, RenderedEntry("s3", "fr", b"<e>", b"\x00\xff"))])
    assert [i for i, _, _ in store.items_without_entries(0, 10)] == [second]  # fr is not en
    assert store.items_without_entries(second, 10) == []
    entries = {e.item_id: e for e in store.latest_entries("en", ["src"], 10)}
    assert entries[first].cached == RenderedEntry("s2", "en", b"<entry2>", None)
    assert entries[first].version == version
    fr = {e.item_id: e for e in store.latest_entries("fr", ["src"], 10)}
    assert fr == {}  # no item in fr
    save(store, [item(1, title="changed")], at=T0 + timedelta(hours=1))
    assert {e.item_id: e for e in store.latest_entries("en", ["src"], 10)}[first].version != version


def test_slugs_are_chosen_once_and_clashes_settled(store: Store) -> None:
    def make(name: str) -> str:
        return name.lower().replace(" ", "-")

    assert store.source_slugs(["Le Monde", "BBC"], make) == {"Le Monde": "le-monde", "BBC": "bbc"}
    clash = store.source_slugs(["le monde", "BBC"], make)
    assert clash["BBC"] == "bbc" and clash["le monde"].startswith("le-monde-")
    assert len(clash["le monde"]) == len("le-monde-") + 8
    assert store.source_slugs(["Le Monde"], lambda name: "renamed") == {"Le Monde": "le-monde"}


def test_feed_stamps_are_kept_and_replaced(store: Store) -> None:
    assert store.feed_stamps() == {}
    store.set_feed_stamps({"src": "a", "other": "b"})
    store.set_feed_stamps({"src": "c"})
    store.set_feed_stamps({})
    assert store.feed_stamps() == {"src": "c", "other": "b"}


# --- choosing the backend in config.toml, or FEEDHUB_DATABASE ----------------------


def test_the_configured_database_or_the_environment_picks_the_backend(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from feedhub.config import parse_config
    from feedhub.store import redacted

    monkeypatch.delenv("FEEDHUB_DATABASE", raising=False)
    path = tmp_path / "config.toml"
    hub = parse_config('[hub]\ndatabase = "state/hub.db"\n', path).hub
    assert hub.database == tmp_path / "state" / "hub.db"
    assert hub.local_files == hub.database  # locks beside the SQLite file, as ever
    url = "postgresql://feedhub@db.example:5432/hub?sslmode=verify-full"
    hub = parse_config(f'[hub]\ndatabase = "{url}"\n', path).hub
    assert hub.database == url  # kept as written, not resolved as a path
    assert hub.local_files == tmp_path / "feedhub-postgresql"
    monkeypatch.setenv("FEEDHUB_DATABASE", "postgres://u:secret@/hub?host=/run/pg")
    hub = parse_config('[hub]\ndatabase = "state/hub.db"\n', path).hub
    assert hub.database == "postgres://u:secret@/hub?host=/run/pg"
    assert redacted(str(hub.database)) == "postgres://u:***@/hub?host=/run/pg"
    assert redacted("postgresql:///hub?user=u&password=p&sslmode=require") == (
        "postgresql:///hub?user=u&password=***&sslmode=require")
    assert redacted("postgresql://db/hub") == "postgresql://db/hub"
    monkeypatch.setenv("FEEDHUB_DATABASE", "elsewhere.db")
    assert parse_config("", path).hub.database == tmp_path / "elsewhere.db"


def test_a_configured_url_opens_postgresql(pg_database: str, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from feedhub.config import parse_config

    monkeypatch.setenv("FEEDHUB_DATABASE", pg_database)
    config = parse_config('[hub]\ndatabase = "hub.db"\n', tmp_path / "config.toml")
    with open_store(config.hub.database) as store:
        poll(store)
        assert type(store).__name__ == "PostgresStore"
    assert not (tmp_path / "hub.db").exists()


def test_both_schemas_have_the_same_tables_and_columns(tmp_path: Path, pg_database: str) -> None:
    """A schema step taken on one backend and forgotten on the other shows here."""
    import sqlite3

    import psycopg

    with open_store(tmp_path / "hub.db"):
        pass
    with closing(sqlite3.connect(tmp_path / "hub.db")) as db:
        tables = [name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        on_sqlite = {(table, column) for table in tables
                     for column in (row[1] for row in db.execute(f"PRAGMA table_info({table})"))}
    with open_store(pg_database), psycopg.connect(pg_database) as conn:
        on_postgresql = set(conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name <> 'schema_version'").fetchall())
    assert on_postgresql == on_sqlite


# --- claims and nodes: several daemons on one database ---------------------------


def test_sqlite_claims_always_succeed(tmp_path: Path) -> None:
    """One daemon holds a SQLite hub: a claim left by one killed mid-poll, or
    a source polled early, never stops it."""
    with open_store(tmp_path / "hub.db") as store:
        url = "https://up.example/src.xml"
        poll(store)
        assert store.claim("src", url=url, node="killed", now=T0, until=T0 + timedelta(hours=1))
        assert store.claim("src", url=url, node="restarted", now=T0, until=T0 + timedelta(hours=1))
        assert store.lease("src") == ("restarted", T0 + timedelta(hours=1))


def test_a_due_source_is_claimed_by_one_node_until_its_poll_or_lease_ends(
        pg_database: str) -> None:
    store = open_store(pg_database)
    url = "https://up.example/src.xml"
    lease = T0 + timedelta(minutes=5)
    # never polled: due; the first claim wins, a second node loses
    assert store.claim("src", url=url, node="a", now=T0, until=lease)
    assert not store.claim("src", url=url, node="b", now=T0, until=lease)
    assert store.lease("src") == ("a", lease)
    assert store.claim("src", url=url, node="a", now=T0, until=lease)  # its own again
    # the poll ends the claim; the source is not due before its next_poll
    poll(store)
    assert store.lease("src") is None
    assert not store.claim("src", url=url, node="b", now=T0 + timedelta(minutes=29),
                           until=lease)
    due = T0 + timedelta(minutes=30)
    assert store.claim("src", url=url, node="b", now=due, until=due + timedelta(minutes=5))
    # a lease renewed holds; one expired is free for another node (a dead one's)
    assert store.renew("src", node="b", until=due + timedelta(minutes=10))
    assert not store.renew("src", node="a", until=due + timedelta(hours=1))
    assert not store.claim("src", url=url, node="c", now=due + timedelta(minutes=9),
                           until=due + timedelta(minutes=20))
    assert store.claim("src", url=url, node="c", now=due + timedelta(minutes=10),
                       until=due + timedelta(minutes=20))
    store.release("src", node="b")  # not b's any more: nothing happens
    assert store.lease("src") == ("c", due + timedelta(minutes=20))
    store.release("src", node="c")
    assert store.lease("src") is None
    # a config edit of the URL makes the source due at once
    poll(store, at=due)
    assert not store.claim("src", url=url, node="a", now=due, until=due + timedelta(minutes=5))
    assert store.claim("src", url="https://up.example/moved.xml", node="a", now=due,
                       until=due + timedelta(minutes=5))
    store.close()


def test_of_nodes_claiming_at_once_exactly_one_wins(pg_database: str) -> None:
    """Separate connections racing on the same due sources, as daemons do."""
    import threading

    with open_store(pg_database) as store:
        for n in range(60):
            poll(store, f"s{n}")
    due, wins = T0 + timedelta(minutes=30), {}
    start = threading.Barrier(4)

    def claimer(node: str) -> None:
        with open_store(pg_database) as store:
            start.wait()
            wins[node] = {f"s{n}" for n in range(60) if store.claim(
                f"s{n}", url=f"https://up.example/s{n}.xml", node=node, now=due,
                until=due + timedelta(minutes=5))}

    threads = [threading.Thread(target=claimer, args=(f"node{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    won = [name for names in wins.values() for name in names]
    assert sorted(won) == sorted(f"s{n}" for n in range(60))  # each once, none lost


def test_nodes_beat_and_the_silent_ones_age_out(store: Store) -> None:
    store.node_seen("a", hostname="h1", pid=1, config_hash="x", started=T0, at=T0)
    store.node_seen("b", hostname="h2", pid=2, config_hash="y", started=T0 + timedelta(seconds=1),
                    at=T0 + timedelta(seconds=1))
    store.node_seen("a", hostname="h1", pid=1, config_hash="z", started=T0,
                    at=T0 + timedelta(seconds=30))
    nodes = store.live_nodes(T0 + timedelta(seconds=1))
    assert [(n.node, n.hostname, n.pid, n.config_hash, n.started) for n in nodes] == [
        ("a", "h1", 1, "z", T0), ("b", "h2", 2, "y", T0 + timedelta(seconds=1))]
    assert nodes[0].last_seen == T0 + timedelta(seconds=30)
    assert [n.node for n in store.live_nodes(T0 + timedelta(seconds=2))] == ["a"]
    store.node_gone("a")
    assert store.live_nodes(T0) == []


def test_one_publisher_at_a_time_across_nodes(pg_database: str) -> None:
    with open_store(pg_database) as one, open_store(pg_database) as other:
        with one.publish_lock(wait=False), pytest.raises(BlockingIOError), \
                other.publish_lock(wait=False):
            pass
        with other.publish_lock(wait=False):  # freed
            pass


def test_the_change_log_tells_every_node_what_changed(store: Store) -> None:
    assert store.last_change() == 0 and store.changes_after(0) == []
    first = store.log_change({"en", "de"}, ["a"], T0)
    second = store.log_change(None, None, T0)
    assert store.last_change() == second > first
    assert store.changes_after(0) == [(first, ["de", "en"], ["a"]), (second, None, None)]
    assert store.changes_after(first) == [(second, None, None)]


def test_host_slots_are_leased_and_starts_booked_apart(store: Store) -> None:
    now = 1_000.0
    assert store.take_host_slot("h", node="a", slots=2, now=now, until=now + 60) == 0
    assert store.take_host_slot("h", node="b", slots=2, now=now, until=now + 60) == 1
    assert store.take_host_slot("h", node="c", slots=2, now=now, until=now + 60) is None
    assert store.take_host_slot("other", node="c", slots=2, now=now, until=now + 60) == 0
    store.release_host_slot("h", 0, node="b")  # not b's: still a's
    assert store.take_host_slot("h", node="c", slots=2, now=now, until=now + 60) is None
    store.release_host_slot("h", 0, node="a")
    assert store.take_host_slot("h", node="c", slots=2, now=now, until=now + 600) == 0
    # b died holding slot 1: its lease runs out and the slot is free again
    assert store.take_host_slot("h", node="d", slots=2, now=now + 60, until=now + 120) == 1
    # starts: now, then each `spacing` after the one booked before, then now again
    assert [store.book_host_start("h", now=now, spacing=2.0) for _ in range(3)] == [
        now, now + 2, now + 4]
    assert store.book_host_start("h", now=now + 10, spacing=2.0) == now + 10
