"""No URL can crash a poll. URLs no request can be made to are refused where
an operator writes them (config.toml, `add`, `import`: file:line, exit 2);
those that come from upstream (a redirect's Location, an article link) or a
bug become one source's failure with a reason, never a traceback that stops
the other sources.

Hosts are IP-literal spellings only, never names: the CLI runs as a
subprocess, outside conftest's guard against name lookups, and glibc parses
spellings such as 0x7f.1 or 2130706433 itself, without asking a resolver.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
import tomlkit
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from feedhub import websub
from feedhub.config import ConfigError, http_url_problem, load_config, parse_config
from feedhub.fetch import Fetcher, FetchError, InvalidURLError, url_problem
from feedhub.hub import Hub
from feedhub.models import FetchResult
from feedhub.store import open_store
from feedserver import FeedServer
from hubdir import CONFIG, HubDir, rss, stop, wait_for

# (URL, what the refusal says): each used to end in a traceback somewhere
BAD_URLS = [
    ("http://0177.0.0.1/feed", "Invalid IPv4 address: '0177.0.0.1'"),
    ("http://127.000.000.001/", "Invalid IPv4 address: '127.000.000.001'"),
    ("http://127.0.0.1:99999/feed", "port 99999 is out of range"),
    ("http://xn--zz.example/feed", "Invalid A-label"),
    ("http://127.0.0.1/a feed", "contains a space"),
]


def with_sources(hub: HubDir, *sources: tuple[str, ...]) -> None:
    """Set the [[sources]] of the hub's config.toml: (name, url) tables, and
    a fulltext mode as a third element ("never" if none: item links of
    hubdir.rss are not local)."""
    doc = tomlkit.parse(hub.config.read_text(encoding="utf-8"))
    tables = tomlkit.aot()
    for name, url, *fulltext in sources:
        table = tomlkit.table()
        table.update({"name": name, "url": url, "fulltext": fulltext[0] if fulltext else "never"})
        tables.append(table)
    doc["sources"] = tables
    hub.config.write_text(tomlkit.dumps(doc), encoding="utf-8")


def line_of(path: Path, needle: str) -> int:
    found = [n for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1)
             if needle in line]
    assert len(found) == 1, (needle, found)
    return found[0]


def states(hub: HubDir) -> dict[str, dict]:
    result = hub.run("status", "--json")
    assert result.returncode in (0, 1), result.stderr
    return {s["name"]: s for s in json.loads(result.stdout)["sources"]}


def set_hub_key(hub: HubDir, key: str, value: object) -> None:
    doc = tomlkit.parse(hub.config.read_text(encoding="utf-8"))
    doc["hub"][key] = value
    hub.config.write_text(tomlkit.dumps(doc), encoding="utf-8")


# --- refused where the operator writes them ------------------------------------------


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
def test_poll_all_with_a_source_url_that_cannot_be_requested_exits_2_naming_the_line(
        hub: HubDir, feed_server: FeedServer, url: str, reason: str) -> None:
    feed_server.serve("/a.xml", rss("a", "1"))
    feed_server.serve("/b.xml", rss("b", "1"))
    with_sources(hub, ("a", feed_server.url("/a.xml")), ("bad", url), ("b", feed_server.url("/b.xml")))
    result = hub.run("poll", "--all")
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    line = line_of(hub.config, json.dumps(url))
    assert f"{hub.config}:{line}: [[sources]] #2 'url'" in result.stderr
    assert reason in result.stderr


@pytest.mark.parametrize(("url", "reason"), BAD_URLS)
@pytest.mark.parametrize("check", [True, False])
def test_add_refuses_a_url_that_cannot_be_requested_before_touching_the_config(
        hub: HubDir, url: str, reason: str, check: bool) -> None:
    before = hub.config.read_bytes()
    result = hub.run("add", *([] if check else ["--no-check"]), url)
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert f"{url!r} is not an http(s) URL that can be requested" in result.stderr
    assert reason in result.stderr
    assert hub.config.read_bytes() == before


@pytest.mark.parametrize(("key", "value", "reason"), [
    ("websub_hubs", ["http://0177.0.0.1/hub"], "Invalid IPv4 address"),
    ("websub_hubs", ["https://hub.example.org/", "http://127.0.0.1:70000/"], "port 70000"),
    ("base_url", "http://127.000.000.001/feeds/", "Invalid IPv4 address"),
    ("base_url", "https://hub.example.org/my feeds/", "contains a space"),
])
def test_hub_urls_that_cannot_be_used_exit_2_naming_the_line(
        hub: HubDir, feed_server: FeedServer, key: str, value: object, reason: str) -> None:
    feed_server.serve("/a.xml", rss("a", "1"))
    with_sources(hub, ("a", feed_server.url("/a.xml")))
    set_hub_key(hub, key, value)
    line = next(n for n, text in enumerate(hub.config.read_text(encoding="utf-8").splitlines(), 1)
                if text.startswith(key))
    for command in (("poll", "--all"), ("run",)):
        result = hub.run(*command, timeout=30)
        assert result.returncode == 2, (command, result.stderr)
        assert "Traceback" not in result.stderr
        assert f"{hub.config}:{line}: [hub] '{key}'" in result.stderr and reason in result.stderr
    assert not feed_server.requests_for("/a.xml")


def test_the_daemon_keeps_its_last_good_config_when_an_edit_adds_a_bad_url(
        tmp_path: Path, feed_server: FeedServer) -> None:
    hub = HubDir(tmp_path, interval="1s")
    feed_server.serve("/a.xml", rss("a", "1"))
    feed_server.serve("/b.xml", rss("b", "1"))
    with_sources(hub, ("a", feed_server.url("/a.xml")))
    good = hub.config.read_text(encoding="utf-8")
    daemon = hub.start("run")
    try:
        wait_for(lambda: len(feed_server.requests_for("/a.xml")) >= 1)
        with_sources(hub, ("a", feed_server.url("/a.xml")), ("bad", "http://0177.0.0.1/feed"))
        line = line_of(hub.config, "0177.0.0.1")
        seen = len(feed_server.requests_for("/a.xml"))
        wait_for(lambda: len(feed_server.requests_for("/a.xml")) >= seen + 2)  # polling goes on
        hub.config.write_text(good, encoding="utf-8")
        with_sources(hub, ("a", feed_server.url("/a.xml")), ("b", feed_server.url("/b.xml")))
        wait_for(lambda: feed_server.requests_for("/b.xml"))  # a good edit still applies
    finally:
        log = stop(daemon)
    assert daemon.returncode == 0, log
    assert ("config change ignored, keeping the last good config: "
            f"{hub.config}:{line}: [[sources]] #2 'url'") in log
    assert "Invalid IPv4 address" in log
    assert "failed unexpectedly" not in log and "Traceback" not in log


def test_import_skips_urls_that_cannot_be_requested_with_the_reason(
        hub: HubDir, tmp_path: Path) -> None:
    opml = tmp_path / "subs.opml"
    opml.write_text("""<?xml version="1.0"?><opml version="2.0"><head/><body>
