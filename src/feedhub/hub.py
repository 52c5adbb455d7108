"""One poll of one source, stage by stage: fetch -> parse -> enrich -> store;
and publishing what is stored.

The hub holds no state of its own between polls: validators, errors and
schedule live in the store, intent in the config.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import logging
import os
import random
import secrets
import socket
import time
from array import array
from collections import deque
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from concurrent.futures import BrokenExecutor, Executor, Future
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from feedhub import langmodel, schedule
from feedhub._files import locked
from feedhub.config import ConfigError, default_user_agent, set_source_url
from feedhub.enrich import is_teaser, plain_text
from feedhub.fetch import (
    BlockedAddressError,
    Fetcher,
    FetchError,
    InvalidURLError,
    LocalGate,
    TooLargeError,
    describe_status,
    permanent_target,
)
from feedhub.metrics import Metrics
from feedhub.models import (
    Config,
    EntryRow,
    FeedInfo,
    FetchResult,
    Item,
    ItemBytes,
    LanguageContext,
    ParsedFeed,
    ParsedPoll,
    PollReport,
    RenderedEntry,
    SourceConfig,
    SourceState,
    StoredItem,
    is_rtl,
    primary_subtag,
)
from feedhub.pages import (
    IndexFeed,
    Page,
    TemplateError,
    Templates,
    archive_page,
    index_page,
    language_page,
    load_templates,
    page_entry,
    render_index,
    render_page,
    source_page,
)
from feedhub.parse import Fingerprint, ParseError, body_fingerprint, plain_hash
from feedhub.publish import (
    ALL,
    SOURCES_DIR,
    DocumentEntries,
    Entries,
    PublishedFeed,
    batched_writes,
    copies_later,
    entry_parts,
    entry_settings,
    entry_stamp,
    feed_title,
    has_copies,
    missing_archive_pages,
    publish_archive,
    publish_feeds,
    publish_index,
    publish_page,
    publish_source_feed,
    published_languages,
    remove_stale_source_feeds,
    render_entries,
    slugify,
    source_feed_files,
    source_feed_stamp,
    source_xml,
    unchanged_source_feed,
    write_copies,
)
from feedhub.store import Store
from feedhub.worker import (
    detect_item_language,
    extract_article,
    parse_poll,
    parser_pool,
    render_entries_in_worker,
)

log = logging.getLogger("feedhub")
RENDER_CHUNK = 250  # entries a parser worker renders at a time (~25 ms)
RENDER_TIMEOUT = 120.0  # seconds: a chunk that takes longer is a stalled worker

# a publish with at least this many archive pages or source feeds to make
# has them made in worker processes (documents.py)
DOCUMENT_WORKERS_FROM = 100
_WRITTEN = {"archive": "archived %s (%d entries)", "page": "published page %s (%d entries)"}

PAGE_ACCEPT = "text/html, application/xhtml+xml;q=0.9, */*;q=0.1"
REDIRECTS_TO_MOVE = 3  # permanent redirects seen in a row before a source's URL is changed


def node_id() -> str:
    """This process among those sharing a database: hostname, pid and a
    random part (a pid is reused; a hostname is shared by containers)."""
    return f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"


def make_fetcher(config: Config, store: Store | None = None, node: str | None = None) -> Fetcher:
    """The hub's fetcher. Given a shared `store` (PostgreSQL), its per-host
    limits hold across every daemon on the database (ClusterGate); else
    across this process's requests only (fetch.LocalGate)."""
    hub = config.hub
    gate = None
    if store is not None and store.shared:
        gate = ClusterGate(store, node or node_id(),
                           max_per_host=hub.max_per_host, host_spacing=hub.host_spacing,
                           timeout=hub.timeout)
    return Fetcher(
        user_agent=hub.user_agent or default_user_agent(hub),
        timeout=hub.timeout,
        max_bytes=hub.max_response_bytes,
        allow_private=hub.allow_private_networks,
        max_connections=hub.max_connections,
        max_per_host=hub.max_per_host,
        host_spacing=hub.host_spacing,
        gate=gate,
    )


def model_cache(config: Config) -> Path:
    """Where the language model goes, uncompressed, when the user's cache
    cannot be written (a confined daemon): beside the database (a PostgreSQL
    hub's: beside the config file); see langmodel."""
    return config.hub.local_files.parent


@contextlib.contextmanager
def forked_parser_pool(config: Config, workers: int) -> Iterator[Executor | None]:
    """A hub's parser workers, made before its store is opened, so that they
    can be forked from this process (worker.parser_pool); None for none.
    Pass it to Hub(pool=...); stopped on leaving, if the hub did not already."""
    pool = parser_pool(workers, model_cache(config), fork=True) if workers else None
    try:
        yield pool
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)


SLOT_RETRY_SECONDS = (0.05, 0.25)  # a full host is asked again after a random pause in this range
SLOT_LEASE_MARGIN = 30.0  # a slot's lease: the request's deadline, the spacing wait, and this


class ClusterGate:
    """fetch.HostGate for daemons sharing a database: a request takes one of
    its host's `max_per_host` slots in the database (a row with a lease, so
    a killed daemon's slots free themselves) and books its start
    `host_spacing` after the host's previous one, whichever daemon made it.
    The lease covers the request's whole deadline (`timeout`), so it needs
    no renewal."""

    def __init__(self, store: Store, node: str, *, max_per_host: int, host_spacing: float,
                 timeout: float):
        self.store, self.node = store, node
        self.max_per_host, self.host_spacing = max_per_host, host_spacing
        self.lease = timeout + max_per_host * host_spacing + SLOT_LEASE_MARGIN
        # this node's own requests to a host wait here first, so that no more
        # than max_per_host of them ask the database for a slot at once (on a
        # host with hundreds of due sources, all of them asking again every
        # few milliseconds was most of the database's work: bench/cluster.py)
        self._local = LocalGate(max_per_host)  # places only: the spacing is booked below

    @contextlib.asynccontextmanager
    async def slot(self, host: str) -> AsyncIterator[None]:
        async with self._local.slot(host), self._cluster_slot(host):
            yield

    @contextlib.asynccontextmanager
    async def _cluster_slot(self, host: str) -> AsyncIterator[None]:
        while True:
            now = time.time()
            slot = self.store.take_host_slot(host, node=self.node, slots=self.max_per_host,
                                             now=now, until=now + self.lease)
            if slot is not None:
                break
            await asyncio.sleep(random.uniform(*SLOT_RETRY_SECONDS))
        try:
            if self.host_spacing > 0:
                start = self.store.book_host_start(host, now=time.time(),
                                                   spacing=self.host_spacing)
                if (wait := start - time.time()) > 0:
                    await asyncio.sleep(wait)
            yield
        finally:
            try:
                self.store.release_host_slot(host, slot, node=self.node)
            except Exception as exc:  # the lease frees it
                log.warning("could not release a request slot of %s: %s", host, exc)


