"""WebSub publish pings: `[hub] websub_hubs` and a stand-in hub on 127.0.0.1.

The stand-in is a FeedServer route that takes POSTs (`receive_posts`): it
records each ping's form and answers a scripted status sequence, or hangs.
The CLI and the daemon run as real subprocesses; the retry policy is tested
in-process with its pauses recorded instead of slept.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import parse_qs

import lxml.etree
import pytest

from feedhub.config import ConfigError, load_config
from feedhub.fetch import Fetcher
from feedhub.websub import CLI_POLICY, DAEMON_POLICY, Notifier, PingOutcome, RetryPolicy, ping, ping_all
from feedserver import FeedServer
from hubdir import HubDir, rss, stop, wait_for

BASE = "https://hub.example.org/feeds/"  # base_url in hubdir.CONFIG: the feeds' public URLs
TOPIC = BASE + "en.atom"
USER_AGENT = "feedhub-test (+https://example.org)"

@pytest.fixture
def websub_hub() -> Iterator[FeedServer]:
    """A second server on 127.0.0.1, standing in for a WebSub hub."""
    with FeedServer() as server:
        yield server


def pings(server: FeedServer, path: str = "/hub") -> list[dict[str, list[str]]]:
    """The forms the stand-in hub received, in order."""
    return [parse_qs(r.body.decode("ascii"), strict_parsing=True)
            for r in server.requests_for(path) if r.method == "POST"]


def topics(server: FeedServer) -> list[str]:
    received = pings(server)
    assert all(form["hub.mode"] == ["publish"] for form in received), received
    return sorted(url for form in received for url in form["hub.url"])


def set_hubs(hub: HubDir, value: str) -> None:
    """Put `websub_hubs = VALUE` (TOML) at the top of [hub] in config.toml."""
    text = re.sub(r"(?m)^websub_hubs = .*\n", "", hub.config.read_text(encoding="utf-8"))
    hub.config.write_text(text.replace("[hub]\n", f"[hub]\nwebsub_hubs = {value}\n", 1),
                          encoding="utf-8")


def add_source(hub: HubDir, feed_server: FeedServer, name: str) -> None:
    added = hub.run("add", feed_server.url(f"/{name}.rss"), "--name", name, "--no-check",
                    "--no-fulltext")
    assert added.returncode == 0, added.stderr


def written(hub: HubDir, log: str) -> list[str]:
    """The public URLs of the feeds a command logged it wrote ("published
    PATH (N entries)"): the language feeds, all.atom, the per-source feeds."""
    paths = re.findall(r"published (\S+) \(\d+ entries\)", log)
    return sorted(BASE + Path(path).relative_to(hub.feeds).as_posix() for path in paths)


# --- the CLI: feedhub poll / feedhub publish --------------------------------------------


def test_poll_and_publish_ping_the_hub_for_each_written_feed_and_only_for_those(
        hub: HubDir, feed_server: FeedServer, websub_hub: FeedServer) -> None:
    websub_hub.receive_posts("/hub", 204)
    set_hubs(hub, json.dumps([websub_hub.url("/hub")]))
    feed_server.serve("/a.rss", rss("a", "1"))
    add_source(hub, feed_server, "a")

    polled = hub.run("poll", "--all")
    assert polled.returncode == 0, polled.stderr
    feeds = written(hub, polled.stderr)
    assert {BASE + "en.atom", BASE + "all.atom"} <= set(feeds)
    assert topics(websub_hub) == feeds  # one request per written feed
    request = websub_hub.requests_for("/hub")[0]
    assert request.headers["content-type"] == "application/x-www-form-urlencoded"
    assert request.headers["user-agent"].startswith("feedhub/")
    hub_url = websub_hub.url("/hub")
    assert f"WebSub hub {hub_url}: {len(feeds)} of {len(feeds)} feeds pinged." in polled.stdout
    assert f"pinged {hub_url} for {TOPIC}: HTTP 204 No Content" in polled.stderr
    # each subscription document names the hub (archive pages do not: they never change)
    for name in ("en.atom", "all.atom", "sources/a.atom"):
        root = lxml.etree.parse(str(hub.feeds / name)).getroot()
        assert [link.get("href") for link in root.iter("{http://www.w3.org/2005/Atom}link")
                if link.get("rel") == "hub"] == [hub_url], name

    unchanged = hub.run("publish")  # nothing changed: no file written, nobody pinged
    assert unchanged.returncode == 0, unchanged.stderr
    assert written(hub, unchanged.stderr) == [] and "unchanged" in unchanged.stdout
    assert len(pings(websub_hub)) == len(feeds) and "WebSub" not in unchanged.stdout

    # a new title for the English feed: `feedhub publish` rewrites it, and pings for what it wrote
    with hub.config.open("a", encoding="utf-8") as config:
        config.write('\n[languages.en]\ntitle = "News in English"\n')
    retitled = hub.run("publish")
    assert retitled.returncode == 0, retitled.stderr
    assert TOPIC in written(hub, retitled.stderr)
    new_topics = sorted(form["hub.url"][0] for form in pings(websub_hub)[len(feeds):])
    assert new_topics == written(hub, retitled.stderr)


def test_a_hub_answering_503_is_asked_again_and_its_retry_after_honoured(
        hub: HubDir, feed_server: FeedServer, websub_hub: FeedServer) -> None:
    # the first pings (en.atom, all.atom and sources/a.atom, sent together: three may be in
    # flight to one host) get 503, the retries 204
    websub_hub.receive_posts("/hub", 503, 503, 503, 204, headers={"Retry-After": "2"})
    set_hubs(hub, json.dumps([websub_hub.url("/hub")]) + "\nmax_per_host = 3")
    feed_server.serve("/a.rss", rss("a", "1"))
    add_source(hub, feed_server, "a")

    started = time.monotonic()
    polled = hub.run("poll", "--all")
    assert polled.returncode == 0, polled.stderr
    assert time.monotonic() - started < 15  # the command waits for its pings, briefly

    feeds = written(hub, polled.stderr)
    assert len(feeds) == 3 and topics(websub_hub) == sorted(feeds * 2)
    times = {}
    for request in websub_hub.requests_for("/hub"):
        times.setdefault(parse_qs(request.body.decode())["hub.url"][0], []).append(request.time)
    assert all(second - first >= 1.9 for first, second in times.values()), times  # Retry-After: 2
    assert "HTTP 503 Service Unavailable; retrying in 2s (attempt 1 of 3)" in polled.stderr
    assert f"pinged {websub_hub.url('/hub')} for {TOPIC}: HTTP 204 No Content (attempt 2)" \
        in polled.stderr
    assert "3 of 3 feeds pinged." in polled.stdout


def test_a_hub_answering_400_is_not_asked_again_and_the_command_still_succeeds(
        hub: HubDir, feed_server: FeedServer, websub_hub: FeedServer) -> None:
    websub_hub.receive_posts("/hub", 400, body="Invalid value for hub.url")
    set_hubs(hub, json.dumps([websub_hub.url("/hub")]))
    feed_server.serve("/a.rss", rss("a", "1"))
    add_source(hub, feed_server, "a")

    polled = hub.run("poll", "--all")
    assert polled.returncode == 0, polled.stderr  # the feed files were written fine
    assert (hub.feeds / "en.atom").exists()
    feeds = written(hub, polled.stderr)
    assert topics(websub_hub) == feeds  # once each, no retry
    hub_url = websub_hub.url("/hub")
    assert (f"ERROR websub: gave up pinging {hub_url} for {TOPIC}: HTTP 400 Bad Request: "
            "Invalid value for hub.url (not retried") in polled.stderr
    assert f"Warning: WebSub hub {hub_url}: 0 of {len(feeds)} feeds pinged" in polled.stderr


def test_a_hub_that_is_down_costs_the_command_seconds_not_minutes(
        hub: HubDir, feed_server: FeedServer) -> None:
    down = f"http://127.0.0.1:{closed_port()}/hub"
    set_hubs(hub, json.dumps([down]))
    feed_server.serve("/a.rss", rss("a", "1"))
    add_source(hub, feed_server, "a")
    started = time.monotonic()
    polled = hub.run("poll", "--all", "--json")
    assert polled.returncode == 0, polled.stderr
    assert time.monotonic() - started < CLI_POLICY.deadline + 5
    assert json.loads(polled.stdout)[0]["new"] == 1  # the warning goes to stderr, not into the JSON
    feeds = len(written(hub, polled.stderr))
    assert f"Warning: WebSub hub {down}: 0 of {feeds} feeds pinged" in polled.stderr
    assert f"gave up pinging {down} for {TOPIC}: cannot connect" in polled.stderr
    assert "(after 3 attempts)" in polled.stderr


@pytest.mark.parametrize(("value", "message"), [
    ('"https://pubsubhubbub.appspot.com/"', "expected a list of absolute http(s) URLs"),
    ('["https://pubsubhubbub.appspot.com/", "pubsubhubbub.superfeedr.com"]',
     "entry 2, 'pubsubhubbub.superfeedr.com', is not an absolute http(s) URL"),
    ('["ftp://hub.example.org/"]', "entry 1, 'ftp://hub.example.org/', is not"),
    ('["https://hub.example.org/", "https://hub.example.org/"]', "is listed twice"),
])
def test_a_bad_websub_hubs_value_exits_2_naming_file_and_line(
        hub: HubDir, value: str, message: str) -> None:
    set_hubs(hub, value)
    line = next(n for n, text in enumerate(hub.config.read_text(encoding="utf-8").splitlines(), 1)
                if text.startswith("websub_hubs"))
    for command in (("publish",), ("poll", "--all"), ("run",)):
        result = hub.run(*command)
        assert result.returncode == 2, (command, result.stderr)
        assert f"{hub.config}:{line}: [hub] 'websub_hubs'" in result.stderr
        assert message in result.stderr


def test_websub_hubs_are_read_as_a_tuple_and_default_to_none(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[hub]\nbase_url = "https://hub.example.org/feeds/"\n', encoding="utf-8")
    assert load_config(path).hub.websub_hubs == ()
    path.write_text('[hub]\nwebsub_hubs = [\n  "https://pubsubhubbub.appspot.com/",\n'
                    '  "https://websub.example.net/hub",\n]\n', encoding="utf-8")
    assert load_config(path).hub.websub_hubs == ("https://pubsubhubbub.appspot.com/",
                                                 "https://websub.example.net/hub")
    path.write_text("[hub]\nwebsub_hubs = [1]\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"config\.toml:2: .*entry 1, 1, is not"):
        load_config(path)


# --- the daemon ------------------------------------------------------------------------


def test_the_daemon_pings_after_a_poll_brings_new_items_and_picks_up_new_hubs(
        tmp_path: Path, feed_server: FeedServer, websub_hub: FeedServer) -> None:
    hub = HubDir(tmp_path, interval="1s")
    websub_hub.receive_posts("/hub", 202)
    feed_server.serve("/a.rss", rss("a", "1"))
    add_source(hub, feed_server, "a")
    daemon = hub.start("run")
    try:
        wait_for(lambda: (hub.feeds / "en.atom").exists())
        time.sleep(1.5)
        assert pings(websub_hub) == []  # no hub configured yet
        set_hubs(hub, json.dumps([websub_hub.url("/hub")]))  # while it runs
        time.sleep(2.5)  # picked up within about two seconds
        before = len(pings(websub_hub))
        feed_server.serve("/a.rss", rss("a", "1", "2"))  # a poll brings a new item
        wait_for(lambda: len(pings(websub_hub)) >= before + 3)
        assert len(hub.feed("en").entries) == 2
        time.sleep(1.5)
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log
    received = sorted(form["hub.url"][0] for form in pings(websub_hub)[before:])
    assert received == [BASE + "all.atom", TOPIC, BASE + "sources/a.atom"]
    assert "config: WebSub hubs now " + websub_hub.url("/hub") in log
    assert f"websub: pinged {websub_hub.url('/hub')} for {TOPIC}: HTTP 202 Accepted" in log


def test_a_hanging_hub_delays_no_poll_and_a_stop_cancels_its_pings(
        tmp_path: Path, feed_server: FeedServer, websub_hub: FeedServer) -> None:
    # The stand-in hub and the feeds are both on 127.0.0.1, so its pings and
    # the polls share a host; hubdir's config has timeout = "5s".
    hub = HubDir(tmp_path, interval="1s")
    websub_hub.receive_posts("/hub", 202, delay=60)
    set_hubs(hub, json.dumps([websub_hub.url("/hub")]))
    feed_server.serve("/a.rss", rss("a", "1"))
    feed_server.serve("/b.rss", rss("b", "1"))
    add_source(hub, feed_server, "a")
    add_source(hub, feed_server, "b")
    daemon = hub.start("run")
    try:
        # en, all and the two per-source feeds were written: their pings hang
        # (two at a time: max_per_host)
        wait_for(lambda: len(pings(websub_hub)) >= 2)
        hang_started = time.monotonic()
        polls_before = len(feed_server.requests_for("/b.rss"))
        for n in range(2, 8):  # "a" changes every second: a publish, and its pings, each time
            feed_server.serve("/a.rss", rss("a", *map(str, range(1, n + 1))))
            time.sleep(1)
        window = time.monotonic() - hang_started
        b_polls = [r.time for r in feed_server.requests_for("/b.rss")][polls_before:]
        wait_for(lambda: len(hub.feed("en").entries) == 8)
    finally:
        stopping = time.monotonic()
        log = stop(daemon)
    assert daemon.returncode == 0, log
    assert time.monotonic() - stopping < 8  # pings get 2 s, then they are cancelled
    # "b" kept its 1 s rhythm while the hub hung
    assert len(b_polls) >= window - 2, (window, b_polls)
    assert all(gap < 2.5 for gap in gaps(b_polls)), gaps(b_polls)
    # no pile-up: one ping of en.atom at a time (each hangs until the 5 s
    # timeout), however often en.atom was republished meanwhile
    publishes = log.count(f"published {hub.feeds / 'en.atom'}")
    en_pings = [r.time for r in websub_hub.requests_for("/hub")
                if parse_qs(r.body.decode())["hub.url"] == [TOPIC]]
    assert publishes >= 4 and len(en_pings) < publishes, (publishes, en_pings)
    assert all(gap >= 4.5 for gap in gaps(en_pings)), gaps(en_pings)
    assert re.search(r"websub: cancelled [1-4] pending pings \(shutting down\)", log), log
    assert "Traceback" not in log


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


# --- the retry policy, in-process ------------------------------------------------------


def closed_port() -> int:
    """A port on 127.0.0.1 that nothing listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_ping(hub_url: str, policy: RetryPolicy = DAEMON_POLICY, *,
             allow_private: bool = True) -> tuple[PingOutcome, list[float]]:
    """One ping with the pauses recorded, not slept: the default policy's
    minute of backoff takes no time."""
    paused: list[float] = []

    async def sleep(seconds: float) -> None:
        paused.append(seconds)

    async def go() -> PingOutcome:
        async with Fetcher(user_agent=USER_AGENT, allow_private=allow_private, timeout=5) as fetcher:
            return await ping(fetcher, hub_url, TOPIC, policy, sleep)

    return asyncio.run(go()), paused


@pytest.fixture
def websub_log(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO, logger="feedhub.websub")
    return caplog


def levels(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.levelname for r in caplog.records if r.name == "feedhub.websub"]


def test_5xx_is_retried_three_times_over_about_a_minute(
        websub_hub: FeedServer, websub_log: pytest.LogCaptureFixture) -> None:
    websub_hub.receive_posts("/hub", 503, 502, 204)
    outcome, paused = run_ping(websub_hub.url("/hub"))
    assert outcome == PingOutcome(websub_hub.url("/hub"), TOPIC, True, 3, "HTTP 204 No Content")
    assert paused == [10.0, 50.0]
    assert levels(websub_log) == ["WARNING", "WARNING", "INFO"]
    assert "HTTP 502 Bad Gateway; retrying in 50s (attempt 2 of 3)" in websub_log.text


def test_a_hub_still_failing_after_the_last_attempt_is_given_up_and_logged(
        websub_hub: FeedServer, websub_log: pytest.LogCaptureFixture) -> None:
    websub_hub.receive_posts("/hub", 500)
    outcome, paused = run_ping(websub_hub.url("/hub"))
    assert not outcome.ok and outcome.attempts == 3 and paused == [10.0, 50.0]
    assert levels(websub_log) == ["WARNING", "WARNING", "ERROR"]
    assert (f"gave up pinging {websub_hub.url('/hub')} for {TOPIC}: "
            "HTTP 500 Internal Server Error (after 3 attempts)") in websub_log.text


def test_429_retry_after_lengthens_a_pause_and_an_absurd_one_ends_the_ping(
        websub_hub: FeedServer, websub_log: pytest.LogCaptureFixture) -> None:
    websub_hub.receive_posts("/hub", 429, 204, headers={"Retry-After": "30"})
    outcome, paused = run_ping(websub_hub.url("/hub"))
    assert outcome.ok and paused == [30.0]  # not the 10 s the policy would have waited

    websub_hub.receive_posts("/long", 429, headers={"Retry-After": "86400"})
    outcome, paused = run_ping(websub_hub.url("/long"))
    assert not outcome.ok and outcome.attempts == 1 and paused == []
    assert "asks to wait 86400s (Retry-After), over the 300s a ping waits" in outcome.detail


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_other_4xx_are_given_up_at_once(websub_hub: FeedServer, status: int) -> None:
    websub_hub.receive_posts("/hub", status, 204)
    outcome, paused = run_ping(websub_hub.url("/hub"))
    assert not outcome.ok and outcome.attempts == 1 and paused == []
    assert len(pings(websub_hub)) == 1


def test_a_redirect_is_not_followed_and_says_which_url_to_configure(websub_hub: FeedServer) -> None:
    websub_hub.receive_posts("/hub", 308, headers={"Location": "https://hub.example.net/"})
    outcome, _ = run_ping(websub_hub.url("/hub"))
    assert not outcome.ok and outcome.attempts == 1
    assert "(https://hub.example.net/); put that URL in websub_hubs" in outcome.detail


def test_no_answer_is_retried(websub_log: pytest.LogCaptureFixture) -> None:
    outcome, paused = run_ping(f"http://127.0.0.1:{closed_port()}/hub")
    assert not outcome.ok and outcome.attempts == 3 and paused == [10.0, 50.0]
    assert "cannot connect to 127.0.0.1" in outcome.detail


def test_a_private_hub_needs_allow_private_networks_and_is_not_retried(
        websub_hub: FeedServer) -> None:
    websub_hub.receive_posts("/hub", 204)
    outcome, paused = run_ping(websub_hub.url("/hub"), allow_private=False)
    assert not outcome.ok and outcome.attempts == 1 and paused == []
    assert "allow_private_networks = true" in outcome.detail
    assert pings(websub_hub) == []


def test_a_deadline_bounds_a_hanging_hub_and_the_pauses(websub_hub: FeedServer) -> None:
    websub_hub.receive_posts("/hang", 204, delay=30)
    started = time.monotonic()
    outcome, _ = run_ping(websub_hub.url("/hang"), RetryPolicy(delays=(0.1,), deadline=0.5))
    assert time.monotonic() - started < 3
    assert not outcome.ok and "no answer within the 0.5s a ping may take" in outcome.detail

    websub_hub.receive_posts("/busy", 503)
    outcome, paused = run_ping(websub_hub.url("/busy"), RetryPolicy(delays=(5.0,), deadline=1.0))
    assert not outcome.ok and paused == [] and "no time left to retry within 1s" in outcome.detail


def test_pings_wait_their_turn_before_their_time_limit_starts(websub_hub: FeedServer) -> None:
    # 8 feeds, a hub taking 1 s per answer, 2 at a time: 4 s in all, more than the 2.5 s
    # each ping may take (the batch gets twice that), yet every ping is sent and answered
    websub_hub.receive_posts("/hub", 204, delay=1.0)
    policy = RetryPolicy(delays=(), deadline=2.5)
    topics = [f"https://hub.example.org/feeds/{n}.atom" for n in range(8)]

    async def main() -> list[PingOutcome]:
        async with Fetcher(user_agent=USER_AGENT, allow_private=True, timeout=5) as fetcher:
            return await ping_all(fetcher, [websub_hub.url("/hub")], topics, policy, per_hub=2)

    outcomes = asyncio.run(main())
    assert [o.ok for o in outcomes] == [True] * 8, [o.detail for o in outcomes if not o.ok]
    assert sorted(parse_qs(r.body.decode())["hub.url"][0] for r in websub_hub.requests_for("/hub")) \
        == sorted(topics)


def test_every_hub_is_pinged_for_every_topic_concurrently(websub_hub: FeedServer) -> None:
    websub_hub.receive_posts("/one", 202, delay=1.0)
    websub_hub.receive_posts("/two", 202, delay=1.0)
    hubs = [websub_hub.url("/one"), websub_hub.url("/two")]
    feeds = [BASE + "en.atom", BASE + "fa.atom"]

    async def go() -> list[PingOutcome]:
        async with Fetcher(user_agent=USER_AGENT, allow_private=True, timeout=5,
                           max_per_host=4) as fetcher:
            return await ping_all(fetcher, hubs, feeds)

    started = time.monotonic()
    outcomes = asyncio.run(go())
    assert time.monotonic() - started < 3  # four pings of a second each, at once
    assert all(o.ok for o in outcomes) and len(outcomes) == 4
    for path in ("/one", "/two"):
        assert sorted(form["hub.url"][0] for form in pings(websub_hub, path)) == feeds


# --- the daemon's background pings, in-process -----------------------------------------


def test_a_publish_supersedes_a_ping_waiting_to_retry(
        websub_hub: FeedServer, websub_log: pytest.LogCaptureFixture) -> None:
    websub_hub.receive_posts("/hub", 503)
    hub_url = websub_hub.url("/hub")

    async def go() -> None:
        async with Fetcher(user_agent=USER_AGENT, allow_private=True, timeout=5) as fetcher:
            notifier = Notifier(fetcher, RetryPolicy(delays=(60.0, 60.0)))
            notifier.notify([hub_url], [TOPIC])
            await wait_async(lambda: "retrying in 60s" in websub_log.text)
            notifier.notify([hub_url], [TOPIC])  # republished while it waits
            await wait_async(lambda: websub_log.text.count("retrying in 60s") == 2)
            assert notifier.pending == 1
            await notifier.aclose()

    asyncio.run(go())
    assert len(pings(websub_hub)) == 2  # the first attempt, then a fresh one, and no more
    assert "superseded by a newer publish" in websub_log.text
    assert "cancelled 1 pending pings" in websub_log.text


def test_a_publish_during_a_ping_in_flight_pings_once_more_after_it(
        websub_hub: FeedServer, websub_log: pytest.LogCaptureFixture) -> None:
    websub_hub.receive_posts("/hub", 204, delay=0.5)
    hub_url = websub_hub.url("/hub")

    async def go() -> None:
        async with Fetcher(user_agent=USER_AGENT, allow_private=True, timeout=5) as fetcher:
            notifier = Notifier(fetcher)
            notifier.notify([hub_url], [TOPIC])
            await wait_async(lambda: len(pings(websub_hub)) == 1)
            for _ in range(3):  # three publishes while the request is in flight
                notifier.notify([hub_url], [TOPIC])
            assert notifier.pending == 1
            await wait_async(lambda: notifier.pending == 0)

    asyncio.run(go())
    assert len(pings(websub_hub)) == 2  # the hub hears of the newest version once
    assert levels(websub_log).count("INFO") == 3  # two pings and the note in between


async def wait_async(condition: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.02)
