"""WebSub publish pings: tell the hubs that a feed changed, so that they push
it to their subscribers instead of everyone polling feeds/.

A ping is `POST HUB` with the form `hub.mode=publish&hub.url=TOPIC`, one
request per topic per hub. That is the form every hub accepts. Superfeedr and
Google's pubsubhubbub.appspot.com also take several `hub.url` in one request,
but not all hubs do, and one topic a hub refuses would then fail the others.

A hub answers 202 or 204 (any 2xx): done. 429, a 5xx or no answer at all:
tried again after a pause (a reasonable Retry-After is waited for). Any other
status (a 4xx, or a 3xx: the configured URL is not the hub's endpoint):
given up at once, since asking again gets the same answer. Every outcome is
logged on "feedhub.websub". A lost ping loses nothing: the feed file is
written, subscribers still see the change at their next fetch of the feed.

Only fetch.py speaks HTTP: pings go through Fetcher.post_form, with its
address guard, deadline and User-Agent.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from feedhub import schedule
from feedhub.fetch import (
    BlockedAddressError,
    Fetcher,
    FetchError,
    InvalidURLError,
    describe_status,
)
from feedhub.models import FetchResult

if TYPE_CHECKING:
    from feedhub.metrics import Metrics

log = logging.getLogger("feedhub.websub")

Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one ping tries. `delays`: the pauses before the second,
    third... attempt (so attempts = len(delays) + 1). A hub's Retry-After
    lengthens a pause; one longer than `max_retry_after` ends the ping (the
    hub asked for quiet). `deadline`: seconds for all attempts and pauses
    together (None: each attempt is bounded by the fetcher's timeout only)."""

    delays: tuple[float, ...] = (10.0, 50.0)
    max_retry_after: float = 300.0
    deadline: float | None = None

    @property
    def attempts(self) -> int:
        return len(self.delays) + 1


# The daemon pings in the background: 3 attempts over about a minute.
DAEMON_POLICY = RetryPolicy()
# `feedhub poll` and `feedhub publish` wait for their pings: 3 attempts, all
# within 10 seconds, so that a hub that is down does not hold the command.
CLI_POLICY = RetryPolicy(delays=(1.0, 3.0), max_retry_after=5.0, deadline=10.0)


@dataclass(frozen=True)
class PingOutcome:
    hub: str
    topic: str
    ok: bool
    attempts: int
    detail: str  # "HTTP 204 No Content", or why the hub was not told


async def ping(fetcher: Fetcher, hub: str, topic: str, policy: RetryPolicy = DAEMON_POLICY,
               sleep: Sleep = asyncio.sleep) -> PingOutcome:
    """Tell `hub` that `topic` changed, retrying as `policy` says. Never
    raises for anything the hub does (cancellation passes through)."""
    loop = asyncio.get_running_loop()
    ends = None if policy.deadline is None else loop.time() + policy.deadline
    form = {"hub.mode": "publish", "hub.url": topic}
    attempt = 0
    while True:
        attempt += 1
        wait_asked: int | None = None
        try:
            async with asyncio.timeout_at(ends):
                result = await fetcher.post_form(hub, form)
        except TimeoutError:
            return _give_up(hub, topic, attempt, f"no answer within the {policy.deadline:g}s "
                                                 "a ping may take")
        except (BlockedAddressError, InvalidURLError) as exc:  # the setting decides, not time
            return _give_up(hub, topic, attempt, str(exc))
        except FetchError as exc:
            reason = str(exc)
        except Exception as exc:  # a bug: the ping is lost, not the command or the round
            log.error("websub: ping of %s for %s failed unexpectedly", hub, topic, exc_info=exc)
            return PingOutcome(hub, topic, False, attempt, f"unexpected error: "
                                                           f"{type(exc).__name__}: {exc}")
        else:
            if result.ok:
                log.info("websub: pinged %s for %s: %s%s", hub, topic, describe_status(result.status),
                         f" (attempt {attempt})" if attempt > 1 else "")
                return PingOutcome(hub, topic, True, attempt, describe_status(result.status))
            reason = _reason(result)
            if result.status != 429 and result.status < 500:
                return _give_up(hub, topic, attempt, f"{reason} (not retried: asking again "
                                                     "gets the same answer)")
            wait_asked = schedule.retry_after(result.headers.get("retry-after"), datetime.now(UTC))
        if attempt >= policy.attempts:
            return _give_up(hub, topic, attempt, f"{reason} (after {attempt} attempts)")
        wait = policy.delays[attempt - 1]
        if wait_asked is not None:
            if wait_asked > policy.max_retry_after:
                return _give_up(hub, topic, attempt, f"{reason}, and it asks to wait {wait_asked}s "
                                                     f"(Retry-After), over the {policy.max_retry_after:g}s "
                                                     "a ping waits")
            wait = max(wait, float(wait_asked))
        if ends is not None and loop.time() + wait >= ends:
            return _give_up(hub, topic, attempt, f"{reason} (no time left to retry within "
                                                 f"{policy.deadline:g}s)")
        log.warning("websub: ping of %s for %s failed: %s; retrying in %gs (attempt %d of %d)",
                    hub, topic, reason, wait, attempt, policy.attempts)
        await sleep(wait)


def _give_up(hub: str, topic: str, attempts: int, reason: str) -> PingOutcome:
    log.error("websub: gave up pinging %s for %s: %s", hub, topic, reason)
    return PingOutcome(hub, topic, False, attempts, reason)


