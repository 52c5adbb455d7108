"""What one /metrics scrape costs at 10,000 sources (the target: under 50 ms).

A store is filled directly through feedhub.store (no farm, no polling): 10,000
sources' states in every state `status` knows (ok, failing, retired,
degraded, empty, never polled), ITEMS items for each, some withdrawn. Then
/metrics is rendered by prometheus-client from the daemon's registry (the
store gauges are computed at every scrape), and fetched over HTTP from the
admin server; the status page is timed too, for information.

    python bench/scrape.py                      # 10,000 sources x 10 items
    python bench/scrape.py --sources 1000 --items 30 --scrapes 50
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace

from prometheus_client import generate_latest

from feedhub.admin import AdminServer, render_status, serve_in_thread
from feedhub.config import load_config
from feedhub.metrics import Metrics
from feedhub.models import Item
from feedhub.store import open_store

CONFIG = """[hub]
title = "Scrape bench"
base_url = "https://hub.example.org/feeds/"
database = "{root}/feedhub.db"
output_dir = "{root}/feeds"
"""


def fill(root: Path, sources: int, items: int) -> list[str]:
    names = [f"source-{n:05d}" for n in range(sources)]
    config = [CONFIG.format(root=root)]
    config += [f'[[sources]]\nname = "{name}"\nurl = "https://s{n}.example/feed.xml"\n'
               for n, name in enumerate(names)]
    (root / "config.toml").write_text("\n".join(config), encoding="utf-8")
    now = datetime.now(UTC)
    with open_store(root / "feedhub.db") as store, store.transaction():
        for n, name in enumerate(names):
            kind = n % 20
            if kind == 19:
                continue  # never polled: "new"
            at = now - timedelta(minutes=n % 600)
            error = "HTTP 500 Internal Server Error" if kind in (0, 1) else None
            changes: dict[str, object] = {"entries": 0 if kind == 2 else items}
            if kind == 3:
                changes["degraded"] = "not well-formed (invalid token): line 3, column 1"
            if kind == 4:
                error = changes["retired"] = "HTTP 410 Gone: the source is retired"
            store.record_poll(name, url=f"https://s{n}.example/feed.xml", at=at,
                              status=500 if error else 200, error=error,
                              next_poll=at + timedelta(hours=1), **changes)
            if items and kind != 2:
                language = ("en", "fa", "de", "ar")[n % 4]
                store.save_items(name, [Item(
                    upstream_id=f"{name}-{i}", title=f"{name} {i}", link=f"https://s{n}.example/{i}",
                    author=None, published=at - timedelta(hours=i * 7), published_estimated=False,
                    updated=None, content="<p>x</p>", content_is_full=True, language=language)
                    for i in range(items)], seen_at=at, id_authority="hub.example.org")
        for name in names[5:sources:97]:
            store.withdraw(name, now)
    return names


def timed(call: object, times: int) -> list[float]:
    took = []
    for _ in range(times):
        started = time.perf_counter()
        call()  # type: ignore[operator]
        took.append((time.perf_counter() - started) * 1000)
    return took


def summary(label: str, took: list[float]) -> None:
    took = sorted(took)
    print(f"{label}: median {statistics.median(took):.1f} ms, p95 "
          f"{took[int(len(took) * 0.95) - 1]:.1f} ms, max {took[-1]:.1f} ms "
          f"over {len(took)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sources", type=int, default=10_000)
    parser.add_argument("--items", type=int, default=10, help="items per source")
    parser.add_argument("--scrapes", type=int, default=30)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        started = time.perf_counter()
        fill(root, args.sources, args.items)
        config = load_config(root / "config.toml")
        (root / "feeds").mkdir()
        print(f"{args.sources:,} sources, {args.items} items each: store filled in "
              f"{time.perf_counter() - started:.1f} s; {sys.version.split()[0]}")
        metrics = Metrics()
        daemon = SimpleNamespace(config=config, metrics=metrics)
        server = AdminServer(("127.0.0.1", 0), daemon)  # type: ignore[arg-type]
        serve_in_thread(server)
        try:
            body = generate_latest(metrics.registry)
            print(f"/metrics: {len(body):,} bytes")
            summary("scrape (collect and render)", timed(
                lambda: generate_latest(metrics.registry), args.scrapes))
            url = f"http://127.0.0.1:{server.server_address[1]}"
            summary("scrape over HTTP", timed(
                lambda: urllib.request.urlopen(url + "/metrics").read(), args.scrapes))
            summary("status page (for information)", timed(
                lambda: render_status(server.templates, config, "state"), 3))
        finally:
            server.shutdown()
            server.server_close()


if __name__ == "__main__":
    main()
