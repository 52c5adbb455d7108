"""One body through the whole middle of the hub, in process: parse and
enrich (as a worker does), store, render. For property tests that throw
thousands of generated bodies at it, where a CLI subprocess each would be
too slow."""

from __future__ import annotations

from pathlib import Path

from feedhub.models import Config, FetchResult, LanguageContext, SourceConfig
from feedhub.parse import ParseError
from feedhub.publish import render_feed
from feedhub.store import open_store
from feedhub.worker import parse_and_enrich


def ingest_and_publish(result: FetchResult, tmp: Path, config: Config,
                       source: SourceConfig) -> list[bytes] | None:
    """Each language's published document, or None when parse refused the body."""
    try:
        parsed = parse_and_enrich(result, source, LanguageContext())
    except ParseError:
        return None
    with open_store(tmp / "hub.db") as store:
        store.save_items(source.name, parsed.items, seen_at=result.fetched_at, id_authority="h")
        store.record_poll(source.name, url=source.url, at=result.fetched_at, status=200,
                          error=None, next_poll=None, feed=parsed.info)
        feeds = {lang: store.latest_items(lang, [source.name], 50)
                 for lang in store.language_groups([source.name])}
    return [render_feed(config, lang, stored) for lang, stored in feeds.items()]