<outline text="good" xmlUrl="https://news.example.org/feed"/>
<outline text="octal" xmlUrl="http://0177.0.0.1/feed"/>
<outline text="bracket" xmlUrl="http://[::1/feed"/>
<outline text="port" xmlUrl="http://127.0.0.1:99999/feed"/>
</body></opml>""", encoding="utf-8")
    result = hub.run("import", str(opml))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "Added 1 sources" in result.stdout and "skipped 3" in result.stdout
    assert ("skipped 'octal': 'http://0177.0.0.1/feed' is not an http(s) URL that can be requested: "
            "Invalid IPv4") in result.stdout
    assert "skipped 'port'" in result.stdout and "skipped 'bracket'" in result.stdout
    assert [s.name for s in load_config(hub.config).sources] == ["good"]


# --- from upstream: one source's failure, with a reason ---------------------------


def test_a_redirect_to_a_url_that_cannot_be_requested_fails_that_source_only(
        hub: HubDir, feed_server: FeedServer) -> None:
    feed_server.serve("/a.xml", rss("a", "1"))
    feed_server.serve("/b.xml", rss("b", "1"))
    targets = {"to-port": "http://127.0.0.1:99999/feed", "to-idna": "http://xn--zz.example/feed",
               "to-octal": "http://0177.0.0.1/feed", "to-ftp": "ftp://127.0.0.1/feed"}
    for name, target in targets.items():
        feed_server.redirect(f"/{name}", target)
    with_sources(hub, ("a", feed_server.url("/a.xml")),
                 *((name, feed_server.url(f"/{name}")) for name in targets),
                 ("b", feed_server.url("/b.xml")))
    result = hub.run("poll", "--all")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "4 of 6 sources failed" in result.stderr
    found = states(hub)
    assert found["a"]["state"] == found["b"]["state"] == "ok"
    assert found["a"]["items"] == found["b"]["items"] == 1
    for name in targets:
        assert found[name]["state"] == "failing", found[name]
    assert "port 99999 is out of range" in found["to-port"]["last_error"]
    assert "Invalid A-label" in found["to-idna"]["last_error"]
    assert "Invalid IPv4 address" in found["to-octal"]["last_error"]
    assert "the scheme is 'ftp'" in found["to-ftp"]["last_error"]


ARTICLES = """<?xml version="1.0"?><rss version="2.0"><channel><title>articles</title>
<link>https://articles.example/</link><description>d</description><language>en</language>
{items}</channel></rss>"""


def test_article_links_that_cannot_be_requested_keep_the_feed_text(
        hub: HubDir, feed_server: FeedServer) -> None:
    links = ["http://0177.0.0.1/a1", "http://127.0.0.1:99999/a2", "http://xn--zz.example/a3",
             "http://127.000.000.001/a4"]
    feed_server.serve("/articles.xml", ARTICLES.format(items="".join(
        f"<item><title>t{n}</title><link>{link}</link><guid>g{n}</guid>"
        f"<description>teaser {n} &lt;a href='/rel'&gt;more&lt;/a&gt;</description></item>"
        for n, link in enumerate(links))))
    feed_server.serve("/b.xml", rss("b", "1"))
    with_sources(hub, ("articles", feed_server.url("/articles.xml"), "always"),
                 ("b", feed_server.url("/b.xml")))
    result = hub.run("poll", "--all")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    assert "kept feed text: invalid URL 'http://0177.0.0.1/a1': Invalid IPv4 address" \
        in result.stderr
    assert "kept feed text: invalid URL 'http://127.0.0.1:99999/a2': port 99999" in result.stderr
    found = states(hub)
    assert found["articles"]["state"] == "ok" and found["articles"]["items"] == len(links)
    assert found["articles"]["fulltext_failures"] == len(links)
    assert found["b"]["items"] == 1
    titles = {entry.title for entry in hub.feed("en").entries}
    assert {f"t{n}" for n in range(len(links))} <= titles


def test_links_urllib_cannot_read_are_dropped_not_the_feed(
        hub: HubDir, feed_server: FeedServer) -> None:
    """urljoin raises ValueError on "http://[::1": such an enclosure used to
    fail the whole feed's parse (and the poll round with it)."""
    feed_server.serve("/odd.xml", ARTICLES.format(items="""
<item><title>odd</title><link>http://[::g]/a</link><guid>g1</guid><description>x</description>
<enclosure url="http://[::1/podcast.mp3" length="1" type="audio/mpeg"/></item>
<item><title>even</title><link>https://articles.example/2</link><guid>g2</guid>
<description>y</description></item>"""))
    feed_server.serve("/b.xml", rss("b", "1"))
    with_sources(hub, ("odd", feed_server.url("/odd.xml")), ("b", feed_server.url("/b.xml")))
    result = hub.run("poll", "--all")
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    found = states(hub)
    assert found["odd"]["items"] == 2 and found["b"]["items"] == 1
    [odd] = [entry for entry in hub.feed("en").entries if entry.title == "odd"]
    assert not any("[" in link.href for link in odd.get("links", []))  # no link is left


