"""JSON Feed 1.0 and 1.1 are sources like RSS and Atom: through the real CLI,
served on 127.0.0.1 with ETag and Last-Modified. The field mapping (a real
captured feed and fixtures written from the 1.1 spec), conditional GET and
the body hash, hostile JSON as a clear per-source error or skipped items,
discovery, OPML export and `list`. Every document published is checked by
the autouse atomcheck (conftest.py)."""

from __future__ import annotations

import json
import sqlite3
from datetime import UTC, datetime

import lxml.etree
import pytest

from hubdir import FIXTURES, HubDir
from shared import SHARED

JSON_FEED = "application/feed+json"
HTML = "text/html; charset=utf-8"
ATOM = "{http://www.w3.org/2005/Atom}"
SAMPLE = SHARED / "corpus" / "realworld" / \
    "json_feed_sample.json"
TEN = (FIXTURES / "jsonfeed-1.0.json").read_text(encoding="utf-8")  # 1.0: author, no language
ELF = (FIXTURES / "jsonfeed-1.1.json").read_text(encoding="utf-8")  # 1.1: every field


def add_source(hub: HubDir, name: str, url: str) -> None:
    """A source as an editor writes it by hand: no language pinned (`add`
    pins the feed's), so item-level languages count; no full text (the
    articles are not on 127.0.0.1)."""
    with hub.config.open("a", encoding="utf-8") as config:
        config.write(f'\n[[sources]]\nname = "{name}"\nurl = "{url}"\nfulltext = "never"\n')


def poll(hub: HubDir) -> list[dict]:
    done = hub.run("poll", "--all", "--json")
    assert "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout)


def entries(hub: HubDir, language: str) -> dict[str, object]:
    return {entry.title: entry for entry in hub.feed(language).entries}


def atom_source(hub: HubDir, language: str, title: str) -> lxml.etree._Element:
    root = lxml.etree.parse(hub.feeds / f"{language}.atom").getroot()
    [entry] = [e for e in root.iter(f"{ATOM}entry") if e.findtext(f"{ATOM}title") == title]
    return entry.find(f"{ATOM}source")


def enclosures(entry) -> list[tuple[str, str | None, str | None]]:
    return [(link.href, link.get("type"), link.get("length"))
            for link in entry.links if link.rel == "enclosure"]


# --- the field mapping ----------------------------------------------------------


@pytest.mark.skipif(not SAMPLE.exists(), reason="the shared corpus is not beside this checkout")
def test_the_real_sample_is_added_polled_and_republished(hub: HubDir, feed_server) -> None:
    feed_server.serve("/feed.json", SAMPLE.read_bytes(), content_type=JSON_FEED)
    url = feed_server.url("/feed.json")
    added = hub.run("add", url, "--no-fulltext")
    assert added.returncode == 0, added.stderr
    assert added.stdout.strip() == f"Added 'Example JSON Feed' ({url}), language en-US."
    [report] = poll(hub)
    assert (report["status"], report["new"], report["error"]) == (200, 2, None)

    found = entries(hub, "en")
    first, second = found["First JSON Feed Item"], found["Second JSON Feed Item"]
    assert first.link == "https://example.org/item1"
    assert first.author == "Jane Smith"  # the item's authors
    assert second.author == "John Doe"  # the feed's authors, inherited
    assert (first.published, first.updated) == ("2024-01-15T12:00:00+00:00",
                                                "2024-01-15T13:00:00+00:00")
    assert "This is the first item in our JSON feed." in first.content[0].value
    assert "<p>This is plain text content for the second item.</p>" in second.content[0].value
    assert [tag.term for tag in first.tags] == ["test", "json", "feed"]
    assert enclosures(first) == [("https://example.org/item1.jpg", "image/jpeg", None)]
    source = atom_source(hub, "en", "First JSON Feed Item")
    assert source.findtext(f"{ATOM}id") == "https://example.org/feed.json"
    assert source.findtext(f"{ATOM}title") == "Example JSON Feed"
    assert source.findtext(f"{ATOM}subtitle") == "An example JSON Feed for testing"
    assert source.findtext(f"{ATOM}icon") == "https://example.org/icon.png"
    assert {(link.get("rel"), link.get("href"), link.get("type"))
            for link in source.iter(f"{ATOM}link")} == {
        ("self", "https://example.org/feed.json", None),
        ("alternate", "https://example.org/", "text/html")}


