"""The HTML pages (issue 14), read as a person's browser would get them:
through the real CLI, from feeds served on 127.0.0.1, parsed with lxml.
What they look like in a real browser is test_browser_pages.py."""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path

import lxml.etree
import lxml.html
import pytest

from feedhub.config import load_config
from feedhub.hub import Hub
from feedhub.store import open_store
from hubdir import FIXTURES, HubDir, rss
from test_archives import ATOM, archived_hub
from test_archives import rss as archive_rss

SEED_TITLE = "US-backed coup regime in Peru extends emergency rule and military repression"
SEED_LINK = "https://www.wsws.org/en/articles/2022/12/28/peru-d28.html"
SEED_CREDIT = 'credit = "{source} {date:%d.%m.%Y}"'  # the seed page's: "World Socialist 28.12.2022"


def page(path: Path) -> lxml.html.HtmlElement:
    return lxml.html.fromstring(path.read_bytes())


def text(element: lxml.html.HtmlElement) -> str:
    return " ".join(element.text_content().split())


def add_config(hub: HubDir, extra: str) -> None:
    with open(hub.config, "a", encoding="utf-8") as config:
        config.write("\n" + extra + "\n")


def set_hub(hub: HubDir, line: str) -> None:
    """A line in the [hub] table of the test config."""
    source = hub.config.read_text(encoding="utf-8")
    hub.config.write_text(source.replace("[hub]\n", f"[hub]\n{line}\n", 1), encoding="utf-8")


def serve_seed_and_persian(hub: HubDir, feed_server) -> None:
    feed_server.serve("/wsws.rss", (FIXTURES / "seed_wsws.rss").read_bytes())
    feed_server.serve("/persian.rss", (FIXTURES / "persian.rss").read_bytes())
    add_config(hub, f"[languages.en]\n{SEED_CREDIT}")
    for path, name in (("/wsws.rss", "World Socialist Web Site"), ("/persian.rss", "خبرگزاری")):
        added = hub.run("add", feed_server.url(path), "--name", name)
        assert added.returncode == 0, added.stderr
    polled = hub.run("poll")
    assert polled.returncode == 0, polled.stderr


def test_the_seed_article_appears_on_en_html_as_the_seed_page_shows_it(
        hub: HubDir, feed_server) -> None:
    serve_seed_and_persian(hub, feed_server)
    root = page(hub.feeds / "en.html")
    assert root.get("lang") == "en" and root.get("dir") == "ltr"
    [alternate] = root.xpath('//head/link[@rel="alternate"]')
    assert alternate.get("type") == "application/atom+xml" and alternate.get("href") == "en.atom"
    [article] = root.xpath("//article")
    assert article.get("lang") == "en" and article.get("dir") == "ltr"
    assert re.fullmatch(r"[A-Za-z][\w-]+", article.get("id"))
    [title] = article.xpath(".//h2/a")
    assert text(title) == SEED_TITLE and title.get("href") == SEED_LINK
    assert text(article.xpath('.//*[@class="author"]')[0]) == "Andrea Lobo"
    [time] = article.xpath(".//time")
    assert time.get("datetime") == "2022-12-28T21:30:00+00:00"
    body = text(article)
    for paragraph in (FIXTURES / "seed_article.txt").read_text(encoding="utf-8").splitlines():
        assert " ".join(paragraph.split()) in body, paragraph[:60]
    assert article.xpath('.//img[@src="https://www.wsws.org/asset/peru-police.jpg"]')
    [credit] = article.xpath('.//*[@class="credit"]')
    assert text(credit) == "World Socialist Web Site 28.12.2022"
    assert credit.xpath(".//a")[0].get("href") == SEED_LINK
    # the same article is on all.html and on its source's page, with the same anchor
    for other in ("all.html", "sources/world-socialist-web-site.html"):
        assert page(hub.feeds / other).xpath(f'//article[@id="{article.get("id")}"]'), other
    # the link to the source's page from a language page resolves
    [more] = article.xpath('.//*[@class="more"]/a[1]')
    assert (hub.feeds / more.get("href")).is_file()


