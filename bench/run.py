"""Benchmark feedhub against reader (lemon24/reader) and newsboat on one
synthetic feed farm served from 127.0.0.1 (and on real feeds served many
times over), phase by phase, and print the figures and each phase's ratio
feedhub / peer from the same run.

    python bench/run.py                       # N=1,000 feeds x 30 items, all three systems
    python bench/run.py --systems feedhub,reader
    python bench/run.py --feeds 10000 --items 10
    python bench/run.py --daemon-rounds 10    # also: the daemon's memory over 10 poll rounds

Each phase runs in a fresh process (bench/phase.py); the farm runs in its own
process too (bench/farm.py), so no two share a GIL. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
REALWORLD = REPO.parent / "shared" / "corpus" / "realworld"
# incremental before changed: reader keeps the old ETag of a feed whose bytes
# changed but whose entries did not, and would refetch every feed in full
POLLS = ["cold", "noop", "noop2", "incremental", "changed", "real"]
DEFAULT_PHASES = ",".join([*POLLS, "publish-feeds", "publish", "publish-noop"])
PHASES = {
    "feedhub": [*POLLS, "publish-feeds", "publish", "publish-noop"],
    "reader": POLLS,
    "newsboat": POLLS,
}


class Farm:
    def __init__(self, feeds: int, items: int, workdir: Path, realworld: Path | None = None,
                 copies: int = 0, undeclared_language: bool = False):
        self.urls_file = workdir / "urls.txt"
        real = ["--realworld", str(realworld), "--copies", str(copies)] if realworld else []
        if undeclared_language:
            real.append("--undeclared-language")
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "farm.py"), "serve", "--feeds", str(feeds), "--items",
             str(items), "--seed", "42", "--port", "0", "--urls-file", str(self.urls_file), *real],
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        line = json.loads(self.process.stdout.readline())
        self.base_url = line["base_url"].rstrip("/")
        self.real_urls_file = Path(line["real_urls_file"]) if "real_urls_file" in line else None

    def call(self, method: str, path: str) -> dict[str, object]:
        request = urllib.request.Request(self.base_url + path, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_phase(system: str, phase: str, workdir: Path, farm: Farm) -> dict[str, object]:
    """Run one phase in a fresh process and sample the PSS of its whole
    process family (for newsboat: newsboat alone, not the Python that waits
    for it) every 0.1 s; the peak is the largest sum seen."""
    urls_file = farm.urls_file
    if phase == "real":
        assert farm.real_urls_file is not None
        urls_file = farm.real_urls_file
        workdir = workdir / "real"
        workdir.mkdir(exist_ok=True)
    farm.call("POST", "/_reset")
    load = os.getloadavg()[0]
    process = subprocess.Popen([sys.executable, str(HERE / "phase.py"), system, phase,
                                str(workdir), str(urls_file)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    timeline = os.environ.get("BENCH_TIMELINE")
    peak = [0.0, 0.0]  # MB, and seconds into the phase when it was seen
    at_peak: list[str] = []
    done = threading.Event()
    started = time.perf_counter()

    def sample() -> None:
        while not done.wait(0.1):
            family = process_family(process.pid)
            if system == "newsboat":
                family = family[1:]
            rollups = [(p, smaps_rollup(p)) for p in family]
            total = sum(r.get("Pss", 0) for _, r in rollups) / 1024
            if timeline:  # every sample, for where the memory sits over time
                with open(timeline, "a", encoding="utf-8") as out:
                    out.write(f"{system} {phase} {time.perf_counter() - started:.1f}s "
                              f"{total:.0f} MB | " + " | ".join(
                                  describe(p, r) for p, r in rollups if r) + "\n")
            if total > peak[0]:
                peak[:] = [total, time.perf_counter() - started]
                at_peak[:] = [describe(p, r) for p, r in rollups if r]

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    stdout, stderr = process.communicate()
    done.set()
    sampler.join()
    if process.returncode != 0:
        raise SystemExit(f"{system} {phase} failed:\n{stderr[-3000:]}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result.update(farm.call("GET", "/_stats"))
    result["peak_pss_mb"], result["peak_at"] = peak
    result["at_peak"] = at_peak
    result["load"] = load
    return result


def proc_kb(pid: int, key: str = "VmRSS:", path: str = "status") -> int:
    try:
        for line in Path(f"/proc/{pid}/{path}").read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def smaps_rollup(pid: int) -> dict[str, int]:
    """/proc/PID/smaps_rollup as {field: kB}; empty if the process is gone."""
    fields = {}
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
            key, value = line.split(":", 1)
            fields[key] = int(value.split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return fields


def describe(pid: int, rollup: dict[str, int]) -> str:
    """One process's share of the family's PSS, to say where memory sits:
    its role, PSS (of which anonymous), and its shared and private pages.
    A forkserver's workers are forked, not exec'd: they carry its command
    line, and their parent is the forkserver; a spawned worker (a command's
    document worker) runs multiprocessing's spawn_main."""
    def command(p: int) -> str:
        try:
            return Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            return ""

    own = command(pid)
    role = ("resource tracker" if "resource_tracker" in own else
            "spawned worker" if "spawn_main" in own else
            ("worker" if "forkserver" in command(proc_kb(pid, "PPid:")) else "forkserver")
            if "forkserver" in own else "main")
    mb = {k: rollup.get(k, 0) / 1024 for k in ("Pss", "Pss_Anon", "Shared_Clean",
                                               "Shared_Dirty", "Private_Clean", "Private_Dirty")}
    return (f"{role} {pid}: PSS {mb['Pss']:.0f} (anon {mb['Pss_Anon']:.0f}), shared "
            f"{mb['Shared_Clean'] + mb['Shared_Dirty']:.0f}, private "
            f"{mb['Private_Clean'] + mb['Private_Dirty']:.0f}")


