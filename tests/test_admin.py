"""The admin address: `feedhub run --serve PUBLIC --admin ADMIN` as a real
subprocess polling a loopback farm of healthy, failing and retired sources.
/metrics is read with Prometheus' own text parser and checked against
`status --json`; /status is rendered in headless Chromium; the public
address shows none of it."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from browser import DESKTOP, visible_text
from feedhub import __version__
from feedhub.status import STATES
from feedserver import FeedServer
from htmlcheck import assert_valid_html5
from hubdir import FIXTURES, ITEM, RSS, HubDir, stop, wait_for

DAYS = 30
PAGES = FIXTURES / "pages"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def feed(name: str, language: str, *guids: str) -> str:
    return RSS.format(name=name, items="".join(
        ITEM.format(title=f"{name} {g}", guid=f"{name}-{g}") for g in guids)).replace(
        "<language>en</language>", f"<language>{language}</language>")


@dataclass
class Farm:
    hub: HubDir
    public: str
    admin: str
    server: FeedServer


@pytest.fixture(scope="module")
def farm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Farm]:
    """Two healthy sources (English, Persian), one answering 500, one whose
    host refuses connections, one 410 Gone; polled once each (1 h interval)."""
    root = tmp_path_factory.mktemp("admin")
    with FeedServer() as server:
        hub = HubDir(root, interval="1h")
        server.serve("/en.rss", feed("english", "en", "1", "2", "3"))
        server.serve("/fa.rss", feed("persian", "fa", "1", "2"))
        server.error("/broken.rss", 500)
        server.error("/gone.rss", 410)
        server.receive_posts("/hub")  # a WebSub hub
        # teasers: one article page extracted, one missing (404)
        server.serve("/teasers.rss", teasers(server.base_url))
        server.serve("/articles/en", (PAGES / "en-article.html").read_bytes(),
                     content_type="text/html; charset=utf-8")
        server.error("/articles/missing", 404)
        hub.config.write_text(hub.config.read_text(encoding="utf-8").replace(
            "[hub]\n", f'[hub]\nwebsub_hubs = ["{server.url("/hub")}"]\n', 1), encoding="utf-8")
        closed = free_port()  # nothing listens there
        for name, url in (("english", server.url("/en.rss")), ("persian", server.url("/fa.rss")),
                          ("broken", server.url("/broken.rss")), ("departed", server.url("/gone.rss")),
                          ("unreachable", f"http://127.0.0.1:{closed}/feed.rss"),
                          ("teasers", server.url("/teasers.rss"))):
            fulltext = [] if name == "teasers" else ["--no-fulltext"]
            added = hub.run("add", url, "--name", name, "--no-check", *fulltext)
            assert added.returncode == 0, added.stderr
        public, admin = free_port(), free_port()
        daemon = hub.start("run", "--serve", f"127.0.0.1:{public}", "--admin", f"127.0.0.1:{admin}")
        try:
            def polled() -> bool:
                status = json.loads(hub.run("status", "--json").stdout)
                return status["summary"]["new"] == 0 and all(
                    (hub.feeds / f"{language}.atom").exists() for language in ("en", "fa"))
            wait_for(polled, timeout=30, step=0.3)
            time.sleep(2)  # past the publish debounce (1 s): nothing happens after this
            wait_for(lambda: _answers(f"http://127.0.0.1:{admin}/healthz"), timeout=10)
            yield Farm(hub, f"http://127.0.0.1:{public}", f"http://127.0.0.1:{admin}", server)
        finally:
            log = stop(daemon)
        assert daemon.returncode == 0, log


def teasers(base: str) -> str:
    """Two items carrying only a teaser (so their pages are fetched), no language."""
    words = " ".join((PAGES / "en-article.paragraphs.txt").read_text(encoding="utf-8")
                     .splitlines()[0].split()[:12]) + " …"
    items = "".join(f"<item><title>Teaser {slug}</title><link>{base}/articles/{slug}</link>"
                    f"<guid>teaser-{slug}</guid><description>{words}</description></item>"
                    for slug in ("en", "missing"))
    return ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>T</title>'
            f"<link>https://teasers.example/</link><description>d</description>{items}"
            "</channel></rss>")


def _answers(url: str) -> bool:
    try:
        httpx.get(url)
    except httpx.HTTPError:
        return False
    return True


def scrape(farm: Farm) -> dict[str, list[tuple[str, dict[str, str], float]]]:
    """Every sample by family name: (sample name, labels, value)."""
    answer = httpx.get(farm.admin + "/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {family.name: [(s.name, s.labels, s.value) for s in family.samples]
            for family in text_string_to_metric_families(answer.text)}


def value(samples: list[tuple[str, dict[str, str], float]], name: str, **labels: str) -> float:
    found = [v for n, got, v in samples if n == name and got == labels]
    assert len(found) == 1, (name, labels, samples)
    return found[0]


def test_metrics_agree_with_status_json(farm: Farm) -> None:
    metrics = scrape(farm)
    status = json.loads(farm.hub.run("status", "--json").stdout)
    summary = status["summary"]
    assert summary["ok"] == 3 and summary["failing"] == 2 and summary["retired"] == 1
    # every state is there, the ones no source is in at 0
    for state in STATES:
        assert value(metrics["feedhub_sources"], "feedhub_sources", state=state) == summary[state]

    polls = metrics["feedhub_polls"]
    assert value(polls, "feedhub_polls_total", outcome="200", kind="none") == 3
    assert value(polls, "feedhub_polls_total", outcome="error", kind="http") == 1
    assert value(polls, "feedhub_polls_total", outcome="error", kind="network") == 1
    assert value(polls, "feedhub_polls_total", outcome="error", kind="gone") == 1
    for outcome, kind in (("304", "none"), ("skipped", "none"), ("error", "timeout"),
                          ("error", "parse"), ("error", "unexpected")):  # seeded at 0
        assert value(polls, "feedhub_polls_total", outcome=outcome, kind=kind) == 0
    total_polls = sum(v for _, _, v in polls)
    by_name = {s["name"]: s for s in status["sources"]}
    failing = [s for s in status["sources"] if s["state"] in ("failing", "retired")]
    assert sum(s["error_streak"] for s in failing) == value(
        polls, "feedhub_polls_total", outcome="error", kind="http") + value(
        polls, "feedhub_polls_total", outcome="error", kind="network") + value(
        polls, "feedhub_polls_total", outcome="error", kind="gone")
    assert by_name["broken"]["last_status"] == 500 and by_name["departed"]["retired"]

    # items stored per language: what the process counted as new
    items = metrics["feedhub_items"]
    for language, count in summary["items_per_language"].items():
        assert value(items, "feedhub_items_total", change="new", language=language) == count
    assert summary["items_per_language"]["fa"] == 2 and summary["items_per_language"]["en"] >= 4
    assert sum(v for n, labels, v in items if labels["change"] == "updated") == 0
    # [languages.fa] is configured: its counters were there from the start
    assert value(items, "feedhub_items_total", change="updated", language="fa") == 0

    fetch = metrics["feedhub_fetch_duration_seconds"]
    assert value(fetch, "feedhub_fetch_duration_seconds_count") == total_polls
    assert value(fetch, "feedhub_fetch_duration_seconds_bucket", le="+Inf") == total_polls
    assert value(metrics["feedhub_fetched_bytes"], "feedhub_fetched_bytes_total", kind="feed") > 0
    fulltext = metrics["feedhub_fulltext_extractions"]
    assert value(fulltext, "feedhub_fulltext_extractions_total", outcome="extracted") == 1
    assert value(fulltext, "feedhub_fulltext_extractions_total", outcome="http_error") == 1
    assert value(fulltext, "feedhub_fulltext_extractions_total", outcome="shorter") == 0
    assert value(metrics["feedhub_fetched_bytes"], "feedhub_fetched_bytes_total",
                 kind="article") >= len((PAGES / "en-article.html").read_bytes())
    assert value(metrics["feedhub_publish_duration_seconds"],
                 "feedhub_publish_duration_seconds_count") >= 1
    assert value(metrics["feedhub_published_files"], "feedhub_published_files_total",
                 kind="feed") >= 3  # en, fa, all at least
    pinged = len(farm.server.requests_for("/hub"))
    assert pinged >= 3  # en, fa, all at least
    assert value(metrics["feedhub_websub_pings"], "feedhub_websub_pings_total", outcome="ok") == pinged
    assert value(metrics["feedhub_websub_pings"], "feedhub_websub_pings_total", outcome="failed") == 0
    assert value(metrics["feedhub_config_reloads"], "feedhub_config_reloads_total",
                 outcome="refused") == 0
    assert value(metrics["feedhub_parser_pool_restarts"],
                 "feedhub_parser_pool_restarts_total") == 0
    assert value(metrics["feedhub_database_size_bytes"], "feedhub_database_size_bytes") > 0
    assert value(metrics["feedhub_longest_failing_seconds"], "feedhub_longest_failing_seconds") > 0
    assert value(metrics["feedhub_oldest_success_age_seconds"],
                 "feedhub_oldest_success_age_seconds") > 0
    published = value(metrics["feedhub_last_published_timestamp_seconds"],
                      "feedhub_last_published_timestamp_seconds")
    newest = max(path.stat().st_mtime for path in farm.hub.feeds.glob("*.atom"))
    assert abs(published - newest) < 0.01
    assert metrics["feedhub_items_withdrawn"] == []  # nothing withdrawn: no language yet
    build = metrics["feedhub_build_info"]
    assert build[0][1]["version"] == __version__ and build[0][2] == 1

    # bounded label sets: no label carries a source name or a URL
    names = {s["name"] for s in status["sources"]}
    labels = {v for samples in metrics.values() for _, got, _ in samples for v in got.values()}
    assert not labels & names and not [v for v in labels if "://" in v or "127.0.0.1" in v]


def test_a_config_reload_is_counted(farm: Farm) -> None:
    before = scrape(farm)["feedhub_config_reloads"]
    config = farm.hub.config.read_text(encoding="utf-8")
    farm.hub.config.write_text(config + "\n# touched\n", encoding="utf-8")
    wait_for(lambda: value(scrape(farm)["feedhub_config_reloads"], "feedhub_config_reloads_total",
                           outcome="ok") == value(before, "feedhub_config_reloads_total",
                                                  outcome="ok") + 1, timeout=10)


def test_public_address_shows_no_operational_detail(farm: Farm) -> None:
    for path in ("/metrics", "/status", "/status?sort=name"):
        assert httpx.get(farm.public + path).status_code == 404, path
    health = httpx.get(farm.public + "/healthz")
    assert health.status_code == 503  # a source is failing
    assert health.json() == {"status": "degraded"}  # one word: no names, no errors
    detail = httpx.get(farm.admin + "/healthz")
    assert detail.status_code == 503
    body = detail.json()
    assert sorted(body["failing"]) == ["broken", "unreachable"] and body["retired"] == ["departed"]


def raw(farm: Farm, request: bytes) -> bytes:
    port = int(farm.admin.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(65536):
            answer += chunk
    return answer


def test_admin_answers_only_get_and_head_within_bounds(farm: Farm) -> None:
    post = httpx.post(farm.admin + "/metrics", content=b"x")
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
    for method in ("PUT", "DELETE", "OPTIONS"):
        assert httpx.request(method, farm.admin + "/status").status_code == 405
    head = httpx.head(farm.admin + "/metrics")
    assert head.status_code == 200 and head.content == b""
    assert httpx.get(farm.admin + "/nothing").status_code == 404
    # headers over the bound: refused, not read on
    huge = b"GET /metrics HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
    assert raw(farm, huge).startswith(b"HTTP/1.1 431")
    many = b"GET /metrics HTTP/1.1\r\n" + b"".join(b"X-%d: %s\r\n" % (n, b"b" * 90)
                                                  for n in range(200)) + b"\r\n"
    assert raw(farm, many).startswith(b"HTTP/1.1 431")
    # a body on a GET: refused
    with_body = b"GET /metrics HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
    assert raw(farm, with_body).startswith(b"HTTP/1.1 413")
    # still answering afterwards
    assert httpx.get(farm.admin + "/metrics").status_code == 200


def test_a_slow_client_does_not_hold_the_admin_server(farm: Farm) -> None:
    """A client that opens connections and sends nothing: the others are answered."""
    port = int(farm.admin.rsplit(":", 1)[1])
    idle = [socket.create_connection(("127.0.0.1", port)) for _ in range(4)]
    try:
        idle[0].sendall(b"GET /metr")  # and never finishes
        started = time.monotonic()
        assert httpx.get(farm.admin + "/metrics", timeout=5).status_code == 200
        assert time.monotonic() - started < 2
    finally:
        for conn in idle:
            conn.close()


def test_a_client_that_never_finishes_its_request_is_hung_up_on(farm: Farm) -> None:
    """HEAD_TIMEOUT (10 s) for the whole head, however slowly it trickles in."""
    port = int(farm.admin.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=20) as conn:
        started = time.monotonic()
        conn.sendall(b"GET /metrics HTTP/1.1\r\n")
        answer = b"x"
        for n in range(12):  # a header line every second: each read alone is quick
            try:
                conn.sendall(b"X-%d: y\r\n" % n)
            except OSError:
                break
            time.sleep(1)
        try:
            answer = conn.recv(100)
        except OSError:
            answer = b""
        took = time.monotonic() - started
    assert answer == b"" and 9 <= took < 14, (answer, took)


def test_status_page_failing_first_with_charts(farm: Farm, open_page, tmp_path: Path) -> None:
    visit = open_page(farm.admin + "/status", DESKTOP)
    page = visit.page
    assert visit.response is not None and visit.response.status == 200
    assert visit.console_errors == [] and visit.external_requests == []
    states = page.eval_on_selector_all("tr.source", "rows => rows.map(r => r.dataset.state)")
    assert states[:2] == ["failing", "failing"] and states[-1] == "retired", states
    first = page.locator("tr.source").first
    assert first.locator("td.reason").inner_text() in (
        "HTTP 500 Internal Server Error",
        *[s["last_error"] for s in json.loads(farm.hub.run("status", "--json").stdout)["sources"]
          if s["name"] == "unreachable"])
    text = visible_text(page)
    assert "HTTP 500 Internal Server Error" in text and "410" in text
    # a chart per language (en, fa): a bar per day
    languages = page.locator("svg.chart.language")
    assert languages.count() == 2
    for n in range(2):
        assert languages.nth(n).locator("rect.day").count() == DAYS
    # a sparkline per source: a point per day
    sources = page.eval_on_selector_all(
        "svg.chart.source polyline.days", "lines => lines.map(l => l.points.numberOfItems)")
    assert sources == [DAYS] * 6
    # today's bar of each language chart holds all its items (all first seen today)
    per_language = json.loads(farm.hub.run("status", "--json").stdout)["summary"][
        "items_per_language"]
    for language, count in per_language.items():
        today = page.locator(f'svg.language[data-language="{language}"] rect.day').last
        assert today.locator("title").text_content().endswith(f": {count}")
    page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
    assert_valid_html5(httpx.get(farm.admin + "/status").content)  # the Nu checker, as the pages

    # sortable without JavaScript: a link per column
    page.click('th a[href="?sort=name"]')
    names = page.eval_on_selector_all("tr.source td.name", "cells => cells.map(c => c.textContent)")
    assert names == sorted(names, key=str.casefold)
    page.goto(farm.admin + "/status?sort=items")
    first = page.locator("tr.source").first
    assert first.locator("td.name").inner_text() == "english"
    assert first.locator("td.num").nth(2).inner_text() == "3"  # its items stored


def test_status_page_is_paged_failing_first(tmp_path: Path) -> None:
    """1,201 sources: three pages of 500; the failing ones lead the first."""
    import re
    from datetime import UTC, datetime, timedelta

    import jinja2

    from feedhub.admin import PAGE_SIZE, render_status
    from feedhub.config import load_config
    from feedhub.store import open_store

    hub = HubDir(tmp_path)
    with hub.config.open("a", encoding="utf-8") as config:
        for n in range(1201):
            config.write(f'\n[[sources]]\nname = "s{n:04d}"\nurl = "https://s{n}.example/f"\n')
    config = load_config(hub.config)
    now = datetime.now(UTC)
    with open_store(config.hub.database) as store:
        for n in range(1201):
            failing = n in (7, 1100)
            store.record_poll(f"s{n:04d}", url=f"https://s{n}.example/f", at=now,
                              status=503 if failing else 200,
                              error="HTTP 503 Service Unavailable" if failing else None,
                              next_poll=now + timedelta(hours=1), entries=1)
    templates = jinja2.Environment(loader=jinja2.PackageLoader("feedhub", "admin_templates"),
                                   autoescape=True, undefined=jinja2.StrictUndefined)
    first = render_status(templates, config, "state").decode()
    rows = re.findall(r'<tr class="source" data-state="(\w+)">\s*<td class="name">(\w+)<', first)
    assert len(rows) == PAGE_SIZE == 500
    assert rows[:2] == [("failing", "s0007"), ("failing", "s1100")]
    assert 'href="?sort=state&amp;page=2" rel="next"' in first and "Page 1 of 3" in first
    last = render_status(templates, config, "name", page=3).decode()
    names = re.findall(r'<td class="name">(\w+)<', last)
    assert names == [f"s{n:04d}" for n in range(1000, 1201)]
    assert 'rel="prev"' in last and 'rel="next"' not in last
    beyond = render_status(templates, config, "name", page=99).decode()  # past the end: the last
    assert re.findall(r'<td class="name">(\w+)<', beyond) == names


def test_an_admin_address_in_use_is_a_clear_failure(tmp_path: Path) -> None:
    hub = HubDir(tmp_path)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        ran = hub.run("run", "--admin", f"127.0.0.1:{port}", timeout=30)
    assert ran.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port} (--admin)" in ran.stderr
    assert "Traceback" not in ran.stderr
    same = hub.run("run", "--serve", "127.0.0.1:9464", "--admin", "127.0.0.1:9464")
    assert same.returncode == 2 and "must differ" in same.stderr