def test_json_feed_1_0_author_external_url_and_images(hub: HubDir, feed_server) -> None:
    feed_server.serve("/ten.json", TEN, content_type="application/json")
    url = feed_server.url("/ten.json")
    added = hub.run("add", url, "--name", "Ten", "--language", "en", "--no-fulltext")
    assert added.returncode == 0, added.stderr
    [report] = poll(hub)
    assert report["new"] == 2 and report["error"] is None

    found = entries(hub, "en")
    story = found["A story worth reading"]
    assert story.link == "https://ten.example.org/2024/03/linked"  # url, the permalink
    assert story.author == "Item Author"  # 1.0's author object
    assert story.published == "2024-03-01T09:00:00+00:00"  # RFC 3339 offsets, in UTC
    assert story.updated == "2024-03-02T13:30:00+00:00"
    assert [tag.term for tag in story.tags] == ["links", "city"]
    assert "<script" not in story.content[0].value and "the story</a>" in story.content[0].value
    # image, then banner_image: enclosures, typed by their file name
    assert enclosures(story) == [("https://ten.example.org/img/featured.png", "image/png", None),
                                 ("https://ten.example.org/img/banner.jpg", "image/jpeg", None)]
    elsewhere = found["Only an external URL"]
    assert elsewhere.link == "https://elsewhere.example.com/only"  # no url: external_url
    assert elsewhere.author == "Feed Author"  # the feed's 1.0 author
    # the credit line names the source and links the original
    assert "https://elsewhere.example.com/only" in elsewhere.content[0].value
    assert "Ten" in elsewhere.content[0].value
    source = atom_source(hub, "en", "Only an external URL")
    assert source.findtext(f"{ATOM}icon") == "https://ten.example.org/favicon-64.png"  # no icon


def test_json_feed_1_1_maps_every_field(hub: HubDir, feed_server) -> None:
    started = datetime.now(UTC)
    feed_server.serve("/blog/feed.json", ELF, content_type=JSON_FEED)
    add_source(hub, "Elf", feed_server.url("/blog/feed.json"))
    [report] = poll(hub)
    assert report["new"] == 3 and report["error"] is None
    assert report["languages"] == ["de", "fr"]  # the item's language, else the feed's

    german = entries(hub, "de")
    text = german["Nur Text, zwei Absätze"]
    # relative url: against home_page_url
    assert text.link == "https://elf.example.org/blog/posts/1001.html"
    assert text.author == "Anna Autorin, Ben Beitrag"  # the feed's authors with a name
    assert text.published == "2024-04-01T07:00:00+00:00"
    # content_text: escaped, in paragraphs
    assert ("<p>Der erste Absatz nennt &lt;b&gt;kein&lt;/b&gt; Markup, auch wenn er so aussieht."
            "</p><p>Der zweite Absatz steht für sich.</p>") in text.content[0].value
    teaser = german["Nur eine Zusammenfassung"]
    assert "Kurz gesagt: der Rest steht auf der Seite." in teaser.content[0].value
    # 1970 is a placeholder: the item is dated when first seen
    assert datetime.fromisoformat(teaser.published) >= started.replace(microsecond=0)

    [episode] = hub.feed("fr").entries
    assert episode.title == "Un épisode en français"
    assert episode.author == "Claire Dupont, Denis Martin"
    content = episode.content[0].value
    assert "Résumé court" not in content  # summary beside content_html: the content is published
    assert 'href="https://elf.example.org/blog/audio/"' in content  # against the item's url
    assert 'src="https://elf.example.org/blog/posts/img/cover.jpg"' in content
    assert enclosures(episode) == [
        ("https://elf.example.org/media/ep1.mp3", "audio/mpeg", "89970236"),
        ("https://elf.example.org/media/ep1.m4a", "audio/x-m4a", "70000000")]
    assert [tag.term for tag in episode.tags] == ["podcast", "français"]
    source = atom_source(hub, "fr", "Un épisode en français")
    assert source.findtext(f"{ATOM}id") == "https://elf.example.org/blog/feed.json"
    assert source.findtext(f"{ATOM}icon") == "https://elf.example.org/icon-512.png"
    with sqlite3.connect(hub.database) as db:
        ids = sorted(row[0] for row in db.execute("SELECT upstream_id FROM items"))
        summary = db.execute("SELECT summary FROM items WHERE upstream_id LIKE '%podcast-1'"
                             ).fetchone()[0]
    assert ids == ["1001", "https://elf.example.org/blog/posts/podcast-1", "teaser"]
    assert summary == "<p>Résumé court de l'épisode.</p>"  # kept for publish = "summary"

    # The numeric id 1001 and the string "1001" are one item: an edit, not a new one.
    edited = json.loads(ELF)
    edited["items"][0].update(id="1001", title="Nur Text, bearbeitet")
    feed_server.serve("/blog/feed.json", json.dumps(edited), content_type=JSON_FEED)
    [report] = poll(hub)
    assert (report["new"], report["updated"]) == (0, 1)
    assert "Nur Text, bearbeitet" in entries(hub, "de")