def test_add_skips_a_page_link_urllib_cannot_read(hub: HubDir, feed_server: FeedServer) -> None:
    feed_server.serve("/good.xml", rss("good", "1"))
    feed_server.serve("/page", '<html><head><title>p</title>'
                      '<link rel="alternate" type="application/rss+xml" href="http://[::1/feed">'
                      '<link rel="alternate" type="application/rss+xml" href="/good.xml">'
                      "</head><body>x</body></html>", content_type="text/html")
    result = hub.run("add", feed_server.url("/page"))
    assert result.returncode == 0, result.stderr
    assert [s.url for s in load_config(hub.config).sources] == [feed_server.url("/good.xml")]


def test_a_contact_url_no_header_can_carry_as_is_does_not_stop_polling(
        hub: HubDir, feed_server: FeedServer) -> None:
    """httpx sends headers as ASCII only: a contact with an IDN host, put in
    the User-Agent, used to fail every request with UnicodeEncodeError."""
    feed_server.serve("/a.xml", rss("a", "1"))
    with_sources(hub, ("a", feed_server.url("/a.xml")))
    set_hub_key(hub, "contact", "https://hüb.example.org/about")
    result = hub.run("poll", "--all")
    assert result.returncode == 0, result.stderr
    [request] = feed_server.requests_for("/a.xml")
    assert "https://h%C3%BCb.example.org/about" in request.headers["user-agent"]