class Hub:
    """`workers`: processes that parse (0: a thread of this process, cheap to
    start for a handful of sources; the daemon and large polls use one per
    core); `pool`: those workers, made already (forked_parser_pool), else the
    hub starts them. Close the hub to stop them."""

    def __init__(self, config: Config, store: Store, fetcher: Fetcher, *, workers: int = 0,
                 parse_unchanged: bool = False, metrics: Metrics | None = None,
                 pool: Executor | None = None):
        self.config = config
        # what /metrics counts (the daemon's; a command's own, never scraped)
        self.metrics = metrics or Metrics()
        # True: parse every body that is not byte-identical to the last one,
        # as before the fingerprint (the identity tests compare both ways)
        self.parse_unchanged = parse_unchanged
        self.store = store
        self.fetcher = fetcher
        self.workers = workers
        self.model_cache = model_cache(config)
        langmodel.set_cache_dir(self.model_cache)  # when parsing in-process
        self.executor: Executor | None = pool if pool is not None else (
            parser_pool(workers, self.model_cache) if workers else None)
        self._document_pool: Executor | None = None  # a publish's own workers (documents.py)
        self.id_authority = urlsplit(config.hub.base_url).hostname or "localhost"
        # Polls in progress at once: enough to keep every connection and every
        # parser busy, few enough that fetched bodies do not pile up in memory
        # while they wait for a parser.
        self._slots = asyncio.Semaphore(config.hub.max_connections + 2 * max(workers, 1))
        # entry_settings by (source, credit language), for one publish
        self._entry_settings: dict[tuple[str, str], str] = {}
        self._unrendered_after = 0  # items up to this id were rendered by the workers
        # upstream feeds and their atom:source, for one publish
        self._feeds: dict[str, FeedInfo] | None = None
        self._sources_xml: dict[FeedInfo, bytes] = {}
        # the templates and each source's file name, for one publish
        self._templates: Templates | None = None
        self._slugs: dict[str, str] = {}
        # per language, the last archive page this process has on disk
        self._archived: dict[str, int] = {}
        # during a publish: the HTML pages to write once every Atom document is on disk
        self._later: list[LaterPage] | None = None
        self.feeds_done_at: float | None = None  # time.monotonic() when they were, last publish
        # a publish that did not finish may have left archive pages (closed in
        # the store, their Atom written) without their HTML page: the next one
        # looks for missing archive files, as a full publish does
        self._unfinished = False
        # the change log ids of this process's own polls: not published twice
        self.own_changes: set[int] = set()
        # this node as a publisher: on a shared database every node writes its
        # own feeds/, so keeps its own per-source feed stamps and does its own
        # archive rewrites after a takedown; keyed by host and output dir.
        # One node on SQLite: "" (its stamps and rewrites are the hub's)
        self.publisher = "" if not store.shared else hashlib.sha256(
            f"{socket.gethostname()}\0{config.hub.output_dir.resolve()}".encode()
        ).hexdigest()[:16]
        self._stamp_prefix = self.publisher + ":" if self.publisher else ""

    def close(self) -> None:
        if self.executor is not None:
            self.executor.shutdown(wait=True, cancel_futures=True)
            self.executor = None
        self.close_document_pool()

    def close_document_pool(self) -> None:
        if self._document_pool is not None:
            self._document_pool.shutdown(wait=True, cancel_futures=True)
            self._document_pool = None

    def _language_context(self, source: SourceConfig) -> LanguageContext:
        """What enrich needs to file items whose language nothing declares:
        the hub's languages and the source's usual one (asked of the store
        once per poll; not at all when the source sets its language)."""
        return LanguageContext(
            default=self.config.hub.default_language,
            configured=frozenset(self.config.languages),
            usual=None if source.language else self.store.usual_language(source.name))

    async def _parse(self, result: FetchResult, source: SourceConfig,
                     context: LanguageContext, known: ItemBytes | None) -> ParsedPoll:
        loop = asyncio.get_running_loop()
        # one picklable callable: run_in_executor is typed for no more than a few arguments
        call = functools.partial(parse_poll, result, source, context, known, not self.parse_unchanged)
        broken = self.executor
        try:
            return await loop.run_in_executor(broken, call)
        except BrokenExecutor:
            # a worker died (out of memory, killed): start a fresh pool, once
            # for all the polls that were waiting on the broken one
            if self.executor is broken:
                log.error("a parser worker died; restarting the pool")
                self.metrics.pool_restarts.inc()
                self.executor = parser_pool(self.workers, self.model_cache)
                if broken is not None:
                    broken.shutdown(wait=False, cancel_futures=True)
            return await loop.run_in_executor(self.executor, call)

    async def poll(self, source: SourceConfig) -> PollReport:
        """Poll one source; never raises (but for cancellation): whatever goes
        wrong is this source's failure, and the other sources' polls go on."""
        async with self._slots:
            started = time.monotonic()
            try:
                report = await self._poll(source)
            except Exception as exc:  # a bug, or input nobody foresaw
                report = self._unexpected(source, exc)
            report = replace(report, duration=time.monotonic() - started)
        self.metrics.poll(report)
        extra = "".join(f" {k}={v}" for k, v in (("note", report.note), ("error", report.error),
                                                  ("degraded", report.degraded)) if v)
        log.log(
            logging.INFO if report.ok and not report.degraded else logging.WARNING,
            "poll %s status=%s new=%d updated=%d duration=%.2fs%s",
            source.name, report.status if report.status is not None else "-", report.new,
            report.updated, report.duration, extra,
            extra={"source": source.name, "status": report.status, "new": report.new,
                   "updated": report.updated, "duration": round(report.duration, 3),
                   "error": report.error, "degraded": report.degraded},
        )
        if report.changed and self.store.shared:
            # the other nodes publish it too (Daemon._watch_changes); never
            # fatal: this node publishes it anyway, and the next change
            # or a full publish catches the others up
            try:
                self.own_changes.add(self.store.log_change(
                    report.languages, [source.name], datetime.now(UTC)))
            except Exception as exc:
                log.warning("could not log the change of %s for the other nodes: %s",
                            source.name, exc)
        return report

    def _unexpected(self, source: SourceConfig, exc: Exception) -> PollReport:
        """The last line of defence: an exception no stage turned into a
        reason is logged with its traceback and recorded as the source's
        failure (`status` shows it failing, with backoff), not lost in a
        crashed poll round."""
        log.error("poll %s failed unexpectedly", source.name, exc_info=exc)
        error = f"unexpected error (see the log): {type(exc).__name__}: {exc}"
        if len(error) > 500:
            error = error[:499] + "…"
        now = datetime.now(UTC)
        due = None
        try:
            state = self.store.source_state(source.name)
            due = schedule.next_poll(now, self.config.interval_of(source),
                                     error_streak=state.error_count + 1)
            self.store.record_poll(source.name, url=source.url, at=now, status=None,
                                   error=error, next_poll=due)
        except Exception:
            log.exception("poll %s: the failure could not be recorded either", source.name)
        return PollReport(source.name, None, error=error, next_poll=due, error_kind="unexpected")

    async def _poll(self, source: SourceConfig) -> PollReport:
        now = datetime.now(UTC)
        interval = self.config.interval_of(source)
        state = self.store.source_state(source.name)
        if state.retired and state.url == source.url:
            return PollReport(source.name, None, note="retired, not polled", retired=True)

        def record(status: int | None, error: str | None = None, hints: tuple[int | None, ...] = (),
                   *, since: datetime, **changes: Any) -> datetime:
            """`since`: when the answer (or the failure) came. The wait counts
            from there, not from the poll's start: a slow answer must not eat
            into the interval, the backoff or a Retry-After."""
            streak = state.error_count + 1 if error else 0
            due = schedule.next_poll(since, interval, error_streak=streak, hints=hints)
            self.store.record_poll(source.name, url=source.url, at=now, status=status, error=error,
                                   next_poll=due, **changes)
            return due

        metrics = self.metrics
        try:
            with metrics.fetch_seconds.time():
                result = await self.fetcher.fetch(source.url, state.validators_for(source.url))
        except FetchError as exc:
            return PollReport(source.name, None, error=str(exc), error_kind=_fetch_error_kind(exc),
                              next_poll=record(None, str(exc), since=datetime.now(UTC)))
        metrics.fetched_bytes.labels("feed").inc(len(result.content))

        moved = self._follow_permanent_redirect(source, state, result)
        answered = result.fetched_at
        hints = (schedule.max_age(result.headers.get("cache-control")), state.ttl)
        if result.status == 410:
            error = f"{describe_status(410)}: the source is retired, polling stopped"
            log.warning("source %s answered 410 Gone: retired (remove it or change its url)",
                        source.name)
            record(410, error, since=answered, retired=error, **moved)
            return PollReport(source.name, 410, error=error, retired=True, error_kind="gone")
        if result.not_modified:
            return PollReport(source.name, 304,
                              next_poll=record(304, hints=hints, since=answered, **moved))
        if not result.ok:
            error = describe_status(result.status)
            wait = None
            if result.status in (429, 503):
                wait = schedule.retry_after(result.headers.get("retry-after"), answered)
                if wait is not None:
                    error += f" (Retry-After {wait}s honoured)"
            due = record(result.status, error, hints=(wait,), since=answered, **moved)
            return PollReport(source.name, result.status, error=error, next_poll=due,
                              error_kind="http")

        validators = {"etag": result.validators.etag,
                      "last_modified": result.validators.last_modified}
        fingerprint = None if self.parse_unchanged else body_fingerprint(result)
        note = body_hash = None
        if state.url != source.url:
            pass
        elif fingerprint is not None and fingerprint.digest == state.body_hash and not (
                fingerprint.dated and state.degraded):
            # the body differs at most in the feed's own dates (see
            # body_fingerprint); a degraded parse is redone, as its complaint
            # names lines and columns
            note = "items unchanged" if fingerprint.dated else "body unchanged"
        elif (body_hash := plain_hash(result.content)) == state.body_hash:
            note = "body unchanged"
        if note is not None:
            changes: dict[str, Any] = {}
            if fingerprint is not None and fingerprint.updated is not None:
                changes["feed_updated"] = fingerprint.updated  # atom:source keeps up
            due = record(result.status, hints=hints, since=answered, **validators, **moved,
                         **changes)
            return PollReport(source.name, result.status, next_poll=due, note=note)
        context = self._language_context(source)
        # parse only what changed: the items whose bytes it knows are not read again
        known = None
        if not self.parse_unchanged and state.url == source.url:
            known = self.store.item_bytes(source.name)
        log.debug("poll %s: parsing %d bytes", source.name, len(result.content))
        try:
            polled = await self._parse(result, source, context, known)
        except ParseError as exc:
            # degraded and entries stay those of the last document read: the
            # validators kept are its own, and a 304 to them means it again
            due = record(result.status, str(exc), since=answered, body_hash=None, **moved)
            return PollReport(source.name, result.status, error=str(exc), next_poll=due,
                              error_kind="parse")
        parsed = polled.parsed
        if parsed.warning and not parsed.degraded:  # read in full all the same
            log.info("poll %s: %s", source.name, parsed.warning)
        others: list[tuple[str, str | None]] = []
        if polled.positions is not None and known is not None:
            read = set(polled.positions)
            others = [known.items[digest] for n, digest in enumerate(polled.digests)
                      if n not in read and digest is not None]
            log.debug("poll %s: read %d of %d items, %d known", source.name,
                      len(parsed.items), polled.entries, len(others))
        items = await self._add_full_text(source, parsed.items, context)
        settled: set[str] = set()
        with self.store.transaction():  # items and the validators that go with them
            outcome, languages = self.store.save_items(
                source.name, items, seen_at=result.fetched_at, id_authority=self.id_authority,
                positions=polled.positions, others=others, settled=settled)
            # an item the full text changed (its language detected again from
            # the article) is stored otherwise than its bytes read
            settled.difference_update(
                item.upstream_id for item, saved in zip(parsed.items, items, strict=True)
                if saved is not item)
            self.store.set_item_bytes(source.name, self._item_bytes(polled, known, settled))
            # a clean parse clears an earlier degraded mark
            due = record(result.status, hints=(*hints[:1], parsed.ttl), since=answered,
                         feed=parsed.info, body_hash=self._body_hash(
                             body_hash, fingerprint, result.content, parsed),
                         ttl=parsed.ttl,
                         degraded=parsed.degraded, entries=polled.entries,
                         **validators, **moved)
        metrics.stored(outcome)
        return PollReport(source.name, result.status, outcome.new, outcome.updated,
                          languages=languages, next_poll=due, degraded=parsed.degraded,
                          note=None if polled.entries else "no entries in the feed")

    @staticmethod
    def _item_bytes(polled: ParsedPoll, known: ItemBytes | None,
                    settled: set[str]) -> ItemBytes | None:
        """What the next poll knows of this document's items: those read in
        an earlier poll and still there, and those read now that the store
        holds exactly as read (`settled`)."""
        if polled.skeleton is None:
            return None
        items: dict[str, tuple[str, str | None]] = {}
        positions: Sequence[int] = range(len(polled.parsed.items))
        if polled.positions is not None and known is not None:
            positions = polled.positions
            items = {digest: known.items[digest] for digest in polled.digests
                     if digest is not None and digest in known.items}
        for position, item in zip(positions, polled.parsed.items, strict=True):
            if (digest := polled.digests[position]) is not None and item.upstream_id in settled:
                items[digest] = (item.upstream_id, item.link)
        return ItemBytes(polled.skeleton, polled.context, items)

    @staticmethod
    def _body_hash(body_hash: str | None, fingerprint: Fingerprint | None, body: bytes,
                   parsed: ParsedFeed) -> str:
        """What the next poll's body is compared with: the fingerprint, which
        leaves the feed's own dates out, if the date it reads is the one
        feedparser read (a feed may say it twice, or in an element the
        fingerprint keeps, such as Atom 0.3's <modified>); else the plain hash."""
        if fingerprint is not None and (fingerprint.updated is None
                                        or fingerprint.updated == parsed.info.updated):
            return fingerprint.digest
        return body_hash or plain_hash(body)

    async def _add_full_text(self, source: SourceConfig, items: Sequence[Item],
                             context: LanguageContext) -> tuple[Item, ...]:
        """Fetch and extract the article page of the items that need it
        (once per item: new ones, changed links, refetch requests)."""
        if source.fulltext == "never" or not items:
            return tuple(items)
        candidates = self.store.fulltext_candidates(source.name, items)
        if not candidates:
            return tuple(items)

        async def full(item: Item) -> Item:
            if item.upstream_id not in candidates:
                return item
            if source.fulltext == "auto" and not is_teaser(item):
                self.metrics.fulltext.labels("not_needed").inc()
                return replace(item, fulltext_status="not needed: the feed has the full text")
            content, status = await self._extract(item)
            if content is None:
                log.info("fulltext %s %s: %s", source.name, item.link, status)
                return replace(item, fulltext_status=status)
            item = replace(item, content=content, extracted_content=content,
                           fulltext_status=status)
            if item.detected_language is not None:  # detected from a teaser: look again
                language, detected, confidence = await asyncio.get_running_loop(
                ).run_in_executor(self.executor, detect_item_language, item, context)
                item = replace(item, language=language, detected_language=detected,
                               language_confidence=confidence)
            return item

        return tuple(await asyncio.gather(*(full(item) for item in items)))

    async def _extract(self, item: Item) -> tuple[str | None, str]:
        """(published HTML, status). On any failure the feed's text stays and
        the status says why."""
        content, status, outcome = await self._extract_page(item)
        self.metrics.fulltext.labels(outcome).inc()
        return content, status

    async def _extract_page(self, item: Item) -> tuple[str | None, str, str]:
        """(published HTML, status, outcome for /metrics)."""
        if not item.link:
            return None, "kept feed text: the item has no link", "no_link"
        try:
            page = await self.fetcher.fetch(item.link, accept=PAGE_ACCEPT)
        except FetchError as exc:  # an invalid link included: it comes from upstream
            return None, f"kept feed text: {exc}", "fetch_failed"
        except Exception as exc:  # a bug: one article must not fail its source's poll
            log.error("fulltext %s: fetching the page failed unexpectedly", item.link,
                      exc_info=exc)
            return (None, f"kept feed text: unexpected error ({type(exc).__name__}: {exc})",
                    "error")
        self.metrics.fetched_bytes.labels("article").inc(len(page.content))
        if not page.ok:
            return (None, f"kept feed text: the article page answered "
                          f"{describe_status(page.status)}", "http_error")
        loop = asyncio.get_running_loop()
        try:
            content, reason = await loop.run_in_executor(self.executor, extract_article, page)
        except Exception as exc:  # trafilatura on a hostile page: keep going
            return (None, f"kept feed text: extraction failed ({type(exc).__name__}: {exc})",
                    "error")
        if content is None:
            return None, f"kept feed text: {reason}", "no_text"
        if len(plain_text(content) or "") < len(plain_text(item.feed_content or item.content) or ""):
            return None, "kept feed text: the page yielded less text than the feed", "shorter"
        return content, "extracted", "extracted"

    def _follow_permanent_redirect(self, source: SourceConfig, state: SourceState,
                                   result: FetchResult) -> dict[str, Any]:
        """Count polls in a row that were permanently redirected to the same
        URL; at REDIRECTS_TO_MOVE, point the source there in config.toml.
        Temporary redirects (302, 307) never move a source."""
        target = permanent_target(result)
        if target is None or target == source.url:
            return {"redirect_url": None, "redirect_count": 0}
        count = state.redirect_count + 1 if state.redirect_url == target else 1
        if count < REDIRECTS_TO_MOVE:
            return {"redirect_url": target, "redirect_count": count}
        try:
            set_source_url(self.config.path, source.name, target)
        except (ConfigError, OSError) as exc:
            log.error("source %s moved permanently to %s, but config.toml could not be "
                      "updated: %s", source.name, target, exc)
            return {"redirect_url": target, "redirect_count": count}
        log.warning("source %s moved permanently (%d polls in a row): url %s -> %s, "
                    "config.toml updated", source.name, count, source.url, target)
        return {"redirect_url": None, "redirect_count": 0}

    async def poll_many(self, sources: Sequence[SourceConfig]) -> list[PollReport]:
        return list(await asyncio.gather(*(self.poll(source) for source in sources)))

    def publish(self, languages: Iterable[str] | None = None,
                sources: Iterable[str] | None = None, *, wait: bool = True,
                release_workers: bool = False) -> list[PublishedFeed]:
        """Regenerate the given language feeds and per-source feeds (all of
        them by default) from the items of the configured sources: archive
        pages first, so no prev-archive link ever points at a missing file.
        One publisher at a time (the daemon and a CLI command may both
        publish): each reads and writes a consistent archive chain.
        wait=False (the daemon, whose event loop must not block): raise
        BlockingIOError when another process is publishing.
        release_workers (a command's one publish): the parser workers end
        once they have rendered the new entries, so the documents are
        written without them in memory (~100 MB of PSS at 1,000 sources).
        Returns the subscription documents (what a WebSub hub is told of)."""
        database = self.config.hub.local_files  # this node's own (see HubConfig)
        with (locked(database.with_name(database.name + ".publish"), wait=wait),  # *.publish.lock
              self.store.publish_lock(wait=wait),  # and across nodes, on PostgreSQL
              self.metrics.publish_seconds.time()):
            try:
                published = self._publish(languages, sources, release_workers)
            finally:  # a publish's document workers end with it (memory)
                self.close_document_pool()
        self.metrics.files_written.labels("feed").inc(sum(feed.written for feed in published))
        return published

    def _publish(self, languages: Iterable[str] | None, sources: Iterable[str] | None,
                 release_workers: bool = False) -> list[PublishedFeed]:
        hub = self.config.hub
        names = [source.name for source in self.config.sources]
        everything = languages is None
        self._entry_settings = {}  # the config may have changed since the last publish
        self._feeds, self._sources_xml = None, {}  # and the upstream feeds
        self._templates = self._load_templates()  # and the templates
        slugs = self._slugs = self.store.source_slugs(names, slugify)
        self._render_unrendered()
        if release_workers:
            self.close()
        wanted = names if sources is None else [name for name in sources if name in slugs]
        # the source feeds on disk and the stamps they were written with
        present, known = source_feed_files(self.config), self.store.feed_stamps()
        self._start_document_workers(wanted, slugs, present, known)
        if languages is None:
            languages = set(self.store.language_groups(names)) | set(
                published_languages(hub.output_dir))
        pages: dict[str, int] = {}
        rewritten: list[tuple[str, int, int]] = []
        # Every Atom document first, then their compressed copies and the
        # HTML pages (a first publish at 1,000 sources: the feeds exist 12 s
        # sooner); _write_page and write_if_changed keep them for later meanwhile.
        self._later = [] if hub.pages and self._templates is not None else None
        self.feeds_done_at = None
        restore, self._unfinished = self._unfinished, True
        try:
            with copies_later() as copies:  # the feeds' copies too come after the feeds
                results = self._publish_feeds(languages, names, slugs, wanted, present, known,
                                              everything or restore, pages, rewritten)
            self.feeds_done_at = time.monotonic()
            paged = self._write_later(list(copies))
        finally:
            self._later = None
        # a takedown is done once its archive pages' files are on disk, HTML
        # pages too (where there are pages): else the next publish tries again
        for language, page, requested in rewritten:
            if not hub.pages or (language, page) in paged:
                self.store.archive_rewritten(self.publisher, language, page, requested)
        with batched_writes():
            self._write_index(*publish_index(self.config, slugs))
        for feed in results:
            if feed.written:
                log.info("published %s (%d entries)", feed.path, feed.entries)
        self._unfinished = False
        return results

    def _publish_feeds(self, languages: Iterable[str], names: list[str], slugs: dict[str, str],
                       wanted: Sequence[str], present: set[str], known: dict[str, str],
                       everything: bool, pages: dict[str, int],
                       rewritten: list[tuple[str, int, int]]) -> list[PublishedFeed]:
        """_publish's Atom documents: the archive pages and the source feeds
        (one round of jobs, one batch), then the language feeds, which link
        to the archive pages (`everything`: a full publish, which also
        restores archive pages lost from disk). Fills in `pages`, each language's
        newest archive page, and `rewritten`, the archive pages a takedown
        changed that were written again."""
        hub = self.config.hub
        feeds: dict[str, DocumentEntries] = {}
        archives: list[tuple[str, tuple[Any, ...]]] = []  # (language, page, last) each
        # archive pages are on disk (one batch, synced once) before any feed
        # links to them; the source feeds link to none, and are made with them
        with batched_writes():
            for language in sorted(set(languages) - {ALL}):
                if hub.archive_page_size:
                    new_pages = self.store.close_archive_pages(
                        language, names, keep=hub.items_per_feed,
                        page_size=hub.archive_page_size)
                    pages[language] = self.store.last_archive_page(language)
                    # a full publish also restores pages lost from disk; an
                    # incremental one writes just the new pages (no directory scan);
                    # on a shared database, the pages other nodes closed as well
                    archives += [("archive", (language, page, pages[language]))
                                 for page in self._archive_pages_to_write(
                                     language, pages[language], new_pages, everything)]
                    feeds[language] = self._entries(
                        self.store.current_entries(language, names), language)
                else:
                    feeds[language] = self._entries(self.store.latest_entries(
                        language, names, hub.items_per_feed), language)
            jobs, done = self._source_feed_jobs(wanted, slugs, present, known)
            made = self._documents(archives + jobs)
            self._archived.update(pages)
            # after a takedown: the pages this node's feeds/ has not rewritten yet
            for language, page, requested in self.store.archive_rewrites(self.publisher):
                if self._write_archive(language, page, self.store.last_archive_page(language)):
                    rewritten.append((language, page, requested))
        by_source = self._source_feeds_written(wanted, slugs, jobs, made[len(archives):], done)
        if feeds:  # any language changed: the all-languages feed did too
            feeds[ALL] = self._entries(
                self.store.latest_entries(None, names, hub.items_per_feed), None)
        with batched_writes():
            results = publish_feeds(self.config, feeds, archived_pages=pages)
            for language, entries in feeds.items():
                self._write_page(("language", (language, pages.get(language, 0))),
                                 entries, None if language == ALL else language)
        return results + by_source

    def _start_document_workers(self, wanted: Sequence[str], slugs: dict[str, str],
                                present: set[str], known: dict[str, str]) -> None:
        """A publish into an empty or emptied directory (a new hub's first)
        makes thousands of documents on every core (documents.py): with no
        parser workers to lend, its own are started now, to be ready when
        the first documents are handed out. Told by the source feeds missing
        on disk (`present`) that were written before (`known`), or by all of
        them on a hub that has written none (a source with no items has no
        feed), so a publish with little to write starts none."""
        if (self.executor is not None or self._document_pool is not None
                or (os.cpu_count() or 1) < 2):
            return
        missing = [name for name in wanted if f"{slugs[name]}.atom" not in present and (
            not known or self._stamp_prefix + name in known)]
        if len(missing) >= DOCUMENT_WORKERS_FROM:
            from feedhub.documents import start_workers

            start_workers(self)

    def _write_later(self, copies: Sequence[Path]) -> set[tuple[str, int]]:
        """What waited for the Atom documents: the compressed copies of
        `copies`, in one batch (what a batch holds until it commits is
        memory: 15,000 documents at 10,000 sources); then the HTML pages,
        in another, in the order they were asked for (archive pages before
        the pages that link to them); then the stamps of the source feeds
        whose page is on disk (a source whose page failed is made again
        next time). Returns the archive pages written, as (language, number)."""
        later, self._later = self._later or [], None
        with batched_writes():
            self._documents([("copies", (path,)) for path in copies])
        if not later:
            return set()
        with batched_writes():
            written = self._documents([("page", (job,)) for job in later])
        self.store.set_feed_stamps({self._stamp_prefix + job.source: job.stamp
                                    for job, ok in zip(later, written, strict=True)
                                    if ok and job.source is not None and job.stamp is not None})
        return {(args[0], args[1]) for job, ok in zip(later, written, strict=True)
                for made_by, args in (job.page,) if ok and made_by == "archive"}

    def _source_feed_jobs(self, wanted: Sequence[str], slugs: dict[str, str], present: set[str],
                          known: dict[str, str]) -> tuple[list[tuple[str, tuple[Any, ...]]],
                                     dict[str, PublishedFeed | None]]:
        """The source feeds to render: only those whose inputs changed
        since they were last written (at 1,000 sources, rendering all of
        them costs seconds), none for a source with no items yet, and one at
        a time (10,000 sources' items at once would be half a gigabyte).
        `present`: the source feed files on disk; `known`: the stamps they
        were written with. Returns their jobs, and the feeds left as they are."""
        limit = self.config.hub.items_per_feed
        pages = self.config.hub.pages
        # a source's page shows what its feed does, through the templates
        templates = self._templates.digest if pages and self._templates else ""
        done: dict[str, PublishedFeed | None] = {}
        jobs: list[tuple[str, tuple[Any, ...]]] = []
        for name in wanted:  # here, not in a job: a publish with nothing to render starts no worker
            inputs = self.store.source_feed_inputs(name, limit)
            stamp = source_feed_stamp(self.config, name, inputs) + templates
            on_disk = has_copies(present, f"{slugs[name]}.atom") and (
                not pages or has_copies(present, f"{slugs[name]}.html"))
            if on_disk and known.get(self._stamp_prefix + name) == stamp:  # the files show it
                done[name] = unchanged_source_feed(self.config, name, slugs[name], len(inputs) - 1)
            else:
                jobs.append(("source", (name, slugs[name], limit, stamp, on_disk)))
        return jobs, done

    def _source_feeds_written(self, wanted: Sequence[str], slugs: dict[str, str],
                              jobs: Sequence[tuple[str, tuple[Any, ...]]], made: Sequence[Any],
                              done: dict[str, PublishedFeed | None]) -> list[PublishedFeed]:
        """Once the source feeds `jobs` made are on disk: their stamps
        recorded, the feeds of sources no longer configured removed; the
        wanted sources' feeds, for the report."""
        stamps: dict[str, str] = {}
        for (_, (name, *_)), (published, stamp) in zip(jobs, made, strict=True):
            done[name] = published
            if stamp:
                stamps[self._stamp_prefix + name] = stamp
        remove_stale_source_feeds(self.config, slugs)
        self.store.set_feed_stamps(stamps)
        return [published for name in wanted if (published := done.get(name)) is not None]

    def _archive_pages_to_write(self, language: str, last: int, new_pages: list[int],
                                everything: bool) -> Iterable[int]:
        """The archive pages a publish writes: on a full one, those missing
        on disk; else the ones it just closed, and on a shared database every
        page after the last this process wrote (other nodes closed them: this
        node's feeds/ must hold them too, before its feed links to them)."""
        known = self._archived.get(language)
        if everything or (self.store.shared and known is None):
            return missing_archive_pages(self.config, language, last)
        if self.store.shared and known is not None:
            return range(known + 1, last + 1)
        return new_pages

    def _source_feed(self, name: str, slug: str, limit: int, stamp: str,
                     on_disk: bool) -> tuple[PublishedFeed | None, str | None]:
        """One source's feed and page, whose inputs (`stamp`) changed since
        they were last written; with the stamp to record once they are on
        disk (None: nothing to record)."""
        items = self._entries(self.store.source_entries(name, limit), None)
        if not items and not on_disk:
            return None, None
        published = publish_source_feed(self.config, name, slug, items)
        if not published:
            return published, None
        deferred = self._later is not None
        if self._write_page(("source", (name, slug)), items, None, source=name, stamp=stamp):
            return published, None if deferred else stamp  # deferred: recorded with its page
        return published, None

    def _write_archive(self, language: str, page: int, last: int) -> PublishedFeed | None:
        """Archive page `page` of `last`, and its HTML page; None when it
        could not be rendered (logged)."""
        # its sources' upstream feeds as they were when it was closed: the
        # same bytes whenever, and on whichever node, it is written
        frozen = self.store.archive_feeds(language, page)
        entries = self._entries(self.store.archive_entries(language, page), language, frozen)
        archived = publish_archive(self.config, language, page, entries)
        if archived and archived.written:
            self._report("archive", archived.path, archived.entries)
        if archived is not None:
            self._write_page(("archive", (language, page, last)), entries, language, frozen)
        return archived

    def _report(self, kind: str, path: Path, entries: int) -> None:
        """A file written: logged and counted (a document worker hands it
        to the publishing process, which reports it: _DocumentHub)."""
        log.info(_WRITTEN[kind], path, entries)
        self.metrics.files_written.labels(kind).inc()

    def _keep_entries(self, entries: Sequence[tuple[int, RenderedEntry]]) -> None:
        self.store.save_rendered_entries(entries)

    def _document(self, kind: str, args: tuple[Any, ...]) -> Any:
        """One job of _documents: an archive page or a source's feed (each
        with its HTML page, or keeping it for later), or what was kept for
        later: an HTML page, a document's compressed copies."""
        if kind == "copies":
            return write_copies(*args)
        if kind == "page":
            job: LaterPage = args[0]
            made_by, page_args = job.page
            # an archive page's sources' feeds as they were when it was closed
            frozen = self.store.archive_feeds(*page_args[:2]) if made_by == "archive" else None
            return self._write_page(job.page, job.entries, job.credit_language, frozen)
        return self._write_archive(*args) if kind == "archive" else self._source_feed(*args)

    def _documents(self, jobs: Sequence[tuple[str, tuple[Any, ...]]]) -> list[Any]:
        """Each job's result (_document), in order, its files written in the
        current batch in that order. Rendering and compressing documents is
        most of a full publish and holds the GIL, so many of them are made
        in worker processes, on every core (documents.py), which hand over
        their temp files; if they fail, this process makes the rest."""
        if len(jobs) < DOCUMENT_WORKERS_FROM or (os.cpu_count() or 1) < 2:
            return [self._document(kind, args) for kind, args in jobs]
        from feedhub.documents import make_in_workers

        return make_in_workers(self, jobs)

    def _load_templates(self) -> Templates | None:
        """The templates for this publish (compiled again only when a file
        changed); None, logged, when one is broken: the feeds are written
        and every page stays as it is."""
        try:
            return load_templates(self.config.hub.templates)
        except TemplateError as exc:
            log.error("HTML pages not written, previous pages kept: %s", exc)
            return None

    def _write_page(self, page: PageOf, entries: Entries, credit_language: str | None,
                    frozen: dict[str, FeedInfo] | None = None, *, source: str | None = None,
                    stamp: str | None = None) -> bool:
        """The HTML page beside an Atom document, with the same entries
        (`credit_language`: the document's; None: each item's own; `frozen`:
        an archive page's sources' feeds as they were when it was closed).
        False when it could not be rendered (logged; the previous page stays).
        `page`: which page, as PAGES makes it. During a publish's Atom documents
        it is kept for later (_write_later), with what it needs to be made
        then: the items' ids, not their entries, and not an archive page's
        sources' feeds (read again then: 30,000 of them at 1,000 sources);
        `source` and `stamp`: a source's page, whose feed's stamp waits for it."""
        config = self.config
        if not config.hub.pages:
            return True
        if self._templates is None:
            return False
        if self._later is not None:
            if isinstance(entries, DocumentEntries):  # its ids packed: 15,000 pages at 10,000
                entries = DocumentEntries((), entries.updated, entries.error,
                                          array("q", entries.ids))
            self._later.append(LaterPage(page, entries, credit_language, source, stamp))
            return True
        kind, page_args = page
        built: Page = PAGES[kind](config, *page_args)
        if isinstance(entries, DocumentEntries):
            if entries.error:  # the Atom document was not written either (logged)
                return False
            items = self.store.page_items(entries.ids)
            if frozen:
                items = [replace(item, feed=frozen[item.source]) if item.source in frozen
                         else item for item in items]
            updated = entries.updated
        else:
            items, updated = list(entries), max((i.updated for i in entries), default=None)
        views = []
        for item in items:
            credit = credit_language or primary_subtag(item.language)
            slug = self._slugs.get(item.source)
            link = (f"{built.root}{SOURCES_DIR}/{slug}.html"
                    if slug and built.kind != "source" else None)
            views.append(page_entry(config, item, credit, *entry_parts(config, item, credit),
                                    source_page=link))
        try:
            data = render_page(self._templates, config, replace(built, updated=updated), views)
        except TemplateError as exc:
            log.error("cannot render %s, previous page kept: %s", built.path, exc)
            return False
        if publish_page(path := config.hub.output_dir / built.path, data):
            self._report("page", path, len(views))
        return True

    def _write_index(self, languages: Sequence[str], sources: Sequence[tuple[str, str]]) -> None:
        """index.html: every feed, and its page where there is one."""
        if self._templates is None:
            return
        output = self.config.hub.output_dir

        def page_of(path: str) -> str | None:
            page = path.removesuffix(".atom") + ".html"
            return page if (output / page).exists() else None

        feeds = [IndexFeed(feed_title(self.config, language),
                           None if language == ALL else language,
                           "rtl" if is_rtl(language) else "ltr", f"{language}.atom",
                           page_of(f"{language}.atom")) for language in languages]
        by_source = [IndexFeed(name, None, "ltr", f"{SOURCES_DIR}/{slug}.atom",
                               page_of(f"{SOURCES_DIR}/{slug}.atom")) for name, slug in sources]
        try:
            data = render_index(self._templates, self.config, index_page(self.config), feeds,
                                by_source)
        except TemplateError as exc:
            log.error("cannot render index.html, previous page kept: %s", exc)
            return
        publish_page(output / "index.html", data)

    def _source_xml(self, source: str, frozen: dict[str, FeedInfo] | None = None) -> bytes:
        """A source's atom:source (`frozen`: an archive page's feeds, see
        _entries), each feed's rendered once per publish: the archive pages
        of a language share their sources' feeds (30,000 renderings at 1,000
        sources were 1.3 s of a cold publish's main thread)."""
        if frozen and source in frozen:
            feed = frozen[source]
        else:
            if self._feeds is None:
                self._feeds = self.store.feeds()
            # a source with no row (removed, in an archive): no feed, as in StoredItem
            feed = self._feeds.get(source) or FeedInfo()
        if (xml := self._sources_xml.get(feed)) is None:
            xml = self._sources_xml[feed] = source_xml(feed)
        return xml

    def _stamp(self, source: str, credit: str, version: str) -> str:
        settings = self._entry_settings
        if (key := (source, credit)) not in settings:
            settings[key] = entry_settings(self.config, source, credit)
        return entry_stamp(settings[key], version)

    def _render_unrendered(self) -> None:
        """Render on every core the entries of items never rendered (the
        first publish renders them all: 30,000 at 1,000 sources), a chunk per
        parser worker at a time; the documents then find them kept. Without
        parser workers, or with few such items, documents render what they
        miss themselves, as they do if the workers fail or stall here."""
        if self.executor is None:
            return
        executor, first = self.executor, self._unrendered_after
        after = first
        pending: deque[tuple[list[int], Future[list[RenderedEntry | str]]]] = deque()
        try:
            while found := self.store.items_without_entries(after, RENDER_CHUNK):
                if after == first and len(found) < RENDER_CHUNK:
                    return  # a few new items: not worth a trip to the workers
                after = found[-1][0]
                jobs = [(item, group, self._stamp(item.source, group, version))
                        for _, version, item in found
                        for group in (primary_subtag(item.language),)]
                pending.append(([item_id for item_id, _, _ in found],
                                executor.submit(render_entries_in_worker, self._config_for(jobs),
                                                jobs)))
                while len(pending) > 2 * self.workers:
                    self._keep_rendered(*pending.popleft())
            while pending:
                self._keep_rendered(*pending.popleft())
            self._unrendered_after = after  # later items are new: no need to look again
        except (BrokenExecutor, TimeoutError) as exc:
            log.warning("rendering entries in the parser workers failed (%s); "
                        "publishing renders them itself", type(exc).__name__)
            for _, future in pending:
                future.cancel()

    def _config_for(self, jobs: Sequence[tuple[StoredItem, str, str]]) -> Config:
        """The config with only the sources these items come from (what a
        worker needs to render them, not 10,000 sources pickled each time);
        kept in order, so that find_source finds what it finds in the whole."""
        names = {item.source for item, _, _ in jobs}
        return replace(self.config, sources=tuple(
            source for source in self.config.sources if source.name in names or
            source.url in names))

    def _keep_rendered(self, ids: list[int],
                       future: Future[list[RenderedEntry | str]]) -> None:
        rendered = future.result(timeout=RENDER_TIMEOUT)
        self.store.save_rendered_entries([
            (item_id, entry) for item_id, entry in zip(ids, rendered, strict=True)
            if not isinstance(entry, str)])  # an entry XML cannot carry: its documents say so

    def _entries(self, rows: Sequence[EntryRow], language: str | None,
                 frozen: dict[str, FeedInfo] | None = None) -> DocumentEntries:
        """A document's entries (`language`: the document's; None: a mixed
        one) from the entries the store keeps, rendering (and keeping) only
        those of items it has no entry for in this version. `frozen`: an
        archive page's sources' upstream feeds as they were when it was
        closed, for their atom:source (else, a page closed before schema
        step 14, the source's current feed)."""
        wanted: list[tuple[EntryRow, str, str]] = []
        missing: list[tuple[int, str, str]] = []
        for row in rows:
            credit = language or primary_subtag(row.language)
            stamp = self._stamp(row.source, credit, row.version)
            cached = row.cached
            if cached is None or cached.stamp != stamp:  # the stamp has the credit language
                missing.append((row.item_id, credit, stamp))
            wanted.append((row, credit, stamp))
        rendered: dict[tuple[int, str], RenderedEntry] = {}
        if missing:
            items = self.store.items_by_id([item_id for item_id, _, _ in missing])
            jobs = [(item_id, (items[item_id], credit, stamp))
                    for item_id, credit, stamp in missing if item_id in items]
            results = render_entries(self.config, [job for _, job in jobs])
            errors = [result for result in results if isinstance(result, str)]
            fresh = [(item_id, result) for (item_id, _), result in zip(jobs, results, strict=True)
                     if not isinstance(result, str)]
            self._keep_entries(fresh)
            rendered = {(item_id, entry.credit_language): entry for item_id, entry in fresh}
            if errors:
                return DocumentEntries((), None, error="; ".join(errors[:3]))
        entries = []
        for row, credit, stamp in wanted:
            entry = row.cached if row.cached and row.cached.stamp == stamp else rendered.get(
                (row.item_id, credit))
            if entry is None:  # gone since it was listed (cannot happen: items stay)
                return DocumentEntries((), None, error=f"item {row.item_id} vanished")
            entries.append((entry, row.text, self._source_xml(row.source, frozen)))
        return DocumentEntries(entries, max((row.updated for row in rows), default=None),
                               ids=[row.item_id for row in rows])


# An HTML page by what makes it: ("language", (language, newest archive page)),
# ("archive", (language, number, newest)) or ("source", (name, slug)).
PageOf = tuple[str, tuple[Any, ...]]
PAGES: dict[str, Callable[..., Page]] = {"language": language_page, "archive": archive_page,
                                      "source": source_page}


@dataclass(frozen=True)
class LaterPage:
    """An HTML page a publish writes after its Atom documents (Hub._write_page)."""

    page: PageOf  # which page (the page itself would be copied out of every worker)
    entries: Entries  # a DocumentEntries: the items' ids and the newest update, no entries
    credit_language: str | None
    source: str | None = None  # a source's own page: its feed's stamp is recorded with it
    stamp: str | None = None


def _fetch_error_kind(exc: FetchError) -> str:
    """A failed fetch in one word, for /metrics (metrics.ERROR_KINDS)."""
    if isinstance(exc, TooLargeError):
        return "too_large"
    if isinstance(exc, BlockedAddressError):
        return "blocked"
    if isinstance(exc, InvalidURLError):
        return "invalid_url"
    if str(exc).startswith("timed out"):
        return "timeout"
    return "network"
