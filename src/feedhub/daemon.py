"""`feedhub run`: poll each source on its own interval until told to stop.

apscheduler's AsyncIOScheduler decides when a source is due; each poll is an
asyncio task on the same loop as the shared HTTP client. A stop signal
pauses the scheduler, lets the polls in flight finish (bounded by a grace
period), then closes the database, so nothing is left half-written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from datetime import UTC, datetime, timedelta

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from feedhub.hub import Hub, make_fetcher
from feedhub.models import Config, SourceConfig
from feedhub.store import Store

log = logging.getLogger("feedhub.daemon")

GRACE_SECONDS = 10.0


def _jitter(interval: int) -> int:
    """Up to a tenth of the interval (at most 5 min), so sources added
    together do not fire together."""
    return max(0, min(interval // 10, 300))


class Daemon:
    def __init__(self, config: Config):
        self.config = config
        self.stopping = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        store = Store(self.config.hub.database)
        try:
            async with make_fetcher(self.config) as fetcher:
                hub = Hub(self.config, store, fetcher)
                hub.publish()
                scheduler = AsyncIOScheduler(timezone=UTC, job_defaults={
                    "coalesce": True, "misfire_grace_time": None, "max_instances": 1})
                states = {s.name: s for s in store.source_states(
                    [source.name for source in self.config.sources])}
                now = datetime.now(UTC)
                for source in self.config.sources:
                    interval = self.config.interval_of(source)
                    due = states[source.name].next_poll
                    first = due if due and due > now else now + timedelta(seconds=0.1)
                    scheduler.add_job(
                        self._poll_job, IntervalTrigger(seconds=interval, jitter=_jitter(interval),
                                                        timezone=UTC),
                        args=[hub, source], id=source.name, next_run_time=first)
                scheduler.start()
                log.info("feedhub running: %d sources, output %s", len(self.config.sources),
                         self.config.hub.output_dir)
                await self.stopping.wait()
                log.info("stopping: waiting up to %.0fs for %d polls in flight",
                         GRACE_SECONDS, len(self._tasks))
                scheduler.pause()
                await self._drain()
                scheduler.shutdown(wait=False)
        finally:
            store.close()
        log.info("stopped")

    async def _poll_job(self, hub: Hub, source: SourceConfig) -> None:
        if self.stopping.is_set():
            return
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            report = await hub.poll(source)
            if report.changed:
                hub.publish(report.languages)
        except Exception:
            log.exception("poll %s failed unexpectedly", source.name)
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]

    async def _drain(self) -> None:
        if not self._tasks:
            return
        _done, pending = await asyncio.wait(set(self._tasks), timeout=GRACE_SECONDS)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=2)

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        if self.stopping.is_set():
            log.warning("second %s: exiting now", signal.Signals(signum).name)
            logging.shutdown()
            os._exit(1)  # SQLite (WAL) and the atomic renames make this safe
        log.info("%s received", signal.Signals(signum).name)
        self.stopping.set()


def run(config: Config) -> None:
    async def main() -> None:
        daemon = Daemon(config)
        daemon.install_signal_handlers()
        await daemon.run()

    asyncio.run(main())
