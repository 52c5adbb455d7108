"""`feedhub serve` against Debian's nginx on the same output directory, with
wrk on loopback; then a poll round of `feedhub run --serve` with and
without wrk's load on its server. Prints figures, asserts nothing.

    apt-get install -y nginx wrk libnginx-mod-http-brotli-static
    .venv/bin/python bench/serve.py                    # 1,000 farm feeds x 30 items
    .venv/bin/python bench/serve.py --workdir /tmp/sb  # keep (and reuse) the hub and its feeds/

See bench/README.md ("Serving").
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from phase import feedhub_config  # noqa: E402  (bench/ is not a package)
from run import Farm  # noqa: E402

FEEDHUB = Path(sys.executable).with_name("feedhub")
BROTLI_MODULE = Path("/usr/lib/nginx/modules/ngx_http_brotli_static_module.so")
NGINX_CONF = """
{load_module}
worker_processes {workers};
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    types {{
        application/atom+xml atom;
        text/html html;
        text/x-opml opml;
        application/feed+json json;
    }}
    charset utf-8;
    charset_types application/atom+xml text/x-opml application/feed+json;  # text/html is already
    client_header_buffer_size 1k;
    large_client_header_buffers 4 16k;
    client_header_timeout 10s;
    client_body_timeout 10s;
    client_max_body_size 0;
    keepalive_requests 100000;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        gzip_static on;
        gzip_vary on;
        {brotli}
        location ~ /\\. {{ return 404; }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_up(url: str, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"{url} did not come up")


def head(url: str, headers: dict[str, str]) -> dict[str, str]:
    request = urllib.request.Request(url, headers=headers, method="HEAD")
    with urllib.request.urlopen(request, timeout=10) as response:
        return {k.lower(): v for k, v in response.headers.items()}


def wrk(url: str, headers: dict[str, str], seconds: int, connections: int) -> dict[str, float]:
    command = ["wrk", f"-c{connections}", "-t2", f"-d{seconds}s", "--timeout", "2s"]
    for name, value in headers.items():
        command += ["-H", f"{name}: {value}"]
    out = subprocess.run([*command, url], capture_output=True, text=True, check=True).stdout
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    errors = re.search(r"connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    socket_errors = sum(int(errors.group(n)) for n in (1, 2, 3)) if errors else 0
    return {"rps": rate, "errors": socket_errors + (int(non2xx.group(1)) if non2xx else 0),
            "timeouts": int(errors.group(4)) if errors else 0}


def build(workdir: Path, feeds: int, items: int) -> Path:
    """A hub polled once from the farm: its feeds/ is what both servers serve."""
    config = workdir / "config.toml"
    if (workdir / "feeds" / "en.atom").exists():
        return config
    farm = Farm(feeds, items, workdir)
    try:
        text = feedhub_config(workdir, farm.urls_file.read_text().split()).read_text()
        # 80 entries: an en.atom of ~600 KB, the size of the measurement
        config.write_text(text.replace("[hub]\n", "[hub]\nitems_per_feed = 80\n", 1))
        started = time.monotonic()
        subprocess.run([str(FEEDHUB), "--config", str(config), "--log-level", "warning", "poll"],
                       check=True, stdout=subprocess.DEVNULL)
        print(f"built {workdir / 'feeds'} in {time.monotonic() - started:.0f} s", flush=True)
    finally:
        farm.stop()
    return config


def start_feedhub(config: Path, port: int, workers: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen([str(FEEDHUB), "--config", str(config), "serve", "--address",
                                f"127.0.0.1:{port}", "--workers", str(workers)],
                               stderr=subprocess.DEVNULL)
    wait_up(f"http://127.0.0.1:{port}/index.opml")
    return process


def start_nginx(root: Path, port: int, workers: int) -> tuple[subprocess.Popen[bytes], str]:
    prefix = Path(tempfile.mkdtemp(prefix="feedhub-nginx-"))
    brotli = BROTLI_MODULE.exists()
    (prefix / "nginx.conf").write_text(NGINX_CONF.format(
        load_module=f"load_module {BROTLI_MODULE};" if brotli else "", workers=workers,
        prefix=prefix, port=port, root=root, brotli="brotli_static on;" if brotli else ""))
    process = subprocess.Popen(["nginx", "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                "-g", "daemon off;"])
    wait_up(f"http://127.0.0.1:{port}/index.opml")
    return process, "gzip_static, brotli_static (libnginx-mod-http-brotli-static)" if brotli \
        else "gzip_static only (no brotli_static module)"


def stop(process: subprocess.Popen[bytes]) -> None:
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=15)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def scenarios(base: str, path: str) -> dict[str, dict[str, str]]:
    etag = head(base + path, {"Accept-Encoding": "gzip"})["etag"]
    return {"304 (If-None-Match, gzip)": {"Accept-Encoding": "gzip", "If-None-Match": etag},
            "GET gzip": {"Accept-Encoding": "gzip"},
            "GET plain": {}}


def compare(config: Path, root: Path, args: argparse.Namespace) -> list[dict[str, object]]:
    rows = []
    path = "/" + args.path
    size = (root / args.path).stat().st_size
    gz = (root / (args.path + ".gz")).stat().st_size
    print(f"{args.path}: {size:,} bytes, .gz {gz:,}", flush=True)
    results: dict[str, dict[str, dict[str, float]]] = {}
    for server in ("feedhub", "nginx"):
        port = free_port()
        if server == "feedhub":
            process, what = start_feedhub(config, port, args.workers), f"granian, {args.workers} worker(s)"
        else:
            process, what = start_nginx(root, port, args.workers)
        print(f"{server}: {what}", flush=True)
        try:
            base = f"http://127.0.0.1:{port}"
            for name, headers in scenarios(base, path).items():
                results.setdefault(name, {})[server] = result = wrk(
                    base + path, headers, args.seconds, args.connections)
                print(f"  {name}: {result}", flush=True)
        finally:
            stop(process)
    for name, by_server in results.items():
        f, n = by_server["feedhub"], by_server["nginx"]
        rows.append({"test": name, "feedhub_rps": f["rps"], "nginx_rps": n["rps"],
                     "ratio": f["rps"] / n["rps"], "feedhub_errors": f["errors"],
                     "feedhub_timeouts": f["timeouts"], "nginx_errors": n["errors"],
                     "nginx_timeouts": n["timeouts"]})
    return rows


def poll_round(workdir: Path, feeds: int, items: int, seed_feeds: Path, load: bool,
               args: argparse.Namespace) -> tuple[float, float | None]:
    """Seconds `feedhub run --serve` takes to poll every farm feed once
    (a cold round: all sources are new), with wrk on its server or not.
    The output dir starts as a copy of the built one, so there is an
    en.atom to serve from the first second. Returns the seconds and wrk's
    requests a second meanwhile."""
    round_dir = workdir / ("round-load" if load else "round-idle")
    shutil.rmtree(round_dir, ignore_errors=True)
    round_dir.mkdir()
    farm = Farm(feeds, items, round_dir)
    port = free_port()
    process = wrk_process = None
    try:
        config = feedhub_config(round_dir, farm.urls_file.read_text().split())
        shutil.copytree(seed_feeds, round_dir / "feeds")
        farm.call("POST", "/_reset")
        process = subprocess.Popen([str(FEEDHUB), "--config", str(config), "--log-level", "warning",
                                    "run", "--serve", f"127.0.0.1:{port}"], stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        if load:
            wait_up(base + "/index.opml")
            wrk_process = subprocess.Popen(
                ["nice", "-n", str(args.wrk_nice), "wrk", f"-c{args.connections}", "-t2", "-d300s",
                 "-H", "Accept-Encoding: gzip", base + "/" + args.path],
                stdout=subprocess.PIPE, text=True)
        started = time.monotonic()
        deadline = started + 300
        while int(farm.call("GET", "/_stats")["requests"]) < feeds:
            if time.monotonic() > deadline:
                raise SystemExit("the poll round did not complete")
            time.sleep(0.05)
        seconds = time.monotonic() - started
        rate = None
        if wrk_process is not None:
            wrk_process.send_signal(signal.SIGINT)  # wrk prints its summary and exits
            out, _ = wrk_process.communicate(timeout=30)
            wrk_process = None
            if found := re.search(r"Requests/sec:\s+([\d.]+)", out):
                rate = float(found.group(1))
        return seconds, rate
    finally:
        if wrk_process is not None:
            wrk_process.kill()
            wrk_process.wait()
        if process is not None:
            stop(process)
        farm.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--feeds", type=int, default=1000)
    parser.add_argument("--items", type=int, default=30)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--path", default="en.atom", help="the document wrk asks for")
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--workers", type=int, default=1,
                        help="feedhub serve's worker processes and nginx's worker_processes")
    parser.add_argument("--wrk-nice", type=int, default=0,
                        help="run the round's wrk at this niceness (to tell its own CPU from "
                             "the server's: on loopback they share the machine)")
    parser.add_argument("--rounds", type=int, default=2, help="pairs of poll rounds")
    parser.add_argument("--no-compare", action="store_true", help="only the poll round")
    parser.add_argument("--round-feeds", type=int, default=300,
                        help="farm feeds of the `run --serve` poll round (0: skip it)")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="feedhub-serve-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    config = build(workdir, args.feeds, args.items)
    root = (workdir / "feeds").resolve()
    load_avg = os.getloadavg()[0]
    rows = [] if args.no_compare else compare(config, root, args)
    print(f"\nwrk -c{args.connections} -t2 -d{args.seconds}s on /{args.path}, load average at start "
          f"{load_avg:.2f}, {os.cpu_count()} cores")
    print("| test | feedhub req/s | nginx req/s | feedhub/nginx | feedhub errors/timeouts "
          "| nginx errors/timeouts |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['test']} | {r['feedhub_rps']:,.0f} | {r['nginx_rps']:,.0f} | {r['ratio']:.2f} "
              f"| {r['feedhub_errors']}/{r['feedhub_timeouts']} "
              f"| {r['nginx_errors']}/{r['nginx_timeouts']} |")
    if args.round_feeds:
        print(f"\n`feedhub run --serve`, a cold poll round of {args.round_feeds} farm feeds "
              f"(wrk -c{args.connections} -t2, gzip'd GETs of /{args.path}, on its server or not):")
        for n in range(1, args.rounds + 1):
            idle, _ = poll_round(workdir, args.round_feeds, args.items, root, False, args)
            busy, rate = poll_round(workdir, args.round_feeds, args.items, root, True, args)
            print(f"  {n}: {idle:.2f} s without load, {busy:.2f} s with it ({busy / idle:.2f}x; "
                  f"the server answered {rate or 0:,.0f} req/s meanwhile), "
                  f"load average {os.getloadavg()[0]:.2f}", flush=True)
    print(json.dumps({"rows": rows}), file=sys.stderr)


if __name__ == "__main__":
    main()
