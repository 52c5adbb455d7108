"""A hub directory for end-to-end tests: a config.toml in a temp dir, and the
real `feedhub` entry point run as a subprocess against it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
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

    def start(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(self.command(*args), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, cwd=self.root, env=_env())

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