def test_a_persian_page_reads_right_to_left_and_an_english_article_on_it_left_to_right(
        hub: HubDir, feed_server) -> None:
    serve_seed_and_persian(hub, feed_server)
    root = page(hub.feeds / "fa.html")
    assert root.get("lang") == "fa" and root.get("dir") == "rtl"
    articles = root.xpath("//article")
    assert len(articles) == 2 and {a.get("dir") for a in articles} == {"rtl"}
    assert "بارش برف سنگین" in text(root)
    assert "منبع:" in text(articles[0].xpath('.//*[@class="credit"]')[0])  # Persian credit
    # the mixed page is left to right; its Persian articles are not
    everything = page(hub.feeds / "all.html")
    assert everything.get("dir") == "ltr"
    assert sorted(a.get("dir") for a in everything.xpath("//article")) == ["ltr", "rtl", "rtl"]
    # a hub whose own language is Persian: its mixed page reads right to left,
    # and the English article on it left to right
    set_hub(hub, 'default_language = "fa"')
    assert hub.run("publish").returncode == 0
    everything = page(hub.feeds / "all.html")
    assert everything.get("lang") == "fa" and everything.get("dir") == "rtl"
    assert {a.get("lang"): a.get("dir") for a in everything.xpath("//article")}["en"] == "ltr"


def test_archive_pages_sit_beside_the_archive_feeds_and_link_older_and_newer(
        hub: HubDir, feed_server) -> None:
    archived_hub(hub, feed_server, page_size=2)  # and 5 items a feed
    for newest in (3, 6, 12):
        feed_server.serve("/alpha.rss", archive_rss("alpha", range(1, newest + 1)))
        assert hub.run("poll", "--all").returncode == 0
    folder = hub.feeds / "archive" / "en"
    atoms = sorted(p.stem for p in folder.glob("*.atom"))
    assert len(atoms) >= 3 and sorted(p.stem for p in folder.glob("*.html")) == atoms
    # from the language page back to page 1 through "older", and forward again through "newer"
    here, seen = hub.feeds / "en.html", []
    while older := page(here).xpath('//nav[@class="pager"]/a[@class="older"]'):
        here = (here.parent / older[0].get("href")).resolve()
        seen.append(here.name)
    assert seen == [f"{n}.html" for n in range(len(atoms), 0, -1)]
    while newer := page(here).xpath('//nav[@class="pager"]/a[@class="newer"]'):
        here = (here.parent / newer[0].get("href")).resolve()
        seen.append(here.name)
    assert seen[len(atoms):] == [f"{n}.html" for n in range(2, len(atoms) + 1)] + ["en.html"]
    # each archive page shows what its archive feed holds, in the same order
    for number in atoms:
        feed = lxml.etree.parse(str(folder / f"{number}.atom")).getroot()
        titles = [t.text for t in feed.findall(f"{ATOM}entry/{ATOM}title")]
        assert [text(h) for h in page(folder / f"{number}.html").xpath("//article//h2")] == titles
    # an archive page is not written again by later publishes
    stamps = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in folder.glob("*.html")}
    feed_server.serve("/alpha.rss", archive_rss("alpha", range(1, 14)))
    assert hub.run("poll", "--all").returncode == 0
    assert hub.run("publish").returncode == 0
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in stamps} == stamps


def test_pages_are_written_only_when_their_bytes_change(hub: HubDir, feed_server) -> None:
    serve_seed_and_persian(hub, feed_server)
    pages = sorted(hub.feeds.rglob("*.html"))
    assert {p.relative_to(hub.feeds).as_posix() for p in pages} >= {
        "index.html", "en.html", "fa.html", "all.html"}
    before = {p: p.stat().st_mtime_ns for p in pages}
    assert hub.run("publish").returncode == 0
    assert {p: p.stat().st_mtime_ns for p in pages} == before


