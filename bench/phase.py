"""One benchmark phase in a fresh process, so that wall time, CPU time and
peak memory belong to that system alone. Prints one JSON object.

    python bench/phase.py feedhub {cold,noop,incremental,publish,publish-noop} WORKDIR URLS_FILE
    python bench/phase.py reader  {cold,noop,incremental} WORKDIR URLS_FILE

Run by bench/run.py; see bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import sys
import time
from pathlib import Path

WORKERS_READER = 4


def feedhub_config(workdir: Path, urls: list[str]) -> Path:
    lines = [
        "[hub]",
        'title = "bench"',
        'base_url = "https://bench.example.org/feeds/"',
        "allow_private_networks = true  # the farm is on 127.0.0.1",
        "host_spacing = 0               # one farm host stands in for a thousand sites",
        "max_per_host = 4               # as many connections as reader gets (workers=4)",
        "max_connections = 20",
        'timeout = "60s"',
        "",
    ]
    for n, url in enumerate(urls):
        # no article pages: the farm's item links name hosts that do not
        # exist (a lookup would leave 127.0.0.1), and reader fetches none either
        lines += ["[[sources]]", f'name = "s{n}"', f'url = "{url}"', 'fulltext = "never"', ""]
    path = workdir / "config.toml"
    if not path.exists():
        path.write_text("\n".join(lines), encoding="utf-8")
    return path


def run_feedhub(phase: str, workdir: Path, urls: list[str]) -> dict[str, object]:
    from feedhub.config import load_config
    from feedhub.hub import Hub, make_fetcher
    from feedhub.store import Store

    config = load_config(feedhub_config(workdir, urls))
    result: dict[str, object] = {}

    async def poll() -> None:
        with Store(config.hub.database) as store:
            async with make_fetcher(config) as fetcher:
                hub = Hub(config, store, fetcher, workers=os.cpu_count() or 1)
                try:
                    reports = await hub.poll_many(config.sources)
                    # forkserver workers are not our children: read them from /proc
                    result.update(worker_usage(hub.executor))
                finally:
                    hub.close()
        result["new"] = sum(r.new for r in reports)
        result["updated"] = sum(r.updated for r in reports)
        result["errors"] = [r.error for r in reports if r.error][:5]
        result.update(database_size(config.hub.database))

    def publish() -> None:
        with Store(config.hub.database) as store:
            feeds = Hub(config, store, None).publish()  # type: ignore[arg-type]
        result["languages"] = len(feeds)
        result["written"] = sum(f.written for f in feeds)
        result["entries"] = sum(f.entries for f in feeds)

    if phase == "publish":
        shutil.rmtree(config.hub.output_dir, ignore_errors=True)
    started = time.perf_counter()
    if phase.startswith("publish"):
        publish()
    else:
        asyncio.run(poll())
    result["wall"] = time.perf_counter() - started
    return result


def database_size(path: Path) -> dict[str, int]:
    """The database file (WAL checkpointed: every connection is closed) and
    its items, for bytes per item."""
    import sqlite3

    with contextlib.closing(sqlite3.connect(path)) as db:
        items = db.execute("SELECT count(*) FROM items").fetchone()[0]
    return {"db_bytes": Path(path).stat().st_size, "db_items": items}


def worker_usage(executor: object) -> dict[str, float]:
    cpu, peak = 0.0, 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    for pid in getattr(executor, "_processes", {}) or {}:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / ticks
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    peak = max(peak, int(line.split()[1]) / 1024)
        except OSError:
            pass
    return {"worker_cpu": cpu, "worker_peak_rss_mb": peak}


def run_reader(phase: str, workdir: Path, urls: list[str]) -> dict[str, object]:
    from reader import make_reader

    reader = make_reader(str(workdir / "reader.sqlite"))
    started = time.perf_counter()
    if phase == "cold":
        for url in urls:
            reader.add_feed(url, exist_ok=True)
    before = reader.get_entry_counts().total
    reader.update_feeds(workers=WORKERS_READER, scheduled=False)  # every feed, like poll --all
    wall = time.perf_counter() - started
    return {"wall": wall, "new": reader.get_entry_counts().total - before}


def main() -> None:
    system, phase, workdir, urls_file = sys.argv[1:5]
    urls = Path(urls_file).read_text().split()
    run = run_feedhub if system == "feedhub" else run_reader
    profile = os.environ.get("BENCH_PROFILE")  # a path: write cProfile stats of this phase there
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        result = profiler.runcall(run, phase, Path(workdir), urls)
        profiler.dump_stats(f"{profile}.{system}.{phase}")
    else:
        result = run(phase, Path(workdir), urls)
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    result.update(
        cpu=own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime
        + float(result.get("worker_cpu", 0.0)),  # type: ignore[arg-type]
        peak_rss_mb=own.ru_maxrss / 1024,
        peak_rss_worker_mb=max(children.ru_maxrss / 1024,
                               float(result.get("worker_peak_rss_mb", 0.0))),  # type: ignore[arg-type]
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
