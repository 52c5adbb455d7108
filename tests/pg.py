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

import contextlib
import glob
import itertools
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
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


class ClusterUnavailable(Exception):
    """PostgreSQL cannot be run here (not installed, or root with no `postgres` user)."""


@dataclass
class Server:
    """A running cluster started by `running_cluster`."""

    root: Path  # its directory: data/, server.log and the unix socket
    bindir: Path
    as_user: list[str]  # the command prefix that runs a program as the server's user
    user: str

    def url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@/{dbname}?host={self.root}"


@contextlib.contextmanager
def running_cluster(*, prefix: str, settings: str = "", initdb_args: Sequence[str] = (),
                    stop: str = "immediate") -> Iterator[Server]:
    """initdb + pg_ctl start in a new temporary directory, listening only on
    a unix socket in it; stopped (`stop`: pg_ctl's shutdown mode) and
    removed at the end. As root the server runs as `postgres`. `settings`:
    more `-c name=value` server options. Raises ClusterUnavailable, or
    RuntimeError (with the server's log) when the cluster would not start.
    Used by the tests' fixture and by bench/cluster.py."""
    bindir = pg_bindir()
    if bindir is None:
        raise ClusterUnavailable("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    as_user: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise ClusterUnavailable("running as root and there is no `postgres` user to run "
                                     "the server as") from None
        as_user = ["runuser", "-u", "postgres", "--"]
    # as root, in /tmp itself: the postgres user must reach it (a TMPDIR under
    # /root would not do), and a unix socket's path must stay short
    root = Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp" if as_user else None))
    data, log = root / "data", root / "server.log"
    if as_user:
        shutil.chown(root, "postgres", "postgres")
    user = "postgres" if as_user else pwd.getpwuid(os.geteuid()).pw_name

    def run(*command: str | Path) -> None:
        subprocess.run([*as_user, *map(str, command)], check=True, capture_output=True,
                       timeout=120)

    try:
        try:
            run(bindir / "initdb", "-D", data, "-U", user, "--auth=trust", "--encoding=UTF8",
                "--locale=C", *initdb_args)
            options = (f"-c listen_addresses='' -c unix_socket_directories='{root}' "
                       + settings)
            run(bindir / "pg_ctl", "-D", data, "-l", log, "-o", options, "-w", "-t", "60",
                "start")
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            detail = getattr(exc, "stderr", b"") or b""
            server_log = log.read_text(errors="replace") if log.exists() else ""
            raise RuntimeError(f"could not start a PostgreSQL cluster: {exc}\n"
                               f"{detail.decode(errors='replace')}\n{server_log}") from None
        try:
            yield Server(root, bindir, as_user, user)
        finally:
            subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", stop,
                            "-w", "stop"], capture_output=True, check=False, timeout=60)
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[Cluster]:
    try:
        # fsync off: a test cluster that a crash loses costs nothing
        with running_cluster(prefix="feedhub-pg-", initdb_args=["--no-sync"], settings=(
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                "-c max_connections=200")) as server:
            yield Cluster(server.root, server.user, itertools.count())
    except ClusterUnavailable as exc:
        _unavailable(str(exc))
    except RuntimeError as exc:
        pytest.fail(str(exc))


@pytest.fixture
def pg_database(pg_cluster: Cluster) -> Iterator[str]:
    """The URL of a fresh empty database, dropped after the test."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)
