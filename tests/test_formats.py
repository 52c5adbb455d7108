"""Every feed format the issue names goes through the hub in-process: fetched
from the local server, parsed, stored, published as valid Atom."""

from __future__ import annotations

import asyncio
from pathlib import Path

import feedparser
import pytest

from feedhub.config import parse_config
from feedhub.hub import Hub, make_fetcher
from feedhub.store import Store

RSS_091 = """<?xml version="1.0"?>
<!DOCTYPE rss PUBLIC "-//Netscape Communications//DTD RSS 0.91//EN"
  "http://my.netscape.com/publish/formats/rss-0.91.dtd">
<rss version="0.91"><channel><title>Old News</title><link>https://old.example/</link>
<description>d</description><language>en-us</language>
<item><title>Item one</title><link>https://old.example/1</link>
<description>First &amp; only</description></item>
</channel></rss>"""

RSS_092 = """<?xml version="1.0"?>
<rss version="0.92"><channel><title>Ninety-two</title><link>https://n.example/</link>
<description>d</description>
<item><title>Item</title><description>&lt;p&gt;Hello&lt;/p&gt;</description>
<enclosure url="https://n.example/a.mp3" length="1234" type="audio/mpeg"/></item>
</channel></rss>"""

RSS_10 = """<?xml version="1.0"?>
<rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#" xmlns="http://purl.org/rss/1.0/"
  xmlns:dc="http://purl.org/dc/elements/1.1/">
<channel rdf:about="https://rdf.example/"><title>RDF site</title><link>https://rdf.example/</link>
<description>d</description><dc:language>fr</dc:language></channel>
<item rdf:about="https://rdf.example/a"><title>Un article</title><link>https://rdf.example/a</link>
<description>Texte</description><dc:creator>Jeanne</dc:creator><dc:date>2024-03-01T10:00:00+01:00</dc:date></item>
</rdf:RDF>"""

ATOM_03 = """<?xml version="1.0" encoding="utf-8"?>
<feed version="0.3" xmlns="http://purl.org/atom/ns#" xml:lang="de">
<title>Alt-Atom</title><link rel="alternate" type="text/html" href="https://a03.example/"/>
<modified>2024-01-02T03:04:05Z</modified><author><name>Redaktion</name></author>
<entry><title>Eintrag</title><link rel="alternate" type="text/html" href="https://a03.example/1"/>
<id>tag:a03.example,2024:1</id><issued>2024-01-02T03:04:05Z</issued>
<modified>2024-01-02T03:04:05Z</modified>
<content type="text/html" mode="escaped">&lt;p&gt;Volltext&lt;/p&gt;</content></entry>
</feed>"""


@pytest.mark.parametrize(("body", "language", "title", "check"), [
    (RSS_091, "en", "Item one", "First &amp; only"),
    (RSS_092, "en", "Item", "<p>Hello</p>"),
    (RSS_10, "fr", "Un article", "Texte"),
    (ATOM_03, "de", "Eintrag", "<p>Volltext</p>"),
], ids=["rss-0.91", "rss-0.92", "rss-1.0", "atom-0.3"])
def test_feed_format_is_ingested_and_republished(tmp_path: Path, feed_server, body: str,
                                                 language: str, title: str, check: str) -> None:
    feed_server.serve("/feed", body, content_type="application/xml")
    config = parse_config(
        '[hub]\nbase_url = "https://hub.example.org/"\nallow_private_networks = true\n'
        f'[[sources]]\nname = "src"\nurl = "{feed_server.url("/feed")}"\n',
        tmp_path / "config.toml")

    async def poll() -> None:
        with Store(config.hub.database) as store:
            async with make_fetcher(config) as fetcher:
                hub = Hub(config, store, fetcher)
                [report] = await hub.poll_many(config.sources)
                assert report.ok and report.new == 1, report
                hub.publish()

    asyncio.run(poll())
    published = feedparser.parse((tmp_path / "feeds" / f"{language}.atom").read_bytes())
    assert not published.bozo, published.bozo_exception
    [entry] = published.entries
    assert entry.title == title
    assert check in entry.content[0].value
    if body is RSS_092:
        [enclosure] = [link for link in entry.links if link.rel == "enclosure"]
        assert (enclosure.href, enclosure.type, enclosure.length) == (
            "https://n.example/a.mp3", "audio/mpeg", "1234")
    if body is RSS_10:
        assert entry.author == "Jeanne"
        assert entry.published == "2024-03-01T09:00:00+00:00"
