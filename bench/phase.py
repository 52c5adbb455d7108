"""One benchmark phase in a fresh process, so that wall time, CPU time and
peak memory belong to that system alone. Prints one JSON object.

    python bench/phase.py feedhub  {cold,noop,...,publish,publish-noop} WORKDIR URLS_FILE
    python bench/phase.py reader   {cold,noop,...} WORKDIR URLS_FILE
    python bench/phase.py newsboat {cold,noop,...} WORKDIR URLS_FILE

Every phase but publish and publish-noop is one poll of every URL in
URLS_FILE; what the farm changed before it is run.py's business. The
database is WORKDIR's (the real-content phase gets its own WORKDIR).

Run by bench/run.py; see bench/README.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import resource
import shutil
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import replace
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
    from feedhub.hub import Hub, forked_parser_pool, make_fetcher
    from feedhub.store import open_store

    config = load_config(feedhub_config(workdir, urls))
    result: dict[str, object] = {}

    async def poll() -> None:
        workers = os.cpu_count() or 1
        # the workers before the store, as `feedhub poll` makes them
        with forked_parser_pool(config, workers) as pool, open_store(config.hub.database) as store:
            async with make_fetcher(config) as fetcher:
                hub = Hub(config, store, fetcher, workers=workers, pool=pool)
                meter = WorkerMeter()
                try:
                    reports = await hub.poll_many(config.sources)
                    if phase == "cold":  # "until the feeds exist": the first publish too,
                        started = time.perf_counter()  # as `feedhub poll` does it
                        begun = time.monotonic()  # Hub.feeds_done_at's clock
                        hub.publish(release_workers=True)
                        result["publish_wall"] = time.perf_counter() - started
                        if hub.feeds_done_at is not None:  # its Atom documents, before its pages
                            result["feeds_wall"] = hub.feeds_done_at - begun
                finally:
                    hub.close()
                    result.update(meter.stop())
        result["new"] = sum(r.new for r in reports)
        result["stored"] = count(config.hub.database, "items")
        result["updated"] = sum(r.updated for r in reports)
        result["errors"] = [r.error for r in reports if r.error][:5]
        result["db_bytes"] = db_bytes(config.hub.database)

    def publish() -> None:
        meter = WorkerMeter()
        with open_store(config.hub.database) as store:
            hub = Hub(config, store, None)  # type: ignore[arg-type]
            begun = time.monotonic()
            try:
                feeds = hub.publish()
            finally:
                result.update(meter.stop())
            if hub.feeds_done_at is not None:  # its Atom documents, before their copies and pages
                result["feeds_wall"] = hub.feeds_done_at - begun
        result["languages"] = len(feeds)
        result["written"] = sum(f.written for f in feeds)
        result["entries"] = sum(f.entries for f in feeds)

    if phase == "publish-feeds":  # the feeds alone, no HTML pages (issue 13's measure)
        config = replace(config, hub=replace(config.hub, pages=False))
    aside = None
    if phase in ("publish", "publish-feeds"):
        aside = clear_output(config.hub.output_dir, workdir / ".output-deleted")
    started, before = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    if phase.startswith("publish"):
        publish()
    else:
        asyncio.run(poll())
    result["wall"] = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)  # this process's, the timed part only
    result["user"] = round(after.ru_utime - before.ru_utime, 2)
    result["sys"] = round(after.ru_stime - before.ru_stime, 2)
    if aside is not None:
        result["waited"] = aside[1]
        delete_output(aside[0], workdir / ".output-deleted")
    return result


# ext4 without a journal (this VM's /) does not reuse an inode freed less than
# 60 s ago (300 s more while its inode table block is dirty): creating a file
# then looks up the buffer of every such inode it passes over, and creating
# thousands of files right after deleting thousands cost publishing 30% of its
# samples (perf record -g: ext4_create -> find_inode_bit -> recently_deleted).
# A journaled ext4, XFS or tmpfs does not do this, so the publish phases time
# what a production output directory costs: the old output is moved aside
# (a rename frees no inode), deleted after the timed part and synced, and the
# next publish phase waits until its inodes are old enough (bench/README.md).
RECENTLY_DELETED = 65.0  # seconds


def clear_output(output: Path, marker: Path) -> tuple[Path, float]:
    """Move the output directory aside, first waiting until the inodes of the
    last one deleted are free for reuse; returns the aside path and the wait."""
    aside = output.with_name(output.name + ".old")
    if aside.exists():  # left by a run that was stopped
        delete_output(aside, marker)
    waited = 0.0
    with contextlib.suppress(FileNotFoundError):
        waited = max(0.0, marker.stat().st_mtime + RECENTLY_DELETED - time.time())
    if waited:
        print(f"waiting {waited:.0f} s for the last output's inodes to age", file=sys.stderr)
        time.sleep(waited)
    with contextlib.suppress(FileNotFoundError):
        output.rename(aside)
    return aside, waited


def delete_output(aside: Path, marker: Path) -> None:
    if aside.exists():
        shutil.rmtree(aside)
        os.sync()  # clean inode table blocks: 60 s until their inodes are reused, not 360
        marker.touch()


class WorkerMeter:
    """CPU time and peak RSS of feedhub's worker processes (the parser
    workers, a publish's document workers, a forkserver if any), read from
    /proc every 0.1 s while the phase runs: a forkserver's workers are not
    our children, so their CPU time is not in RUSAGE_CHILDREN (or is, with
    the forkserver's, once a publish stops it); forked workers' peak RSS
    counts the pages they share with us; and a publish ends them before
    the phase does (the last tenth of a second of a worker's CPU may be
    missed)."""

    def __init__(self) -> None:
        self.cpu: dict[int, float] = {}
        self.peak = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        ticks = os.sysconf("SC_CLK_TCK")
        while True:
            parents: dict[int, int] = {}
            stats: dict[int, list[str]] = {}
            for entry in os.scandir("/proc"):
                if entry.name.isdigit():
                    try:
                        fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
                    except OSError:
                        continue
                    parents[int(entry.name)], stats[int(entry.name)] = int(fields[1]), fields
            for pid, fields in stats.items():
                ancestor = parents.get(pid)
                while ancestor and ancestor != os.getpid():  # our descendants
                    ancestor = parents.get(ancestor)
                if not ancestor:
                    continue
                self.cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks
                try:
                    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if line.startswith("VmHWM:"):
                            self.peak = max(self.peak, int(line.split()[1]) / 1024)
                except OSError:
                    pass
            if self.done.wait(0.1):
                return

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.thread.join()
        return {"worker_cpu": sum(self.cpu.values()), "worker_peak_rss_mb": self.peak}


def run_reader(phase: str, workdir: Path, urls: list[str]) -> dict[str, object]:
    from reader import make_reader

    reader = make_reader(str(workdir / "reader.sqlite"))
    started = time.perf_counter()
    if phase in ("cold", "real"):  # the real phase polls sources it has not seen
        for url in urls:
            reader.add_feed(url, exist_ok=True)
    before = reader.get_entry_counts().total
    reader.update_feeds(workers=WORKERS_READER, scheduled=False)  # every feed, like poll --all
    wall = time.perf_counter() - started
    stored = reader.get_entry_counts().total
    reader.close()
    return {"wall": wall, "new": stored - before, "stored": stored,
            "db_bytes": db_bytes(workdir / "reader.sqlite")}


def newsboat_config(workdir: Path) -> Path:
    """newsboat's defaults but reload-threads = 4 (reader's workers=4, feedhub's
    max_per_host = 4); it keeps every item (max-items 0, the default) and
    sends If-None-Match / If-Modified-Since (its default)."""
    path = workdir / "newsboat.conf"
    path.write_text("reload-threads 4\nmax-items 0\nshow-read-feeds yes\n", encoding="utf-8")
    return path


def run_newsboat(phase: str, workdir: Path, urls: list[str]) -> dict[str, object]:
    cache = workdir / "cache.db"
    (workdir / "urls").write_text("".join(u + "\n" for u in urls), encoding="utf-8")
    (workdir / "home").mkdir(exist_ok=True)
    before = count(cache, "rss_item") if cache.exists() else 0
    command = [shutil.which("newsboat") or "newsboat", "-u", str(workdir / "urls"),
               "-c", str(cache), "-C", str(newsboat_config(workdir)), "-x", "reload"]
    started = time.perf_counter()
    out = subprocess.run(command, env={**os.environ, "HOME": str(workdir / "home")},
                         capture_output=True, text=True, check=False)
    wall = time.perf_counter() - started
    if out.returncode != 0:
        raise SystemExit(f"newsboat exited {out.returncode}: {out.stderr[-2000:]}")
    stored = count(cache, "rss_item")
    return {"wall": wall, "new": stored - before, "stored": stored, "db_bytes": db_bytes(cache)}


def count(database: Path, table: str) -> int:
    with contextlib.closing(sqlite3.connect(f"file:{database}?mode=ro", uri=True)) as db:
        return int(db.execute(f"SELECT count(*) FROM {table}").fetchone()[0])


def db_bytes(database: Path) -> int:
    """The database with its WAL, if any."""
    return sum(p.stat().st_size for p in (database, Path(f"{database}-wal")) if p.exists())


def main() -> None:
    system, phase, workdir, urls_file = sys.argv[1:5]
    urls = Path(urls_file).read_text().split()
    run = {"feedhub": run_feedhub, "reader": run_reader, "newsboat": run_newsboat}[system]
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
    # feedhub's processes are all counted by WorkerMeter, sampled from /proc,
    # whether they are our children or the forkserver's: RUSAGE_CHILDREN
    # would count again those reaped before the end (a stopped forkserver
    # brings its workers' time with it); the others' children are theirs
    reaped = 0.0 if "worker_cpu" in result else children.ru_utime + children.ru_stime
    result.update(
        cpu=own.ru_utime + own.ru_stime + reaped
        + float(result.get("worker_cpu", 0.0)),  # type: ignore[arg-type]
        peak_rss_mb=own.ru_maxrss / 1024,
        peak_rss_worker_mb=max(children.ru_maxrss / 1024,
                               float(result.get("worker_peak_rss_mb", 0.0))),  # type: ignore[arg-type]
    )
    print(json.dumps(result))


if __name__ == "__main__":
    main()
