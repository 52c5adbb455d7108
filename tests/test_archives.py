"""RFC 5005 archived feeds: a subscriber who walks prev-archive back from a
language feed gets every item the hub ever published there, once; archive
pages, once written, never change (but a takedown reaches into them)."""

from __future__ import annotations

import fcntl
import sqlite3
import subprocess
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import lxml.etree

from atomcheck import assert_valid_atom_tree
from feedhub.models import Item
from feedhub.publish import slugify
from feedhub.store import Store, open_store
from hubdir import HubDir, files_under

ATOM = "{http://www.w3.org/2005/Atom}"
HISTORY = "{http://purl.org/syndication/history/1.0}"
BASE = "https://hub.example.org/feeds/"
START = datetime(2026, 1, 1, tzinfo=UTC)


def rss(source: str, numbers: range) -> str:
    """An upstream feed showing only its newest items, as news sites do."""
    items = "".join(
        f"<item><title>{source} {n}</title><guid>{source}-{n}</guid>"
        f"<link>https://{source}.example.com/{n}</link>"
        f"<pubDate>{format_datetime(START + timedelta(hours=n))}</pubDate>"
        f"<description>Story {n} from {source}.</description></item>" for n in numbers)
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{source}</title>'
            f"<link>https://{source}.example.com/</link><language>en</language>{items}"
            "</channel></rss>")


def archived_hub(hub: HubDir, feed_server, sources: tuple[str, ...] = ("alpha",), *,
                 page_size: int = 3) -> HubDir:
    text = hub.config.read_text(encoding="utf-8").replace(
        "host_spacing = 0", f"host_spacing = 0\narchive_page_size = {page_size}").replace(
        "items_per_feed = 50", "items_per_feed = 5")
    for source in sources:
        text += (f'\n[[sources]]\nname = "{source}"\nurl = "{feed_server.url(f"/{source}.rss")}"\n'
                 'fulltext = "never"\n')
    hub.config.write_text(text, encoding="utf-8")
    return hub


def walk(hub: HubDir, language: str = "en") -> list[lxml.etree._Element]:
    """Follow prev-archive from the subscription document to the oldest
    archive, as an RFC 5005 client does; return the documents in order."""
    documents = []
    path: Path | None = hub.feeds / f"{language}.atom"
    while path is not None:
        root = lxml.etree.parse(str(path)).getroot()
        documents.append(root)
        prev = root.find(f"{ATOM}link[@rel='prev-archive']")
        path = hub.feeds / prev.get("href").removeprefix(BASE) if prev is not None else None
        assert len(documents) < 100, "the prev-archive chain loops"
    return documents


def entry_links(root: lxml.etree._Element) -> list[str]:
    return [entry.find(f"{ATOM}link[@rel='alternate']").get("href")
            for entry in root.iter(f"{ATOM}entry")]


def archive_files(hub: HubDir) -> dict[str, bytes]:
    return {str(p.relative_to(hub.feeds)): p.read_bytes()
            for p in sorted((hub.feeds / "archive").rglob("*.atom"))}


def test_walking_the_archive_chain_recovers_every_item_exactly_once(hub: HubDir, feed_server) -> None:
    archived_hub(hub, feed_server)
    published: list[str] = []
    earlier: dict[str, bytes] = {}
    newest = 0
    for batch in (4, 7, 1, 9, 6):  # the upstream feed grows; it shows only its newest 10
        newest += batch
        feed_server.serve("/alpha.rss", rss("alpha", range(max(1, newest - 9), newest + 1)),
                          content_type="application/rss+xml")
        assert hub.run("poll", "--all").returncode == 0
        published += [f"https://alpha.example.com/{n}" for n in range(newest - batch + 1, newest + 1)]

        archives = archive_files(hub)
        for name, data in earlier.items():  # an archive page, once written, never changes
            assert archives[name] == data, f"{name} changed"
        earlier = archives

        documents = walk(hub)
        collected = [link for root in documents for link in entry_links(root)]
        assert sorted(collected) == sorted(published)  # all of them, none twice
        current = documents[0]
        assert len(entry_links(current)) >= min(5, len(published))  # items_per_feed = 5
        assert current.find(f"{HISTORY}archive") is None
        for root in documents[1:]:
            assert root.find(f"{HISTORY}archive") is not None
            assert root.find(f"{ATOM}link[@rel='current']").get("href") == f"{BASE}en.atom"
            assert root.findtext(f"{ATOM}id") == current.findtext(f"{ATOM}id")  # one logical feed
    assert len(earlier) == (27 - 5) // 3  # pages of 3 filed while more than 5+2 waited
    assert newest == 27
    # the newest items are in the subscription document, the oldest in page 1
    assert "https://alpha.example.com/27" in entry_links(walk(hub)[0])
    assert entry_links(walk(hub)[-1]) and set(entry_links(walk(hub)[-1])) <= {
        f"https://alpha.example.com/{n}" for n in (1, 2, 3)}
    assert assert_valid_atom_tree(hub.feeds) >= 2 + len(earlier)


