"""The benchmark's feed farm must stay deterministic and serve what the
phases rely on (ETag/304, growth); a tiny farm keeps this fast."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import feedparser
import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

from farm import Farm, FarmServer


def test_the_same_arguments_give_the_same_bytes() -> None:
    first, second = Farm(12, 4, seed=7), Farm(12, 4, seed=7)
    assert [first.body(i) for i in range(12)] == [second.body(i) for i in range(12)]
    assert first.grow(0.25, 2) == second.grow(0.25, 2)
    assert [first.etag(i) for i in range(12)] == [second.etag(i) for i in range(12)]


def test_farm_feeds_parse_and_mix_formats_languages_and_encodings() -> None:
    farm = Farm(60, 3, seed=42)
    parsed = [feedparser.parse(farm.body(i)) for i in range(60)]
    assert not [i for i, d in enumerate(parsed) if d.bozo]
    assert {d.version for d in parsed} == {"rss20", "atom10"}
    languages = {(d.feed.get("language") or "").split("-")[0] for d in parsed}
    assert {"en", "de", "fr", "fa"} <= languages
    assert {d.encoding.lower() for d in parsed} == {"utf-8", "iso-8859-1"}


def test_server_answers_304_and_grow_changes_only_the_grown_feeds() -> None:
    farm = Farm(10, 3, seed=1)
    with FarmServer(farm) as server, httpx.Client() as client:
        first = [client.get(server.url(i)) for i in range(10)]
        assert {r.status_code for r in first} == {200}
        request = urllib.request.Request(server.base_url + "/_grow?fraction=0.2&items=2",
                                         method="POST")
        with urllib.request.urlopen(request) as response:
            changed = set(json.loads(response.read())["changed"])
        assert len(changed) == 2
        again = [client.get(server.url(i), headers={"If-None-Match": r.headers["etag"]})
                 for i, r in enumerate(first)]
        assert {i for i, r in enumerate(again) if r.status_code == 200} == changed
        assert all(len(feedparser.parse(again[i].content).entries) == 5 for i in changed)
