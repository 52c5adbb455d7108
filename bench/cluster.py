"""PostgreSQL and several daemons (issue 16): cold and no-op throughput of
one `feedhub run` on SQLite and of 1, 2, 3 `feedhub run` on one PostgreSQL,
with CPU seconds and database round trips per poll. Run by hand; it prints
figures and asserts nothing; everything talks to 127.0.0.1 (and a unix
socket). See bench/README.md, "PostgreSQL and several daemons".

    .venv/bin/python bench/cluster.py                          # 1,000 sources; SQLite, 1,2,3 on PostgreSQL
    .venv/bin/python bench/cluster.py --feeds 300 --daemons 1,2 --window 15

How: the farm (bench/farm.py) serves N feeds; each configuration gets a
fresh database (a SQLite file, or a new database in a throwaway PostgreSQL
cluster started here with initdb/pg_ctl as tests/pg.py does) and D daemons,
each in a config directory of its own holding the same config.toml
(`default_interval = "1s"`: every source is due again one second after its
poll, so the daemons poll as fast as they can: what is measured is
capacity, not the schedule).

- cold: from the daemons' start until every source has been polled once
  (its `last_poll` set, read through the store): sources per second.
- no-op: after the first publish, a window of `--window` seconds of 304s:
  polls (farm requests) per second.
- CPU per poll: utime + stime from /proc of each daemon and its
  descendants (forkserver, parser workers), and of the whole PostgreSQL
  cluster (postmaster and its children), divided by the farm's requests.
- round trips per poll (PostgreSQL): statements executed, from
  pg_stat_statements (top level, BEGIN/COMMIT included: one per round trip,
  except that psycopg pipelines an executemany's rows), and transactions
  (pg_stat_database xact_commit + xact_rollback); both over the polls.

With claims (issue 16, part 2) each due source is polled by one of the D
daemons (bench/README.md has runs from before claims, when each daemon
polled every source, and after): the farm's request count says how many
polls each source got.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from phase import feedhub_config  # noqa: E402  (the config the other benchmarks use)
from run import Farm, process_family  # noqa: E402

from pg import ClusterUnavailable, Server, running_cluster  # noqa: E402

TICKS = os.sysconf("SC_CLK_TCK")
FEEDHUB = Path(sys.executable).with_name("feedhub")


def cpu_seconds(pid: int) -> float:
    """utime + stime of one process so far (0 if it is gone)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return 0.0
    fields = stat[stat.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


class CpuMeter:
    """The CPU of process families, sampled often: a worker or a backend
    that exits between samples keeps what it was last seen to use."""

    def __init__(self) -> None:
        self.seen: dict[tuple[int, str], float] = {}

    def sample(self, leaders: list[int]) -> None:
        for leader in leaders:
            for pid in process_family(leader):
                try:
                    started = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
                except (OSError, IndexError):
                    continue
                self.seen[pid, started] = max(self.seen.get((pid, started), 0.0), cpu_seconds(pid))

    def total(self) -> float:
        return sum(self.seen.values())


@dataclass
class Cluster(Server):
    """A throwaway PostgreSQL cluster on a unix socket, pg_stat_statements loaded."""

    count: int = 0

    def postmaster(self) -> int:
        return int((self.root / "data" / "postmaster.pid").read_text().split()[0])

    def create_database(self) -> str:
        import psycopg

        self.count += 1
        name = f"bench{self.count}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def cluster() -> Iterator[Cluster]:
    """The tests' throwaway cluster (tests/pg.py), but fsync stays on (the
    default): its cost is part of a poll's."""
    try:
        with running_cluster(prefix="feedhub-bench-pg-", stop="fast", settings=(
                "-c max_connections=100 -c shared_preload_libraries=pg_stat_statements "
                "-c pg_stat_statements.track=top")) as server:
            made = Cluster(server.root, server.bindir, server.as_user, server.user)
            import psycopg

            with psycopg.connect(made.url("postgres"), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            yield made
    except (ClusterUnavailable, RuntimeError) as exc:
        raise SystemExit(str(exc)) from None


def pg_counters(pg: Cluster, url: str) -> tuple[int, int]:
    """(statements, transactions) the database has run so far; this
    monitor's own statements (on `postgres`, about pg_stat) left out."""
    import psycopg

    dbname = urlsplit(url).path.lstrip("/")  # not split("/"): host= is a path too
    with psycopg.connect(pg.url("postgres"), autocommit=True) as conn:
        row = conn.execute(
            "SELECT (SELECT coalesce(sum(s.calls), 0) FROM pg_stat_statements s "
            "        JOIN pg_database d ON d.oid = s.dbid WHERE d.datname = %s), "
            "       (SELECT xact_commit + xact_rollback FROM pg_stat_database "
            "        WHERE datname = %s)", [dbname, dbname]).fetchone()
    assert row is not None
    return int(row[0]), int(row[1] or 0)


class Incomplete(Exception):
    """A configuration could not be measured (a daemon died): said, not hidden."""


@dataclass
class Sample:
    at: float
    requests: int
    ok: int
    not_modified: int
    daemon_cpu: float
    db_cpu: float
    statements: int = 0
    transactions: int = 0


@dataclass
class Result:
    backend: str
    daemons: int
    cold: tuple[Sample, Sample]
    noop: tuple[Sample, Sample]
    items: int = 0
    sources: int = 0
    db_bytes: int = 0
    notes: list[str] = field(default_factory=list)
    load: float = 0.0


def config_text(urls: list[str], database: str | None, workdir: Path) -> str:
    text = feedhub_config(workdir, urls).read_text(encoding="utf-8")
    hub = 'default_interval = "1s"            # due again at once: capacity, not schedule\n'
    if database:
        hub += f'database = "{database}"\n'
    return text.replace("[hub]\n", "[hub]\n" + hub, 1)


def measure(backend: str, daemons: int, urls: list[str], farm: Farm, workdir: Path,
            window: float, pg: Cluster | None = None) -> Result:
    from feedhub.store import open_store

    database: str | None = pg.create_database() if pg else None
    base_bytes = 0
    if pg and database:
        with open_store(database) as store:  # the schema, so that readers find it
            base_bytes = store.size_bytes()
    run_dir = Path(tempfile.mkdtemp(prefix=f"{backend}-{daemons}-", dir=workdir))  # --daemons 3,3
    text = config_text(urls, database, run_dir)
    nodes = []
    for k in range(daemons):
        node = run_dir / f"node{k}"
        node.mkdir()
        (node / "config.toml").write_text(text, encoding="utf-8")
        nodes.append(node)
    db: Path | str = database or nodes[0] / "feedhub.db"
    if not database:  # one daemon per SQLite file: more would be refused
        assert daemons == 1

    meter, db_meter = CpuMeter(), CpuMeter()
    load = os.getloadavg()[0]
    farm.call("POST", "/_reset")
    processes = [subprocess.Popen(
        [str(FEEDHUB), "--config", str(node / "config.toml"), "--log-level", "warning", "run"],
        stdout=subprocess.DEVNULL, stderr=open(node / "daemon.log", "wb"),  # noqa: SIM115
        cwd=node) for node in nodes]
    leaders = [p.pid for p in processes]

    def sample() -> Sample:
        meter.sample(leaders)
        if pg:
            db_meter.sample([pg.postmaster()])
        stats = farm.call("GET", "/_stats")
        taken = Sample(time.monotonic(), int(stats["requests"]), int(stats["200"]),  # type: ignore[call-overload]
                       int(stats["304"]), meter.total(), db_meter.total())  # type: ignore[call-overload]
        if pg and database:
            taken.statements, taken.transactions = pg_counters(pg, database)
        return taken

    def polled() -> int:
        with contextlib.suppress(Exception), open_store(db, reader=True) as store:
            return sum(state.last_poll is not None for state in store.source_states())
        return 0

    try:
        start = sample()
        deadline = time.monotonic() + 120 + len(urls) * 0.5
        while polled() < len(urls):
            if time.monotonic() > deadline or any(p.poll() is not None for p in processes):
                logs = "".join(f"\n--- node{k} (exit {p.poll()}), its log's end:\n"
                               + (nodes[k] / "daemon.log").read_text(errors="replace")[-3000:]
                               for k, p in enumerate(processes))
                raise Incomplete(f"{backend} x{daemons}: the cold round did not complete"
                                 f" ({polled()} of {len(urls)} sources polled){logs}")
            meter.sample(leaders)
            time.sleep(0.5)
        cold_end = sample()
        # the first publish renders every entry: the no-op window starts after it
        while not all((node / "feeds" / "all.atom").exists() for node in nodes):
            meter.sample(leaders)
            time.sleep(0.5)
        time.sleep(2)
        noop_start = sample()
        until = time.monotonic() + window
        while time.monotonic() < until:
            time.sleep(0.5)
            meter.sample(leaders)
            if pg:
                db_meter.sample([pg.postmaster()])
        noop_end = sample()
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        for process in processes:
            try:
                process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                process.kill()
    result = Result(backend, daemons, (start, cold_end), (noop_start, noop_end), load=load)
    with open_store(db, reader=True) as store:
        states = store.source_states()
        result.sources = len(states)
        result.items = sum(state.items for state in states)
        result.db_bytes = store.size_bytes() - base_bytes
    return result


def per(value: float, count: int) -> str:
    return f"{value / count:.5f}" if count else "-"


def report(results: list[Result], feeds: int, items: int, window: float) -> None:
    print(f"\n{datetime.now(UTC):%Y-%m-%d %H:%M} UTC; {os.cpu_count()} cores; farm: {feeds} "
          f"feeds x {items} items; no-op window {window:.0f}s")
    print(f"{'run':<14}{'load':>5}{'cold s':>8}{'cold/s':>8}{'cold req':>9}{'noop/s':>8}"
          f"{'cpu/poll cold':>14}{'cpu/poll noop':>14}{'db cpu/poll':>12}{'stmt/poll':>10}"
          f"{'xact/poll':>10}{'B/item':>8}")
    for r in results:
        (a, b), (c, d) = r.cold, r.noop
        cold_s, noop_s = b.at - a.at, d.at - c.at
        cold_polls, noop_polls = b.requests - a.requests, d.requests - c.requests
        name = f"{r.backend} x{r.daemons}"
        print(f"{name:<14}{r.load:>5.2f}{cold_s:>8.1f}{feeds / cold_s:>8.1f}{cold_polls:>9}"
              f"{(d.not_modified - c.not_modified) / noop_s:>8.1f}"
              f"{per(b.daemon_cpu - a.daemon_cpu, cold_polls):>14}"
              f"{per(d.daemon_cpu - c.daemon_cpu, noop_polls):>14}"
              f"{per(d.db_cpu - c.db_cpu, noop_polls) if r.backend != 'sqlite' else '-':>12}"
              f"{per(d.statements - c.statements, noop_polls) if r.backend != 'sqlite' else '-':>10}"
              f"{per(d.transactions - c.transactions, noop_polls) if r.backend != 'sqlite' else '-':>10}"
              f"{r.db_bytes / r.items if r.items else 0:>8.0f}")
    print("\ncold, per poll (PostgreSQL): db cpu, statements, transactions")
    for r in results:
        (a, b) = r.cold
        polls = b.requests - a.requests
        if r.backend != "sqlite":
            print(f"  {r.backend} x{r.daemons}: {per(b.db_cpu - a.db_cpu, polls)} s, "
                  f"{per(b.statements - a.statements, polls)}, "
                  f"{per(b.transactions - a.transactions, polls)}; "
                  f"{r.sources} sources, {r.items} items, {r.db_bytes / 1e6:.1f} MB")
        else:
            print(f"  sqlite x1: {r.sources} sources, {r.items} items, "
                  f"{r.db_bytes / 1e6:.1f} MB (file and WAL)")
    for r in results:
        (c, d) = r.noop
        if (d.not_modified - c.not_modified) / (d.at - c.at) > 0.8 * feeds * r.daemons:
            print(f"  note: {r.backend} x{r.daemons}'s no-op rate is near the schedule's "
                  f"({feeds * r.daemons}/s at a 1s interval): more feeds measure capacity")
    if not results or results[0].backend != "sqlite":
        return
    print("\nratios to sqlite x1 (cold s, noop polls/s, cpu per noop poll):")
    base = results[0]
    for r in results[1:]:
        def rate(x: Result) -> float:
            (c, d) = x.noop
            return (d.not_modified - c.not_modified) / (d.at - c.at)

        def cpu(x: Result) -> float:
            (c, d) = x.noop
            return (d.daemon_cpu - c.daemon_cpu) / max(d.requests - c.requests, 1)

        cold = (r.cold[1].at - r.cold[0].at) / (base.cold[1].at - base.cold[0].at)
        print(f"  {r.backend} x{r.daemons}: {cold:.2f}, {rate(r) / rate(base):.2f}, "
              f"{cpu(r) / cpu(base):.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--items", type=int, default=10)
    parser.add_argument("--daemons", default="1,2,3",
                        help="daemon counts on one PostgreSQL, e.g. 1,2,3 ('' for none)")
    parser.add_argument("--no-sqlite", action="store_true", help="skip the SQLite run")
    parser.add_argument("--window", type=float, default=20.0,
                        help="seconds of no-op polling measured after the first publish")
    args = parser.parse_args()
    counts = [int(n) for n in args.daemons.split(",") if n.strip()]
    with tempfile.TemporaryDirectory(prefix="feedhub-bench-cluster-") as tmp:
        workdir = Path(tmp)
        farm = Farm(args.feeds, args.items, workdir)
        urls = farm.urls_file.read_text().split()
        results = []
        try:
            if not args.no_sqlite:
                results.append(measure("sqlite", 1, urls, farm, workdir, args.window))
                print("sqlite x1 done", flush=True)
            if counts:
                with cluster() as pg:
                    for daemons in counts:
                        try:
                            results.append(measure("postgresql", daemons, urls, farm, workdir,
                                                   args.window, pg))
                        except Incomplete as exc:
                            print(f"NOT MEASURED: {exc}", flush=True)
                            continue
                        print(f"postgresql x{daemons} done", flush=True)
        finally:
            farm.stop()
        report(results, args.feeds, args.items, args.window)


if __name__ == "__main__":
    main()