# --- conditional GET and the body hash ----------------------------------------


def test_conditional_get_and_the_body_hash_work_as_for_xml(hub: HubDir, feed_server) -> None:
    feed_server.serve("/feed.json", ELF, content_type=JSON_FEED)
    add_source(hub, "Elf", feed_server.url("/feed.json"))
    assert [(r["status"], r["new"]) for r in poll(hub)] == [(200, 3)]
    [report] = poll(hub)
    assert report["status"] == 304 and report["error"] is None
    first, second = feed_server.requests_for("/feed.json")
    assert "if-none-match" not in first.headers and second.headers["if-none-match"]

    # same bytes, but the server forgot its validators: the body hash skips parsing
    feed_server.serve("/feed.json", ELF, content_type=JSON_FEED, etag=False, last_modified=False)
    [report] = poll(hub)
    assert (report["status"], report["note"], report["new"]) == (200, "body unchanged", 0)

    more = json.loads(ELF)
    more["items"].insert(0, {"id": "new", "url": "https://elf.example.org/blog/posts/new",
                             "title": "Neu", "content_text": "Ein neuer Beitrag."})
    feed_server.serve("/feed.json", json.dumps(more), content_type=JSON_FEED)
    [report] = poll(hub)
    assert (report["status"], report["new"], report["updated"]) == (200, 1, 0)
    assert "Neu" in entries(hub, "de")


# --- hostile JSON -----------------------------------------------------------------

V11 = '{"version": "https://jsonfeed.org/version/1.1", "title": "T", "items": %s}'
ITEM = '{"id": "%s", "url": "https://h.example/%s", "title": "%s", "content_text": "Text."}'


@pytest.mark.parametrize(("body", "content_type", "error"), [
    ('{"version": "https://jsonfeed.org/version/1.1", "items": [', JSON_FEED,
     "not valid JSON (Expecting value: line 1 column 59)"),
    ('{"data": [1, 2, 3]}', "application/json",
     "JSON, but not a JSON Feed (no version https://jsonfeed.org/version/…)"),
    ('[{"version": "https://jsonfeed.org/version/1.1"}]', "application/json",
     "JSON, but not a JSON Feed (no version https://jsonfeed.org/version/…)"),
    (V11 % ("[" * 100_000 + "]" * 100_000), JSON_FEED, "JSON nested too deeply to be a feed"),
    (V11 % '"items"', JSON_FEED, "a JSON Feed without an items list (items: a string)"),
    ('{"version": "https://jsonfeed.org/version/1.1", "title": "T"}', JSON_FEED,
     "a JSON Feed without an items list (items: none)"),
    (V11 % ('[1, "x", null, {"title": "no id"}, {"id": %s}, {"id": NaN}, {"id": true}]'
            % ("9" * 5000)), JSON_FEED,
     "no item of the JSON Feed could be read: 7 items skipped (no id or url: 4, "
     "not an object but a number: 1, not an object but a string: 1, "
     "not an object but null: 1); fields of the wrong type ignored: id (3)"),
], ids=["truncated", "not-a-json-feed", "a-list", "deep-nesting", "items-a-string", "no-items",
        "no-readable-item"])
