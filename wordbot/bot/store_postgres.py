"""The PostgreSQL store, for a bot run as several processes on one database.

It shares every query with the SQLite store (`store.SqlStore`); what differs is here:
the `%s` placeholders, pooled psycopg 3 connections, the schema version kept in a table,
migrations serialised across processes by an advisory lock, a password that never
reaches a log line or an error message, and a DM `forget me` that reaches every process of
the bot (`listen_forgets`, notify.py).
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import unquote

from wordbot.bot import notify
from wordbot.bot.store import FLUSH_INTERVAL, SCHEMA_VERSION, Message, SqlStore, StoreError, StoreUnavailable

MIGRATION_LOCK = 0x776F7264626F74  # "wordbot": the advisory lock every process takes to migrate
CONNECT_TIMEOUT = 10  # seconds to reach the server
POOL_TIMEOUT = 5.0  # seconds an operation waits for a pooled connection before it fails
_LOGGERS = ("psycopg", "psycopg.pool")
# What libpq says when no server answers (down, restarting, not reachable over the network).
_NO_SERVER = (
    "connection refused",
    "timeout expired",
    "timed out",
    "no route to host",
    "network is unreachable",
    "failed to resolve host",
    "could not translate host name",
    "the database system is starting up",
    "the database system is shutting down",
    "the database system is in recovery mode",
    "server closed the connection unexpectedly",
)


_USERINFO_PASSWORD = re.compile(r"://[^:/@?#\s]*:([^@\s]*)@")
_QUERY_PASSWORD = re.compile(r"[?&]password=([^&\s]*)")


def url_secrets(url: str) -> list[str]:
    """The passwords written in a URL (user info and `password=`), as written and decoded,
    found without parsing it, so even a malformed URL gives them up."""
    found = _USERINFO_PASSWORD.findall(url) + _QUERY_PASSWORD.findall(url)
    return sorted({v for s in found if s for v in (s, unquote(s))}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def safe_url(url: str) -> str:
    """`url` without its password, fit for a log line or an error."""
    return redact(url, url_secrets(url))


class _Redact(logging.Filter):
    """Scrubs the password from psycopg's own log records (the pool logs connection errors)."""

    def __init__(self, secrets: list[str]) -> None:
        super().__init__()
        self.secrets = secrets

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if any(s in message for s in self.secrets):
            record.msg, record.args = redact(message, self.secrets), ()
        return True