# --- the fetcher: every client error is a FetchError -----------------------------


CLIENT_REJECTS = [
    ("http://0177.0.0.1/feed", "Invalid IPv4 address: '0177.0.0.1'"),
    ("http://127.000.000.001/", "Invalid IPv4 address"),
    ("http://[::g]/", "Invalid IPv6 address"),
    ("http://127.0.0.1:99999/", "port 99999 is out of range"),
    ("http://127.0.0.1:-1/", "port -1 is out of range"),
    ("http://127.0.0.1:0/", "port 0 is out of range"),
    ("http://127.0.0.1:x/", "Invalid port"),
    ("http://xn--zz.example/", "Invalid A-label"),
    ("http://" + "a" * 64 + ".example/", "empty or over-long label"),
    ("http://a..example/", "empty or over-long label"),
    ("http://exa mple.example/", "no host name may"),
    ("http://127.0.0.1/\x01", "non-printable"),
    ("http://127.0.0.1/" + "x" * 70_000, "URL too long"),
    ("ftp://127.0.0.1/feed", "the scheme is 'ftp'"),
    ("www.example.org/feed", "not an absolute URL"),
    ("http:///feed", "no host"),
]


@pytest.mark.parametrize(("url", "reason"), CLIENT_REJECTS)
def test_fetch_and_post_form_turn_urls_the_client_rejects_into_fetch_errors(
        url: str, reason: str) -> None:
    async def both() -> list[BaseException]:
        async with Fetcher(user_agent="t", allow_private=True, timeout=2) as fetcher:
            return list(await asyncio.gather(fetcher.fetch(url), fetcher.post_form(url, {"a": "b"}),
                                             return_exceptions=True))

    for error in asyncio.run(both()):
        assert isinstance(error, InvalidURLError), repr(error)
        assert str(error).startswith(f"invalid URL {url[:150]!r}"[:-1]), str(error)  # cut if long
        assert len(str(error)) < 400
        assert reason in str(error)
    assert url_problem(url) is not None


def test_a_websub_hub_url_that_cannot_be_requested_is_given_up_at_once() -> None:
    async def go() -> websub.PingOutcome:
        async with Fetcher(user_agent="t", allow_private=True, timeout=2) as fetcher:
            return await websub.ping(fetcher, "http://0177.0.0.1/hub", "https://h.example/f.atom",
                                     websub.CLI_POLICY)

    outcome = asyncio.run(go())
    assert not outcome.ok and outcome.attempts == 1
    assert "invalid URL 'http://0177.0.0.1/hub': Invalid IPv4 address" in outcome.detail


# --- the last line of defence in hub.poll ---------------------------------------


def test_an_unexpected_exception_in_a_poll_is_that_sources_recorded_failure(
        tmp_path: Path, feed_server: FeedServer, caplog: pytest.LogCaptureFixture) -> None:
    feed_server.serve("/a.xml", rss("a", "1"))
    feed_server.serve("/b.xml", rss("b", "1"))
    text = CONFIG.format(items_per_feed=50, interval="30m") + "".join(
        f'\n[[sources]]\nname = "{name}"\nurl = "{feed_server.url(path)}"\nfulltext = "never"\n'
        for name, path in (("a", "/a.xml"), ("buggy", "/buggy.xml"), ("b", "/b.xml")))
    config = parse_config(text, tmp_path / "config.toml")

    class Buggy(Fetcher):
        async def fetch(self, url: str, *args: object, **kwargs: object) -> FetchResult:
            if url.endswith("/buggy.xml"):
                raise RuntimeError("a bug nobody foresaw")
            return await super().fetch(url, *args, **kwargs)

    async def go() -> list:
        async with Buggy(user_agent="t", allow_private=True, timeout=5) as fetcher:
            with open_store(config.hub.database) as store:
                reports = await Hub(config, store, fetcher).poll_many(config.sources)
                return reports, store.source_states(["a", "buggy", "b"])

    with caplog.at_level(logging.ERROR, logger="feedhub"):
        reports, (a, buggy, b) = asyncio.run(go())
    assert [r.source for r in reports] == ["a", "buggy", "b"]
    assert reports[0].new == reports[2].new == 1 and a.error_count == b.error_count == 0
    assert reports[1].error == "unexpected error (see the log): RuntimeError: a bug nobody foresaw"
    assert buggy.error_count == 1 and buggy.last_error == reports[1].error
    assert buggy.next_poll is not None and buggy.next_poll > datetime.now(UTC)
    [record] = [r for r in caplog.records if "failed unexpectedly" in r.getMessage()]
    assert record.levelno == logging.ERROR and record.exc_info is not None


