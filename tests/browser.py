"""Render feedhub's HTML pages in headless Chromium (Debian's ``chromium``
package, /usr/bin/chromium) through the Python ``playwright`` package: no
``playwright install``, nothing is downloaded at test time.

Fixtures (registered for every test module by conftest.py's pytest_plugins):

- ``browser``: one Chromium per test MODULE. Not per session on purpose:
  while Playwright's sync API is started it keeps its asyncio loop marked as
  running in the main thread, so every later ``asyncio.run()`` in the process
  (feedhub's fetch and websub tests) raises "cannot be called from a running
  event loop". A module-scoped browser is stopped before the next module; a
  start costs ~0.6 s here. Inside a browser test module, run feedhub in a
  subprocess (``feedhub serve``), not with asyncio.run in the test process.
  Skips when /usr/bin/chromium is missing, except in CI (env CI set): there
  it fails, so CI can never pass by skipping the browser tests.
- ``open_page``: ``open_page(url, viewport=(375, 800)) -> Visit``; every page
  it opened is closed when the test ends.
- ``static_server``: ``static_server(directory) -> "http://127.0.0.1:PORT/"``,
  a loopback file server for the harness's self-tests (the real tests use
  ``feedhub serve``).

A ``Visit`` has ``.page`` (a playwright Page), ``.console_errors`` (console
messages of type error and uncaught page errors) and ``.external_requests``
(every request to a host other than 127.0.0.1/localhost/::1: each one was
aborted, none reached the network). Usage::

    def test_en_page(open_page, hub_url, tmp_path):  # hub_url: a `feedhub serve` in a subprocess
        for viewport in (PHONE, DESKTOP):
            visit = open_page(hub_url + "feeds/en.html", viewport)
            assert visit.console_errors == []
            assert visit.external_requests == []
            assert not has_horizontal_scroll(visit.page)
            assert "Headline" in visible_text(visit.page)
            assert computed_style(visit.page, "html", "direction") == "ltr"
            screenshot(visit.page, tmp_path / f"en-{viewport[0]}.png")
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar
from urllib.parse import urlsplit

import pytest
from playwright.sync_api import (
    Browser,
    ConsoleMessage,
    Page,
    Response,
    Route,
    WebSocketRoute,
    sync_playwright,
)

CHROMIUM = Path("/usr/bin/chromium")
PHONE = (375, 800)
DESKTOP = (1280, 900)
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})

# Flags on top of Playwright's own headless set. --disable-dev-shm-usage: a
# small /dev/shm (containers) crashes Chromium (Debian's wrapper decides this
# from findmnt, which is not reliable). The resolver rule makes every host but
# the loopback ones unresolvable (IP literals go through it too): a second wall
# behind the request routing below, for anything Chromium might try outside a
# page (preconnect, DNS prefetch).
_LAUNCH_ARGS = ["--disable-dev-shm-usage",
                "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1, EXCLUDE ::1"]
PAGE_TIMEOUT_MS = 15_000


def _is_loopback(url: str) -> bool:
    return (urlsplit(url).hostname or "") in LOOPBACK_HOSTS


@dataclass
class Visit:
    """One opened page and what it did while the test looked at it."""

    page: Page
    url: str
    viewport: tuple[int, int]
    response: Response | None = None  # of the navigation: .status, .headers
    console_errors: list[str] = field(default_factory=list)
    external_requests: list[str] = field(default_factory=list)

    def close(self) -> None:
        self.page.context.close()


def require_chromium() -> Path:
    """/usr/bin/chromium, or skip the test saying why; in CI (env CI set) fail
    instead, so CI can never pass by skipping the browser tests."""
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        reason = f"{CHROMIUM} is missing: apt-get install chromium (Debian's package) for the browser tests"
        if os.environ.get("CI"):
            pytest.fail(reason + " -- CI must not skip the browser tests")
        pytest.skip(reason)
    return CHROMIUM


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium, shared by the tests of one module."""
    require_chromium()
    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=str(CHROMIUM), args=_LAUNCH_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def visit(browser: Browser, url: str, viewport: tuple[int, int] = PHONE, *,
          wait_until: str = "load") -> Visit:
    """Open url (on 127.0.0.1 or localhost) in a fresh context at viewport
    (width, height). Requests to any other host are aborted and recorded in
    .external_requests; console errors and page errors are recorded in
    .console_errors. The caller closes it (visit.close()); the open_page
    fixture does that for you."""
    if not _is_loopback(url):
        raise ValueError(f"open pages on 127.0.0.1 or localhost only, not {url}")
    width, height = viewport
    # service_workers="block": a worker's fetches would not pass through route().
    context = browser.new_context(viewport={"width": width, "height": height},
                                  service_workers="block")
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    seen = Visit(page=page, url=url, viewport=(width, height))
    blocked: set[str] = set()

    def route(route: Route) -> None:
        request_url = route.request.url
        if _is_loopback(request_url):
            route.continue_()
        else:
            seen.external_requests.append(request_url)
            blocked.add(request_url)
            route.abort("blockedbyclient")

    def route_ws(ws: WebSocketRoute) -> None:
        if _is_loopback(ws.url):
            ws.connect_to_server()
        else:
            seen.external_requests.append(ws.url)
            ws.close()

    def on_console(message: ConsoleMessage) -> None:
        if message.type != "error":
            return
        where = message.location.get("url", "")
        # The "Failed to load resource" that our own abort causes is already
        # in external_requests: keep console_errors to what the page did.
        if where in blocked and message.text.startswith("Failed to load resource"):
            return
        line = message.location.get("lineNumber")
        seen.console_errors.append(f"{message.text} ({where}:{line})" if where else message.text)

    context.route("**/*", route)
    context.route_web_socket("**/*", route_ws)
    page.on("console", on_console)
    page.on("pageerror", lambda exc: seen.console_errors.append(f"uncaught {exc.name}: {exc.message}"))
    try:
        seen.response = page.goto(url, wait_until=wait_until)  # type: ignore[arg-type]
    except BaseException:
        context.close()
        raise
    return seen