def test_json_that_is_no_readable_feed_fails_the_source_clearly(
        hub: HubDir, feed_server, body: str, content_type: str, error: str) -> None:
    feed_server.serve("/bad.json", body, content_type=content_type)
    feed_server.serve("/good.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    add_source(hub, "bad", feed_server.url("/bad.json"))
    add_source(hub, "good", feed_server.url("/good.rss"))
    done = hub.run("poll", "--all")
    assert done.returncode == 1, done.stdout
    assert "Traceback" not in done.stderr
    assert f"1 of 2 sources failed: bad: {error}" in done.stderr
    status = {s["name"]: s for s in json.loads(hub.run("status", "--json").stdout)["sources"]}
    assert status["bad"]["last_error"] == error
    assert status["good"]["items"] > 0  # the other source is not affected


def test_fields_and_items_of_the_wrong_type_are_skipped_one_by_one(hub: HubDir,
                                                                   feed_server) -> None:
    items = [
        json.loads(ITEM % ("a", "a", "Content as a list")) | {"content_html": ["<p>x</p>"]},
        json.loads(ITEM % ("b", "b", "Wrong types everywhere")) | {
            "tags": "one-string", "authors": {"name": "x"}, "date_published": 20240101,
            "attachments": [7, {"url": 5}, {"url": "/ok.mp3", "mime_type": ["x"],
                                            "size_in_bytes": "12"}],
            "language": ["de"], "summary": {"text": "x"}, "image": False},
        "not an item",
        {"title": "no identity"},
    ]
    feed = json.loads(V11 % "[]") | {"items": items, "title": ["T"], "home_page_url": 5}
    body = json.dumps(feed).replace('"id": "b"', '"id": "b", "id2": 1e999')
    feed_server.serve("/odd.json", body, content_type=JSON_FEED)
    add_source(hub, "odd", feed_server.url("/odd.json"))
    done = hub.run("--log-level", "info", "poll", "--all", "--json")
    assert done.returncode == 0, done.stderr
    [report] = json.loads(done.stdout)
    assert (report["new"], report["error"]) == (2, None)
    assert ("2 items skipped (not an object but a string: 1, no id or url: 1); fields of the "
            "wrong type ignored: ") in done.stderr  # the warning is logged
    # items were left unread: the operator sees the source degraded, with why
    [source] = json.loads(hub.run("status", "--json").stdout)["sources"]
    assert source["state"] == "degraded", source
    assert source["degraded"].startswith("JSON Feed, 2 items read: 2 items skipped")
    found = entries(hub, "en")
    assert "Text." in found["Content as a list"].content[0].value  # content_text instead
    odd = found["Wrong types everywhere"]
    assert [tag.term for tag in odd.get("tags", [])] == []
    root = lxml.etree.parse(hub.feeds / "en.atom").getroot()
    [entry] = [e for e in root.iter(f"{ATOM}entry") if e.findtext(f"{ATOM}title") == odd.title]
    assert [dict(link.attrib) for link in entry.iter(f"{ATOM}link")
            if link.get("rel") == "enclosure"] == [  # mime_type a list, size a string: ignored
        {"href": "https://h.example/ok.mp3", "rel": "enclosure"}]


# --- discovery, add, OPML, list ---------------------------------------------------


def page(*links: str) -> str:
    return ("<!DOCTYPE html><html><head><meta charset='utf-8'><title>Elf</title>"
            + "".join(links) + "</head><body><p>Elf</p></body></html>")


def test_add_finds_a_json_feed_a_page_links(hub: HubDir, feed_server) -> None:
    feed_server.serve("/", page(
        '<link rel="alternate" type="application/json" href="/wp-json/wp/v2/pages/7">',
        '<link rel="alternate" type="application/feed+json" title="Elf" href="/feed.json">'),
        content_type=HTML)
    feed_server.serve("/feed.json", ELF, content_type=JSON_FEED)
    url = feed_server.url("/feed.json")
    added = hub.run("add", feed_server.url("/"), "--no-fulltext", input="")
    assert added.returncode == 0, added.stderr
    assert added.stdout.splitlines() == [
        f"Found 1 feed on {feed_server.url('/')}: {url}",
        f"Added 'Elf Nachrichten' ({url}), language de.",
    ]
    # application/feed+json is preferred: the REST API link was not even fetched
    assert not feed_server.requests_for("/wp-json/wp/v2/pages/7")


def test_a_json_feed_linked_as_application_json_or_at_feed_json_is_found(
        hub: HubDir, feed_server, tmp_path) -> None:
    feed_server.serve("/", page('<link rel="alternate" type="application/json" '
                                'href="/feeds/main.json">'), content_type=HTML)
    feed_server.serve("/feeds/main.json", ELF, content_type="application/json")
    added = hub.run("add", feed_server.url("/"), "--name", "linked", "--no-fulltext", input="")
    assert added.returncode == 0, added.stderr
    assert f"({feed_server.url('/feeds/main.json')})" in added.stdout

    feed_server.serve("/site/", page(), content_type=HTML)  # links nothing
    feed_server.serve("/feed.json", TEN, content_type=JSON_FEED)
    added = hub.run("add", feed_server.url("/site/"), "--no-fulltext", input="")
    assert added.returncode == 0, added.stderr
    assert f"Added 'Linkblog Ten' ({feed_server.url('/feed.json')})" in added.stdout


def test_list_and_opml_export_show_json_feed_sources(hub: HubDir, feed_server) -> None:
    feed_server.serve("/feed.json", ELF, content_type=JSON_FEED)
    url = feed_server.url("/feed.json")
    assert hub.run("add", url, "--name", "Elf", "--no-fulltext").returncode == 0
    assert hub.run("poll", "--all").returncode == 0
    [row] = json.loads(hub.run("list", "--json").stdout)
    assert (row["name"], row["url"], row["language"], row["items"], row["last_status"]) == (
        "Elf", url, "de", 3, 200)
    exported = hub.run("export")
    assert exported.returncode == 0
    [outline] = lxml.etree.fromstring(exported.stdout.encode()).iter("outline")
    assert (outline.get("type"), outline.get("text"), outline.get("xmlUrl")) == ("rss", "Elf", url)
