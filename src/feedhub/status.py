"""What `feedhub status`, the admin /status page, /healthz and /metrics say
about the sources: one function decides a source's state, all of them use it.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, Protocol

from feedhub._files import DaemonLock
from feedhub.models import Config, SourceState
from feedhub.store import Store, open_store

STATES = ("ok", "degraded", "empty", "failing", "retired", "new")
NODE_SILENCE_SECONDS = 30.0  # a daemon not heard of for this long is gone (killed)


def config_hash(path: Path) -> str:
    """The sha256 of the config file's bytes, which each daemon records in
    the database: nodes shipped the same file agree; any edit, even of a
    comment, shows as a disagreement (the simple rule is the safe one)."""
    try:
        return hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError:
        return "unreadable"


def nodes_json(config: Config, store: Store, now: datetime) -> list[dict[str, Any]]:
    """The daemons running on the database (heard of lately), and whether
    each runs the config `config` is read from."""
    ours = config_hash(config.path)
    return [{"node": node.node, "hostname": node.hostname, "pid": node.pid,
             "config_hash": node.config_hash, "same_config": node.config_hash == ours,
             "started": node.started, "last_seen": node.last_seen}
            for node in store.live_nodes(now - timedelta(seconds=NODE_SILENCE_SECONDS))]
CHART_DAYS = 30  # the status page's charts: items per day over this many days


class _Facts(Protocol):
    """What source_health reads: a SourceState, or the SourceFacts of a scrape."""

    @property
    def retired(self) -> object: ...
    @property
    def last_poll(self) -> object: ...
    @property
    def error_count(self) -> int: ...
    @property
    def degraded(self) -> object: ...
    @property
    def entries(self) -> int | None: ...
    @property
    def items(self) -> int: ...


def source_health(state: _Facts) -> str:
    """One word per source, the first that applies: retired (410 Gone), new
    (never polled), failing (the last poll failed), degraded (stored what
    could be recovered from a broken document), empty (a well-formed feed
    with no entries: a source that yields nothing must not pass for ok), ok."""
    if state.retired:
        return "retired"
    if state.last_poll is None:
        return "new"
    if state.error_count:
        return "failing"
    if state.degraded:
        return "degraded"
    # no entry count from before schema 8: nothing stored says as much
    if state.entries == 0 or (state.entries is None and not state.items):
        return "empty"
    return "ok"


def source_reason(state: SourceState, health: str) -> str:
    """The error, else why the state is not ok (status's last column)."""
    if state.last_error:
        return state.last_error
    if health == "degraded":
        return state.degraded or ""
    if health == "empty":
        return "no entries in the feed"
    return ""


@dataclass(frozen=True)
class Report:
    """Every configured source's state, and what `status` adds to it."""

    states: list[SourceState]
    health: list[str]
    per_language: dict[str, int]
    fulltext: dict[str, tuple[int, str | None]]
    withdrawn: dict[str, tuple[int, str]]

    @property
    def summary(self) -> dict[str, Any]:
        return {"sources": len(self.states),
                **{key: self.health.count(key) for key in STATES},
                "items_per_language": self.per_language}

    def sources_json(self) -> list[dict[str, Any]]:
        """`status --json`'s sources."""
        fulltext, withdrawn = self.fulltext, self.withdrawn
        return [{
            "name": st.name, "url": st.url, "state": h, "last_poll": st.last_poll,
            "last_status": st.last_status, "error_streak": st.error_count,
            "last_error": st.last_error, "next_poll": None if st.retired else st.next_poll,
            "items": st.items, "entries": st.entries, "degraded": st.degraded,
            "retired": st.retired,
            "fulltext_failures": fulltext.get(st.name, (0, None))[0],
            "last_fulltext_failure": fulltext.get(st.name, (0, None))[1],
            "withdrawn_items": withdrawn.get(st.name, (0, None))[0],
            "withdrawn_at": withdrawn.get(st.name, (0, None))[1],
        } for st, h in zip(self.states, self.health, strict=True)]


def report(config: Config, store: Store) -> Report:
    names = [s.name for s in config.sources]
    states = store.source_states(names)
    return Report(states, [source_health(state) for state in states],
                  store.items_per_language(names), store.fulltext_failures(),
                  store.withdrawals())


def health(config: Config) -> dict[str, object]:
    """/healthz in detail (the admin address): ok when a daemon holds the
    database and no source is failing. Read-only: never waits for the write
    lock a publish holds (a Store migrates, and so takes it, when opened)."""
    running = DaemonLock.held(config.hub.local_files)
    with open_store(config.hub.database, reader=True) as store:
        states = store.source_states([s.name for s in config.sources])
    failing = [s.name for s in states if s.error_count and not s.retired]
    return {"status": "ok" if running and not failing else "degraded",
            "daemon_running": running, "sources": len(states),
            "failing": failing, "retired": [s.name for s in states if s.retired]}


def chart_days(today: date | None = None, days: int = CHART_DAYS) -> list[date]:
    """The days a chart shows, oldest first, today last (UTC)."""
    today = today or datetime.now(UTC).date()
    return [today - timedelta(days=n) for n in range(days - 1, -1, -1)]


def ago(when: datetime | None, now: datetime) -> str:
    """A time as `status` and /status show it: "3m ago", "in 2h", "never"."""
    if when is None:
        return "never"
    seconds = int((now - when).total_seconds())
    future, seconds = seconds < 0, abs(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            text = f"{seconds // size}{unit}"
            break
    else:
        text = f"{seconds}s"
    return f"in {text}" if future else f"{text} ago"
