"""Republishing policies per source (full / summary / link, rights) and
the takedown: `feedhub withdraw`."""

from __future__ import annotations

import json
import sqlite3
from html import escape

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
    # upstream's own <description>, not the article (issue 11: it used to be an excerpt)
    assert text.startswith("The Peruvian regime installed")
    assert "Dina Boluarte.Originally published" in text and "Curfews have expired" not in text
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


# --- issue 11: publish = "summary" never republishes the article ------------------------

LONG = [f"Paragraph {n} of a long report, which goes on about the matter at some length so that"
        " the whole article is far longer than any summary." for n in range(1, 13)]


def summary_hub(hub: HubDir, feed_server, body: str, kind: str = "rss") -> list[str]:
    """One source with publish = "summary" serving `body`, polled; returns
    the texts of the published entry's paragraphs, the credit line left out."""
    feed_server.serve(f"/s.{kind}", body, content_type=f"application/{kind}+xml")
    hub.config.write_text(hub.config.read_text(encoding="utf-8")
                          + f'\n[[sources]]\nname = "s"\nurl = "{feed_server.url(f"/s.{kind}")}"\n'
                          'fulltext = "never"\npublish = "summary"\n', encoding="utf-8")
    assert hub.run("poll").returncode == 0
    [entry] = hub.feed("en").entries
    root = lxml.html.fragment_fromstring(entry.content[0].value)
    credit = root.find("p[@class='feedhub-credit']")
    root.remove(credit)
    return [p.text_content() for p in root.iter("p")] or [root.text_content()]


def rss_item(inner: str) -> str:
    return ('<?xml version="1.0"?><rss version="2.0" '
            'xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel><title>S</title>'
            "<link>https://s.example/</link><description>d</description><language>en</language>"
            "<item><title>A</title><link>https://s.example/a</link><guid>a</guid>"
            f"<pubDate>Wed, 28 Dec 2022 21:30:00 +0000</pubDate>{inner}</item></channel></rss>")


def test_summary_of_a_short_article_is_a_shorter_excerpt_with_its_paragraphs_apart(
        hub: HubDir, feed_server) -> None:
    article = ["Short one.", "Second paragraph is a much longer one with many words in it."]
    paragraphs = summary_hub(hub, feed_server, rss_item(
        "<description>" + escape("".join(f"<p>{p}</p>" for p in article)) + "</description>"))
    assert paragraphs[0] == "Short one."  # its own paragraph: no "one.Second"
    assert paragraphs[-1].endswith(" …") and article[1].startswith(paragraphs[-1][:-2])
    assert len(" ".join(paragraphs)) <= len(" ".join(article)) // 2  # never the whole article


def test_summary_is_upstreams_own_description_when_the_feed_has_one(hub: HubDir,
                                                                    feed_server) -> None:
    body = "".join(f"<p>{p}</p>" for p in LONG)
    paragraphs = summary_hub(hub, feed_server, rss_item(
        "<description>Upstream's own summary.</description>"
        f"<content:encoded><![CDATA[{body}]]></content:encoded>"))
    assert paragraphs == ["Upstream's own summary."]


def test_summary_of_a_long_article_is_at_most_400_characters(hub: HubDir, feed_server) -> None:
    body = "".join(f"<p>{p}</p>" for p in LONG)
    paragraphs = summary_hub(hub, feed_server, rss_item(
        f"<content:encoded><![CDATA[{body}]]></content:encoded>"))
    assert len(" ".join(paragraphs)) <= 400 and paragraphs[-1].endswith(" …")
    assert paragraphs[:2] == LONG[:2]  # cut at a word boundary, paragraphs kept apart
    assert LONG[len(paragraphs) - 1].startswith(paragraphs[-1][:-2] + " ")


def test_summary_of_an_atom_entry_with_only_content_is_an_excerpt(hub: HubDir,
                                                                   feed_server) -> None:
    article = "A whole article sent as Atom content, short enough to fit in four hundred characters."
    paragraphs = summary_hub(hub, feed_server, (
        '<?xml version="1.0"?><feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">'
        "<title>S</title><id>https://s.example/feed</id><updated>2022-12-28T21:30:00Z</updated>"
        '<link href="https://s.example/"/><entry><title>A</title><id>https://s.example/a</id>'
        '<link href="https://s.example/a"/><updated>2022-12-28T21:30:00Z</updated>'
        f'<content type="html">{escape(f"<p>{article}</p>")}</content></entry></feed>'), "atom")
    [excerpt] = paragraphs
    assert excerpt.endswith(" …") and len(excerpt) <= len(article) // 2
    assert article.startswith(excerpt[:-2] + " ")
