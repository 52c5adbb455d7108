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

from farm import Farm, FarmServer, RealFarm


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


def test_touch_changes_every_feeds_bytes_and_etag_but_not_its_items() -> None:
    farm = Farm(6, 3, seed=3)
    before = [(farm.body(i), farm.etag(i), farm.last_modified(i)) for i in range(6)]
    items = [[(e.id, e.title, e.get("summary")) for e in feedparser.parse(farm.body(i)).entries]
             for i in range(6)]
    with FarmServer(farm) as server:
        request = urllib.request.Request(server.base_url + "/_touch", method="POST")
        with urllib.request.urlopen(request) as response:
            assert json.loads(response.read()) == {"touched": 6}
    for i, (body, etag, modified) in enumerate(before):
        assert farm.body(i) != body and farm.etag(i) != etag and farm.last_modified(i) != modified
        assert [(e.id, e.title, e.get("summary"))
                for e in feedparser.parse(farm.body(i)).entries] == items[i]


def test_real_farm_serves_each_file_under_many_paths(tmp_path: Path) -> None:
    (tmp_path / "a.xml").write_bytes(b"<rss version='2.0'><channel><title>a</title></channel></rss>")
    (tmp_path / "b.json").write_bytes(b'{"version": "https://jsonfeed.org/version/1.1"}')
    (tmp_path / "README.md").write_text("not a feed")
    with FarmServer(Farm(2, 1), real=RealFarm(tmp_path, 3)) as server, httpx.Client() as client:
        urls = server.real_urls()
        assert len(urls) == 6 and len(set(urls)) == 6
        first = [client.get(url) for url in urls]
        assert {r.status_code for r in first} == {200}
        assert first[0].content == (tmp_path / "a.xml").read_bytes()
        again = client.get(urls[0], headers={"If-None-Match": first[0].headers["etag"]})
        assert again.status_code == 304
        assert client.get(server.base_url + "/real/3/a.xml").status_code == 404
        assert client.get(server.base_url + "/real/0/README.md").status_code == 404


def test_undeclared_language_leaves_only_the_language_out() -> None:
    declared, undeclared = Farm(4, 2, seed=5), Farm(4, 2, seed=5, declare_language=False)
    for i in range(4):
        plain = feedparser.parse(undeclared.body(i))
        assert not plain.feed.get("language") and b"xml:lang" not in undeclared.body(i)
        assert ([e.id for e in plain.entries]
                == [e.id for e in feedparser.parse(declared.body(i)).entries])
