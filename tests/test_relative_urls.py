"""Relative URLs in content, summaries and enclosures resolve where the
author meant them: against xml:base where declared, else the item's own
link, else the feed URL. Through the real CLI, from feeds served on
127.0.0.1 whose articles live on other hosts (as with FeedBurner, a
`feeds.` subdomain or a bridge)."""

from __future__ import annotations

from hubdir import HubDir

ARTICLE = "https://news.example.org/2024/05/story.html"

RSS = """<?xml version="1.0" encoding="utf-8"?>
<rss version="2.0" xmlns:content="http://purl.org/rss/1.0/modules/content/"><channel>
<title>Relay</title><link>https://news.example.org/</link><description>d</description>
<language>en</language>
<item><title>Elsewhere</title><link>{article}</link><guid>rss-elsewhere</guid>
<pubDate>Tue, 14 May 2024 10:00:00 GMT</pubDate>
<content:encoded><![CDATA[<p><img src="/images/x.jpg" alt="x">
<a href="cover.jpg">cover</a></p>]]></content:encoded>
<enclosure url="/audio/a.mp3" type="audio/mpeg" length="1234"/></item>
<item><title>Summary only</title><link>{article}?s=1</link><guid>rss-summary</guid>
<pubDate>Tue, 14 May 2024 09:00:00 GMT</pubDate>
<description>&lt;p&gt;&lt;a href="more.html"&gt;more&lt;/a&gt;
and &lt;img src="/images/s.jpg"&gt;&lt;/p&gt;</description></item>
<item><title>Based</title><link>{article}?b=1</link><guid>rss-based</guid>
<pubDate>Tue, 14 May 2024 08:00:00 GMT</pubDate>
<content:encoded xml:base="https://cdn.example.net/media/">
<![CDATA[<p><img src="x.jpg" alt="x"></p>]]></content:encoded></item>
<item><title>Local</title><link>/2024/local.html</link><guid>rss-local</guid>
<pubDate>Tue, 14 May 2024 07:00:00 GMT</pubDate>
<content:encoded><![CDATA[<p><a href="pic.jpg">pic</a></p>]]></content:encoded></item>
<item><title>Linkless</title><guid isPermaLink="false">rss-linkless</guid>
<pubDate>Tue, 14 May 2024 06:00:00 GMT</pubDate>
<content:encoded><![CDATA[<p><a href="cover.jpg">cover</a></p>]]></content:encoded>
<enclosure url="a.mp3" type="audio/mpeg" length="1"/></item>
</channel></rss>"""

