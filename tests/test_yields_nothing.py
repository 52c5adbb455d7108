"""A source that yields nothing is never an `ok` with zero items (issue 12):
nothing read from a broken document is a failure, a partly read one is
stored and marked degraded, and a well-formed empty feed shows as empty --
through the real CLI against feeds served over HTTP."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime

from feedhub.store import SCHEMA_VERSION
from hubdir import HubDir, rss

# The example: a broken prolog and undeclared prefixes. feedparser
# knows it is RSS, says it is malformed, and recovers no entry of the 35.
NOTHING_READABLE = (
    '<?xml?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel>'
    "<title>Broken</title><link>https://broken.example/</link><description>d</description>"
    + "".join(f"<rss:item><rss:title>Article {n}</rss:title>"
              f"<rss:link>https://broken.example/{n}</rss:link></rss:item>" for n in range(35))
    + "</channel></rss>"
)

# An undefined entity and no end: the XML parser gives up, the loose one
# recovers all three entries.
PARTLY_READABLE = (
    '<?xml version="1.0"?><rss version="2.0"><channel><title>Shaky</title>'
    "<link>https://shaky.example/</link><description>d</description>"
    "<item><title>One</title><link>https://shaky.example/1</link><guid>s1</guid></item>"
    "<item><title>Two&nbsp;two</title><link>https://shaky.example/2</link><guid>s2</guid></item>"
    "<item><title>Three</title><link>https://shaky.example/3</link><guid>s3</guid></item>"
)

EMPTY = ('<?xml version="1.0"?><rss version="2.0"><channel><title>New blog</title>'
         "<link>https://new.example/</link><description>nothing yet</description></channel></rss>")


def add(hub: HubDir, feed_server, name: str) -> None:
    added = hub.run("add", feed_server.url(f"/{name}.rss"), "--name", name, "--no-check",
                    "--no-fulltext")
    assert added.returncode == 0, added.stderr


def states(hub: HubDir) -> dict[str, dict]:
    shown = hub.run("status", "--json")
    assert shown.returncode == 0, shown.stderr
    return {s["name"]: s for s in json.loads(shown.stdout)["sources"]}


def test_a_feed_nothing_could_be_read_from_is_a_failure(tmp_path, feed_server) -> None:
    hub = HubDir(tmp_path)
    feed_server.serve("/broken.rss", NOTHING_READABLE)
    add(hub, feed_server, "broken")

    polled = hub.run("poll", "--all")
    assert polled.returncode == 1, polled.stdout
    assert "malformed XML, nothing could be read" in polled.stdout
    assert "broken: malformed XML, nothing could be read: " in polled.stderr
    assert "nothing could be read: unbound prefix (line 2, column" in polled.stderr  # feedparser's
    assert "WARNING poll broken status=200" in polled.stderr

    broken = states(hub)["broken"]
    assert broken["state"] == "failing" and broken["error_streak"] == 1
    assert broken["last_error"].startswith("malformed XML, nothing could be read: ")
    assert broken["items"] == 0

    # the same bytes again: parsed again (not skipped as "body unchanged"),
    # and the error streak grows, so the source backs off
    again = hub.run("poll", "broken")
    assert again.returncode == 1 and "body unchanged" not in again.stdout
    broken = states(hub)["broken"]
    assert broken["error_streak"] == 2
    wait = (datetime.fromisoformat(broken["next_poll"])
            - datetime.fromisoformat(broken["last_poll"])).total_seconds()
    assert wait >= 4 * 1800 - 1  # the 30-minute interval doubled twice

    text = hub.run("status").stdout
    assert "failing" in text and "malformed XML, nothing could be read" in text

    feed_server.serve("/broken.rss", rss("broken", "1", "2"))  # repaired upstream
    fixed = hub.run("poll", "broken")
    assert fixed.returncode == 0, fixed.stdout
    broken = states(hub)["broken"]
    assert broken["state"] == "ok" and broken["error_streak"] == 0 and broken["items"] == 2


def test_a_partly_read_feed_is_stored_and_the_source_marked_degraded(
        tmp_path, feed_server) -> None:
    hub = HubDir(tmp_path)
    feed_server.serve("/shaky.rss", PARTLY_READABLE)
    add(hub, feed_server, "shaky")

    polled = hub.run("poll", "--all")
    assert polled.returncode == 0, polled.stdout + polled.stderr  # stored: not a failure
    assert "degraded: malformed XML, 3 entries recovered: undefined entity (line 1" in polled.stdout
    assert "WARNING poll shaky status=200 new=3" in polled.stderr

    shaky = states(hub)["shaky"]
    assert shaky["state"] == "degraded" and shaky["items"] == 3 and shaky["entries"] == 3
    assert shaky["error_streak"] == 0 and shaky["last_error"] is None
    assert shaky["degraded"].startswith("malformed XML, 3 entries recovered: undefined entity")
    assert {e.title for e in hub.feed("en").entries} == {"One", "Two two", "Three"}

    text = hub.run("status").stdout
    assert "degraded" in text and "malformed XML, 3 entries recovered: undefined" in text
    assert "1 degraded" in text

    # the same document again (a 304 here) is not parsed again, and the mark stays
    assert hub.run("poll", "shaky").returncode == 0
    assert states(hub)["shaky"]["state"] == "degraded"

    feed_server.serve("/shaky.rss", rss("shaky", "1"))  # repaired: a clean parse clears it
    assert hub.run("poll", "shaky").returncode == 0
    shaky = states(hub)["shaky"]
    assert shaky["state"] == "ok" and shaky["degraded"] is None


def test_a_well_formed_empty_feed_is_no_error_but_status_shows_it_empty(
        tmp_path, feed_server) -> None:
    hub = HubDir(tmp_path)
    feed_server.serve("/blog.rss", EMPTY)  # a new blog: nothing published yet
    feed_server.serve("/emptied.rss", rss("emptied", "1", "2"))
    add(hub, feed_server, "blog")
    add(hub, feed_server, "emptied")

    polled = hub.run("poll", "--all")
    assert polled.returncode == 0, polled.stdout + polled.stderr
    assert "no entries in the feed" in polled.stdout
    found = states(hub)
    assert found["blog"]["state"] == "empty" and found["blog"]["entries"] == 0
    assert found["blog"]["error_streak"] == 0 and found["blog"]["last_error"] is None
    assert found["emptied"]["state"] == "ok" and found["emptied"]["entries"] == 2

    # a source whose feed had items and now has none yields nothing too,
    # whatever is stored from before
    feed_server.serve("/emptied.rss", EMPTY)
    assert hub.run("poll", "emptied").returncode == 0
    emptied = states(hub)["emptied"]
    assert emptied["state"] == "empty" and emptied["items"] == 2 and emptied["entries"] == 0

    feed_server.serve("/blog.rss", rss("blog", "1"))  # the first post
    assert hub.run("poll", "blog").returncode == 0
    assert states(hub)["blog"]["state"] == "ok"


def test_status_names_every_state_and_counts_them(tmp_path, feed_server) -> None:
    hub = HubDir(tmp_path)
    feed_server.serve("/fine.rss", rss("fine", "1"))
    feed_server.serve("/shaky.rss", PARTLY_READABLE)
    feed_server.serve("/broken.rss", NOTHING_READABLE)
    feed_server.serve("/blog.rss", EMPTY)
    feed_server.error("/gone.rss", 410)
    for name in ("fine", "shaky", "broken", "blog", "gone"):
        add(hub, feed_server, name)
    assert hub.run("poll", "--all").returncode == 1  # broken failed (and gone)
    add(hub, feed_server, "later")  # configured, not polled yet

    shown = json.loads(hub.run("status", "--json").stdout)
    assert {s["name"]: s["state"] for s in shown["sources"]} == {
        "fine": "ok", "shaky": "degraded", "broken": "failing", "blog": "empty",
        "gone": "retired", "later": "new"}
    assert {k: shown["summary"][k] for k in ("ok", "degraded", "failing", "empty", "retired",
                                              "new")} == dict.fromkeys(
        ("ok", "degraded", "failing", "empty", "retired", "new"), 1)

    text = hub.run("status").stdout
    assert ("6 sources: 1 ok, 1 degraded, 1 empty, 1 failing, 1 retired, 1 not polled yet."
            in text), text
    rows = {line.split()[0]: line for line in text.splitlines() if line.split()}
    assert " empty " in rows["blog"] and " degraded " in rows["shaky"]
    assert "3 entries recovered" in rows["shaky"]  # the reason, where an error would be


def test_a_database_from_before_entries_were_counted_is_migrated_and_judged_by_items(
        tmp_path, feed_server) -> None:
    hub = HubDir(tmp_path)
    feed_server.serve("/fine.rss", rss("fine", "1"))
    feed_server.serve("/blog.rss", EMPTY)
    add(hub, feed_server, "fine")
    add(hub, feed_server, "blog")
    assert hub.run("poll", "--all").returncode == 0
    with sqlite3.connect(hub.database) as db:  # as schema 7 left it
        db.execute("ALTER TABLE sources DROP COLUMN degraded")
        db.execute("ALTER TABLE sources DROP COLUMN entries")
        db.execute("PRAGMA user_version = 7")

    found = states(hub)
    assert found["blog"]["state"] == "empty" and found["blog"]["entries"] is None
    assert found["fine"]["state"] == "ok" and found["fine"]["entries"] is None
    with sqlite3.connect(hub.database) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
