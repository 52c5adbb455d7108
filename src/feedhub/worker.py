"""The CPU-bound middle of a poll, run in worker processes.

feedparser and the sanitizer are pure Python / GIL-bound: worker processes
let every core parse while the daemon's fetch loop stays free. This module
imports only what parsing needs, so that the workers (and the forkserver
that starts them) stay small.
"""

from __future__ import annotations

import multiprocessing
import signal
from concurrent.futures import Executor, ProcessPoolExecutor
from dataclasses import replace

from feedhub.enrich import clean_feed_info, enrich, resolve_language, sanitize_html
from feedhub.models import FeedInfo, FetchResult, Item, ParsedFeed, SourceConfig
from feedhub.parse import parse_feed


def parse_and_enrich(result: FetchResult, source: SourceConfig,
                     default_language: str) -> ParsedFeed:
    """The CPU-bound middle of a poll, run in a worker process: feedparser
    and the sanitizer are pure Python / GIL-bound, and a worker keeps the
    fetch loop free while both cores parse. Takes and returns plain data."""
    parsed = parse_feed(result)
    items = enrich(parsed, source, default_language=default_language, feed_url=result.final_url)
    return replace(parsed, info=clean_feed_info(parsed.info), items=items)


def _ignore_stop_signals() -> None:
    """Workers leave stopping to the parent: a Ctrl-C or a service manager's
    SIGTERM to the whole group must not break the pool mid-drain."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def parser_pool(workers: int) -> Executor:
    """Worker processes for parse_and_enrich. forkserver, not fork: the
    parent has an event loop and threads that must not be copied."""
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["feedhub.worker"])
    return ProcessPoolExecutor(max_workers=workers, mp_context=context,
                               initializer=_ignore_stop_signals)


def extract_article(page: FetchResult) -> tuple[str | None, str]:
    """The main text of an article page, as sanitized HTML, or None and the
    reason. trafilatura keeps paragraphs, headings, lists, quotes, images and
    links, and drops navigation, share bars, comments and related lists."""
    kind = page.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind and "html" not in kind:
        return None, f"the article page is not HTML ({kind})"
    import trafilatura  # imported on first use: only fulltext sources need it

    html = trafilatura.extract(
        page.content, url=page.final_url, output_format="html", include_images=True,
        include_links=True, include_formatting=True, include_comments=False,
        include_tables=True, favor_precision=True)
    if not html:
        return None, "no article text found on the page"
    return sanitize_html(_with_captions(html, page), page.final_url), "extracted"


def _with_captions(extracted: str, page: FetchResult) -> str:
    """trafilatura keeps an article's images but drops their <figcaption>:
    put each caption back under its image, found by the image's URL."""
    import lxml.html
    from lxml import etree

    try:
        source = lxml.html.fromstring(page.content)
        result = lxml.html.fromstring(extracted)
    except (etree.ParserError, ValueError):
        return extracted
    source.make_links_absolute(page.final_url, handle_failures="discard")
    captions = {}
    for figure in source.iter("figure"):
        image, caption = figure.find(".//img"), figure.find(".//figcaption")
        if image is not None and caption is not None and image.get("src"):
            captions[image.get("src")] = caption.text_content().strip()
    if not captions:
        return extracted
    for image in list(result.iter("img")):
        text = captions.get(image.get("src", ""))
        if text and image.getparent() is not None:
            figure = etree.Element("figure")
            image.addprevious(figure)
            figure.tail, image.tail = image.tail, None  # text after the image stays after it
            figure.append(image)
            etree.SubElement(figure, "figcaption").text = text
    return lxml.html.tostring(result, encoding="unicode")


def detect_item_language(item: Item, default_language: str) -> tuple[str, str | None, float | None]:
    """Detection again, on the extracted article rather than the teaser."""
    undeclared = replace(item, language=None)
    return resolve_language(undeclared, SourceConfig("", ""), FeedInfo(), default_language)
