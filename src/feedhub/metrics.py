"""/metrics: the daemon's numbers in the Prometheus text format.

prometheus-client writes the exposition (escaping, types, histogram
buckets, the OpenMetrics variant when a scraper asks for it) and keeps the
counters thread-safe; feedhub only says what to count. Everything lives in
one CollectorRegistry per daemon, not the library's global one, so nothing
else a process imports ends up on the admin address, and tests can make
as many as they like.

Counters and histograms are observed where the work happens (a poll, a
publish, a ping, a reload) and start at 0 with the process. Gauges about
the sources are computed at scrape time from the store by StoreCollector,
with the same state function as `feedhub status` (feedhub.status).

Label sets are bounded: outcomes, error kinds, states and language groups
(ISO 639 shapes; anything else is "other"). No label carries a URL, a
source name or an item id: per-source detail is on the /status page.
"""

from __future__ import annotations

import platform
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    Info,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from feedhub import __version__
from feedhub.models import PollReport, StoreOutcome, primary_subtag
from feedhub.status import STATES, source_health
from feedhub.store import Store, open_store

POLL_OUTCOMES = ("200", "304", "error", "skipped")
# why a poll failed: no answer (network, timeout), an answer too large, an
# address refused by the guard or a URL no request can go to, an HTTP error
# status, 410 Gone (the source is retired), a document that cannot be parsed,
# and a bug (an exception nobody foresaw)
ERROR_KINDS = ("network", "timeout", "too_large", "blocked", "invalid_url", "http", "gone",
               "parse", "unexpected")
FULLTEXT_OUTCOMES = ("extracted", "not_needed", "no_link", "fetch_failed", "http_error",
                     "no_text", "shorter", "error")
ITEM_CHANGES = ("new", "updated")
FETCH_KINDS = ("feed", "article")
FILE_KINDS = ("feed", "page", "archive")
PING_OUTCOMES = ("ok", "failed")
RELOAD_OUTCOMES = ("ok", "refused")
# fetches take from milliseconds (loopback, 304) to the timeout (30 s by default)
FETCH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
PUBLISH_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
_LANGUAGE = re.compile(r"[a-z]{2,3}")

# no *_created series beside every counter: a scrape of 10,000 sources'
# daemon stays short, and "restart at 0 with the process" says the same
disable_created_metrics()


def language_label(group: str | None) -> str:
    """A language group as a label value: ISO 639 shapes only, so that a
    feed's made-up language tags cannot grow the label set without bound."""
    return group if group and _LANGUAGE.fullmatch(group) else "other"


class Metrics:
    """The daemon's counters and histograms, in a registry of their own."""

    def __init__(self) -> None:
        self.registry = registry = CollectorRegistry()
        self.polls = Counter("feedhub_polls", "Polls of sources by outcome: 200 (any success), "
                             "304, error (by kind), skipped (retired)", ["outcome", "kind"],
                             registry=registry)
        self.fetch_seconds = Histogram("feedhub_fetch_duration_seconds",
                                       "Time to fetch a source's feed, answer or failure",
                                       buckets=FETCH_BUCKETS, registry=registry)
        self.fetched_bytes = Counter("feedhub_fetched_bytes", "Bytes of response bodies fetched "
                                     "(decompressed): feeds, article pages", ["kind"],
                                     registry=registry)
        self.items = Counter("feedhub_items", "Items stored new or updated, by language group",
                             ["change", "language"], registry=registry)
        self.fulltext = Counter("feedhub_fulltext_extractions", "Full-text extractions of "
                                "article pages by outcome", ["outcome"], registry=registry)
        self.publish_seconds = Histogram("feedhub_publish_duration_seconds",
                                         "Time to publish (feeds, archives, pages)",
                                         buckets=PUBLISH_BUCKETS, registry=registry)
        self.files_written = Counter("feedhub_published_files", "Files publishing wrote "
                                     "(unchanged ones are not rewritten)", ["kind"],
                                     registry=registry)
        self.pings = Counter("feedhub_websub_pings", "WebSub hub pings by outcome (after "
                             "retries)", ["outcome"], registry=registry)
        self.pool_restarts = Counter("feedhub_parser_pool_restarts", "Parser worker pools "
                                     "restarted after a worker died", registry=registry)
        self.reloads = Counter("feedhub_config_reloads", "config.toml changes applied (ok) or "
                               "refused (did not load; the last good config kept)", ["outcome"],
                               registry=registry)
        Info("feedhub_build", "The running feedhub", registry=registry).info(
            {"version": __version__, "python": platform.python_version()})
        # every known label value is there from the start, at 0
        for outcome in POLL_OUTCOMES:
            for kind in ERROR_KINDS if outcome == "error" else ("none",):
                self.polls.labels(outcome, kind)
        for counter, values in ((self.fetched_bytes, FETCH_KINDS), (self.fulltext, FULLTEXT_OUTCOMES),
                                (self.files_written, FILE_KINDS), (self.pings, PING_OUTCOMES),
                                (self.reloads, RELOAD_OUTCOMES)):
            for value in values:
                counter.labels(value)

    def seed_languages(self, languages: Iterable[str]) -> None:
        """The configured languages' item counters, at 0 from the start."""
        for language in languages:
            for change in ITEM_CHANGES:
                self.items.labels(change, language_label(primary_subtag(language)))

    def poll(self, report: PollReport) -> None:
        if report.error is not None:
            kind = report.error_kind if report.error_kind in ERROR_KINDS else "unexpected"
            self.polls.labels("error", kind).inc()
        elif report.retired:
            self.polls.labels("skipped", "none").inc()
        elif report.status == 304:
            self.polls.labels("304", "none").inc()
        else:
            self.polls.labels("200", "none").inc()

    def stored(self, outcome: StoreOutcome) -> None:
        for (change, group), count in outcome.by_language.items():
            self.items.labels(change, language_label(group)).inc(count)

    def watch_store(self, store_path: Path | str, sources: Callable[[], Sequence[str]],
                    output_dir: Callable[[], Path]) -> StoreCollector:
        collector = StoreCollector(store_path, sources, output_dir)
        self.registry.register(collector)
        return collector


