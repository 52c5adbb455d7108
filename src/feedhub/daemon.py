"""`feedhub run`: poll each source when it is due, until told to stop.

The store's `next_poll` is the one schedule: every poll computes the next
one (interval and jitter, backoff, Retry-After...), the store keeps it, and
the daemon sets a one-shot apscheduler job for that time. A restart therefore
resumes the schedule instead of polling everything at once.

config.toml is watched: sources added, removed or changed are picked up
within a couple of seconds; an edit that does not parse is logged and the
last good config is kept. Publishing is debounced, so a burst of polls
produces one regeneration per changed language. Each regeneration that
writes a feed pings the [hub] websub_hubs for it, in the background (see
websub.Notifier). A stop signal pauses the scheduler, lets polls in flight
finish (bounded), publishes what is pending, gives its pings a moment,
cancels the pings still pending and closes the database.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import signal
import socket
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.date import DateTrigger

from feedhub._files import DaemonLock
from feedhub.admin import AdminServer, serve_in_thread
from feedhub.config import ConfigError, load_config
from feedhub.hub import Hub, forked_parser_pool, make_fetcher, node_id
from feedhub.metrics import Metrics
from feedhub.models import Config, SourceConfig
from feedhub.publish import PublishedFeed
from feedhub.server import serve_in_process, stop_process
from feedhub.status import NODE_SILENCE_SECONDS, config_hash
from feedhub.store import open_store
from feedhub.websub import Notifier

log = logging.getLogger("feedhub.daemon")

GRACE_SECONDS = 10.0  # how long polls in flight may run on after a stop signal
RELOAD_CHECK_SECONDS = 1.0  # how often config.toml is looked at
PUBLISH_DEBOUNCE_SECONDS = 1.0  # changes within this window make one publish
PUBLISH_RETRY_SECONDS = 5.0  # after a failed publish (disk full, read-only)
FIRST_POLL_SPREAD = 5.0  # never-polled sources start within this many seconds
PARSER_WORKERS = os.cpu_count() or 1  # parsing is CPU-bound: one process per core
PING_GRACE_SECONDS = 2.0  # at a stop, how long WebSub pings may run on before they are cancelled


HEARTBEAT_SECONDS = 5.0  # how often a daemon tells the database it is alive
LOST_CLAIM_JITTER = 1.0  # a daemon that lost a claim looks again this much later, at most
CHANGES_CHECK_SECONDS = 1.0  # how often the change log is read (a shared database)
CHANGES_MARGIN = 200  # ids read again: one handed out earlier may commit after a later one


class CannotListen(Exception):
    """--serve or --admin names an address that cannot be bound (in use, not ours)."""


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.stopping = asyncio.Event()
        self._polls: set[asyncio.Task[None]] = set()
        self._dirty: set[str] = set()
        self._dirty_sources: set[str] = set()
        self._publish_all = False  # every language feed
        self._all_sources = False  # every per-source feed
        self._publisher: asyncio.Task[None] | None = None
        self._config_stamp = _stamp(config.path)
        self.metrics = Metrics()  # the admin address's /metrics
        self.metrics.seed_languages(config.languages)
        self.node = node_id()
        self.started = datetime.now(UTC)
        self._config_hash = config_hash(config.path)
        self._disagreeing: set[str] = set()  # nodes already warned about

    async def run(self, ready: Callable[[], None] = lambda: None) -> None:
        """`ready` is called once the parser workers are forked: threads
        started before would keep them from being (worker.parser_pool)."""
        # the parser workers before the store (see forked_parser_pool)
        with (DaemonLock(self.config.hub.local_files),
              forked_parser_pool(self.config, PARSER_WORKERS) as pool):
            store = open_store(self.config.hub.database)
            try:
                async with make_fetcher(self.config, store, self.node) as fetcher:
                    self.hub = Hub(self.config, store, fetcher, workers=PARSER_WORKERS,
                                   metrics=self.metrics, pool=pool)
                    notifier: Notifier | None = None
                    try:
                        self.notifier = notifier = Notifier(fetcher, metrics=self.metrics)
                        ready()
                        await self._serve()
                    finally:
                        if notifier is not None:  # already closed, unless _serve failed
                            await notifier.aclose()
                        self.hub.close()
            finally:
                store.close()
        log.info("stopped")

    async def _serve(self) -> None:
        # what other nodes stored from here on is published by this one too;
        # what they stored before, the full publish that follows covers
        self._change_seen = self.hub.store.last_change() if self.hub.store.shared else 0
        self._changes_handled: set[int] = set()
        self._publish_all = self._all_sources = True
        self._publish_now()  # the index files exist from the start (or the failure is logged)
        self.scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={
            "coalesce": True, "misfire_grace_time": None, "max_instances": 1})
        self.scheduler.start()
        for source in self.config.sources:
            self._schedule_from_state(source)
        watcher = asyncio.create_task(self._watch_config())
        self._heartbeat()
        beat = asyncio.create_task(self._beat())
        changes = asyncio.create_task(self._watch_changes()) if self.hub.store.shared else None
        log.info("feedhub running: node %s, %d sources, config %s (sha256 %s), output %s",
                 self.node, len(self.config.sources), self.config.path,
                 self._config_hash[:12], self.config.hub.output_dir)
        await self.stopping.wait()

        log.info("stopping: %d polls in flight, waiting up to %.0fs", len(self._polls),
                 GRACE_SECONDS)
        self.scheduler.pause()
        watcher.cancel()
        beat.cancel()
        if changes is not None:
            changes.cancel()
        await self._drain()
        with contextlib.suppress(Exception):  # the database gone: the row ages out
            self.hub.store.node_gone(self.node)
        self.scheduler.shutdown(wait=False)
        if self._publisher is not None:
            self._publisher.cancel()
        self._publish_now()
        await self.notifier.aclose(grace=PING_GRACE_SECONDS)

    # --- scheduling ----------------------------------------------------------

    def _schedule(self, source: SourceConfig, when: datetime) -> None:
        self.scheduler.add_job(self._poll_job, DateTrigger(run_date=when, timezone=UTC),
                               args=[source.name], id=source.name, replace_existing=True)

    def _schedule_from_state(self, source: SourceConfig) -> None:
        state = self.hub.store.source_state(source.name)
        if state.retired and state.url == source.url:
            log.info("source %s is retired (%s): not polling it", source.name, state.retired)
            return
        now = datetime.now(UTC)
        due = state.next_poll
        if due is None or due < now or state.url != source.url:
            spread = min(self.config.interval_of(source) / 10, FIRST_POLL_SPREAD)
            due = now + timedelta(seconds=random.uniform(0, spread))
        self._schedule(source, due)

    def _unschedule(self, name: str) -> None:
        if self.scheduler.get_job(name) is not None:
            self.scheduler.remove_job(name)

    async def _poll_job(self, name: str) -> None:
        source = self.config.find_source(name)
        if source is None or self.stopping.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        next_poll = None
        claimed = False
        try:
            claimed = self._claim(source)
            if not claimed:  # another daemon polls it: look again when it can next be due
                next_poll = self._after_lost_claim(name)
        except Exception:
            log.exception("claiming %s failed; trying again later", name)
        if not claimed:
            task.add_done_callback(lambda _: self._schedule_next(name, next_poll))
            return
        self._polls.add(task)
        renewer = asyncio.create_task(self._renew(name))
        recorded = False
        try:
            report = await self.hub.poll(source)
            recorded = True  # record_poll ended the claim
            next_poll = report.next_poll
            if report.changed:
                self._request_publish(report.languages, [name])
            if report.retired:
                return
        except Exception:
            log.exception("poll %s failed unexpectedly; trying again later", name)
        finally:
            self._polls.discard(task)
            renewer.cancel()
            if not recorded:  # failed or cancelled: another daemon may take it now
                with contextlib.suppress(Exception):
                    self.hub.store.release(name, node=self.node)
        # Schedule the next poll once this run is over, not from inside it:
        # apscheduler counts this run against the job's max_instances until
        # its task is done, and a next poll already due (a poll that took
        # longer than its interval) would be skipped as a second instance --
        # and a one-shot job skipped is gone: the source never polled again.
        # Done callbacks run in the order they were added, the executor's
        # (which ends the run) first.
        task.add_done_callback(lambda _: self._schedule_next(name, next_poll))

    def _claim(self, source: SourceConfig) -> bool:
        """Lease `source` to this daemon for the poll about to start: on
        PostgreSQL another daemon may have polled it already, or be polling
        it; on SQLite (one daemon) the claim always succeeds."""
        now = datetime.now(UTC)
        return self.hub.store.claim(source.name, url=source.url, node=self.node, now=now,
                                    until=now + timedelta(seconds=self.config.hub.claim_lease))

    def _after_lost_claim(self, name: str) -> datetime:
        """When a source another daemon claimed can next be due: its new
        next_poll once the winner recorded its poll, else when the winner's
        lease runs out (the winner died) -- plus a little jitter, so the
        losers do not all ask again at the same instant."""
        now = datetime.now(UTC)
        state = self.hub.store.source_state(name)
        when = state.next_poll if state.next_poll and state.next_poll > now else now
        if (held := self.hub.store.lease(name)) is not None and held[0] != self.node:
            when = max(when, held[1])
        return when + timedelta(seconds=random.uniform(0.1, LOST_CLAIM_JITTER))

    async def _renew(self, name: str) -> None:
        """While a poll runs, keep its claim: renewed every third of the lease."""
        lease = self.config.hub.claim_lease
        while True:
            await asyncio.sleep(lease / 3)
            try:
                if not self.hub.store.renew(name, node=self.node, until=datetime.now(UTC)
                                            + timedelta(seconds=lease)):
                    log.warning("claim on %s lost while polling it (lease %.0fs)", name, lease)
                    return
            except Exception:
                log.exception("renewing the claim on %s failed", name)

    async def _watch_changes(self) -> None:
        """Publish what the other nodes stored, as if this node had polled it:
        every node's feeds/ then show the same items (several nodes behind a
        load balancer). The log is read from a little before the highest id
        seen, and each id is handled once."""
        while True:
            await asyncio.sleep(CHANGES_CHECK_SECONDS)
            try:
                rows = self.hub.store.changes_after(max(0, self._change_seen - CHANGES_MARGIN))
            except Exception as exc:
                log.warning("could not read the change log: %s", exc)
                continue
            own, handled = self.hub.own_changes, self._changes_handled
            for change, languages, sources in rows:
                if change in handled:
                    continue
                handled.add(change)
                if change not in own:
                    self._request_publish(languages, sources)
            if rows:
                self._change_seen = max(self._change_seen, rows[-1][0])
                floor = self._change_seen - CHANGES_MARGIN
                own.difference_update([c for c in own if c <= floor])
                handled.difference_update([c for c in handled if c <= floor])

    # --- nodes ---------------------------------------------------------------

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            self._heartbeat()

    def _heartbeat(self) -> None:
        """Tell the database this node is alive and which config it runs;
        warn (once per node) of a live node running another config."""
        now = datetime.now(UTC)
        try:
            store = self.hub.store
            store.node_seen(self.node, hostname=socket.gethostname(), pid=os.getpid(),
                            config_hash=self._config_hash, started=self.started, at=now)
            nodes = store.live_nodes(now - timedelta(seconds=NODE_SILENCE_SECONDS))
        except Exception as exc:  # the database away for a moment: the next beat
            log.warning("heartbeat failed: %s", exc)
            return
        for node in nodes:
            if node.config_hash == self._config_hash:
                self._disagreeing.discard(node.node)
            elif node.node not in self._disagreeing:
                self._disagreeing.add(node.node)
                log.warning("node %s (%s, pid %d) runs another config (sha256 %s, ours %s): "
                            "ship the same config.toml to every node", node.node, node.hostname,
                            node.pid, node.config_hash[:12], self._config_hash[:12])

    def _schedule_next(self, name: str, due: datetime | None) -> None:
        current = self.config.find_source(name)
        if current is not None and not self.stopping.is_set():
            interval = self.config.interval_of(current)
            self._schedule(current, due or datetime.now(UTC) + timedelta(seconds=interval))

    async def _drain(self) -> None:
        if not self._polls:
            return
        _done, pending = await asyncio.wait(set(self._polls), timeout=GRACE_SECONDS)
        for task in pending:
            task.cancel()
        if pending:
            log.warning("cancelled %d polls still running after %.0fs", len(pending),
                        GRACE_SECONDS)
            await asyncio.wait(pending, timeout=2)

    # --- publishing ----------------------------------------------------------

    def _request_publish(self, languages: Iterable[str] | None,
                         sources: Iterable[str] | None = ()) -> None:
        """Publish soon: changes within the debounce window are published
        together, once per language and per source feed. None: every
        language, every source."""
        self._mark(languages, sources)
        if self._publisher is None or self._publisher.done():
            self._publisher = asyncio.create_task(self._publish_later())

    async def _publish_later(self) -> None:
        await asyncio.sleep(PUBLISH_DEBOUNCE_SECONDS)
        self._publish_now()

    def _publish_now(self) -> None:
        if not (self._dirty or self._publish_all or self._dirty_sources or self._all_sources):
            return
        languages = None if self._publish_all else set(self._dirty)
        sources = None if self._all_sources else set(self._dirty_sources)
        self._dirty.clear()
        self._dirty_sources.clear()
        self._publish_all = self._all_sources = False
        try:
            published = self.hub.publish(languages, sources, wait=False)
        except OSError as exc:
            if isinstance(exc, BlockingIOError):  # a CLI command is publishing: never block
                log.info("another process is publishing; publishing again in %.0fs",
                         PUBLISH_RETRY_SECONDS)
            else:  # disk full, read-only output: the old files stay whole (atomic replace)
                log.error("publishing failed, previous feed files kept; retrying in %.0fs: %s",
                          PUBLISH_RETRY_SECONDS, exc)
            self._mark(languages, sources)  # polling goes on; publishing is tried again
            if not self.stopping.is_set():
                asyncio.get_running_loop().call_later(
                    PUBLISH_RETRY_SECONDS, self._request_publish, (), ())
            return
        self._ping(published)

    def _mark(self, languages: Iterable[str] | None, sources: Iterable[str] | None) -> None:
        """Remember what the next publish must write."""
        if languages is None:
            self._publish_all = True
        else:
            self._dirty.update(languages)
        if sources is None:
            self._all_sources = True
        else:
            self._dirty_sources.update(sources)

    def _ping(self, published: list[PublishedFeed]) -> None:
        """Tell the WebSub hubs about the feeds just written, in the
        background; the hub list is read now, so a config reload applies."""
        topics = [feed.url for feed in published if feed.written and feed.url]
        if topics and self.config.hub.websub_hubs:
            self.notifier.notify(self.config.hub.websub_hubs, topics)

    # --- config reload -------------------------------------------------------

    async def _watch_config(self) -> None:
        templates = _templates_stamp(self.config.hub.templates)
        while True:
            await asyncio.sleep(RELOAD_CHECK_SECONDS)
            if (now := _templates_stamp(self.config.hub.templates)) != templates:
                # an operator edited a template: every page, not only the
                # next ones to change (archive pages keep theirs; README)
                templates = now
                log.info("templates changed: publishing every page again")
                self._request_publish(None, None)
            stamp = _stamp(self.config.path)
            if stamp == self._config_stamp:
                continue
            self._config_stamp = stamp
            try:
                new = load_config(self.config.path)
            except ConfigError as exc:
                log.error("config change ignored, keeping the last good config: %s", exc)
                self.metrics.reloads.labels("refused").inc()
                continue
            self._apply(new)
            self._config_hash = config_hash(self.config.path)
            self._disagreeing.clear()
            self._heartbeat()
            self.metrics.reloads.labels("ok").inc()

    def _apply(self, new: Config) -> None:
        old = self.config
        old_sources = {s.name: s for s in old.sources}
        new_sources = {s.name: s for s in new.sources}
        self.config = self.hub.config = new
        added = [s for name, s in new_sources.items() if name not in old_sources]
        removed = [name for name in old_sources if name not in new_sources]
        changed = [s for name, s in new_sources.items()
                   if name in old_sources and old_sources[name] != s]
        for name in removed:
            self._unschedule(name)
        for source in added + changed:
            self._schedule_from_state(source)
        if old.hub.websub_hubs != new.hub.websub_hubs:
            self.notifier.forget(new.hub.websub_hubs)
            log.info("config: WebSub hubs now %s", ", ".join(new.hub.websub_hubs) or "none")
        if _fetch_settings(old) != _fetch_settings(new):
            log.warning("config: [hub] network settings changed; they apply after a restart")
        log.info("config reloaded: %d sources (%d added, %d removed, %d changed)",
                 len(new.sources), len(added), len(removed), len(changed))
        # removed sources leave the language feeds; titles may change. A
        # per-source feed is rendered again only if its source changed,
        # unless [hub] or [languages] did (titles, credits): at 10,000
        # sources, rendering them all costs half a minute
        settings_changed = old.hub != new.hub or old.languages != new.languages
        self._request_publish(None, None if settings_changed else
                              [source.name for source in added + changed])

    # --- signals -------------------------------------------------------------

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        if self.stopping.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(1)  # SQLite (WAL) and atomic renames make this safe
        log.info("%s received", signal.Signals(signum).name)
        self.stopping.set()


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return (stat.st_mtime_ns, stat.st_size, stat.st_ino)


def _templates_stamp(directory: Path | None) -> tuple[tuple[str, int, int], ...]:
    """What says an operator's templates changed: each file's name, time
    and size (a directory of a few files, read every RELOAD_CHECK_SECONDS)."""
    if directory is None:
        return ()
    try:
        return tuple(sorted((str(path), stat.st_mtime_ns, stat.st_size)
                            for path in directory.rglob("*")
                            if path.is_file() and (stat := path.stat())))
    except OSError:
        return ()


def _fetch_settings(config: Config) -> tuple[object, ...]:
    hub = config.hub
    return (hub.user_agent, hub.contact, hub.timeout, hub.max_response_bytes,
            hub.max_connections, hub.max_per_host, hub.allow_private_networks, hub.host_spacing)


def run(config_path: Path, serve: tuple[str, int] | None = None,
        admin: tuple[str, int] | None = None) -> None:
    """Load the config and run until stopped, serving feeds/ over HTTP too
    when `serve` is an address, and /metrics, /status and the detailed
    /healthz when `admin` is one (see feedhub.admin). ConfigError and
    AlreadyRunning propagate to the CLI, which turns them into exit codes."""
    config = load_config(config_path)

    async def main() -> None:
        daemon = Daemon(config)
        daemon.install_signal_handlers()
        bound: list[AdminServer] = []
        serving: list[AdminServer] = []
        child = None

        def serve_admin() -> None:
            for server in bound:
                serve_in_thread(server)
                serving.append(server)

        try:
            if serve:
                # the server is a child process: find a taken address here,
                # where it can still be said which option names it
                _listen("--serve", serve, lambda: _bindable(serve))
                child = serve_in_process(config_path, serve)
            if admin:
                bound.append(_listen("--admin", admin, lambda: AdminServer(admin, daemon)))
            # the admin thread starts once the parser workers are forked (Hub)
            await daemon.run(ready=serve_admin)
        finally:
            for server in serving:
                server.shutdown()
            for server in bound:
                server.server_close()
            if child is not None:
                stop_process(child)

    asyncio.run(main())


def _bindable(address: tuple[str, int]) -> None:
    """Raise OSError if nothing could listen on `address` now."""
    family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind(address)


def _listen(option: str, address: tuple[str, int], start: Callable[[], Any]) -> Any:
    try:
        return start()
    except OSError as exc:
        raise CannotListen(f"cannot listen on {address[0]}:{address[1]} ({option}): "
                           f"{exc.strerror or exc}") from None