# --- properties: arbitrary URL strings ------------------------------------------------

LOOPBACK = ["127.0.0.1", "[::1]", "[::ffff:127.0.0.1]"]  # literals to the conftest guard too
# loopback as glibc reads it without a resolver (inet_aton), but a name to the guard
LOOPBACK_SPELLINGS = ["127.1", "0x7f.0.0.1", "0x7f000001", "2130706433", "017700000001"]
REFUSED_HOSTS = ["0177.0.0.1", "127.000.000.001", "256.0.0.1", "127.0.0.01", "[::g]", "[::1",
                 "[127.0.0.1]", "", "xn--zz.example", "a..example", "a" * 64 + ".example",
                 "exa mple.example", "bad\x7fhost", "ex\x00ample.example", "a%41.example", "a|b"]
SCHEMES = ["http", "https", "HTTP", "hTtPs", "ftp", "file", "javascript", "feed", "", "http:"]
USERINFO = ["", "user@", "user:pass@", "@"]
GOOD_PORTS = ["", ":{port}", ":{port}", ":{port}", ":080", ":1", ":65535"]
PORTS = [*GOOD_PORTS, ":", ":0", ":65536", ":99999", ":-1", ":x"]
PATHS = st.one_of(st.sampled_from(["", "/", "/a.xml", "/odd.xml"]),
                  st.text(max_size=30).map(lambda text: "/" + text))
# odd but printable: non-ASCII, quotes, "%", "\\", "?", "#" (no controls, no spaces)
PRINTABLE_PATHS = st.one_of(st.sampled_from(["", "/", "/a.xml", "/odd.xml"]), st.text(
    st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")), max_size=30
).map(lambda text: "/" + text))


def urls(good_hosts: list[str], port: int) -> st.SearchStrategy[str]:
    """Arbitrary URL strings whose host, if any, is one of `good_hosts` or
    REFUSED_HOSTS: the authority is built from fixed parts, free text only
    follows its "/". Half of them can be requested."""
    def built(schemes: list[str], hosts: list[str], ports: list[str],
              paths: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
        return st.builds(lambda scheme, user, host, port_, path: (
            f"{scheme}://{user}{host}{port_.format(port=port)}{path}"),
            st.sampled_from(schemes), st.sampled_from(USERINFO), st.sampled_from(hosts),
            st.sampled_from(ports), paths)

    requestable = built(["http", "HTTP", "https"], good_hosts, GOOD_PORTS, PRINTABLE_PATHS)
    garbage = st.text(max_size=60).filter(lambda text: "//" not in text)  # no authority: no host
    return st.one_of(requestable, requestable,
                     built(SCHEMES, good_hosts + REFUSED_HOSTS, PORTS, PATHS), garbage)


@settings(max_examples=200, deadline=None)
@given(url=st.one_of(urls(LOOPBACK + LOOPBACK_SPELLINGS, 8080), urls(LOOPBACK, 8080), st.text()),
       where=st.sampled_from(["source", "base_url", "websub_hubs"]))
def test_config_loading_accepts_a_requestable_url_or_names_the_line(url: str, where: str) -> None:
    doc = tomlkit.document()
    doc["hub"] = {"base_url": url if where == "base_url" else "https://hub.example.org/"}
    if where == "websub_hubs":
        doc["hub"]["websub_hubs"] = [url]
    if where == "source":
        doc["sources"] = [{"name": "s", "url": url}]
    try:
        config = parse_config(tomlkit.dumps(doc), Path("config.toml"))
    except ConfigError as error:
        event("refused")
        assert re.match(r"config\.toml:\d+: ", str(error)), str(error)
        return
    event("accepted")
    accepted = {"source": lambda: config.sources[0].url, "base_url": lambda: config.hub.base_url,
                "websub_hubs": lambda: config.hub.websub_hubs[0]}[where]()
    assert url_problem(accepted) is None and http_url_problem(accepted) is None


@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), allow_private=st.sampled_from([True, True, False]))
def test_fetch_and_post_form_answer_or_raise_fetch_error_for_any_url(
        feed_server: FeedServer, data: st.DataObject, allow_private: bool) -> None:
    feed_server.serve("/a.xml", rss("a", "1"))
    port = int(feed_server.url("/").rsplit(":", 1)[1].strip("/"))
    url = data.draw(urls(LOOPBACK, port))

    async def both() -> list[object]:
        async with Fetcher(user_agent="t", allow_private=allow_private, timeout=2) as fetcher:
            return list(await asyncio.gather(fetcher.fetch(url), fetcher.post_form(url, {"a": "b"}),
                                             return_exceptions=True))

    for outcome in asyncio.run(both()):
        event(type(outcome).__name__)
        assert isinstance(outcome, FetchResult | FetchError), repr(outcome)
        # the one rule: what url_problem refuses is never requested, and the rest is
        assert isinstance(outcome, InvalidURLError) == (url_problem(url) is not None), outcome


