"""When a source is next due: pure functions of what the last poll saw.

Kept apart from the daemon so the policy can be tested without a clock:
the configured interval plus jitter on success; exponential backoff on
failure, capped; Retry-After, Cache-Control max-age and RSS <ttl> may only
lengthen the delay, never shorten it below the interval.
"""

from __future__ import annotations

import math
import random
import re
from datetime import UTC, datetime, timedelta
from email.utils import parsedate_to_datetime

MAX_BACKOFF = 24 * 3600
MAX_HINT = 7 * 24 * 3600  # ignore hints that would silence a source for longer


def jitter(interval: int) -> float:
    """Up to a tenth of the interval (at most 5 minutes), so sources added
    together drift apart instead of firing together for ever."""
    return random.uniform(0, min(interval / 10, 300))


def backoff(interval: int, error_streak: int) -> int:
    """interval x 2^streak, capped at a day (never below the interval)."""
    if error_streak <= 0:
        return interval
    return max(interval, min(interval * 2 ** min(error_streak, 30), MAX_BACKOFF))


def retry_after(value: str | None, now: datetime) -> int | None:
    """Seconds to wait from a Retry-After header (delta-seconds or an HTTP
    date), `now` being when the answer arrived (both forms count from
    there). Rounded up: a poll a fraction of a second before the date is
    a poll before it."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(int(value), MAX_HINT)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0, min(math.ceil((when - now).total_seconds()), MAX_HINT))


def max_age(cache_control: str | None) -> int | None:
    if not cache_control:
        return None
    match = re.search(r"(?:^|[,\s])max-age\s*=\s*\"?(\d+)", cache_control, re.IGNORECASE)
    return min(int(match.group(1)), MAX_HINT) if match else None


def next_poll(now: datetime, interval: int, *, error_streak: int = 0,
              hints: tuple[int | None, ...] = (), add_jitter: bool = True) -> datetime:
    """The next poll time: backoff after errors, hints that lengthen it, jitter."""
    delay = float(backoff(interval, error_streak))
    delay = max([delay, *(h for h in hints if h is not None)])
    if add_jitter:
        delay += jitter(interval)
    return now + timedelta(seconds=delay)
