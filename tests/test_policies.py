"""Republishing policies per source (full / summary / link, rights) and
the takedown: `feedhub withdraw`."""

from __future__ import annotations

import json
import sqlite3

import feedparser
import lxml.html

from hubdir import FIXTURES, HubDir

ATOM_RIGHTS = "https://creativecommons.org/licenses/by-nc-nd/4.0/"


def configure(hub: HubDir, feed_server, **settings: str) -> None:
    feed_server.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    extra = "".join(f'{key} = "{value}"\n' for key, value in settings.items())
    hub.config.write_text(hub.config.read_text(encoding="utf-8")
                          + f'\n[[sources]]\nname = "wsws"\nurl = "{feed_server.url("/wsws.rss")}"\n'
                          + extra, encoding="utf-8")
    assert hub.run("poll").returncode == 0


def published_text(hub: HubDir) -> str:
    [entry] = hub.feed("en").entries
    return lxml.html.fragment_fromstring(entry.content[0].value).text_content()


def test_summary_policy_publishes_a_short_summary_with_the_credit(hub: HubDir, feed_server) -> None:
    configure(hub, feed_server, publish="summary", rights=ATOM_RIGHTS)
    text = published_text(hub)
    assert text.startswith("The Peruvian regime installed")
    assert len(text) < 700 and "…" in text
    assert "Originally published by wsws on 28 Dec 2022" in text  # the credit stays
    assert hub.feed("en").entries[0].rights == ATOM_RIGHTS


def test_link_policy_publishes_only_the_credit_and_link(hub: HubDir, feed_server) -> None:
    configure(hub, feed_server, publish="link")
    [entry] = hub.feed("en").entries
    assert "Peruvian regime" not in entry.content[0].value
    assert entry.link.startswith("https://www.wsws.org/") and "wsws" in published_text(hub)


def test_withdraw_takes_every_item_out_and_status_records_it(hub: HubDir, feed_server) -> None:
    configure(hub, feed_server)
    assert len(hub.feed("en").entries) == 1
    result = hub.run("withdraw", "wsws")
    assert result.returncode == 0 and "Withdrew 1 items of 'wsws'" in result.stdout
    assert hub.feed("en").entries == [] and hub.feed("all").entries == []
    [source] = json.loads(hub.run("status", "--json").stdout)["sources"]
    assert source["withdrawn_items"] == 1 and source["withdrawn_at"]
    assert "1 items withdrawn (takedown at" in hub.run("status").stdout
    with sqlite3.connect(hub.database) as db:  # kept, marked
        assert db.execute("SELECT count(*) FROM items WHERE withdrawn IS NOT NULL").fetchone()[0] == 1
    assert hub.run("withdraw", "nobody").returncode == 2


def test_a_source_feed_is_rendered_again_only_when_what_it_shows_changed(
        hub: HubDir, feed_server) -> None:
    configure(hub, feed_server)
    own = hub.feeds / "sources" / "wsws.atom"
    assert "Peruvian regime" in own.read_text(encoding="utf-8")
    again = hub.run("publish")
    assert again.returncode == 0
    assert [line.split()[-1] for line in again.stdout.splitlines() if "sources/wsws.atom" in line] \
        == ["unchanged"]
    # a policy change is a change of what the feed shows: rendered again
    hub.config.write_text(hub.config.read_text(encoding="utf-8") + 'publish = "link"\n',
                          encoding="utf-8")
    relinked = hub.run("publish")
    assert "sources/wsws.atom" in relinked.stdout and "written" in relinked.stdout
    assert "Peruvian regime" not in own.read_text(encoding="utf-8")
    own.unlink()  # lost from disk: written again
    assert hub.run("publish").returncode == 0 and own.exists()


def test_a_policy_change_reaches_the_source_feed_at_the_next_poll(hub: HubDir, feed_server) -> None:
    configure(hub, feed_server)
    hub.config.write_text(hub.config.read_text(encoding="utf-8")
                          + f'publish = "link"\nrights = "{ATOM_RIGHTS}"\n', encoding="utf-8")
    assert hub.run("poll", "--all").returncode == 0  # nothing new upstream; the policy changed
    own = feedparser.parse((hub.feeds / "sources" / "wsws.atom").read_bytes())
    assert "Peruvian regime" not in own.entries[0].content[0].value
    assert own.entries[0].rights == ATOM_RIGHTS
