"""Every kind of document the hub writes, built from realistic input, passes
the W3C Feed Validator: no error, and no warning that the hub's own output
causes. Input: the real feeds captured from the web in
../shared/corpus/realworld (RSS, Atom and a JSON Feed), plus the cases that broke before: items listed
newest first, a feed hosted apart from its articles, placeholder dates, a
takedown and a removed source that leave feeds empty.

Warnings that can only come from upstream data are allowed, each for a
reason checked here rather than assumed (UPSTREAM_ONLY)."""

from __future__ import annotations

import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path

import lxml.etree
import pytest

from feedserver import FeedServer
from hubdir import FIXTURES, HubDir
from shared import SHARED
from w3c import Finding, require_validator, validate

REALWORLD = SHARED / "corpus" / "realworld"
ATOM = "{http://www.w3.org/2005/Atom}"
START = datetime(2024, 5, 1, tzinfo=UTC)

# Warnings the validator may give on our documents, and why only upstream data
# can cause them (each is checked in test_warnings_left_come_from_upstream_data):
UPSTREAM_ONLY = {
    # Two entries of one document with the same <updated>: upstream gave two
    # items the same date to the second. The hub's own dates (first-seen
    # estimates, edit times) are never shared.
    "DuplicateUpdated",
}
# RFC 5005 §4: an archive page carries prev-archive unless it is the oldest,
# and next-archive is a SHOULD that feedhub forgoes so that a page's bytes
# never change (see README "Archives"). The validator's heuristic wants one
# of the two links, which the oldest page, 1.atom, cannot have.
OLDEST_ARCHIVE_PAGE = "ArchiveIncomplete"


def newest_first(host: str, count: int) -> str:
    """A news site's feed: newest item first, articles on `host` (the feed
    itself is served from the test server), relative links in the content
    as the site's CMS writes them, no channel-level date."""
    items = "".join(
        f"<item><title>Story {n}</title><guid>https://{host}/s/{n}</guid>"
        f"<link>https://{host}/2024/05/{n:02d}/story.html</link>"
        f"<pubDate>{format_datetime(START + timedelta(hours=n))}</pubDate>"
        f'<description><![CDATA[<p>Story {n}.</p><img src="/images/{n}.jpg" alt="">'
        f'<a href="cover.jpg">cover</a>]]></description></item>'
        for n in range(count, 0, -1))
    return (f'<?xml version="1.0"?><rss version="2.0"><channel><title>{host}</title>'
            f"<link>https://{host}/</link><description>news</description>"
            f"<language>en</language>{items}</channel></rss>")


PLACEHOLDERS = """<?xml version="1.0"?><rss version="2.0"><channel><title>Hugo site</title>
<link>https://hugo.example.net/</link><description>no dates</description><language>en</language>
<lastBuildDate>Mon, 01 Jan 0001 00:00:00 +0000</lastBuildDate>
<item><title>Go zero time</title><link>https://hugo.example.net/a/</link>
<pubDate>Mon, 01 Jan 0001 00:00:00 +0000</pubDate><description>a</description></item>
<item><title>Unix epoch</title><link>https://hugo.example.net/b/</link>
<pubDate>Thu, 01 Jan 1970 00:00:00 +0000</pubDate><description>b</description></item>
<item><title>Before 1990</title><link>https://hugo.example.net/c/</link>
<pubDate>Tue, 01 Jan 1985 12:00:00 +0000</pubDate><description>c</description></item>
<item><title>No date at all</title><link>https://hugo.example.net/d/</link>
<description>d</description></item>
</channel></rss>"""


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> HubDir:
    """A hub that polled realistic sources through the CLI, archived, took
    one source down and lost another: every kind of document it writes."""
    require_validator()
    hub = HubDir(tmp_path_factory.mktemp("w3c"), items_per_feed=10)
    with FeedServer() as server:
        sources: list[tuple[str, str]] = []
        for path in sorted([*REALWORLD.glob("*.xml"), *REALWORLD.glob("*.json")]):
            kind = "application/feed+json" if path.suffix == ".json" else "application/xml"
            server.serve(f"/realworld/{path.name}", path.read_bytes(), content_type=kind)
            sources.append((path.stem, server.url(f"/realworld/{path.name}")))
        server.serve("/bridge/news.xml", newest_first("news.example.org", 30))
        server.serve("/hugo.xml", PLACEHOLDERS)
        server.serve("/persian.rss", (FIXTURES / "persian.rss").read_bytes())
        server.serve("/german.atom", (FIXTURES / "german.atom").read_bytes(),
                     content_type="application/atom+xml")
        server.serve("/takedown.xml", newest_first("takedown.example.com", 12))
        sources += [("newsroom", server.url("/bridge/news.xml")), ("hugo", server.url("/hugo.xml")),
                    ("persian", server.url("/persian.rss")), ("german", server.url("/german.atom")),
                    ("takedown", server.url("/takedown.xml"))]
        text = hub.config.read_text(encoding="utf-8").replace(
            "host_spacing = 0", "host_spacing = 0\narchive_page_size = 5").replace(
            'timeout = "5s"', 'timeout = "60s"')  # megabytes of real feeds on a busy machine
        for name, url in sources:
            text += f'\n[[sources]]\nname = "{name}"\nurl = "{url}"\nfulltext = "never"\n'
        hub.config.write_text(text, encoding="utf-8")
        polled = hub.run("poll", "--all", timeout=180)
        assert polled.returncode == 0, polled.stdout + polled.stderr
    for step in (("withdraw", "takedown"), ("remove", "german"), ("publish",)):
        done = hub.run(*step)
        assert done.returncode == 0, (step, done.stdout + done.stderr)
    return hub


