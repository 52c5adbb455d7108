"""Store and publish without the network: identity, updates, ordering,
credits, and files that are replaced atomically or not at all."""

from __future__ import annotations

import os
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

import feedparser
import lxml.etree
import pytest

from feedhub import _files
from feedhub.config import parse_config
from feedhub.credits import DEFAULT_CREDITS, check_template, credit_template, render_credit
from feedhub.models import FeedInfo, Item, Link
from feedhub.publish import publish_feeds, publish_index, render_feed
from feedhub.store import Store, open_store

T0 = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def item(n: int, **changes: object) -> Item:
    base = Item(upstream_id=f"guid-{n}", title=f"Title {n}", link=f"https://up.example/{n}",
                author="Ann", published=T0 + timedelta(hours=n), published_estimated=False,
                updated=None, content=f"<p>Body {n}</p>", content_is_full=True, language="en")
    return replace(base, **changes)


@pytest.fixture
def store(tmp_path: Path):
    with open_store(tmp_path / "hub.db") as store:
        store.record_poll("src", url="https://up.example/feed", status=200, error=None, at=T0,
                          next_poll=None,
                          feed=FeedInfo(id="urn:up", title="Upstream",
                                        links=(Link("https://up.example/feed", rel="self"),)))
        yield store


@pytest.fixture
def config(tmp_path: Path):
    return parse_config('[hub]\nbase_url = "https://hub.example.org/f/"\nitems_per_feed = 3\n'
                        '[[sources]]\nname = "src"\nurl = "https://up.example/feed"\n',
                        tmp_path / "config.toml")


def test_new_changed_and_unchanged_items_are_counted_and_ids_never_change(store: Store) -> None:
    outcome, languages = store.save_items("src", [item(1), item(2)], seen_at=T0,
                                          id_authority="hub.example.org")
    assert (outcome.new, outcome.updated, outcome.unchanged) == (2, 0, 0)
    assert languages == {"en"}
    [first_before] = [i for i in store.latest_items("en", ["src"], 10) if i.title == "Title 1"]

    later = T0 + timedelta(days=1)
    outcome, _ = store.save_items("src", [item(1, title="Title 1 (corrected)"), item(2)],
                                  seen_at=later, id_authority="other.example")
    assert (outcome.new, outcome.updated, outcome.unchanged) == (0, 1, 1)
    [first_after] = [i for i in store.latest_items("en", ["src"], 10)
                     if i.title.startswith("Title 1")]
    assert first_after.atom_id == first_before.atom_id
    assert first_after.atom_id.startswith("tag:hub.example.org,2024-05-01:item/")
    assert first_after.updated == later
    assert first_after.published == first_before.published


def test_duplicate_guids_in_one_fetch_store_one_item(store: Store) -> None:
    outcome, _ = store.save_items("src", [item(1), item(1, title="dup")], seen_at=T0,
                                  id_authority="h")
    assert outcome.new == 1
    assert [i.title for i in store.latest_items("en", ["src"], 10)] == ["Title 1"]


def test_same_guid_from_two_sources_are_two_items(store: Store) -> None:
    store.save_items("src", [item(1)], seen_at=T0, id_authority="h")
    store.save_items("other", [item(1)], seen_at=T0, id_authority="h")
    ids = {i.atom_id for i in store.latest_items("en", ["src", "other"], 10)}
    assert len(ids) == 2


def test_feed_is_newest_first_limited_and_only_from_configured_sources(store: Store, config) -> None:
    store.save_items("src", [item(n) for n in range(5)], seen_at=T0, id_authority="h")
    store.save_items("removed", [item(9)], seen_at=T0, id_authority="h")
    items = store.latest_items("en", [s.name for s in config.sources], config.hub.items_per_feed)
    feed = feedparser.parse(render_feed(config, "en", items))
    assert [e.title for e in feed.entries] == ["Title 4", "Title 3", "Title 2"]
    assert feed.feed.updated == (T0 + timedelta(hours=4)).isoformat()


def test_rendering_is_deterministic_and_unchanged_feeds_are_not_rewritten(
        store: Store, config) -> None:
    store.save_items("src", [item(1)], seen_at=T0, id_authority="h")
    items = store.latest_items("en", ["src"], 3)
    assert render_feed(config, "en", items) == render_feed(config, "en", items)
    [first] = publish_feeds(config, {"en": items})
    assert first.written
    stat = first.path.stat()
    [second] = publish_feeds(config, {"en": items})
    assert not second.written
    assert (first.path.stat().st_ino, first.path.stat().st_mtime_ns) == (stat.st_ino,
                                                                          stat.st_mtime_ns)


