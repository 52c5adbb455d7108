"""A throwaway PostgreSQL cluster for the tests (pytest plugin, registered in
conftest.py): the real server, as Debian's `postgresql` package installs it.

- `pg_cluster` (session): `initdb` + `pg_ctl start` in a temporary directory,
  listening only on a unix socket inside it (no TCP port to collide with
  another run), trust authentication; stopped and removed at the end. As
  root (CI runs as root, and PostgreSQL refuses to), the server runs as the
  `postgres` system user the package creates, and owns the directory.
- `pg_database` (per test): the URL of a fresh, empty database in it.

Skips when PostgreSQL is not installed, except in CI (env CI set): there it
fails, so CI can never pass by skipping the PostgreSQL tests (as browser.py
does for chromium).
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import pytest


def pg_bindir() -> Path | None:
    """Where initdb and pg_ctl are: Debian keeps them out of PATH, under
    /usr/lib/postgresql/<major>/bin (pg_config, when installed, says which)."""
    pg_config = shutil.which("pg_config")
    if pg_config:
        found = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, check=False)
        bindir = Path(found.stdout.strip())
        if found.returncode == 0 and (bindir / "initdb").exists():
            return bindir
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name) if Path(
                            p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def _unavailable(reason: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the PostgreSQL tests (.ci/run installs postgresql)")
    pytest.skip(reason)


@dataclass
class Cluster:
    """A running throwaway cluster: `url(name)` is a libpq URL of one database."""

    socket_dir: Path
    user: str
    _counter: itertools.count[int]

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@/{dbname}?host={self.socket_dir}"

    def create_database(self) -> str:
        """A new empty database (CREATE DATABASE copies template1: a few ms)."""
        import psycopg

        name = f"t{os.getpid()}_{next(self._counter)}"
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        # the path, not the last "/": the URL's host= is a path too
        name = urlsplit(url).path.lstrip("/")
        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    bindir = pg_bindir()
    if bindir is None:
        _unavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        raise AssertionError  # unreachable: skip and fail raise
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            _unavailable("running as root and there is no `postgres` user to run the server as")
        as_user = ["runuser", "-u", "postgres", "--"]
    # as root, in /tmp itself: the postgres user must reach it (a TMPDIR under
    # /root would not do), and a unix socket's path must stay short
    root = Path(tempfile.mkdtemp(prefix="feedhub-pg-", dir="/tmp" if as_user else None))
    data, log = root / "data", root / "server.log"
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    user = "postgres" if as_user else pwd.getpwuid(os.geteuid()).pw_name

    def run(*command: str | Path) -> None:
        subprocess.run([*as_user, *map(str, command)], check=True, capture_output=True,
                       timeout=120)

    try:
        run(bindir / "initdb", "-D", data, "-U", user, "--auth=trust", "--no-sync",
            "--encoding=UTF8", "--locale=C")
        # listen on no TCP address, only on the socket in `root`; fsync off:
        # a test cluster that a crash loses costs nothing
        options = (f"-c listen_addresses='' -c unix_socket_directories='{root}' "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=200")
        run(bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60", "start")
    except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
        detail = getattr(exc, "stderr", b"") or b""
        server_log = log.read_text(errors="replace") if log.exists() else ""
        shutil.rmtree(root, ignore_errors=True)
        pytest.fail(f"could not start a PostgreSQL cluster: {exc}\n{detail.decode(errors='replace')}"
                    f"\n{server_log}")
    try:
        yield Cluster(root, user, itertools.count())
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate",
                        "-w", "stop"], capture_output=True, check=False, timeout=60)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_database(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh empty database, dropped after the test."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)