ATOM = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">
<title>Atom relay</title><id>urn:example:atom-relay</id><updated>2024-05-14T12:00:00Z</updated>
<entry xml:base="https://static.example.com/2024/"><title>Entry base</title><id>urn:a:based</id>
<updated>2024-05-14T11:00:00Z</updated><link href="https://news.example.org/2024/05/based.html"/>
<link rel="enclosure" href="a.mp3" type="audio/mpeg" length="5"/>
<content type="html">&lt;p&gt;&lt;img src="/images/y.jpg" alt="y"&gt;
&lt;a href="cover.jpg"&gt;cover&lt;/a&gt;&lt;/p&gt;</content></entry>
<entry><title>No base</title><id>urn:a:plain</id><updated>2024-05-14T10:00:00Z</updated>
<link href="https://news.example.org/2024/05/atom-story.html"/>
<link rel="enclosure" href="/audio/b.mp3" type="audio/mpeg" length="5"/>
<summary type="html">&lt;p&gt;&lt;a href="cover.jpg"&gt;cover&lt;/a&gt;&lt;/p&gt;</summary></entry>
</feed>"""

# a relative xml:base: itself resolved against the feed URL
ATOM_RELATIVE = """<?xml version="1.0" encoding="utf-8"?>
<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="en">
<title>Relative relay</title><id>urn:example:relative-relay</id><updated>2024-05-14T12:00:00Z</updated>
<entry xml:base="/archive/"><title>Relative base</title><id>urn:a:relative</id>
<updated>2024-05-14T09:00:00Z</updated><link href="story.html"/>
<link rel="enclosure" href="c.mp3" type="audio/mpeg" length="5"/>
<content type="html">&lt;p&gt;&lt;img src="pic.jpg" alt="p"&gt;&lt;/p&gt;</content></entry>
<entry><title>Outside the base</title><id>urn:a:outside</id><updated>2024-05-14T08:00:00Z</updated>
<link href="https://news.example.org/2024/05/outside.html"/>
<content type="html">&lt;p&gt;&lt;a href="cover.jpg"&gt;cover&lt;/a&gt;&lt;/p&gt;</content></entry>
</feed>"""


def entries(hub: HubDir) -> dict[str, object]:
    return {entry.title: entry for entry in hub.feed("en").entries}


def test_rss_relative_urls_resolve_against_the_article_not_the_feed_host(hub: HubDir,
                                                                         feed_server) -> None:
    feed_server.serve("/feeds/relay.rss", RSS.format(article=ARTICLE))
    added = hub.run("add", feed_server.url("/feeds/relay.rss"), "--name", "relay",
                    "--no-fulltext")
    assert added.returncode == 0, added.stderr
    polled = hub.run("poll", "--all")
    assert polled.returncode == 0, polled.stderr
    found = entries(hub)

    elsewhere = found["Elsewhere"]
    content = elsewhere.content[0].value
    assert 'src="https://news.example.org/images/x.jpg"' in content  # host-relative
    assert 'href="https://news.example.org/2024/05/cover.jpg"' in content  # page-relative
    assert [e.href for e in elsewhere.enclosures] == ["https://news.example.org/audio/a.mp3"]
    assert elsewhere.link == ARTICLE

    summary = found["Summary only"].content[0].value  # no content:encoded: the description
    assert 'href="https://news.example.org/2024/05/more.html"' in summary
    assert 'src="https://news.example.org/images/s.jpg"' in summary

    # xml:base, where declared, wins over the item's link
    assert 'src="https://cdn.example.net/media/x.jpg"' in found["Based"].content[0].value

    # a relative item link resolves against the feed URL; its content against that link
    local = found["Local"]
    assert local.link == feed_server.url("/2024/local.html")
    assert f'href="{feed_server.url("/2024/pic.jpg")}"' in local.content[0].value

    # no link at all: the feed URL
    linkless = found["Linkless"]
    assert f'href="{feed_server.url("/feeds/cover.jpg")}"' in linkless.content[0].value
    assert [e.href for e in linkless.enclosures] == [feed_server.url("/feeds/a.mp3")]
    assert feed_server.base_url not in content + summary


def test_atom_xml_base_wins_else_the_entry_link(hub: HubDir, feed_server) -> None:
    feed_server.serve("/feeds/relay.atom", ATOM, content_type="application/atom+xml")
    feed_server.serve("/feeds/relative.atom", ATOM_RELATIVE, content_type="application/atom+xml")
    for name, path in (("atom relay", "/feeds/relay.atom"), ("relative", "/feeds/relative.atom")):
        added = hub.run("add", feed_server.url(path), "--name", name, "--no-fulltext")
        assert added.returncode == 0, added.stderr
    polled = hub.run("poll", "--all")
    assert polled.returncode == 0, polled.stderr
    found = entries(hub)

    based = found["Entry base"]  # xml:base on the entry beats its link
    content = based.content[0].value
    assert 'src="https://static.example.com/images/y.jpg"' in content
    assert 'href="https://static.example.com/2024/cover.jpg"' in content
    assert [e.href for e in based.enclosures] == ["https://static.example.com/2024/a.mp3"]
    assert based.link == "https://news.example.org/2024/05/based.html"

    plain = found["No base"]  # no xml:base: the entry's link
    assert 'href="https://news.example.org/2024/05/cover.jpg"' in plain.content[0].value
    assert [e.href for e in plain.enclosures] == ["https://news.example.org/audio/b.mp3"]

    relative = found["Relative base"]  # a relative xml:base resolves against the feed URL
    assert relative.link == feed_server.url("/archive/story.html")
    assert f'src="{feed_server.url("/archive/pic.jpg")}"' in relative.content[0].value
    assert [e.href for e in relative.enclosures] == [feed_server.url("/archive/c.mp3")]
    # ... and ends with its element: the next entry resolves against its own link
    outside = found["Outside the base"].content[0].value
    assert 'href="https://news.example.org/2024/05/cover.jpg"' in outside