def documents(hub: HubDir) -> list[Path]:
    return sorted(hub.feeds.rglob("*.atom"))


def entries(path: Path) -> list[lxml.etree._Element]:
    return list(lxml.etree.parse(str(path)).getroot().iter(f"{ATOM}entry"))


def test_every_kind_of_document_is_there(published: HubDir) -> None:
    """What the validator is run over: language feeds (one right to left),
    all.atom, per-source feeds, archive pages, and emptied feeds."""
    feeds = published.feeds
    names = {str(path.relative_to(feeds)) for path in documents(published)}
    assert {"en.atom", "fa.atom", "all.atom", "de.atom"} <= names
    assert len(list((feeds / "archive" / "en").glob("*.atom"))) >= 3
    assert len(list((feeds / "sources").glob("*.atom"))) >= 13
    assert entries(feeds / "sources" / "json-feed-sample.atom")  # the JSON Feed too
    assert entries(feeds / "de.atom") == []  # its only source was removed
    assert entries(feeds / "sources" / "takedown.atom") == []  # withdrawn
    assert len(entries(feeds / "en.atom")) >= 10


def test_no_errors_and_no_warning_of_our_making(published: HubDir) -> None:
    findings = validate(documents(published))
    errors = [str(f) for f in findings if f.level == "ERROR"]
    assert errors == [], "\n".join(errors)
    ours = [str(f) for f in findings if f.level == "WARNING" and f.kind not in UPSTREAM_ONLY
            and not _oldest_archive_page(f)]
    assert ours == [], "\n".join(ours)


def _oldest_archive_page(finding: Finding) -> bool:
    return (finding.kind == OLDEST_ARCHIVE_PAGE and finding.path.name == "1.atom"
            and finding.path.parent.parent.name == "archive")


def test_index_opml_passes_with_no_error_and_no_warning(published: HubDir) -> None:
    """The OPML list of every feed: no language code that is none (the
    all-languages feed's outline has no language) and every outline with
    more than a text says what it is."""
    findings = validate([published.feeds / "index.opml"])
    assert [str(finding) for finding in findings] == []


def test_warnings_left_come_from_upstream_data(published: HubDir) -> None:
    """DuplicateUpdated is allowed only where the shared <updated> values are
    upstream's own dates: no entry sharing one has a date the hub made up."""
    findings = validate(documents(published))
    flagged = {f.path for f in findings if f.kind == "DuplicateUpdated"}
    estimated = _estimated_ids(published.database)
    for path in flagged:
        updated = Counter(entry.findtext(f"{ATOM}updated") for entry in entries(path))
        shared = [entry.findtext(f"{ATOM}id") for entry in entries(path)
                  if updated[entry.findtext(f"{ATOM}updated")] > 1]
        assert shared, path
        assert [atom_id for atom_id in shared if atom_id in estimated] == [], path


def _estimated_ids(database: Path) -> set[str]:
    with sqlite3.connect(database) as db:
        return {row[0] for row in db.execute(
            "SELECT atom_id FROM items WHERE published_estimated = 1")}


def test_the_validator_catches_what_it_is_trusted_to_catch(tmp_path: Path) -> None:
    """The check above can fail: the validator reports the faults we fixed
    (a 1970 date, atom:source without updated, a duplicate date)."""
    require_validator()
    bad = tmp_path / "bad.atom"
    bad.write_text(
        '<?xml version="1.0" encoding="utf-8"?>\n<feed xmlns="http://www.w3.org/2005/Atom">'
        "<id>https://x.example/f</id><title>t</title><updated>1970-01-01T00:00:00Z</updated>"
        '<author><name>a</name></author><link rel="self" href="https://x.example/f"/>'
        + "".join(f"<entry><id>https://x.example/{n}</id><title>e</title>"
                  "<updated>2024-01-01T00:00:00Z</updated><content>x</content>"
                  "<source><id>https://y.example/</id><title>y</title></source></entry>"
                  for n in (1, 2)) + "</feed>\n", encoding="utf-8")
    kinds = {f.kind for f in validate([bad])}
    assert {"ImplausibleDate", "MissingSourceElement", "DuplicateUpdated"} <= kinds
