"""The SQLite store, the default: one file in the state directory, for a bot run as one
process. It shares every query with the PostgreSQL store (`store.SqlStore`); what differs is
here: WAL mode, one connection behind one lock, `PRAGMA user_version` as the schema version,
and which of SQLite's errors mean the file cannot be used just now."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from wordbot.bot.store import FLUSH_INTERVAL, SCHEMA_VERSION, SqlStore, StoreError
from wordbot.limits import PRIVATE_DIRECTORY, PRIVATE_FILE, file_reason

# SQLite errors that say the file cannot be used just now, not that the SQL is wrong.
_SQLITE_LOST = ("disk i/o error", "database is locked", "unable to open", "database or disk is full")


class SQLiteStore(SqlStore):
    """One SQLite file: WAL mode, synchronous commits, one connection behind one lock (one
    writer), `PRAGMA user_version` as the schema version. Other processes may open the same
    file; `BEGIN IMMEDIATE` serialises their writers and their migrations."""

    def __init__(
        self,
        path: str | os.PathLike,
        *,
        flush_interval: float | None = FLUSH_INTERVAL,
        schema_version: int = SCHEMA_VERSION,  # lower only to test migrations
        retry: tuple[float, float] | None = None,  # (first, most) seconds between tries when lost
    ) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.RLock()
        try:
            # Members' messages and ids: a directory and database made here are the bot's user's
            # alone (SQLite gives its -wal and -shm files the database's mode).
            self.path.parent.mkdir(PRIVATE_DIRECTORY, parents=True, exist_ok=True)
            os.close(os.open(self.path, os.O_RDONLY | os.O_CREAT, PRIVATE_FILE))
            if sqlite3.sqlite_version_info < (3, 35):  # DELETE ... RETURNING
                raise sqlite3.Error(f"SQLite {sqlite3.sqlite_version} is too old: 3.35 or later is needed")
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            for attempt in range(600):  # switching to WAL is refused, not waited for, while others open it
                try:
                    self._conn.execute("PRAGMA journal_mode = WAL")
                    break
                except sqlite3.OperationalError as e:
                    if "locked" not in str(e) or attempt == 599:
                        raise
                    time.sleep(0.05)
            self._conn.execute("PRAGMA synchronous = FULL")  # a commit survives power loss, not only a kill
            with self._transaction() as conn:
                self._migrate(conn, schema_version)
        except OSError as e:  # the reason, and where on the way it met it when not the file itself
            met = f" ({e.filename})" if e.filename and str(e.filename) != str(self.path) else ""
            raise StoreError(f"cannot open the SQLite store {self.path}: {file_reason(e)}{met}") from None
        except sqlite3.Error as e:
            raise StoreError(f"cannot open the SQLite store {self.path}: {e}") from None
        super().__init__(flush_interval, retry)

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        self._check_available()
        with self._lock, self._lost():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                with contextlib.suppress(sqlite3.Error):  # a failed disk may refuse the rollback too
                    self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        self._check_available()
        with self._lock, self._lost():
            yield self._conn

    @contextlib.contextmanager
    def _lost(self) -> Iterator[None]:
        """SQLite's errors that mean the file cannot be used just now mark the store down."""
        try:
            yield
        except sqlite3.OperationalError as e:
            if not self._opened or not any(sign in str(e).lower() for sign in _SQLITE_LOST):
                raise
            raise self._unavailable(f"SQLite store {self.path}: {e}") from None

    def _ping(self) -> None:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")  # the write lock too: a locked file is not back
            try:
                self._conn.execute("SELECT count(*) FROM guilds").fetchone()
            finally:
                self._conn.execute("ROLLBACK")

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        return conn.execute("PRAGMA user_version").fetchone()[0]

    def _set_schema_version(self, conn: sqlite3.Connection, version: int) -> None:
        conn.execute(f"PRAGMA user_version = {int(version)}")

    def close(self) -> None:
        if self._conn is not None:
            self._stop_flusher()
            with self._lock:
                self._conn.close()
                self._conn = None