def process_family(pid: int) -> list[int]:
    """pid and its descendants (forkserver workers are the forkserver's)."""
    family, todo = [], [pid]
    while todo:
        p = todo.pop()
        family.append(p)
        with contextlib.suppress(OSError):
            todo.extend(int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split())
    return family


def process_rss_mb(pid: int) -> tuple[float, float, float]:
    """(RSS of the process, RSS of it and its descendants, PSS of them all),
    from /proc. RSS counts the pages forked workers share with the forkserver
    once per process; PSS divides shared pages among their users."""
    def rss(p: int, key: str = "VmRSS:", path: str = "status") -> float:
        return proc_kb(p, key, path) / 1024

    family = process_family(pid)
    own = rss(pid)
    return (own, own + sum(rss(p) for p in family[1:]),
            sum(rss(p, "Pss:", "smaps_rollup") for p in family))


def daemon_rounds(rounds: int, farm: Farm, workdir: Path, feeds: int) -> list[dict[str, float]]:
    """Run `feedhub run` (interval 10 s) for `rounds` poll rounds, 10% of the
    farm growing before each, and sample the daemon's memory per round."""
    from phase import feedhub_config  # the same config the phases use

    config = feedhub_config(workdir / "feedhub", farm.urls_file.read_text().split()).read_text(
        encoding="utf-8")
    daemon_dir = workdir / "daemon"
    daemon_dir.mkdir()
    (daemon_dir / "config.toml").write_text(
        config.replace('timeout = "60s"', 'timeout = "60s"\ndefault_interval = "10s"'),
        encoding="utf-8")
    farm.call("POST", "/_reset")
    feedhub = Path(sys.executable).with_name("feedhub")
    process = subprocess.Popen([str(feedhub), "--config", str(daemon_dir / "config.toml"),
                                "--log-level", "warning", "run"], stderr=subprocess.DEVNULL)
    samples = []
    round_started = time.monotonic()
    try:
        for n in range(1, rounds + 1):
            deadline = time.monotonic() + 120 + feeds * 0.05  # a cold round of 10,000 takes ~2 min
            while int(farm.call("GET", "/_stats")["requests"]) < n * feeds:
                if time.monotonic() > deadline:
                    raise SystemExit(f"round {n} did not complete")
                time.sleep(0.2)
            own, total, pss = process_rss_mb(process.pid)
            samples.append({"round": n, "rss_mb": own, "rss_with_workers_mb": total,
                            "pss_with_workers_mb": pss, "seconds": time.monotonic() - round_started})
            for p in process_family(process.pid):
                if rollup := smaps_rollup(p):
                    print(f"  daemon round {n}: {describe(p, rollup)} MB", flush=True)
            round_started = time.monotonic()
            farm.call("POST", "/_grow?fraction=0.1&items=5")
    finally:
        process.terminate()
        process.wait(timeout=60)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--systems", default="feedhub,reader,newsboat")
    parser.add_argument("--realworld", type=Path, default=REALWORLD,
                        help="the real feeds the 'real' phase serves (default: %(default)s)")
    parser.add_argument("--copies", type=int, default=20,
                        help="how many times over the real feeds are served, each copy under "
                             "its own paths (default: %(default)s)")
    parser.add_argument("--daemon-rounds", type=int, default=0)
    parser.add_argument("--undeclared-language", action="store_true",
                        help="the farm declares no language: feedhub detects every item's")
    parser.add_argument("--phases", default=DEFAULT_PHASES,
                        help="which phases to run ('' for none, e.g. with --daemon-rounds)")
    parser.add_argument("--workdir", type=Path, help="keep the databases here (default: temp)")
    args = parser.parse_args()
    systems = args.systems.split(",")
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="feedhub-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    for system in systems:
        (workdir / system).mkdir(exist_ok=True)

    print(f"farm: {args.feeds} feeds x {args.items} items; {os.cpu_count()} cores; "
          f"python {sys.version.split()[0]}; workdir {workdir}", flush=True)
    started = time.perf_counter()
    order = [p for p in args.phases.split(",") if p]
    unknown = set(order) - set(PHASES["feedhub"])
    if unknown:
        raise SystemExit(f"unknown phases: {', '.join(sorted(unknown))}")
    if "real" in order and not args.realworld.is_dir():
        print(f"no {args.realworld}: skipping the real phase", flush=True)
        order.remove("real")
    if "newsboat" in systems and not shutil.which("newsboat"):
        raise SystemExit("newsboat is not installed (apt-get install -y newsboat)")
    print(f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}", flush=True)
    farm = Farm(args.feeds, args.items, workdir,
                args.realworld if "real" in order else None, args.copies,
                args.undeclared_language)
    print(f"farm built and serving in {time.perf_counter() - started:.1f}s", flush=True)
    results: dict[tuple[str, str], dict[str, object]] = {}
    try:
        for phase in order:
            if phase == "incremental":
                changed = farm.call("POST", "/_grow?fraction=0.1&items=5")["changed"]
                print(f"grew {len(changed)} feeds by 5 items", flush=True)
            if phase == "changed":
                touched = farm.call("POST", "/_touch")["touched"]
                print(f"touched {touched} feeds: new channel date, bytes and ETag, same items",
                      flush=True)
            for system in systems:
                if phase in PHASES[system]:
                    results[system, phase] = r = run_phase(system, phase, workdir / system, farm)
                    print(f"  {system:8} {phase:13} {r['wall']:7.2f}s wall  {r['cpu']:7.2f}s CPU"
                          f"  {r['peak_pss_mb']:5.0f} MB PSS  {r['200']}x200 {r['304']}x304"
                          f"  load {r['load']:.2f}"
                          + (f"  (of which the first publish {r['publish_wall']:.2f}s"
                             + (f"; its feeds were on disk after {r['feeds_wall']:.2f}s"
                                if "feeds_wall" in r else "") + ")"
                             if "publish_wall" in r else
                             f"  (its feeds were on disk after {r['feeds_wall']:.2f}s)"
                             if "feeds_wall" in r else ""), flush=True)
                    print(f"      peak PSS {r['peak_at']:.1f} s into the phase", flush=True)
                    for line in r["at_peak"]:  # type: ignore[attr-defined]
                        print(f"      at peak, {line} MB", flush=True)
        samples = (daemon_rounds(args.daemon_rounds, farm, workdir, args.feeds)
                   if args.daemon_rounds and "feedhub" in systems else [])
    finally:
        farm.stop()
    report(results, systems, samples, args)