class StoreCollector(Collector):
    """Gauges computed at each scrape from the database: sources by state,
    how long since the stalest source's last good poll, the longest current
    failure, withdrawn items, the database's size, the newest feed file."""

    def __init__(self, store_path: Path | str, sources: Callable[[], Sequence[str]],
                 output_dir: Callable[[], Path]):
        self.store_path = store_path
        self.sources = sources
        self.output_dir = output_dir
        self._store: Store | None = None
        self._lock = threading.Lock()  # one scrape at a time on the one connection

    def close(self) -> None:
        with self._lock:
            if self._store is not None:
                self._store.close()
                self._store = None

    def describe(self) -> list[Metric]:
        return []  # computed at scrape time; nothing to read at registration

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            if self._store is None:
                self._store = open_store(self.store_path, reader=True)
            store = self._store
            rows = store.scrape_states(self.sources())
            withdrawn = store.withdrawn_per_language()
            size = store.size_bytes()
        states = dict.fromkeys(STATES, 0)
        oldest = longest = None  # ISO strings in UTC: the least is the earliest
        for facts in rows:
            health = source_health(facts)
            states[health] += 1
            if health in ("retired", "new"):
                continue
            since = facts.last_success or facts.failing_since
            if since is not None and (oldest is None or since < oldest):
                oldest = since
            if health == "failing" and facts.failing_since is not None and (
                    longest is None or facts.failing_since < longest):
                longest = facts.failing_since
        now = datetime.now(UTC)
        family = GaugeMetricFamily("feedhub_sources", "Configured sources by state (as "
                                   "`feedhub status` says)", labels=["state"])
        for name, count in states.items():
            family.add_metric([name], count)
        yield family
        yield GaugeMetricFamily("feedhub_oldest_success_age_seconds", "Seconds since the last "
                                "good poll of the source that has gone longest without one "
                                "(retired and never-polled sources left out)",
                                value=_age(oldest, now))
        yield GaugeMetricFamily("feedhub_longest_failing_seconds", "Seconds the longest-failing "
                                "source has been failing (0: none fails)", value=_age(longest, now))
        family = GaugeMetricFamily("feedhub_items_withdrawn", "Items withdrawn by takedowns "
                                   "(`feedhub withdraw`), by language group", labels=["language"])
        by_label: dict[str, int] = {}
        for group, count in withdrawn.items():
            by_label[language_label(group)] = by_label.get(language_label(group), 0) + count
        for label, count in sorted(by_label.items()):
            family.add_metric([label], count)
        yield family
        yield GaugeMetricFamily("feedhub_database_size_bytes", "The SQLite database and its "
                                "write-ahead log on disk (PostgreSQL: pg_database_size)", value=size)
        if (newest := _newest_feed(self.output_dir())) is not None:
            yield GaugeMetricFamily("feedhub_last_published_timestamp_seconds", "When a "
                                    "language feed was last written (Unix time; feeds are "
                                    "rewritten only when they change)", value=newest)


def _age(since: str | None, now: datetime) -> float:
    return max(0.0, (now - datetime.fromisoformat(since)).total_seconds()) if since else 0.0


def _newest_feed(output: Path) -> float | None:
    """The newest modification time of the language feeds (the top-level
    .atom files; the all-languages feed changes with every language)."""
    newest = None
    try:
        for path in output.glob("*.atom"):
            try:
                mtime = path.stat().st_mtime
            except OSError:
                continue
            newest = mtime if newest is None else max(newest, mtime)
    except OSError:
        return None
    return newest