def test_withdraw_removes_a_source_from_every_archive_page_and_leaves_others_alone(
        hub: HubDir, feed_server) -> None:
    archived_hub(hub, feed_server, ("alpha", "beta"))
    feed_server.serve("/alpha.rss", rss("alpha", range(1, 9)), content_type="application/rss+xml")
    feed_server.serve("/beta.rss", rss("beta", range(1, 3)), content_type="application/rss+xml")
    assert hub.run("poll", "--all").returncode == 0  # beta's 2 and alpha's 8 items, filed in
    feed_server.serve("/beta.rss", rss("beta", range(20, 29)), content_type="application/rss+xml")
    assert hub.run("poll", "--all").returncode == 0  # ... then beta's 9 newer ones
    before = archive_files(hub)
    assert len(before) >= 3
    holds_beta = {name for name, data in before.items() if b"beta.example.com" in data}
    assert holds_beta and holds_beta != set(before)

    result = hub.run("withdraw", "beta")
    assert result.returncode == 0, result.stderr

    collected = [link for root in walk(hub) for link in entry_links(root)]
    assert not [link for link in collected if "beta" in link]
    assert sorted(collected) == sorted(f"https://alpha.example.com/{n}" for n in range(1, 9))
    after = archive_files(hub)
    assert after.keys() == before.keys()  # the chain keeps its shape: no URL disappears
    for name in before.keys() - holds_beta:
        assert after[name] == before[name], f"{name} had no beta item, yet changed"
    assert all(b"beta.example.com" not in after[name] for name in holds_beta)
    assert assert_valid_atom_tree(hub.feeds) >= 2 + len(after)


def test_lost_archive_pages_are_written_again_identically(hub: HubDir, feed_server) -> None:
    archived_hub(hub, feed_server)
    feed_server.serve("/alpha.rss", rss("alpha", range(1, 15)), content_type="application/rss+xml")
    assert hub.run("poll").returncode == 0
    before = archive_files(hub)
    assert before
    for path in (hub.feeds / "archive").rglob("*.atom"):
        path.unlink()
    assert hub.run("publish").returncode == 0
    assert archive_files(hub) == before


def test_archive_page_size_zero_keeps_a_plain_sliding_window(hub: HubDir, feed_server) -> None:
    archived_hub(hub, feed_server, page_size=0)
    feed_server.serve("/alpha.rss", rss("alpha", range(1, 15)), content_type="application/rss+xml")
    assert hub.run("poll").returncode == 0
    [current] = walk(hub)
    assert len(entry_links(current)) == 5
    assert not (hub.feeds / "archive").exists()


def stored(tmp_path: Path, sources: dict[str, int]) -> Store:
    """A store holding `count` English items per source, filed in arrival order."""
    store = open_store(tmp_path / "hub.db")
    for source, count in sources.items():
        store.save_items(source, [Item(
            upstream_id=f"{source}-{n}", title=f"{source} {n}", link=f"https://{source}.example/{n}",
            author=None, published=START + timedelta(hours=n), published_estimated=False,
            updated=None, content="<p>text</p>", content_is_full=True, language="en")
            for n in range(count)], seen_at=START, id_authority="hub.example.org")
    return store