CLI_HOSTS = LOOPBACK + LOOPBACK_SPELLINGS
counter = itertools.count()


@settings(max_examples=25, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), check=st.booleans())
def test_add_exits_0_1_or_2_for_any_url_and_the_config_still_loads(
        tmp_path: Path, feed_server: FeedServer, data: st.DataObject, check: bool) -> None:
    feed_server.serve("/a.xml", rss("a", "1"))
    port = int(feed_server.url("/").rsplit(":", 1)[1].strip("/"))
    url = data.draw(urls(CLI_HOSTS, port).filter(lambda text: "\x00" not in text))  # argv: no NUL
    root = tmp_path / f"add{next(counter)}"
    root.mkdir()
    hub = HubDir(root)
    before = hub.config.read_bytes()
    result = hub.run("add", *([] if check else ["--no-check"]), "--", url)
    event(f"add exit {result.returncode}")
    assert result.returncode in (0, 1, 2), result.stderr
    assert "Traceback" not in result.stderr, result.stderr
    sources = load_config(hub.config).sources
    if result.returncode == 0:
        assert len(sources) == 1 and url_problem(sources[0].url) is None
    else:
        assert hub.config.read_bytes() == before
    if http_url_problem(url) is not None:
        assert result.returncode == 2 and "is not an http(s) URL that can be requested" in result.stderr


@settings(max_examples=12, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_poll_all_with_any_url_among_good_sources_records_every_other_source(
        tmp_path: Path, feed_server: FeedServer, data: st.DataObject) -> None:
    feed_server.serve("/a.xml", rss("a", "1"))
    feed_server.serve("/b.xml", rss("b", "1"))
    feed_server.serve("/odd.xml", rss("odd", "1"))
    port = int(feed_server.url("/").rsplit(":", 1)[1].strip("/"))
    url = data.draw(urls(CLI_HOSTS, port))
    root = tmp_path / f"poll{next(counter)}"
    root.mkdir()
    hub = HubDir(root)
    with_sources(hub, ("a", feed_server.url("/a.xml")), ("odd", url), ("b", feed_server.url("/b.xml")))
    result = hub.run("poll", "--all")
    event(f"poll exit {result.returncode}")
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 2:  # refused at load, naming the line; nothing polled
        # (#3 when it is a duplicate of b's URL)
        assert re.search(r"config\.toml:\d+: \[\[sources\]\] #[23]\b", result.stderr), result.stderr
        return
    assert result.returncode in (0, 1), result.stderr
    found = states(hub)
    assert found["a"]["state"] == found["b"]["state"] == "ok", found
    assert found["a"]["items"] == found["b"]["items"] == 1
    assert found["odd"]["state"] in ("ok", "failing"), found["odd"]
    assert (found["odd"]["state"] == "failing") == (result.returncode == 1)
