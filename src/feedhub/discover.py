"""Feed discovery: from a site's address to the feeds it offers.

`feedhub add https://site/` is given a page, not a feed. The page's
<link rel="alternate"> elements name its feeds; a page that names none is
tried at a few common feed paths. Every candidate is fetched and parsed
before it is offered, so only real feeds are. All requests go through the
Fetcher (its limits, per-host spacing and address guard apply), one at a
time: discovery is a handful of requests to one site, not a crawl.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urljoin

from feedhub.fetch import Fetcher, FetchError, describe_status, permanent_target
from feedhub.models import FetchResult, ParsedFeed
from feedhub.parse import ParseError, feed_links, looks_like_html, parse_feed

# Where feeds usually live when a page does not link them: WordPress (/feed,
# /feed/, /?feed=rss2), Hugo (/index.xml), Jekyll (/feed.xml), Blogger
# (/feeds/posts/default), the generic names, and JSON Feed's suggested
# /feed.json (last: it costs a request only where nothing else was found).
# Tried in this order, first next to the page, then at the site root; the
# first that is a feed wins (these are usually one feed under several names).
COMMON_PATHS = ("/feed", "/feed/", "/rss", "/rss.xml", "/atom.xml", "/feed.xml", "/index.xml",
                "/feeds/posts/default", "/?feed=rss2", "/feed.json")
DISCOVERY_SECONDS = 60.0  # for all of it: the page, its links, the common paths
MAX_LINKED = 20  # linked candidates checked: a page listing hundreds is not asking to be crawled

Via = Literal["url", "link", "path"]


@dataclass(frozen=True)
class DiscoveredFeed:
    """A checked feed: `url` is what to poll (the address as linked, or
    where it permanently redirects), `via` how it was found: the URL given
    was the feed itself, a <link> on the page, or a common path."""

    url: str
    title: str | None
    language: str | None
    via: Via


class DiscoveryError(Exception):
    """No feed at or from a URL; the message says what was tried."""


async def discover_feeds(fetcher: Fetcher, url: str, *,
                         deadline: float = DISCOVERY_SECONDS) -> list[DiscoveredFeed]:
    """The feeds at `url`: itself if it is a feed; else, if it is an HTML
    page, the feeds it links, or failing those the first common path that is
    a feed. Raises FetchError when `url` gives no response at all, and
    DiscoveryError when it gives no feed, or not within `deadline` seconds
    (a slow site would otherwise hold `feedhub add` for dozens of timeouts)."""
    try:
        async with asyncio.timeout(deadline):
            return await _discover(fetcher, url)
    except TimeoutError:
        raise DiscoveryError(f"gave up looking for feeds on {url} after {deadline:g}s: the site "
                             "answers too slowly; add the feed's own URL instead") from None


async def _discover(fetcher: Fetcher, url: str) -> list[DiscoveredFeed]:
    result = await fetcher.fetch(url)
    if not result.ok:
        raise DiscoveryError(f"cannot fetch {url}: {describe_status(result.status)}")
    try:
        parsed = parse_feed(result)
    except ParseError as exc:
        if not looks_like_html(result):
            raise DiscoveryError(f"{url} is not a feed: {exc}") from None
    else:
        return [_discovered(url, parsed, "url")]

    links = feed_links(result.content, result.final_url, encoding=_charset(result))
    found: dict[str, DiscoveredFeed] = {}  # by final URL: two addresses of one feed are one
    failures: list[str] = []
    for link in links[:MAX_LINKED]:
        checked = await _check(fetcher, link.href, "link", failures, link.title)
        if checked is None:
            continue
        final_url, feed = checked
        # Two links to one feed: keep the first, unless a later one names
        # the feed's own address (the other reached it by a redirect).
        if final_url not in found or (feed.url == final_url != found[final_url].url):
            found[final_url] = feed
    if found:
        return list(found.values())

    bases = _probe_bases(result.final_url)
    for probe in dict.fromkeys(urljoin(base, path.lstrip("/")) for base in bases
                               for path in COMMON_PATHS):
        checked = await _check(fetcher, probe, "path", [])
        if checked is not None:
            return [checked[1]]

    kind = result.headers.get("content-type", "no content type").split(";")[0].strip()
    if not links:
        linked = "the page links none"
    elif len(links) == 1:
        linked = f"the one it links is not ({failures[0]})"
    else:
        linked = f"none of the {len(failures)} it links is ({'; '.join(failures)})"
    raise DiscoveryError(
        f"{url} is not a feed but an HTML page ({kind}), and no feed was found from it: {linked}, "
        f"and none of {', '.join(COMMON_PATHS)} under {' or '.join(bases)} is a feed"
    )


async def _check(fetcher: Fetcher, url: str, via: Via, failures: list[str],
                 link_title: str | None = None) -> tuple[str, DiscoveredFeed] | None:
    """Fetch and parse one candidate: (its final URL, the feed), or None with
    the reason appended to `failures`."""
    try:
        result = await fetcher.fetch(url)
    except FetchError as exc:
        failures.append(f"{url}: {exc}")
        return None
    if not result.ok:
        failures.append(f"{url}: {describe_status(result.status)}")
        return None
    try:
        parsed = parse_feed(result)
    except ParseError as exc:
        failures.append(f"{url}: {exc}")
        return None
    feed = _discovered(permanent_target(result) or url, parsed, via, link_title)
    return result.final_url, feed


def _discovered(url: str, parsed: ParsedFeed, via: Via,
                link_title: str | None = None) -> DiscoveredFeed:
    return DiscoveredFeed(url=url, title=parsed.info.title or link_title,
                          language=parsed.info.language, via=via)


def _probe_bases(page_url: str) -> list[str]:
    """Where COMMON_PATHS are tried: next to the page when it is not at the
    root of its site (a blog under /blog/), then at the root."""
    here, root = urljoin(page_url, "."), urljoin(page_url, "/")
    return [here, root] if here != root else [root]


def _charset(result: FetchResult) -> str | None:
    for param in result.headers.get("content-type", "").split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip().strip('"'):
            return value.strip().strip('"')
    return None