def test_a_takedown_during_a_rewrite_is_not_forgotten(tmp_path: Path) -> None:
    store = stored(tmp_path, {"a": 2, "b": 2, "c": 4})
    assert store.close_archive_pages("en", ["a", "b", "c"], keep=2, page_size=6) == [1]
    store.withdraw("a", START)
    [(lang, page, requested)] = store.archive_rewrites("")  # a publish starts writing page 1...
    store.withdraw("b", START)  # ... and another takedown touches page 1 meanwhile
    store.archive_rewritten("", lang, page, requested)  # the first publish finishes
    assert [(lang, page)] == [row[:2] for row in store.archive_rewrites("")]  # still to do
    assert {i.source for i in store.archive_items("en", 1)} == {"c"}
    store.archive_rewritten("", *store.archive_rewrites("")[0])
    assert store.archive_rewrites("") == []
    store.close()


def test_a_source_feed_keeps_its_file_name_whoever_comes_and_goes(tmp_path: Path) -> None:
    store = stored(tmp_path, {})
    first = store.source_slugs(["Foo Bar", "foo bar", "Persian خبر"], slugify)
    assert first["Foo Bar"] == "foo-bar" and first["foo bar"].startswith("foo-bar-")
    assert first["Persian خبر"] == "persian"
    # "Foo Bar" is removed: "foo bar" keeps its own name, nobody takes over "foo-bar"
    assert store.source_slugs(["foo bar"], slugify) == {"foo bar": first["foo bar"]}
    assert store.source_slugs(["Foo-Bar!"], slugify)["Foo-Bar!"] not in first.values()
    store.close()


def test_two_publishers_take_turns(tmp_path: Path, hub: HubDir, feed_server) -> None:
    archived_hub(hub, feed_server)
    feed_server.serve("/alpha.rss", rss("alpha", range(1, 4)), content_type="application/rss+xml")
    lock = tmp_path / "feedhub.db.publish.lock"
    with open(lock, "a+b") as handle:  # another process is publishing
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
        waiting = subprocess.Popen(hub.command("poll"), cwd=hub.root, stdout=subprocess.PIPE,
                                   stderr=subprocess.PIPE, text=True)
        time.sleep(3)
        assert waiting.poll() is None and not (hub.feeds / "en.atom").exists()
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
    assert waiting.wait(timeout=30) == 0
    assert len(entry_links(walk(hub)[0])) == 3


# --- issue 11: the subscription document shows the newest items ------------------


def dated_rss(source: str, hours: list[int]) -> str:
    """An upstream feed with one item per hour offset, in the order given."""
    return rss(source, range(0)).replace("</channel>", "".join(
        f"<item><title>{source} {n}</title><guid>{source}-{n}</guid>"
        f"<link>https://{source}.example.com/{n}</link>"
        f"<pubDate>{format_datetime(START + timedelta(hours=n))}</pubDate>"
        f"<description>Story {n} from {source}.</description></item>" for n in hours)
        + "</channel>")


def newest_hub(hub: HubDir, feed_server, sources: tuple[str, ...]) -> HubDir:
    """items_per_feed = 20 and the default archive pages of 20."""
    text = hub.config.read_text(encoding="utf-8").replace("items_per_feed = 50",
                                                          "items_per_feed = 20")
    for source in sources:
        text += (f'\n[[sources]]\nname = "{source}"\nurl = "{feed_server.url(f"/{source}.rss")}"\n'
                 'fulltext = "never"\n')
    hub.config.write_text(text, encoding="utf-8")
    return hub


def by_date(*feeds: tuple[str, list[int]]) -> list[str]:
    """Every item's link, newest first."""
    return [f"https://{s}.example.com/{n}"
            for n, s in sorted(((n, s) for s, hours in feeds for n in hours), reverse=True)]