def test_index_links_every_page_and_every_feed(hub: HubDir, feed_server) -> None:
    serve_seed_and_persian(hub, feed_server)
    root = page(hub.feeds / "index.html")
    links = {a.get("href") for a in root.xpath("//body//a")}
    on_disk = {p.relative_to(hub.feeds).as_posix() for p in hub.feeds.rglob("*")
               if p.suffix in (".html", ".atom") and "archive" not in p.parts} - {"index.html"}
    assert on_disk <= links
    alternates = {link.get("href") for link in root.xpath('//head/link[@rel="alternate"]')}
    assert alternates == {"en.atom", "fa.atom", "all.atom"}
    for name in ("en.html", "fa.html", "all.html"):
        assert page(hub.feeds / name).xpath('//head/link[@type="application/atom+xml"]')


def test_an_operators_templates_shadow_the_shipped_ones_one_by_one(
        hub: HubDir, feed_server) -> None:
    """The worked example of the README: a site header and footer."""
    templates = hub.root / "templates"
    templates.mkdir()
    (templates / "header.html").write_text(
        '<header class="site"><p><a href="{{ page.root }}index.html">Afgazad</a> · '
        "European Languages</p></header>\n", encoding="utf-8")
    (templates / "footer.html").write_text(
        '<footer class="site"><p>© Afgazad · <a href="{{ page.feed or \'index.opml\' }}">'
        "{{ page.labels.feed }}</a></p></footer>\n", encoding="utf-8")
    set_hub(hub, 'templates = "templates"')
    serve_seed_and_persian(hub, feed_server)
    for name in ("index.html", "en.html", "fa.html", "all.html"):
        root = page(hub.feeds / name)
        assert "Afgazad · European Languages" in text(root.xpath("//header")[0]), name
        assert "© Afgazad" in text(root.xpath("//body/footer")[0]), name
        assert root.xpath("//main")  # the shipped page.html / index.html still frame them
    assert "خوراک اتم" in text(page(hub.feeds / "fa.html").xpath("//body/footer")[0])


def test_a_broken_template_is_refused_with_its_file_and_line(hub: HubDir, feed_server) -> None:
    templates = hub.root / "templates"
    templates.mkdir()
    (templates / "header.html").write_text("<header>\n{% if page.title %}\n</header>\n",
                                           encoding="utf-8")
    set_hub(hub, 'templates = "templates"')
    listed = hub.run("list")
    assert listed.returncode == 2
    assert str(templates / "header.html") in listed.stderr and "line 3" in listed.stderr, \
        listed.stderr


def test_a_template_broken_under_a_running_hub_keeps_the_previous_pages(
        hub: HubDir, feed_server, caplog: pytest.LogCaptureFixture) -> None:
    """A daemon keeps its config when a reload is refused, but it compiles the
    templates again when a file changes: a template broken then (or one that
    fails while rendering) is logged with its file and line; the feeds are
    still written and every page stays as it was."""
    templates = hub.root / "templates"
    templates.mkdir()
    set_hub(hub, 'templates = "templates"')
    feed_server.serve("/a.rss", rss("a", "1"))
    assert hub.run("add", feed_server.url("/a.rss"), "--name", "a").returncode == 0
    assert hub.run("poll").returncode == 0
    config = load_config(hub.config)
    before = {p: p.read_bytes() for p in hub.feeds.rglob("*.html")}
    assert len(before) >= 4
    for broken, where in (("<header>{% for x in %}</header>", "header.html line 1"),
                          ("<header>\n{{ page.nope }}</header>", "header.html line 2")):
        (templates / "header.html").write_text(broken, encoding="utf-8")
        with open_store(config.hub.database) as store, caplog.at_level(logging.ERROR):
            caplog.clear()
            Hub(config, store, None).publish()  # type: ignore[arg-type]
        assert where in caplog.text and "previous page" in caplog.text, caplog.text
        assert {p: p.read_bytes() for p in before} == before
        assert (hub.feeds / "en.atom").exists()


