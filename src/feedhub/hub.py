"""One poll of one source, stage by stage: fetch -> parse -> enrich -> store;
and publishing what is stored.

The hub holds no state of its own between polls: validators, errors and
schedule live in the store, intent in the config.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime, timedelta
from http import HTTPStatus
from urllib.parse import urlsplit

from feedhub.config import default_user_agent
from feedhub.enrich import enrich
from feedhub.fetch import Fetcher, FetchError
from feedhub.models import Config, PollReport, SourceConfig, Validators
from feedhub.parse import ParseError, parse_feed
from feedhub.publish import PublishedFeed, publish_feeds, published_languages
from feedhub.store import Store

log = logging.getLogger("feedhub")


def make_fetcher(config: Config) -> Fetcher:
    hub = config.hub
    return Fetcher(
        user_agent=hub.user_agent or default_user_agent(hub),
        timeout=hub.timeout,
        max_bytes=hub.max_response_bytes,
        allow_private=hub.allow_private_networks,
        max_connections=hub.max_connections,
        max_per_host=hub.max_per_host,
    )


def describe_status(status: int) -> str:
    try:
        return f"HTTP {status} {HTTPStatus(status).phrase}"
    except ValueError:
        return f"HTTP {status}"


class Hub:
    def __init__(self, config: Config, store: Store, fetcher: Fetcher):
        self.config = config
        self.store = store
        self.fetcher = fetcher
        self.id_authority = urlsplit(config.hub.base_url).hostname or "localhost"

    async def poll(self, source: SourceConfig) -> PollReport:
        """Poll one source; never raises for anything upstream does."""
        started = time.monotonic()
        report = await self._poll(source)
        report = PollReport(**{**report.__dict__, "duration": time.monotonic() - started})
        log.log(
            logging.INFO if report.ok else logging.WARNING,
            "poll %s status=%s new=%d updated=%d duration=%.2fs%s",
            source.name, report.status if report.status is not None else "-", report.new,
            report.updated, report.duration, f" error={report.error}" if report.error else "",
        )
        return report

    async def _poll(self, source: SourceConfig) -> PollReport:
        now = datetime.now(UTC)
        next_poll = now + timedelta(seconds=self.config.interval_of(source))
        state = self.store.source_states([source.name])[0]
        validators = (Validators(state.etag, state.last_modified)
                      if state.url == source.url else None)
        try:
            result = await self.fetcher.fetch(source.url, validators)
        except FetchError as exc:
            return self._failed(source, None, str(exc), now, next_poll)
        if result.not_modified:
            self.store.record_poll(source.name, url=source.url, status=304, error=None,
                                   at=now, next_poll=next_poll)
            return PollReport(source.name, 304)
        if not result.ok:
            return self._failed(source, result.status, describe_status(result.status), now,
                                next_poll)
        try:
            parsed = await asyncio.to_thread(parse_feed, result)
        except ParseError as exc:
            return self._failed(source, result.status, str(exc), now, next_poll)
        if parsed.warning:
            log.info("poll %s: %s", source.name, parsed.warning)
        items = enrich(parsed, source, default_language=self.config.hub.default_language,
                       feed_url=result.final_url)
        outcome, languages = self.store.save_items(
            source.name, items, seen_at=result.fetched_at, id_authority=self.id_authority)
        self.store.record_poll(source.name, url=source.url, status=result.status, error=None,
                               at=now, next_poll=next_poll, validators=result.validators,
                               feed=parsed.info)
        return PollReport(source.name, result.status, outcome.new, outcome.updated,
                          languages=languages)

    def _failed(self, source: SourceConfig, status: int | None, error: str, now: datetime,
                next_poll: datetime) -> PollReport:
        self.store.record_poll(source.name, url=source.url, status=status, error=error, at=now,
                               next_poll=next_poll)
        return PollReport(source.name, status, error=error)

    async def poll_many(self, sources: Sequence[SourceConfig]) -> list[PollReport]:
        return list(await asyncio.gather(*(self.poll(source) for source in sources)))

    def publish(self, languages: Iterable[str] | None = None) -> list[PublishedFeed]:
        """Regenerate the given language feeds (all of them by default) from
        the items of the configured sources."""
        names = [source.name for source in self.config.sources]
        if languages is None:
            languages = set(self.store.language_groups(names)) | set(
                published_languages(self.config.hub.output_dir))
        feeds = {
            language: self.store.latest_items(language, names, self.config.hub.items_per_feed)
            for language in sorted(languages)
        }
        results = publish_feeds(self.config, feeds)
        for feed in results:
            if feed.written:
                log.info("published %s (%d entries)", feed.path, feed.entries)
        return results