def test_the_subscription_document_holds_the_newest_items_of_a_newest_first_feed(
        hub: HubDir, feed_server) -> None:
    newest_hub(hub, feed_server, ("alpha",))
    hours = list(range(50, 0, -1))  # 50 items, newest first, as news sites list them
    feed_server.serve("/alpha.rss", dated_rss("alpha", hours), content_type="application/rss+xml")
    assert hub.run("poll", "--all").returncode == 0
    documents = walk(hub)
    current = entry_links(documents[0])
    assert len(documents) == 2 and len(current) == 30
    assert by_date(("alpha", hours))[:20] == current[:20]  # the 20 newest, newest first
    collected = [link for root in documents for link in entry_links(root)]
    assert sorted(collected) == sorted(by_date(("alpha", hours)))  # every item, once
    assert set(entry_links(documents[1])) == set(by_date(("alpha", hours))[30:])  # the oldest


def test_the_subscription_document_holds_the_newest_items_across_sources(
        hub: HubDir, feed_server) -> None:
    newest_hub(hub, feed_server, ("alpha", "beta"))
    alpha, beta = list(range(2, 51, 2)), list(range(1, 50, 2))  # dates interleave
    feed_server.serve("/alpha.rss", dated_rss("alpha", alpha), content_type="application/rss+xml")
    feed_server.serve("/beta.rss", dated_rss("beta", beta), content_type="application/rss+xml")
    assert hub.run("poll", "--all").returncode == 0  # whichever poll finishes first
    documents = walk(hub)
    newest = by_date(("alpha", alpha), ("beta", beta))
    assert entry_links(documents[0])[:20] == newest[:20]
    collected = [link for root in documents for link in entry_links(root)]
    assert sorted(collected) == sorted(newest)


def test_a_late_old_item_waits_in_the_subscription_document_and_pages_stay_as_written(
        hub: HubDir, feed_server) -> None:
    newest_hub(hub, feed_server, ("alpha",))
    hours = list(range(100, 50, -1))  # 50 items: hours 51..100
    feed_server.serve("/alpha.rss", dated_rss("alpha", hours), content_type="application/rss+xml")
    assert hub.run("poll", "--all").returncode == 0
    pages = archive_files(hub)
    assert list(pages) == ["archive/en/1.atom"]

    # an item dated before everything archived turns up, with 5 new ones
    late = list(range(105, 100, -1)) + hours + [7]
    feed_server.serve("/alpha.rss", dated_rss("alpha", late), content_type="application/rss+xml")
    assert hub.run("poll", "--all").returncode == 0
    documents = walk(hub)
    current = entry_links(documents[0])
    assert current[:20] == by_date(("alpha", late))[:20]
    assert current[-1] == "https://alpha.example.com/7"  # it waits for the next page
    assert archive_files(hub) == pages

    # 5 more: a page is filed, and it takes the oldest waiting items, the late one first
    later = list(range(110, 105, -1)) + late
    feed_server.serve("/alpha.rss", dated_rss("alpha", later), content_type="application/rss+xml")
    assert hub.run("poll", "--all").returncode == 0
    documents = walk(hub)
    assert len(documents) == 3
    assert entry_links(documents[0])[:20] == by_date(("alpha", later))[:20]
    assert "https://alpha.example.com/7" in entry_links(documents[1])
    after = archive_files(hub)
    assert {name: after[name] for name in pages} == pages  # written pages never change
    collected = [link for root in documents for link in entry_links(root)]
    assert sorted(collected) == sorted(by_date(("alpha", later)))  # every item, once


def emptied_documents(hub: HubDir) -> dict[str, bytes]:
    """Every Atom document feedhub wrote, checked to have no entries and an
    <updated> of the last few minutes (when it became empty), not 1970."""
    documents = {str(p.relative_to(hub.feeds)): p.read_bytes()
                 for p in sorted(hub.feeds.rglob("*.atom"))}
    for name, data in documents.items():
        root = lxml.etree.fromstring(data)
        assert root.find(f"{ATOM}entry") is None, name
        updated = datetime.fromisoformat(root.findtext(f"{ATOM}updated"))
        assert timedelta(0) <= datetime.now(UTC) - updated < timedelta(minutes=5), (name, updated)
    return documents