def test_pages_can_be_turned_off(hub: HubDir, feed_server) -> None:
    set_hub(hub, "pages = false")
    serve_seed_and_persian(hub, feed_server)
    assert sorted(p.name for p in hub.feeds.rglob("*.html")) == ["index.html"]
    links = {a.get("href") for a in page(hub.feeds / "index.html").xpath("//a")}
    assert "en.atom" in links and "en.html" not in links


def test_markup_in_titles_and_names_is_text_on_the_page(hub: HubDir, feed_server) -> None:
    feed_server.serve("/x.rss", '<?xml version="1.0"?><rss version="2.0"><channel>'
                      "<title>X</title><link>https://x.example/</link><description>d</description>"
                      "<language>en</language><item><title>&lt;script&gt;alert(1)&lt;/script&gt;"
                      " &amp; more</title><link>https://x.example/1</link>"
                      "<author>a@x.example (&lt;b&gt;Bold&lt;/b&gt;)</author>"
                      "<description>&lt;p onclick=\"x()\"&gt;Body&lt;script&gt;bad()&lt;/script&gt;"
                      "&lt;/p&gt;</description></item></channel></rss>")
    assert hub.run("add", feed_server.url("/x.rss"), "--name", "<i>X</i>").returncode == 0
    assert hub.run("poll").returncode == 0
    data = (hub.feeds / "en.html").read_text(encoding="utf-8")
    root = lxml.html.fromstring(data)
    assert not root.xpath("//script | //*[@onclick] | //article//b | //article//i")
    [article] = root.xpath("//article")
    # the title reads as in the Atom feed (which feed readers show), markup as text
    [entry] = hub.feed("en").entries
    assert text(article.xpath(".//h2")[0]) == entry.title and "&" in entry.title
    assert "Body" in text(article) and "bad()" not in data


def test_pages_are_served_as_html_with_validators_and_compression(
        hub: HubDir, feed_server) -> None:
    import httpx

    from test_server import _up, free_port

    serve_seed_and_persian(hub, feed_server)
    port = free_port()
    server = hub.start("serve", "--address", f"127.0.0.1:{port}")
    base = f"http://127.0.0.1:{port}"
    try:
        from hubdir import wait_for
        wait_for(lambda: _up(base))
        first = httpx.get(base + "/fa.html", headers={"Accept-Encoding": "gzip"})
        assert first.status_code == 200
        assert first.headers["content-type"] == "text/html; charset=utf-8"
        assert first.headers["content-encoding"] == "gzip"
        assert first.content == (hub.feeds / "fa.html").read_bytes()
        # each representation has its own ETag (issue 15): ask for the same one again
        again = httpx.get(base + "/fa.html", headers={"If-None-Match": first.headers["etag"],
                                                      "Accept-Encoding": "gzip"})
        assert again.status_code == 304
        assert httpx.get(base + "/fa.html", headers={"If-None-Match": first.headers["etag"],
                                                     "Accept-Encoding": "br"}).status_code == 200
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert os.path.exists(hub.feeds / "fa.html")


def html_files(hub: HubDir) -> dict[str, bytes]:
    return {p.relative_to(hub.feeds).as_posix(): p.read_bytes()
            for p in sorted(hub.feeds.rglob("*.html"))}


def test_a_takedown_reaches_every_page_and_only_the_pages_it_must(
        hub: HubDir, feed_server) -> None:
    archived_hub(hub, feed_server, ("alpha", "beta"))
    feed_server.serve("/alpha.rss", archive_rss("alpha", range(1, 9)))
    feed_server.serve("/beta.rss", archive_rss("beta", range(1, 3)))
    assert hub.run("poll", "--all").returncode == 0
    feed_server.serve("/beta.rss", archive_rss("beta", range(20, 29)))
    assert hub.run("poll", "--all").returncode == 0
    before = html_files(hub)
    archived = {name for name in before if name.startswith("archive/")}
    holds_beta = {name for name in archived if b"beta.example.com" in before[name]}
    assert holds_beta and holds_beta != archived
    assert hub.run("withdraw", "beta").returncode == 0
    after = html_files(hub)
    assert not [name for name, data in after.items() if b"beta.example.com" in data]
    for name in archived - holds_beta:
        assert after[name] == before[name], f"{name} had no beta article, yet changed"
    assert {name for name in after if name.startswith("archive/")} == archived