class PostgresStore(SqlStore):
    """psycopg 3 with a `psycopg_pool` pool; each operation borrows one connection for one
    transaction, so several threads and several processes work at once."""

    _placeholder = "%s"

    def __init__(
        self,
        url: str,
        *,
        flush_interval: float | None = FLUSH_INTERVAL,
        schema_version: int = SCHEMA_VERSION,  # lower only to test migrations
        pool_size: int = 4,
        pool_timeout: float = POOL_TIMEOUT,
        retry: tuple[float, float] | None = None,  # (first, most) seconds between tries when lost
        wait_if_unreachable: bool = True,  # no server answers at start: open down and retry (False: fail)
    ) -> None:
        try:
            import psycopg
            import psycopg_pool  # noqa: F401  (used in _open; missing: say so here)
        except ImportError:
            raise StoreError("the PostgreSQL store needs psycopg 3: pip install 'wordbot[postgres]'") from None
        self._psycopg, self._secrets, self.url = psycopg, url_secrets(url), safe_url(url)
        self._listener: notify.ForgetListener | None = None
        self._filter = _Redact(self._secrets)
        for name in _LOGGERS:
            logging.getLogger(name).addFilter(self._filter)
        self._pool, self._closed, self._schema_target = None, False, schema_version
        self._dsn, self._pool_size, self._pool_timeout = url, pool_size, pool_timeout  # _dsn: never shown
        lost = None
        try:
            self._open(url, schema_version)
        except StoreUnavailable as e:  # a restart while the database is down: its journal waits for it
            if not wait_if_unreachable:
                self._release()
                raise StoreError(str(e)) from None
            lost = str(e)
        except BaseException:
            self._release()
            raise
        super().__init__(flush_interval, retry)
        if lost is not None:
            self._unavailable(lost)  # `_ping` migrates and opens the pool once it answers

    def _open(self, url: str, schema_version: int) -> None:
        """Migrate on a connection of its own under the advisory lock, then open the pool."""
        with (
            self._errors("cannot connect to"),
            self._psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT) as conn,
            conn.transaction(),
        ):
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS wordbot_schema (version INTEGER NOT NULL)")
            self._migrate(conn, schema_version)
            for statement in notify.SCHEMA:  # PostgreSQL's alone, so not a numbered migration
                conn.execute(statement)
        self._pool = self._new_pool()
        with self._errors("cannot connect to"):
            self._pool.open(wait=True, timeout=CONNECT_TIMEOUT * 2)

    def _new_pool(self) -> Any:
        import psycopg_pool

        return psycopg_pool.ConnectionPool(
            self._dsn,
            min_size=1,
            max_size=self._pool_size,
            timeout=self._pool_timeout,
            kwargs={"connect_timeout": CONNECT_TIMEOUT},
            name="wordbot-store",
            check=psycopg_pool.ConnectionPool.check_connection,  # a restarted server's dead connections
            open=False,
        )

    def _went_down(self) -> None:
        """Close the pool: its own reconnection attempts would log a warning each (the outage is
        reported once) and back off on their own schedule; `_ping` opens a fresh one."""
        if self._pool is not None:
            self._pool.close(timeout=1.0)

    def _ping(self) -> None:
        if self._pool is None:  # opened while unreachable: migrate first
            self._open(self._dsn, self._schema_target)
            return
        with self._psycopg.connect(self._dsn, connect_timeout=CONNECT_TIMEOUT) as conn:  # no pool's warnings
            conn.execute("SELECT 1")
        pool = self._new_pool()
        try:
            pool.open(wait=True, timeout=CONNECT_TIMEOUT)
        except BaseException:
            pool.close(timeout=1.0)
            raise
        old, self._pool = self._pool, pool
        if old is not None:
            old.close(timeout=1.0)

    @contextlib.contextmanager
    def _errors(self, doing: str) -> Iterator[None]:
        """Turns a database error into a one-line StoreError that names no password; once the
        store is open, a lost connection (OperationalError, which pool timeouts are too) marks
        it down and is a StoreUnavailable."""
        import psycopg_pool

        try:
            yield
        except (self._psycopg.Error, psycopg_pool.PoolTimeout) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            said = redact(f"{doing} PostgreSQL at {self.url}: {first}", self._secrets)
            if isinstance(e, self._psycopg.OperationalError):
                if self._opened:
                    raise self._unavailable(said) from None
                if any(sign in str(e).lower() for sign in _NO_SERVER):  # not a refusal of ours (a password)
                    raise StoreUnavailable(said) from None
            raise StoreError(said) from None

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[Any]:
        if self._closed:
            raise StoreError("the PostgreSQL store is closed")
        self._check_available()
        with self._errors("error talking to"), self._pool.connection() as conn:
            yield conn  # the pool commits on a clean exit, rolls back on an exception

    _read = _transaction  # reads borrow a connection too

    def _schema_version(self, conn: Any) -> int:
        row = conn.execute("SELECT version FROM wordbot_schema").fetchone()
        return 0 if row is None else row[0]

    def _set_schema_version(self, conn: Any, version: int) -> None:
        conn.execute("DELETE FROM wordbot_schema")
        conn.execute("INSERT INTO wordbot_schema (version) VALUES (%s)", (version,))

    def _forgotten(self, conn: Any, author: int, guild: int | None, removed: list[Message]) -> None:
        if guild is None:  # a DM `forget me`: every server, so every process (see notify.py)
            notify.publish(conn, author, removed)

    def listen_forgets(self, forget: Callable[[list[tuple[int, int]]], object]) -> notify.ForgetListener:
        """Call `forget(keys)` with the (guild, message id) of the messages that any process's DM
        `forget me` removes from now on, from a thread of its own, until `close()`; see notify.py.
        One listener per store: a second call replaces the first."""
        if self._listener is not None:  # a new bot on this store: it replaces the old one's
            self._listener.close()
        try:
            with self._read() as conn:
                start: int | None = notify.position(conn)
        except StoreError:  # unreachable now: the listener finds its start once it connects
            start = None

        def apply(rows: list[notify.Forgotten]) -> None:
            keys = [(guild, id) for _, guild, id in rows if guild is not None and id is not None]
            for author in dict.fromkeys(author for author, _, _ in rows):
                keys += [(m.guild, m.id) for m in self._sweep(author)]
            forget(keys)

        def connect() -> Any:
            options = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT, "application_name": notify.NAME}
            return self._psycopg.connect(self._dsn, **options)

        def describe(error: BaseException) -> str:
            return redact((str(error).strip().splitlines() or [type(error).__name__])[0], self._secrets)

        self._listener = notify.ForgetListener(connect, apply, start, describe=describe)
        return self._listener

    def _sweep(self, author: int) -> list[Message]:
        """After a forget of `author` everywhere: commit what this process learned and had not
        committed yet, then delete what of theirs is still stored (published if anything was)."""
        self.flush()
        with self._transaction() as conn:
            removed = self._delete(conn, "author = ?", (author,))
            if removed:
                notify.publish(conn, author, removed)
        return removed

    def _release(self) -> None:
        if self._listener is not None:
            self._listener.close()
            self._listener = None
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        for name in _LOGGERS:
            logging.getLogger(name).removeFilter(self._filter)

    def close(self) -> None:
        if self._closed:
            return
        try:
            self._stop_flusher()  # commits what is pending: still open for that
        finally:
            self._closed = True
            self._release()