def test_a_takedown_that_empties_every_document_dates_them_when_they_became_empty(
        hub: HubDir, feed_server) -> None:
    archived_hub(hub, feed_server)
    feed_server.serve("/alpha.rss", rss("alpha", range(1, 12)), content_type="application/rss+xml")
    assert hub.run("poll").returncode == 0
    assert len(archive_files(hub)) == 2
    assert hub.run("withdraw", "alpha").returncode == 0
    documents = emptied_documents(hub)
    assert {"en.atom", "all.atom", "sources/alpha.atom", "archive/en/1.atom",
            "archive/en/2.atom"} <= set(documents)
    time.sleep(1.1)  # a clock that moved on must not change them
    again = hub.run("publish")
    assert again.returncode == 0 and "written" not in again.stdout
    assert emptied_documents(hub) == documents  # same bytes


def renamed_rss(title: str, built: datetime, numbers: range) -> str:
    """rss(), with the channel's own title and date (lastBuildDate)."""
    return rss("alpha", numbers).replace(
        "<title>alpha</title>",
        f"<title>{title}</title><lastBuildDate>{format_datetime(built)}</lastBuildDate>", 1)


def test_a_restored_archive_page_keeps_its_sources_feed_info_as_it_was_when_closed(
        hub: HubDir, feed_server) -> None:
    """A page written after upstream changed its feed (here restored by a
    full publish; on a shared database, also a node catching up) carries
    the atom:source it was closed with: its bytes do not depend on when,
    or by whom, it is written."""
    archived_hub(hub, feed_server)
    feed_server.serve("/alpha.rss", renamed_rss("Alpha", START + timedelta(hours=20),
                                                range(1, 15)), content_type="application/rss+xml")
    assert hub.run("poll").returncode == 0
    before = files_under(hub.feeds, "archive")
    assert [name for name in before if name.endswith(".atom")] == [
        f"archive/en/{n}.atom" for n in (1, 2, 3)]
    assert b"<title>Alpha</title>" in before["archive/en/1.atom"]
    # upstream renames its feed and dates it later, same items: the source's info changes
    later = START + timedelta(days=40)
    feed_server.serve("/alpha.rss", renamed_rss("Alpha, renamed", later, range(1, 15)),
                      content_type="application/rss+xml")
    assert hub.run("poll", "--all").returncode == 0  # due or not
    with open_store(hub.database) as store:
        assert store.feeds()["alpha"].title == "Alpha, renamed"
        assert store.feeds()["alpha"].updated == later
    current = (hub.feeds / "en.atom").read_bytes()
    assert b"<title>Alpha, renamed</title>" in current and later.isoformat().encode() in current
    for path in (hub.feeds / "archive").rglob("*"):
        if path.is_file():
            path.unlink()
    assert hub.run("publish").returncode == 0
    after = files_under(hub.feeds, "archive")
    assert after == before


def test_a_page_closed_before_feed_info_was_frozen_shows_the_current_feed_info(
        hub: HubDir, feed_server) -> None:
    """Pages closed before schema 14 have no frozen feed info: they are
    written with their sources' current info, as they always were."""
    archived_hub(hub, feed_server)
    feed_server.serve("/alpha.rss", rss("alpha", range(1, 15)), content_type="application/rss+xml")
    assert hub.run("poll").returncode == 0
    before = archive_files(hub)
    with sqlite3.connect(hub.database) as db:  # as a hub upgraded from schema 13 has it
        assert db.execute("DELETE FROM archive_sources").rowcount == len(before)  # one source
    db.close()
    for path in (hub.feeds / "archive").rglob("*.atom"):
        path.unlink()
    assert hub.run("publish").returncode == 0
    assert archive_files(hub) == before


# --- the HTML pages come after the feeds (Hub._write_later) ---------------------

_SMALL = """[hub]
title = "T"
base_url = "https://hub.example.org/feeds/"
items_per_feed = 2
archive_page_size = 3
host_spacing = 0

[[sources]]
name = "a"
url = "https://a.example/feed"
fulltext = "never"
"""
_START = datetime(2026, 1, 1, tzinfo=UTC)


