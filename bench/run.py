"""Benchmark feedhub against reader (lemon24/reader) on one synthetic feed
farm served from 127.0.0.1, phase by phase, and print the figures.

    python bench/run.py                       # N=1,000 feeds x 30 items, both systems
    python bench/run.py --feeds 10000 --items 10 --systems feedhub
    python bench/run.py --daemon-rounds 10    # also: the daemon's memory over 10 poll rounds

Each phase runs in a fresh process (bench/phase.py); the farm runs in its own
process too (bench/farm.py), so no two share a GIL. See bench/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
DEFAULT_PHASES = "cold,noop,incremental,publish,publish-noop"
PHASES = {
    "feedhub": ["cold", "noop", "incremental", "publish", "publish-noop"],
    "reader": ["cold", "noop", "incremental"],
}


class Farm:
    def __init__(self, feeds: int, items: int, workdir: Path):
        self.urls_file = workdir / "urls.txt"
        self.process = subprocess.Popen(
            [sys.executable, str(HERE / "farm.py"), "serve", "--feeds", str(feeds), "--items",
             str(items), "--seed", "42", "--port", "0", "--urls-file", str(self.urls_file)],
            stdout=subprocess.PIPE, text=True)
        assert self.process.stdout is not None
        self.base_url = json.loads(self.process.stdout.readline())["base_url"].rstrip("/")

    def call(self, method: str, path: str) -> dict[str, object]:
        request = urllib.request.Request(self.base_url + path, method=method)
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def run_phase(system: str, phase: str, workdir: Path, farm: Farm) -> dict[str, object]:
    farm.call("POST", "/_reset")
    out = subprocess.run([sys.executable, str(HERE / "phase.py"), system, phase, str(workdir),
                          str(farm.urls_file)], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{system} {phase} failed:\n{out.stderr[-3000:]}")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result.update(farm.call("GET", "/_stats"))
    return result


def process_rss_mb(pid: int) -> tuple[float, float, float]:
    """(RSS of the process, RSS of it and its descendants, PSS of them all),
    from /proc. RSS counts the pages forked workers share with the forkserver
    once per process; PSS divides shared pages among their users."""
    def rss(p: int, key: str = "VmRSS:", path: str = "status") -> float:
        try:
            for line in Path(f"/proc/{p}/{path}").read_text().splitlines():
                if line.startswith(key):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return 0.0

    def children(p: int) -> list[int]:
        try:
            return [int(c) for c in Path(f"/proc/{p}/task/{p}/children").read_text().split()]
        except OSError:
            return []

    family, todo = [], [pid]
    while todo:
        p = todo.pop()
        family.append(p)
        todo.extend(children(p))
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
    parser.add_argument("--systems", default="feedhub,reader")
    parser.add_argument("--daemon-rounds", type=int, default=0)
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
    farm = Farm(args.feeds, args.items, workdir)
    print(f"farm built and serving in {time.perf_counter() - started:.1f}s", flush=True)
    results: dict[tuple[str, str], dict[str, object]] = {}
    try:
        order = [p for p in args.phases.split(",") if p]
        for phase in order:
            if phase == "incremental":
                changed = farm.call("POST", "/_grow?fraction=0.1&items=5")["changed"]
                print(f"grew {len(changed)} feeds by 5 items", flush=True)
            for system in systems:
                if phase in PHASES[system]:
                    results[system, phase] = r = run_phase(system, phase, workdir / system, farm)
                    print(f"  {system:8} {phase:13} {r['wall']:7.2f}s wall", flush=True)
        samples = (daemon_rounds(args.daemon_rounds, farm, workdir, args.feeds)
                   if args.daemon_rounds and "feedhub" in systems else [])
    finally:
        farm.stop()
    report(results, systems, samples, args)


def report(results: dict[tuple[str, str], dict[str, object]], systems: list[str],
           samples: list[dict[str, float]], args: argparse.Namespace) -> None:
    print()
    print("| phase | system | wall s | CPU s (in workers) | peak RSS MB (main / worker) | requests "
          "| 200 | 304 | new items |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for (system, phase), r in results.items():
        cpu = f"{r['cpu']:.2f}" + (f" ({r['worker_cpu']:.2f})" if r.get("worker_cpu") else "")
        print(f"| {phase} | {system} | {r['wall']:.2f} | {cpu} | "
              f"{r['peak_rss_mb']:.0f} / {r['peak_rss_worker_mb']:.0f} | {r['requests']} | "
              f"{r['200']} | {r['304']} | {r.get('new', r.get('written', ''))} |")
    for (_, phase), r in results.items():
        if r.get("db_items"):
            print(f"database after {phase}: {r['db_bytes'] / 1e6:.1f} MB, {r['db_items']} items, "
                  f"{r['db_bytes'] / r['db_items']:.0f} bytes per item")
    if {"feedhub", "reader"} <= set(systems):
        print()
        for phase in PHASES["reader"]:
            a, b = results["reader", phase], results["feedhub", phase]
            print(f"{phase}: reader / feedhub wall time = {a['wall'] / b['wall']:.1f}x")
    if samples:
        print()
        print("daemon memory per poll round, MB (daemon RSS / RSS with parser workers / PSS with "
              "parser workers): " + ", ".join(
                  f"{s['rss_mb']:.0f}/{s['rss_with_workers_mb']:.0f}/{s['pss_with_workers_mb']:.0f}"
                  for s in samples))
        print("seconds per round (the first is cold): " + ", ".join(
            f"{s['seconds']:.0f}" for s in samples))
    print()
    print(f"command: python bench/run.py --feeds {args.feeds} --items {args.items} "
          f"--systems {','.join(systems)}"
          + (f" --daemon-rounds {args.daemon_rounds}" if args.daemon_rounds else "")
          + (f" --phases '{args.phases}'" if args.phases != DEFAULT_PHASES else ""))


if __name__ == "__main__":
    main()