def test_lost_pages_are_written_again_identically_and_a_removed_source_loses_its_page(
        hub: HubDir, feed_server) -> None:
    archived_hub(hub, feed_server, ("alpha", "beta"))
    feed_server.serve("/alpha.rss", archive_rss("alpha", range(1, 15)))
    feed_server.serve("/beta.rss", archive_rss("beta", range(1, 3)))
    assert hub.run("poll", "--all").returncode == 0
    before = html_files(hub)
    assert {"sources/alpha.html", "sources/beta.html", "archive/en/1.html"} <= set(before)
    for path in hub.feeds.rglob("*.html"):
        path.unlink()
    assert hub.run("publish").returncode == 0
    assert html_files(hub) == before
    assert hub.run("remove", "beta").returncode == 0
    assert hub.run("publish").returncode == 0
    assert not (hub.feeds / "sources" / "beta.html").exists()
    assert (hub.feeds / "sources" / "alpha.html").exists()
    assert "sources/beta.html" not in (hub.feeds / "index.html").read_text(encoding="utf-8")


def test_each_feed_names_its_page_as_its_alternate(hub: HubDir, feed_server) -> None:
    """A feed reader's "visit website" link leads to the page with the same
    entries; the OPML's htmlUrl too. Without pages, to the index."""
    archived_hub(hub, feed_server, ("alpha",))
    feed_server.serve("/alpha.rss", archive_rss("alpha", range(1, 15)))
    assert hub.run("poll", "--all").returncode == 0
    base = "https://hub.example.org/feeds/"
    documents = [p for p in hub.feeds.rglob("*.atom")]
    assert {"en.atom", "all.atom", "sources/alpha.atom", "archive/en/1.atom"} <= {
        p.relative_to(hub.feeds).as_posix() for p in documents}
    for document in documents:
        root = lxml.etree.parse(str(document)).getroot()
        [alternate] = root.findall(f"{ATOM}link[@rel='alternate']")
        assert alternate.get("type") == "text/html"
        page_path = alternate.get("href").removeprefix(base)
        assert page_path == document.relative_to(hub.feeds).with_suffix(".html").as_posix()
        assert (hub.feeds / page_path).is_file()
    opml = lxml.etree.parse(str(hub.feeds / "index.opml"))
    assert {o.get("htmlUrl") for o in opml.iter("outline") if o.get("xmlUrl")} == {
        base + "en.html", base + "all.html", base + "sources/alpha.html"}
    set_hub(hub, "pages = false")
    assert hub.run("publish").returncode == 0
    root = lxml.etree.parse(str(hub.feeds / "en.atom")).getroot()
    assert root.find(f"{ATOM}link[@rel='alternate']").get("href") == base + "index.html"


def test_a_running_daemon_publishes_every_page_again_when_a_template_changes(
        hub: HubDir, feed_server) -> None:
    from hubdir import stop, wait_for

    templates = hub.root / "templates"
    templates.mkdir()
    (templates / "header.html").write_text("<header><p>Before</p></header>\n", encoding="utf-8")
    set_hub(hub, 'templates = "templates"')
    feed_server.serve("/a.rss", rss("a", "1", "2"))
    assert hub.run("add", feed_server.url("/a.rss"), "--name", "a", "--no-fulltext").returncode == 0
    daemon = hub.start("run")
    try:
        wait_for(lambda: (hub.feeds / "sources" / "a.html").exists())
        (templates / "header.html").write_text("<header><p>After</p></header>\n",
                                               encoding="utf-8")
        pages = ["en.html", "all.html", "sources/a.html", "index.html"]
        wait_for(lambda: all(b"<p>After</p>" in (hub.feeds / name).read_bytes()
                             for name in pages))
    finally:
        log = stop(daemon)
    assert "templates changed: publishing every page again" in log