def _small_hub(tmp_path: Path) -> tuple[object, Path]:
    from feedhub.config import parse_config

    (tmp_path / "config.toml").write_text(_SMALL, encoding="utf-8")
    config = parse_config(_SMALL, tmp_path / "config.toml")
    return config, config.hub.output_dir


def _add(store: Store, first: int, last: int) -> None:
    store.save_items("a", [Item(
        upstream_id=f"a-{n}", title=f"a {n}", link=f"https://a.example/{n}", author=None,
        published=_START + timedelta(hours=n), published_estimated=False, updated=None,
        content=f"<p>article {n}</p>", content_is_full=True, language="en")
        for n in range(first, last)], seen_at=_START + timedelta(hours=last),
        id_authority="hub.example.org")


def test_an_archive_page_whose_html_failed_after_its_feed_is_written_at_the_next_publish(
        tmp_path: Path, monkeypatch) -> None:
    """A publish writes its Atom documents, then their copies and its pages:
    if that round fails (a full disk), the archive page it closed has its
    feed but no HTML page and no copies, and the next publish, even one of a
    single source as the daemon makes, writes them; the language page's
    "older" link is never left pointing at nothing."""
    import pytest

    from feedhub.hub import Hub

    config, output = _small_hub(tmp_path)
    with open_store(config.hub.database) as store:  # type: ignore[attr-defined]
        hub = Hub(config, store, None)  # type: ignore[arg-type]
        _add(store, 0, 2)
        hub.publish()
        _add(store, 2, 6)  # closes archive page 1

        def full_disk(self: Hub, *args: object) -> set[tuple[str, int]]:
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as patched:
            patched.setattr(Hub, "_write_later", full_disk)
            with pytest.raises(OSError):
                hub.publish({"en"}, {"a"})
        assert (output / "archive/en/1.atom").exists()
        assert not (output / "archive/en/1.html").exists()
        assert not (output / "archive/en/1.atom.br").exists()  # its copies come with the pages
        hub.publish({"en"}, {"a"})
        assert (output / "archive/en/1.html").exists()
        for copy in ("1.atom.br", "1.atom.gz", "1.html.br", "1.html.gz"):
            assert (output / "archive/en" / copy).stat().st_size > 0, copy
        assert b'href="archive/en/1.html"' in (output / "en.html").read_bytes()
        stamp = (output / "archive/en/1.html").stat().st_mtime_ns
        hub.publish({"en"}, {"a"})  # done: the next publishes do not look again
        assert (output / "archive/en/1.html").stat().st_mtime_ns == stamp


def test_a_takedown_is_done_only_once_the_archive_html_page_no_longer_shows_it(
        tmp_path: Path, monkeypatch) -> None:
    """A takedown rewrites the archive pages that held the items: while
    their HTML page cannot be made (a template failing), the takedown stays
    queued and each publish tries again; once the page is written, the item
    is on no page and the queue is empty."""
    import feedhub.hub as hub_module
    from feedhub.hub import Hub
    from feedhub.pages import TemplateError

    config, output = _small_hub(tmp_path)
    real_render_page = hub_module.render_page

    def failing(*args: object, **kwargs: object) -> bytes:
        raise TemplateError("templates/page.html line 1: made to fail")

    with open_store(config.hub.database) as store:  # type: ignore[attr-defined]
        hub = Hub(config, store, None)  # type: ignore[arg-type]
        _add(store, 0, 6)
        hub.publish()
        assert b"article 0" in (output / "archive/en/1.html").read_bytes()
        assert store.withdraw("a", _START + timedelta(days=1)) == 6
        with monkeypatch.context() as patched:
            patched.setattr(hub_module, "render_page", failing)
            hub.publish()
        assert b"article 0" not in (output / "archive/en/1.atom").read_bytes()
        assert b"article 0" in (output / "archive/en/1.html").read_bytes()  # still: it failed
        assert store.archive_rewrites(hub.publisher) != []
        assert hub_module.render_page is real_render_page
        hub.publish()
        assert b"article 0" not in (output / "archive/en/1.html").read_bytes()
        assert store.archive_rewrites(hub.publisher) == []
