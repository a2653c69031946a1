"""A real PostgreSQL server for the tests, started in a temporary directory.

`initdb` and `pg_ctl` come from Debian's `postgresql` package (/usr/lib/postgresql/*/bin).
PostgreSQL refuses to run as root, and CI runs as root: then the server runs as the
`postgres` system user (created if missing) and owns its temporary directory. It listens
on a free port of 127.0.0.1 (password required) and on a unix socket in that directory.
Missing binaries or psycopg skip the tests with the reason, except in CI (CI=true), where
they fail. One server per test session; `new_database()` gives each test a fresh database.
"""

from __future__ import annotations

import contextlib
import glob
import itertools
import os
import pwd
import secrets
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

SUPERUSER = "wordbot"
SYSTEM_USER = "postgres"


def bin_dir() -> Path | None:
    """The newest installed PostgreSQL's bin directory, None if there is none."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path and shutil.which("pg_ctl") else None


def unavailable() -> str | None:
    """Why no server can be started here, or None."""
    if bin_dir() is None:
        return "PostgreSQL is not installed (apt-get install postgresql)"
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg is not installed (pip install -e '.[postgres]')"
    return None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _system_user() -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(SYSTEM_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--user-group", "--no-create-home", SYSTEM_USER], check=True)
        return pwd.getpwnam(SYSTEM_USER)


class PostgresServer:
    def __init__(self) -> None:
        self.bin = bin_dir()
        # /tmp when root: the postgres user must reach it (a TMPDIR under /root would not do),
        # and the socket path must stay short
        self.dir = Path(tempfile.mkdtemp(prefix="wordbot-pg-", dir="/tmp" if os.geteuid() == 0 else None))
        self.data = self.dir / "data"
        self.password = secrets.token_urlsafe(16)
        self.port = _free_port()
        self._ids = itertools.count()
        self._as: dict = {}
        if os.geteuid() == 0:
            user = _system_user()
            os.chown(self.dir, user.pw_uid, user.pw_gid)
            self._as = {"user": user.pw_uid, "group": user.pw_gid, "extra_groups": []}

    def _run(self, *args: str) -> None:
        done = subprocess.run(
            [str(self.bin / args[0]), *args[1:]], cwd=self.dir, capture_output=True, text=True, timeout=120, **self._as
        )
        if done.returncode != 0:
            log = self.dir / "server.log"
            tail = log.read_text(errors="replace")[-2000:] if log.exists() else ""
            raise RuntimeError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}{tail}")

    def start(self) -> None:
        pwfile = self.dir / "password"
        pwfile.write_text(self.password + "\n")
        if self._as:
            os.chown(pwfile, self._as["user"], self._as["group"])
        self._run(
            "initdb",
            "-D",
            str(self.data),
            "-U",
            SUPERUSER,
            f"--pwfile={pwfile}",
            "-E",
            "UTF8",
            "--no-sync",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
        )
        pwfile.unlink()
        self.start_server()

    def start_server(self) -> None:
        """Start (or restart) the server on its data directory."""
        options = f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.dir} -c fsync=off -c max_connections=200"
        self._run(
            "pg_ctl", "-D", str(self.data), "-l", str(self.dir / "server.log"), "-w", "-t", "60", "-o", options, "start"
        )

    def stop_server(self) -> None:
        """Kill the server the hard way, as a crash would, keeping its data directory."""
        self._run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def running(self) -> bool:
        done = subprocess.run(
            [str(self.bin / "pg_ctl"), "-D", str(self.data), "status"], capture_output=True, timeout=60, **self._as
        )
        return done.returncode == 0

    def stop(self) -> None:
        if self.data.exists():
            with contextlib.suppress(RuntimeError):  # already stopped
                self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")
        shutil.rmtree(self.dir, ignore_errors=True)

    def url(self, database: str = "postgres", password: str | None = None) -> str:
        password = self.password if password is None else password
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """The URL of a fresh, empty schema, as good as a new database for a store and much
        faster to make (the URL sets its search_path); all in the database `tests`."""
        import psycopg

        name = f"test_{os.getpid()}_{next(self._ids)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'tests'").fetchone():
                conn.execute("CREATE DATABASE tests")
        with psycopg.connect(self.url("tests"), autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return self.url("tests") + f"?options=-csearch_path%3D{name}"


_server: PostgresServer | None = None


def _required() -> None:
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test the PostgreSQL store: {reason}")
        pytest.skip(reason)


@pytest.fixture(scope="module")
def stoppable_postgres():
    """A server of the module's own, which its tests kill and restart (stopping the session's
    would disturb other tests); running again after each test."""
    _required()
    server = PostgresServer()
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def restartable(stoppable_postgres):
    """`stoppable_postgres`, started again after the test if it left it stopped."""
    yield stoppable_postgres
    if not stoppable_postgres.running():
        stoppable_postgres.start_server()


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server (skipped with the reason where impossible; failed in CI)."""
    global _server
    reason = unavailable()
    if reason is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI must test the PostgreSQL store: {reason}")
        pytest.skip(reason)
    if _server is None:
        _server = PostgresServer()
        try:
            _server.start()
        except BaseException:
            _server.stop()
            _server = None
            raise
    yield _server
    if _server is not None:
        _server.stop()
        _server = None
