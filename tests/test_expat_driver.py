"""feedhub has feedparser read XML through expat with its character data
buffered (feedhub._expat), for speed. The reference is the standard
library's own expat driver: every file of the shared corpus must read the
same through both, down to the error feedparser reports."""

from __future__ import annotations

import feedparser
import feedparser.api
import pytest

import feedhub.parse  # (chooses the driver)
from shared import SHARED

SHARED_CORPUS = SHARED / "corpus"
FILES = sorted(p for p in SHARED_CORPUS.rglob("*") if p.is_file()) if SHARED_CORPUS.is_dir() else []


def read(body: bytes) -> str:
    data = feedparser.parse(body, sanitize_html=False, resolve_relative_uris=False,
                            response_headers={"content-location": "http://example.org/feed"})
    error = data.pop("bozo_exception", None)
    return repr((dict(data), type(error).__name__, str(error)))


@pytest.fixture
def stdlib_driver():
    chosen = list(feedparser.api.PREFERRED_XML_PARSERS)
    feedparser.api.PREFERRED_XML_PARSERS[:] = ["xml.sax.expatreader"]
    yield
    feedparser.api.PREFERRED_XML_PARSERS[:] = chosen


def test_feedhub_chooses_the_buffered_driver():
    assert feedparser.api.PREFERRED_XML_PARSERS == ["feedhub._expat"]
    import xml.sax
    parser = xml.sax.make_parser(feedparser.api.PREFERRED_XML_PARSERS)
    parser.reset()
    assert parser._parser.buffer_text


@pytest.mark.skipif(len(FILES) < 100, reason="the shared corpus is not beside this checkout")
def test_every_corpus_file_reads_as_with_the_stdlib_driver(stdlib_driver):
    bodies = [path.read_bytes() for path in FILES]
    reference = [read(body) for body in bodies]
    feedparser.api.PREFERRED_XML_PARSERS[:] = ["feedhub._expat"]
    differ = [str(path) for path, body, want in zip(FILES, bodies, reference, strict=True)
              if read(body) != want]
    assert differ == []
    assert sum("'entries': [{" in want for want in reference) > 1000  # items were compared


@pytest.fixture
def feedparsers_own_joins():
    import feedparser.mixin
    import feedparser.urls
    chosen = feedparser.mixin.make_safe_absolute_uri, feedparser.mixin._urljoin
    feedparser.mixin.make_safe_absolute_uri = feedparser.urls.make_safe_absolute_uri
    feedparser.mixin._urljoin = feedparser.urls._urljoin
    yield
    feedparser.mixin.make_safe_absolute_uri, feedparser.mixin._urljoin = chosen


def test_feedhub_remembers_feedparsers_url_joins():
    import feedparser.mixin
    import feedparser.urls
    assert feedparser.mixin.make_safe_absolute_uri is not feedparser.urls.make_safe_absolute_uri
    assert feedparser.mixin._urljoin is not feedparser.urls._urljoin
    # what it does not keep (a link of megabytes) joins as feedparser's own
    long = "a/" * 5_000
    for args in [("http://example.org/feed", long), ("http://example.org/", None),
                 ("javascript:alert(1)", "x")]:
        assert feedparser.mixin.make_safe_absolute_uri(*args) == \
            feedparser.urls.make_safe_absolute_uri(*args)
    assert feedparser.mixin._urljoin("http://example.org/", long) == \
        feedparser.urls._urljoin("http://example.org/", long)


@pytest.mark.skipif(len(FILES) < 100, reason="the shared corpus is not beside this checkout")
def test_every_corpus_file_reads_as_with_feedparsers_own_url_joins(feedparsers_own_joins):
    """parse.py remembers feedparser's xml:base joins (pure functions of
    two strings); the corpus has feedparser's own xml:base and relative-URI
    tests, which must read as with its joins done every time."""
    import feedparser.mixin
    bodies = [path.read_bytes() for path in FILES]
    reference = [read(body) for body in bodies]
    feedparser.mixin.make_safe_absolute_uri, feedparser.mixin._urljoin = (
        feedhub.parse._remembered(feedparser.urls.make_safe_absolute_uri),
        feedhub.parse._remembered(feedparser.urls._urljoin))
    differ = [str(path) for path, body, want in zip(FILES, bodies, reference, strict=True)
              if read(body) != want]
    assert differ == []
    assert sum("xml:base" in body.decode("latin-1") for body in bodies) > 50  # bases were read
