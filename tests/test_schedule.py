"""The polling policy as pure functions: backoff, hints, jitter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from feedhub import schedule

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def test_backoff_doubles_per_failure_and_is_capped_at_a_day() -> None:
    assert [schedule.backoff(600, n) for n in range(6)] == [600, 1200, 2400, 4800, 9600, 19200]
    assert schedule.backoff(1800, 10) == 24 * 3600
    assert schedule.backoff(2 * 86400, 3) == 2 * 86400  # never below the interval


def test_retry_after_in_seconds_or_as_an_http_date() -> None:
    assert schedule.retry_after("120", NOW) == 120
    assert schedule.retry_after("Thu, 01 Jan 2026 12:05:00 GMT", NOW) == 300
    assert schedule.retry_after("Thu, 01 Jan 2026 11:00:00 GMT", NOW) == 0
    assert schedule.retry_after("soon", NOW) is None
    assert schedule.retry_after(None, NOW) is None
    assert schedule.retry_after("999999999", NOW) == schedule.MAX_HINT


def test_max_age_from_cache_control() -> None:
    assert schedule.max_age("public, max-age=3600") == 3600
    assert schedule.max_age('max-age="60", must-revalidate') == 60
    assert schedule.max_age("s-maxage=10, no-cache") is None
    assert schedule.max_age(None) is None


def test_hints_lengthen_but_never_shorten_the_interval() -> None:
    assert schedule.next_poll(NOW, 1800, hints=(60, None), add_jitter=False) == NOW + timedelta(
        seconds=1800)
    assert schedule.next_poll(NOW, 1800, hints=(7200,), add_jitter=False) == NOW + timedelta(
        seconds=7200)
    assert schedule.next_poll(NOW, 60, error_streak=2, hints=(30,), add_jitter=False) == (
        NOW + timedelta(seconds=240))


def test_jitter_only_delays_and_stays_within_a_tenth_of_the_interval() -> None:
    delays = [(schedule.next_poll(NOW, 600) - NOW).total_seconds() for _ in range(200)]
    assert all(600 <= d <= 660 for d in delays)
    assert len({round(d, 3) for d in delays}) > 100  # spread out, not all the same


def test_retry_after_rounds_up_so_the_next_poll_is_never_before_the_date() -> None:
    date = "Thu, 01 Jan 2026 12:00:10 GMT"  # 9.1 s after the answer: 10 s, not 9
    answered = NOW + timedelta(seconds=0.9)
    assert schedule.retry_after(date, answered) == 10
    assert schedule.retry_after(date, NOW + timedelta(seconds=9.999)) == 1
    assert schedule.retry_after(date, NOW + timedelta(seconds=10)) == 0
    due = schedule.next_poll(answered, 1, hints=(schedule.retry_after(date, answered),),
                             add_jitter=False)
    assert due >= NOW + timedelta(seconds=10)
