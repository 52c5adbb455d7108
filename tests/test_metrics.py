"""metrics.py in-process: seeding, bounded labels, and the store gauges
agreeing with `status` on a store filled by hand (the daemon test in
test_admin.py checks the same through the real CLI)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from feedhub.config import load_config
from feedhub.metrics import ERROR_KINDS, Metrics, language_label
from feedhub.models import PollReport, StoreOutcome
from feedhub.status import STATES, report
from feedhub.store import open_store
from hubdir import HubDir


def samples(metrics: Metrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_every_known_label_is_there_at_zero_and_registries_are_apart() -> None:
    first, second = Metrics(), Metrics()
    found = samples(first)
    for kind in ERROR_KINDS:
        assert found["feedhub_polls_total", (("kind", kind), ("outcome", "error"))] == 0
    for outcome in ("200", "304", "skipped"):
        assert found["feedhub_polls_total", (("kind", "none"), ("outcome", outcome))] == 0
    assert found["feedhub_config_reloads_total", (("outcome", "refused"),)] == 0
    assert not [name for name, _ in found if name.endswith("_created")]
    first.poll(PollReport("a", 200))
    first.poll(PollReport("a", 304))
    first.poll(PollReport("a", None, error="timed out after 5s", error_kind="timeout"))
    first.poll(PollReport("a", None, error="?", error_kind="made-up"))  # a kind nobody listed
    first.poll(PollReport("a", None, note="retired, not polled", retired=True))
    first.stored(StoreOutcome(2, 1, 0, {("new", "en"): 2, ("updated", "xx-Garbage!"): 1}))
    found = samples(first)
    assert found["feedhub_polls_total", (("kind", "none"), ("outcome", "200"))] == 1
    assert found["feedhub_polls_total", (("kind", "none"), ("outcome", "304"))] == 1
    assert found["feedhub_polls_total", (("kind", "timeout"), ("outcome", "error"))] == 1
    assert found["feedhub_polls_total", (("kind", "unexpected"), ("outcome", "error"))] == 1
    assert found["feedhub_polls_total", (("kind", "none"), ("outcome", "skipped"))] == 1
    assert found["feedhub_items_total", (("change", "new"), ("language", "en"))] == 2
    assert found["feedhub_items_total", (("change", "updated"), ("language", "other"))] == 1
    assert samples(second)["feedhub_polls_total", (("kind", "none"), ("outcome", "200"))] == 0


def test_language_labels_are_bounded() -> None:
    assert [language_label(v) for v in ("en", "fa", "fil", "und", None, "", "english",
                                        "EN", "x1", "a" * 40)] == [
        "en", "fa", "fil", "und", "other", "other", "other", "other", "other", "other"]


def test_store_gauges_agree_with_status(tmp_path: Path) -> None:
    hub = HubDir(tmp_path)
    names = ["ok", "failing", "retired", "degraded", "empty", "new"]
    with hub.config.open("a", encoding="utf-8") as config:
        for name in names:
            config.write(f'\n[[sources]]\nname = "{name}"\nurl = "https://{name}.example/f"\n')
    config = load_config(hub.config)
    now = datetime.now(UTC)
    hour = timedelta(hours=1)
    with open_store(config.hub.database) as store:
        def poll(name: str, at: datetime, error: str | None = None, **changes: object) -> None:
            store.record_poll(name, url=f"https://{name}.example/f", at=at, status=200,
                              error=error, next_poll=at + hour, **changes)
        poll("ok", now - 3 * hour, entries=2)
        poll("ok", now - hour, entries=2)
        poll("failing", now - 9 * hour, entries=1)  # its last good poll
        poll("failing", now - 7 * hour, "HTTP 500")  # the streak begins
        poll("failing", now - hour, "HTTP 500")
        poll("retired", now - 30 * hour, "HTTP 410 Gone", retired="gone")
        poll("degraded", now - hour, degraded="broken", entries=3)
        poll("empty", now - 2 * hour, entries=0)
        status = report(config, store)
    metrics = Metrics()
    metrics.watch_store(config.hub.database, lambda: [s.name for s in config.sources],
                        lambda: config.hub.output_dir)
    found = samples(metrics)
    for state in STATES:
        assert found["feedhub_sources", (("state", state),)] == status.summary[state] == (
            state in names)
    # 9 hours since failing's last good poll; failing for 7
    assert abs(found["feedhub_oldest_success_age_seconds", ()] - 9 * 3600) < 60
    assert abs(found["feedhub_longest_failing_seconds", ()] - 7 * 3600) < 60
    assert found["feedhub_database_size_bytes", ()] > 0
