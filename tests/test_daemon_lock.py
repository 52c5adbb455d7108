"""The daemon's lock on its database outlives no part of the daemon: a
parser worker forked from it must not hold the lock once the daemon is gone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from feedhub._files import DaemonLock

DAEMON_THEN_KILLED = """
import os, sys, time
from feedhub._files import DaemonLock
lock = DaemonLock(sys.argv[1]).__enter__()  # held until the end
child = os.fork()  # as a pool forks its parser workers
if child == 0:
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 1)  # the test reads our parent's output to its end
    os.dup2(quiet, 2)
    time.sleep(120)
    os._exit(0)
print(child, flush=True)
os._exit(0)  # gone without unlocking, as under SIGKILL
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="forks")
def test_a_daemon_gone_outright_leaves_its_database_free_while_its_forked_child_lives(
        tmp_path: Path) -> None:
    database = tmp_path / "feedhub.db"
    done = subprocess.run([sys.executable, "-c", DAEMON_THEN_KILLED, str(database)],
                          capture_output=True, text=True, timeout=60, check=True)
    child = int(done.stdout)
    try:
        os.kill(child, 0)  # alive, holding whatever it inherited
        with DaemonLock(database):  # a new daemon starts
            assert DaemonLock.held(database)
    finally:
        os.kill(child, signal.SIGKILL)
