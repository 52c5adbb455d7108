"""A hub directory for end-to-end tests: a config.toml in a temp dir, and the
real `feedhub` entry point run as a subprocess against it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import feedparser

FEEDHUB = Path(sys.executable).with_name("feedhub")
FIXTURES = Path(__file__).parent / "fixtures"

CONFIG = """\
# A test hub: comments must survive `feedhub add` and `feedhub remove`.
[hub]
title = "Test hub"
base_url = "https://hub.example.org/feeds/"
allow_private_networks = true   # the feed server is on 127.0.0.1
items_per_feed = {items_per_feed}
default_interval = "{interval}"
timeout = "5s"
host_spacing = 0  # the test server is one host

[languages.fa]
title = "خبرها"
"""


class HubDir:
    def __init__(self, root: Path, *, items_per_feed: int = 50, interval: str = "30m"):
        self.root = root
        self.config = root / "config.toml"
        self.config.write_text(CONFIG.format(items_per_feed=items_per_feed, interval=interval),
                               encoding="utf-8")
        self.feeds = root / "feeds"
        self.database = root / "feedhub.db"

    def command(self, *args: str) -> list[str]:
        entry = [str(FEEDHUB)] if FEEDHUB.exists() else [sys.executable, "-m", "feedhub"]
        return [*entry, "--config", str(self.config), *args]

    def run(self, *args: str, timeout: float = 60,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """Run the CLI; `input`, if given, is its stdin (answers to prompts)."""
        return subprocess.run(self.command(*args), capture_output=True, text=True,
                              timeout=timeout, cwd=self.root, env=_env(),
                              input=input)

    def start(self, *args: str, new_session: bool = False) -> subprocess.Popen[str]:
        """Start the CLI in the background. `new_session`: in a session of its
        own, so that kill_9 can also find helpers it started after a look."""
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.root, env=_env(),
                                start_new_session=new_session)

    def feed(self, language: str) -> feedparser.FeedParserDict:
        return feedparser.parse((self.feeds / f"{language}.atom").read_bytes())


RSS = """<?xml version="1.0"?><rss version="2.0"><channel><title>{name}</title>
<link>https://{name}.example/</link><description>d</description><language>en</language>
{items}</channel></rss>"""
ITEM = "<item><title>{title}</title><link>https://x.example/{guid}</link><guid>{guid}</guid></item>"


def rss(name: str, *guids: str) -> str:
    """A small English RSS feed with the given guids (item links are not
    local: sources using it need fulltext = "never")."""
    return RSS.format(name=name, items="".join(ITEM.format(title=f"{name} {g}", guid=f"{name}-{g}")
                                               for g in guids))


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("FEEDHUB_CONFIG", None)
    return env


def wait_for(condition: Callable[[], object], timeout: float = 15.0, step: float = 0.05) -> None:
    """Poll `condition` until it is true; fail the test after `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(step)
    raise AssertionError(f"condition not met within {timeout}s")


def stop(process: subprocess.Popen[str], timeout: float = 15) -> str:
    """SIGTERM a daemon started with HubDir.start; return what it logged."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=timeout)
    return stderr


@dataclass(frozen=True)
class Proc:
    """One process as /proc shows it."""

    pid: int
    ppid: int
    session: int
    started: int  # clock ticks after boot: tells a reused pid apart
    zombie: bool  # dead, waiting for its parent (or init) to reap it
    cmdline: str

    def __str__(self) -> str:
        return f"pid {self.pid} (parent {self.ppid}): {self.cmdline or '?'}"


def processes() -> dict[int, Proc]:
    """Every process on the machine (Linux /proc)."""
    table = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:  # gone meanwhile
            continue
        fields = stat[stat.rindex(")") + 2:].split()  # the name may hold spaces and ")"
        table[int(entry.name)] = Proc(
            pid=int(entry.name), ppid=int(fields[1]), session=int(fields[3]),
            started=int(fields[19]), zombie=fields[0] in "ZX",
            cmdline=cmdline.replace(b"\0", b" ").decode(errors="replace").strip())
    return table


def family(leader: int) -> list[Proc]:
    """`leader` and all its descendants, by their parent links."""
    table = processes()
    found = [table[leader]] if leader in table else []
    for process in found:  # grows while it is walked: breadth first
        found.extend(p for p in table.values() if p.ppid == process.pid and p.pid != leader)
    return found


def pool_of(leader: int) -> dict[str, list[Proc]]:
    """The multiprocessing helpers of `leader` by role: the parser workers
    (forked from it, so with its command line, or its forkserver's
    children), and its forkserver and resource tracker if it has them."""
    roles: dict[str, list[Proc]] = {"forkserver": [], "workers": [], "resource tracker": []}
    found = family(leader)
    own = found[0].cmdline if found and found[0].pid == leader else None
    for process in found[1:]:
        if "multiprocessing.resource_tracker" in process.cmdline:
            roles["resource tracker"].append(process)
        elif "multiprocessing.forkserver" in process.cmdline:
            roles["forkserver" if process.ppid == leader else "workers"].append(process)
        elif process.ppid == leader and process.cmdline == own:
            roles["workers"].append(process)
    return roles


def kill_9(process: subprocess.Popen[str], timeout: float = 10.0) -> list[Proc]:
    """SIGKILL `process` alone, as the OOM killer does, then wait until no
    process of its family is left: none seen just before the kill, and none
    in its session if it has one of its own (see HubDir.start). Survivors
    fail the test, and are killed so that they outlive neither the daemon
    nor the test run. Returns the family seen before the kill."""
    seen = family(process.pid)
    session = process.pid if process.poll() is None and os.getsid(process.pid) == process.pid \
        else None
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    known = {(p.pid, p.started) for p in seen}

    def survivors() -> list[Proc]:
        return [p for p in processes().values() if not p.zombie and (
            (p.pid, p.started) in known or (session is not None and p.session == session))]

    deadline = time.monotonic() + timeout
    while (left := survivors()) and time.monotonic() < deadline:
        time.sleep(0.1)
    for survivor in left:
        with contextlib.suppress(ProcessLookupError):
            os.kill(survivor.pid, signal.SIGKILL)
    for stream in (process.stdout, process.stderr):  # read by nobody now
        if stream is not None:
            stream.close()
    if left:
        raise AssertionError(f"{len(left)} process(es) outlived the killed pid {process.pid} by "
                             f"{timeout:.0f}s:\n" + "\n".join(map(str, left)))
    return seen


def files_under(root: Path, folder: str = "", *, hidden: bool = True) -> dict[str, bytes]:
    """Every file under `root` (or its `folder`), by its path relative to
    `root`; hidden=False leaves out dot-files (temp files)."""
    return {str(path.relative_to(root)): path.read_bytes()
            for path in sorted((root / folder).rglob("*"))
            if path.is_file() and (hidden or not path.name.startswith("."))}
