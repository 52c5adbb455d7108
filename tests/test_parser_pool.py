"""How parser workers are started (worker.parser_pool): forked from their
owner when it asks (it holds no database connection) and runs one thread,
so that they share its pages and need no forkserver or resource tracker;
else from a forkserver (a fork would copy locks other threads may hold). Either way a worker
files items as the owner itself would. Reads /proc: Linux only."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

OWNER = """
import json, os, sys, threading, time
from datetime import UTC, datetime
from pathlib import Path
from feedhub.models import FetchResult, LanguageContext, SourceConfig
from feedhub.worker import parse_and_enrich, parser_pool

if sys.argv[1] == "threaded":
    threading.Thread(target=time.sleep, args=(60,), daemon=True).start()
text = ("Die Katze sitzt auf der Matte und schläft den ganzen Tag, während draußen der "
        "Regen fällt und die Kinder in der Schule sitzen.")
items = "".join(f"<item><title>Nummer {n}</title><guid>urn:n:{n}</guid>"
                f"<description>{text}</description></item>" for n in range(3))
body = ('<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        f"<title>Nachrichten</title><link>https://example.org/</link>{items}</channel></rss>")
url = "https://example.org/feed.xml"
feed = FetchResult(url=url, final_url=url, status=200, content=body.encode(),
                   headers={"content-type": "application/rss+xml"},
                   fetched_at=datetime(2024, 3, 1, tzinfo=UTC))
source, context = SourceConfig(name="s", url=url), LanguageContext()
pool = parser_pool(2, Path(sys.argv[2]), fork=sys.argv[3] == "fork")
in_worker = [pool.submit(parse_and_enrich, feed, source, context) for _ in range(4)]
in_worker = [future.result(timeout=120) for future in in_worker]
children = []
for task in os.listdir("/proc/self/task"):
    for pid in Path(f"/proc/self/task/{task}/children").read_text().split():
        children.append(Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\\0", b" ").decode())
pool.shutdown()
print(json.dumps({
    "own": Path("/proc/self/cmdline").read_bytes().replace(b"\\0", b" ").decode(),
    "children": children,
    "same": all(parsed == parse_and_enrich(feed, source, context) for parsed in in_worker),
    "languages": sorted({item.detected_language for item in in_worker[0].items}),
}))
"""

linux_only = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


def _owner(kind: str, cache: Path, fork: str = "fork") -> dict[str, object]:
    done = subprocess.run([sys.executable, "-c", OWNER, kind, str(cache), fork],
                          capture_output=True,
                          text=True, timeout=300, check=True)
    found: dict[str, object] = json.loads(done.stdout)
    return found


@linux_only
def test_a_single_threaded_owner_forks_its_workers_itself(tmp_path: Path) -> None:
    found = _owner("single", tmp_path)
    assert found["same"] is True and found["languages"] == ["de"]
    # its two workers, copies of itself; no forkserver, no resource tracker
    assert found["children"] == [found["own"]] * 2


@linux_only
@pytest.mark.parametrize(("kind", "fork"), [("threaded", "fork"), ("single", "no-fork")])
def test_an_owner_running_other_threads_or_not_asking_to_fork_starts_a_forkserver(
        tmp_path: Path, kind: str, fork: str) -> None:
    """Not asked to fork: the caller may hold a database connection."""
    found = _owner(kind, tmp_path, fork)
    assert found["same"] is True and found["languages"] == ["de"]
    children = found["children"]
    assert isinstance(children, list)
    assert any("forkserver" in command for command in children)
    assert found["own"] not in children


SIGNALLED = """
import asyncio, json, os, signal, sys
from pathlib import Path
from feedhub.worker import parser_pool

async def main():
    received = []
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, received.append, "TERM")
    pool = parser_pool(2, Path(sys.argv[1]), fork=True)
    children = [int(pid) for task in os.listdir("/proc/self/task")
                for pid in Path(f"/proc/self/task/{task}/children").read_text().split()]
    for _ in range(50):  # from their first moment: a service stop signals the whole group
        for pid in children:
            os.kill(pid, signal.SIGTERM)
        await asyncio.sleep(0.01)
    alive = {pool.submit(os.getpid).result(timeout=60) for _ in range(8)}
    pool.shutdown()
    print(json.dumps({"received": received, "children": sorted(children), "alive": sorted(alive)}))

asyncio.run(main())
"""


@linux_only
def test_a_signal_to_a_worker_just_forked_never_reaches_its_owner(tmp_path: Path) -> None:
    """A forked worker starts with its owner's asyncio signal handler and
    wakeup fd: a SIGTERM it got before it ignores SIGTERM would have been
    handled by the owner, as a second one (the daemon then exits at once)."""
    done = subprocess.run([sys.executable, "-c", SIGNALLED, str(tmp_path)], capture_output=True,
                          text=True, timeout=300, check=True)
    found = json.loads(done.stdout)
    assert found["received"] == []
    assert len(found["children"]) == 2 and found["alive"] == found["children"]