def report(results: dict[tuple[str, str], dict[str, object]], systems: list[str],
           samples: list[dict[str, float]], args: argparse.Namespace) -> None:
    print()
    print("| phase | system | wall s | CPU s (in workers) | peak RSS MB (main / child) "
          "| peak PSS MB (family) | requests | 200 | 304 | new items | items stored "
          "| DB bytes / item | load |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for (system, phase), r in results.items():
        cpu = f"{r['cpu']:.2f}" + (f" ({r['worker_cpu']:.2f})" if r.get("worker_cpu") else "")
        stored = r.get("stored")
        per_item = (f"{int(r['db_bytes']) / int(stored):,.0f}"  # type: ignore[call-overload]
                    if stored and r.get("db_bytes") else "")
        print(f"| {phase} | {system} | {r['wall']:.2f} | {cpu} | "
              f"{r['peak_rss_mb']:.0f} / {r['peak_rss_worker_mb']:.0f} | {r['peak_pss_mb']:.0f} | "
              f"{r['requests']} | {r['200']} | {r['304']} | {r.get('new', r.get('written', ''))} | "
              f"{stored if stored is not None else ''} | {per_item} | {r['load']:.2f} |")
    peers = [s for s in ("reader", "newsboat") if s in systems and "feedhub" in systems]
    if peers:
        print()
        print("Ratios feedhub / peer from this run (below 1: feedhub takes less; 0.33 = 3x faster):")
        print()
        head = " | ".join(f"{what} feedhub/{peer}" for peer in peers
                          for what in ("wall", "CPU", "peak PSS"))
        print(f"| phase | {head} |")
        print("|---|" + "---:|" * (3 * len(peers)))
        for phase in PHASES["reader"]:
            cells = []
            for peer in peers:
                a, b = results.get(("feedhub", phase)), results.get((peer, phase))
                for key in ("wall", "cpu", "peak_pss_mb"):
                    cells.append(f"{float(a[key]) / float(b[key]):.2f}"  # type: ignore[arg-type]
                                 if a and b and float(b[key]) else "")  # type: ignore[arg-type]
            if any(cells):
                print(f"| {phase} | " + " | ".join(cells) + " |")
    cold = results.get(("feedhub", "cold"))
    if cold and "feeds_wall" in cold:  # the wall until its Atom documents were on disk
        until = (float(cold["wall"]) - float(cold["publish_wall"])  # type: ignore[arg-type]
                 + float(cold["feeds_wall"]))  # type: ignore[arg-type]
        print(f"feedhub: cold until its feeds exist (the HTML pages after them): {until:.2f}s"
              + "".join(f" = {until / float(results[peer, 'cold']['wall']):.2f}x {peer}"  # type: ignore[arg-type]
                        for peer in peers if (peer, "cold") in results))
    for system in systems:
        noop, changed = results.get((system, "noop2")), results.get((system, "changed"))
        if noop and changed:
            print(f"{system}: changed bytes, same items / 304 round (noop2) wall = "
                  f"{float(changed['wall']) / float(noop['wall']):.2f}x")  # type: ignore[arg-type]
    if samples:
        print()
        print("daemon memory per poll round, MB (daemon RSS / RSS with parser workers / PSS with "
              "parser workers): " + ", ".join(
                  f"{s['rss_mb']:.0f}/{s['rss_with_workers_mb']:.0f}/{s['pss_with_workers_mb']:.0f}"
                  for s in samples))
        print("seconds per round (the first is cold): " + ", ".join(
            f"{s['seconds']:.0f}" for s in samples))
    print()
    print(f"load average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    print(f"command: python bench/run.py --feeds {args.feeds} --items {args.items} "
          f"--systems {','.join(systems)}"
          + (f" --copies {args.copies}" if args.copies != 20 else "")
          + (" --undeclared-language" if args.undeclared_language else "")
          + (f" --daemon-rounds {args.daemon_rounds}" if args.daemon_rounds else "")
          + (f" --phases '{args.phases}'" if args.phases != DEFAULT_PHASES else ""))


if __name__ == "__main__":
    main()