@pytest.fixture
def open_page(browser: Browser) -> Iterator[Callable[..., Visit]]:
    """open_page(url, viewport=PHONE, wait_until="load") -> Visit, closed at
    the end of the test."""
    opened: list[Visit] = []

    def open_(url: str, viewport: tuple[int, int] = PHONE, *, wait_until: str = "load") -> Visit:
        seen = visit(browser, url, viewport, wait_until=wait_until)
        opened.append(seen)
        return seen

    yield open_
    for seen in opened:
        seen.close()


# --- what a test asks of a page ----------------------------------------------


def visible_text(page: Page) -> str:
    """The text a reader sees (document.body.innerText: hidden parts left out)."""
    return page.evaluate("document.body.innerText")


def has_horizontal_scroll(page: Page) -> bool:
    """True when the page is wider than the viewport (a phone reader would
    have to scroll sideways)."""
    return page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth")


def computed_style(page: Page, selector: str, prop: str) -> str:
    """getComputedStyle(first element matching selector)[prop], e.g.
    computed_style(page, "article", "direction") == "rtl". Fails at once when
    nothing matches."""
    return page.eval_on_selector(selector, "(el, p) => getComputedStyle(el).getPropertyValue(p)", prop)


def screenshot(page: Page, path: str | os.PathLike[str]) -> Path:
    """Full-page PNG at path (for a human to look at; tests don't compare)."""
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(out), full_page=True)
    return out


# --- a loopback file server for the self-tests ----------------------------------


class _Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map: ClassVar[dict[str, str]] = {
        **http.server.SimpleHTTPRequestHandler.extensions_map,
        ".html": "text/html; charset=utf-8", ".css": "text/css; charset=utf-8",
        ".js": "text/javascript; charset=utf-8"}

    def log_message(self, format: str, *args: object) -> None:  # quiet test output
        pass


@contextmanager
def serve_directory(directory: str | os.PathLike[str]) -> Iterator[str]:
    """Serve directory on 127.0.0.1 (a free port) for the duration; yields
    the base URL, ending in "/"."""
    handler = functools.partial(_Handler, directory=str(directory))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, name="static-server", daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def static_server() -> Iterator[Callable[[str | os.PathLike[str]], str]]:
    """static_server(directory) -> base URL; servers stop when the test ends."""
    with ExitStack() as stack:
        yield lambda directory: stack.enter_context(serve_directory(directory))