def test_a_failed_write_leaves_the_previous_feed_intact(store: Store, config, monkeypatch) -> None:
    store.save_items("src", [item(1)], seen_at=T0, id_authority="h")
    [published] = publish_feeds(config, {"en": store.latest_items("en", ["src"], 3)})
    before = published.path.read_bytes()

    def fail(*args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_files.os, "replace", fail)
    store.save_items("src", [item(2)], seen_at=T0, id_authority="h")
    with pytest.raises(OSError, match="No space"):
        publish_feeds(config, {"en": store.latest_items("en", ["src"], 3)})
    assert published.path.read_bytes() == before
    assert [p.name for p in published.path.parent.iterdir() if p.name.startswith(".")] == []


def test_atom_source_links_keep_rel_and_enclosures_keep_type_and_length(store: Store,
                                                                         config) -> None:
    enclosure = Link("https://up.example/a.mp3", rel="enclosure", type="audio/mpeg", length=99)
    store.save_items("src", [item(1, enclosures=(enclosure,), categories=("World", "Peru"),
                                  rights="CC BY 4.0")], seen_at=T0, id_authority="h")
    root = lxml.etree.fromstring(render_feed(config, "en", store.latest_items("en", ["src"], 3)))
    ns = {"a": "http://www.w3.org/2005/Atom"}
    links = {(e.get("rel"), e.get("href"), e.get("type"), e.get("length"))
             for e in root.findall("a:entry/a:link", ns)}
    assert links == {("alternate", "https://up.example/1", "text/html", None),
                     ("enclosure", "https://up.example/a.mp3", "audio/mpeg", "99")}
    assert [c.get("term") for c in root.findall("a:entry/a:category", ns)] == ["World", "Peru"]
    assert root.findtext("a:entry/a:rights", namespaces=ns) == "CC BY 4.0"
    source = root.find("a:entry/a:source", ns)
    assert source.findtext("a:id", namespaces=ns) == "urn:up"
    assert source.findtext("a:title", namespaces=ns) == "Upstream"
    assert source.find("a:link", ns).get("rel") == "self"


@pytest.mark.parametrize("language", sorted(DEFAULT_CREDITS))
def test_default_credit_in_each_language_names_source_link_and_date(language: str) -> None:
    credit = render_credit(credit_template(language, None), source_name="World Socialist",
                           link="https://wsws.example/a", author="Andrea Lobo",
                           date=datetime(2022, 12, 28, tzinfo=UTC))
    assert '<a href="https://wsws.example/a">World Socialist</a>' in credit
    assert "Andrea Lobo" in credit
    assert "28" in credit and "2022" in credit


def test_unknown_language_credit_falls_back_to_english_and_values_are_escaped() -> None:
    assert credit_template("sv", None) == DEFAULT_CREDITS["en"]
    credit = render_credit("{source} {author}", source_name="A&B", link='https://x.example/"',
                           author="<script>x</script>", date=T0)
    assert "<script>" not in credit and "&lt;script&gt;" in credit and "A&amp;B" in credit


def test_credit_template_is_checked() -> None:
    check_template("{source} {date:%d.%m.%Y}")
    with pytest.raises(ValueError, match="nope"):
        check_template("{nope}")


def test_index_opml_lists_every_language_feed(store: Store, config) -> None:
    """index.html is a template (test_pages.py); publish_index writes the OPML."""
    store.save_items("src", [item(1), item(2, language="fa-IR")], seen_at=T0, id_authority="h")
    publish_feeds(config, {lang: store.latest_items(lang, ["src"], 3) for lang in ("en", "fa")})
    assert publish_index(config, {}) == (["en", "fa"], [])
    out = config.hub.output_dir
    assert sorted(name for name in os.listdir(out) if not name.endswith((".br", ".gz"))) == [
        "en.atom", "fa.atom", "index.opml"]  # each with its compressed copies (issue 15)
    opml = lxml.etree.parse(str(out / "index.opml"))
    assert [o.get("xmlUrl") for o in opml.iter("outline")] == [
        "https://hub.example.org/f/en.atom", "https://hub.example.org/f/fa.atom"]