def _reason(result: FetchResult) -> str:
    """The status, and what the hub says about it when it says it in plain
    text (pubsubhubbub.appspot.com does: 'Invalid value for hub.url')."""
    reason = describe_status(result.status)
    if 300 <= result.status < 400:
        location = result.headers.get("location", "")
        return f"{reason}: the hub's endpoint is elsewhere ({location}); put that URL in websub_hubs"
    text = " ".join(result.content[:400].decode("utf-8", "replace").split())
    if text and not text.startswith("<"):  # an HTML error page says nothing useful in a log line
        reason += f": {text[:200]}"
    return reason


async def ping_all(fetcher: Fetcher, hubs: Iterable[str], topics: Iterable[str],
                   policy: RetryPolicy = DAEMON_POLICY,
                   sleep: Sleep = asyncio.sleep, per_hub: int = 2) -> list[PingOutcome]:
    """Ping every hub for every topic, `per_hub` at a time to one hub (the
    fetcher's max_per_host): a ping's time limit starts when it is sent, not
    while it waits behind thirty others. With a `deadline` in the policy,
    the whole batch gets twice that; pings not done by then are reported
    as not sent (so a command's wait stays bounded however many feeds)."""
    topics = list(topics)
    turns: dict[str, asyncio.Semaphore] = {}

    async def one(hub: str, topic: str) -> PingOutcome:
        async with turns.setdefault(hub, asyncio.Semaphore(per_hub)):
            return await ping(fetcher, hub, topic, policy, sleep)

    tasks = {asyncio.ensure_future(one(hub, topic)): (hub, topic) for hub in hubs for topic in topics}
    if not tasks:
        return []
    batch = None if policy.deadline is None else 2 * policy.deadline
    _done, late = await asyncio.wait(tasks, timeout=batch)
    for task in late:
        task.cancel()
    if late:
        await asyncio.wait(late)
    return [task.result() if task not in late else _give_up(
        *tasks[task], 0, f"not sent: the {batch:g}s given to all pings ran out") for task in tasks]


@dataclass
class _Pending:
    task: asyncio.Task[None] | None = None
    waiting: bool = False  # in a pause between attempts, no request in flight
    again: bool = False  # republished while a request was in flight: ping once more


class Notifier:
    """The daemon's pings, as background tasks: polls and publishes never
    wait for a hub. There is at most one ping per (hub, topic): a publish
    of a topic whose ping is waiting to retry replaces it (fresh attempts);
    one whose request is in flight gets one more ping after it, so the hub
    never misses the newest change and nothing piles up."""

    def __init__(self, fetcher: Fetcher, policy: RetryPolicy = DAEMON_POLICY,
                 sleep: Sleep = asyncio.sleep, metrics: Metrics | None = None):
        self.fetcher = fetcher
        self.metrics = metrics
        self.policy = policy
        self._sleep = sleep
        self._pending: dict[tuple[str, str], _Pending] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def notify(self, hubs: Iterable[str], topics: Sequence[str]) -> None:
        for hub in hubs:
            for topic in topics:
                key = (hub, topic)
                current = self._pending.get(key)
                if current is not None and current.task is not None and current.task.done():
                    current = None  # finished; its clean-up callback has not run yet
                if current is not None and not current.waiting:
                    current.again = True
                    continue
                if current is not None:
                    assert current.task is not None
                    current.task.cancel()
                    log.info("websub: ping of %s for %s superseded by a newer publish", hub, topic)
                self._start(key)

    def _start(self, key: tuple[str, str]) -> None:
        pending = _Pending()
        pending.task = asyncio.create_task(self._run(key, pending), name=f"websub ping {key}")
        self._pending[key] = pending

        def done(_: asyncio.Task[None]) -> None:
            if self._pending.get(key) is pending:
                del self._pending[key]

        pending.task.add_done_callback(done)

    async def _run(self, key: tuple[str, str], pending: _Pending) -> None:
        hub, topic = key

        async def sleep(seconds: float) -> None:
            pending.waiting, pending.again = True, False  # the retry tells the hub anyway
            try:
                await self._sleep(seconds)
            finally:
                pending.waiting = False

        try:
            while True:
                outcome = await ping(self.fetcher, hub, topic, self.policy, sleep)
                if self.metrics is not None:
                    self.metrics.pings.labels("ok" if outcome.ok else "failed").inc()
                if not pending.again:
                    return
                pending.again = False
                log.info("websub: %s was published again while pinging %s: pinging once more",
                         topic, hub)
        except Exception:  # a bug must not end as "Task exception was never retrieved"
            log.exception("websub: ping of %s for %s failed unexpectedly", hub, topic)

    def forget(self, hubs: Iterable[str]) -> None:
        """Cancel the pings to hubs no longer configured."""
        keep = set(hubs)
        dropped = [p.task for (hub, _), p in self._pending.items() if hub not in keep and p.task]
        for task in dropped:
            task.cancel()
        if dropped:
            log.info("websub: cancelled %d pending pings to hubs no longer configured", len(dropped))

    async def aclose(self, grace: float = 0.0) -> None:
        """Give pending pings up to `grace` seconds, then cancel the rest:
        at shutdown, a ping waiting a minute to retry must not hold the exit."""
        tasks = [p.task for p in self._pending.values() if p.task is not None]
        if tasks and grace > 0:
            _done, still = await asyncio.wait(tasks, timeout=grace)
            tasks = list(still)
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("websub: cancelled %d pending pings (shutting down); feed readers still "
                     "see the changes at their next fetch", len(tasks))
