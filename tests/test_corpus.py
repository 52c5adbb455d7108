"""Every file of feedparser's odd and broken feed corpus, served over HTTP
with the headers its manifest names, goes through the hub: nothing crashes
or hangs, what is parseable is stored, and what is published is well-formed
Atom with no markup that could run in a reader."""

from __future__ import annotations

import asyncio
import csv
import re

import feedparser
import lxml.etree
import pytest

from feedhub.config import parse_config
from feedhub.hub import Hub, make_fetcher
from feedhub.store import open_store
from safety import assert_feed_is_safe
from shared import SHARED

CORPUS = SHARED / "corpus" / "feedparser-tests"
pytestmark = pytest.mark.skipif(not (CORPUS / "MANIFEST.tsv").exists(),
                                reason="the shared corpus is not beside this checkout")


def manifest() -> list[dict[str, str]]:
    with open(CORPUS / "MANIFEST.tsv", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle, delimiter="\t"))


def headers_of(row: dict[str, str]) -> dict[str, str]:
    """'Name:value; Name2:value2' -> a dict (a value may hold '; charset=...')."""
    found = {}
    for part in re.split(r";\s*(?=[A-Za-z-]+:)", row["http_headers"] or ""):
        if ":" in part:
            name, value = part.split(":", 1)
            found[name.strip()] = value.strip()
    return found


def serve(feed_server, row: dict[str, str]) -> str:
    path = "/corpus/" + row["path"]
    body = (CORPUS / row["path"]).read_bytes()
    headers = headers_of(row)
    status = int(headers.pop("Status", "200"))
    if "Location" in headers:
        headers["Location"] = feed_server.url("/corpus/redirect-target.xml")
    content_type = headers.pop("Content-type", None) or headers.pop("Content-Type", None)
    if row["path"].endswith((".gz", ".z")):
        encoding = "gzip" if row["path"].endswith(".gz") else "deflate"
        feed_server.error(path, 200, body=body, headers={"Content-Encoding": encoding,
                                                         "Content-Type": "application/xml"})
    elif status != 200:
        feed_server.error(path, status, body=body, headers=headers)
    else:
        feed_server.serve(path, body, content_type=content_type or "application/xml",
                          headers=headers)
    return feed_server.url(path)


@pytest.mark.timeout(600)
def test_every_corpus_file_is_survived_and_nothing_unsafe_is_published(tmp_path, feed_server):
    rows = manifest()
    assert len(rows) > 2000
    urls = [serve(feed_server, row) for row in rows]
    lines = ['[hub]', 'base_url = "https://hub.example.org/feeds/"',
             "allow_private_networks = true", "host_spacing = 0", "max_per_host = 8",
             "max_connections = 8", 'timeout = "10s"', "items_per_feed = 100000", ""]
    for n, url in enumerate(urls):
        lines += ["[[sources]]", f'name = "c{n}"', f'url = "{url}"', 'fulltext = "never"', ""]
    config = parse_config("\n".join(lines), tmp_path / "config.toml")

    async def run() -> list:
        with open_store(config.hub.database) as store:
            async with make_fetcher(config) as fetcher:
                hub = Hub(config, store, fetcher, workers=2)
                try:
                    reports = await hub.poll_many(config.sources)
                finally:
                    hub.close()
                hub.publish()
                assert store.integrity_check() == "ok"
                return reports

    reports = asyncio.run(run())
    assert len(reports) == len(rows)  # every file got an outcome, none raised
    ok = [r for r in reports if r.ok]
    failed = [r for r in reports if not r.ok]
    assert len(ok) > 1800, (len(ok), [r.error for r in failed][:20])
    assert all(r.error for r in failed)  # a failure always says why
    # what is parseable is ingested: every file in which feedparser itself
    # finds entries gives stored items, unless its poll failed with a reason
    missed = []
    for row, report in zip(rows, reports, strict=True):
        if not row["path"].endswith(".xml") or headers_of(row).get("Status"):
            continue
        if feedparser.parse((CORPUS / row["path"]).read_bytes()).entries and report.ok \
                and report.new == 0:
            missed.append(row["path"])
    assert missed == []

    published = sorted((tmp_path / "feeds").glob("*.atom"))
    assert published
    for path in published:
        parsed = feedparser.parse(path.read_bytes())
        assert not parsed.bozo, (path.name, parsed.bozo_exception)
        assert_feed_is_safe(lxml.etree.parse(str(path)).getroot())
