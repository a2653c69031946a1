"""What the bot remembers per Discord server (guild), behind one small interface.

`Store` is the interface; `SqlStore` holds the SQL and the batching every backend
shares; `SQLiteStore` is the default backend (one file in the state directory) and
`store_postgres.PostgresStore` the one for several processes. `open_store(url)` picks one.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol
from urllib.parse import urlsplit

from wordbot.errors import WordbotError

log = logging.getLogger(__name__)

STATE_DIR_ENV = "WORDBOT_STATE_DIR"
DEFAULT_FILE = "wordbot.sqlite3"
DEFAULT_MAX_MESSAGES = 200_000  # per guild; the oldest are dropped beyond it
FLUSH_INTERVAL = 0.5  # seconds between commits of learned messages: committed within a second
FLUSH_BATCH = 500  # pending learned messages that trigger a commit at once
PAGE = 1000  # rows per query when iterating a guild's messages
DAY = 86_400.0


class StoreError(WordbotError, RuntimeError):
    """The store cannot be opened or used: a bad URL, an unreachable database, a newer schema."""


class Message(NamedTuple):
    """One learned Discord message; `time` in Unix seconds."""

    id: int
    guild: int
    channel: int
    author: int
    time: float
    text: str


class GuildSettings(NamedTuple):
    max_messages: int = DEFAULT_MAX_MESSAGES  # the oldest messages are dropped beyond this
    retention_days: float | None = None  # None: kept until forgotten, deleted or capped


class Backfill(NamedTuple):
    """Where the history backfill of one channel stands, so it can resume after a restart."""

    guild: int
    channel: int
    before: int | None  # the oldest message id read so far: the next page is before it
    learned: int  # messages read so far
    limit: int  # messages to read in all
    done: bool = False


class Store(Protocol):
    """Everything the bot keeps, stored apart per guild. Safe to call from threads (the bot
    calls it through `asyncio.to_thread`). Each method that removes data is one transaction,
    committed before it returns; `add_message` may batch (committed within a second)."""

    def add_message(self, message: Message) -> None:
        """Learn one message (a message id seen twice is kept once)."""

    def edit_message(self, id: int, text: str) -> Message | None:
        """Replace a message's text; returns the message as it was, None if unknown."""

    def delete_messages(self, ids: Iterable[int]) -> list[Message]:
        """Remove messages (one or a bulk delete); returns those that were stored."""

    def messages(self, guild: int) -> Iterator[Message]:
        """A guild's messages, oldest first (to rebuild its memory at start)."""

    def count(self, guild: int) -> int:
        """How many messages a guild has."""

    def forget_author(self, author: int, guild: int | None = None) -> int:
        """Remove an author's messages in one guild, or in every guild when None; returns how many."""

    def forget_guild(self, guild: int) -> int:
        """Remove everything about a guild; returns how many messages were removed."""

    def listen(self, guild: int, channel: int) -> bool:
        """Learn from a channel from now on; False if it already was."""

    def unlisten(self, guild: int, channel: int) -> bool:
        """Stop learning from a channel; False if it was not listened to."""

    def channels(self, guild: int) -> list[int]:
        """The channels listened to in a guild."""

    def ignore(self, guild: int, member: int) -> bool:
        """Learn nothing more from a member in a guild; False if already ignored."""

    def unignore(self, guild: int, member: int) -> bool:
        """Learn from a member again; False if not ignored."""

    def is_ignored(self, guild: int, member: int) -> bool: ...

    def backfill_state(self, guild: int, channel: int) -> Backfill | None: ...

    def set_backfill_state(self, state: Backfill) -> None: ...

    def backfills(self, guild: int | None = None) -> list[Backfill]:
        """Backfills not done yet (to resume them at start)."""

    def settings(self, guild: int) -> GuildSettings: ...

    def set_settings(self, guild: int, settings: GuildSettings) -> None:
        """Change a guild's cap and retention; a lower cap drops the oldest messages at once."""

    def prune(self, now: float) -> dict[int, int]:
        """Drop messages older than each guild's retention; returns {guild: messages dropped}."""

    def guilds(self) -> list[int]:
        """Every guild the store holds anything about."""

    def flush(self) -> None:
        """Commit the learned messages still pending."""

    def close(self) -> None: ...


# The schema, one tuple of statements per version; the same SQL for every backend.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE guilds (guild BIGINT PRIMARY KEY)",
        "CREATE TABLE messages (id BIGINT PRIMARY KEY, guild BIGINT NOT NULL, channel BIGINT NOT NULL,"
        " author BIGINT NOT NULL, created DOUBLE PRECISION NOT NULL, text TEXT NOT NULL)",
        "CREATE INDEX messages_by_guild_time ON messages (guild, created, id)",
        "CREATE TABLE channels (guild BIGINT NOT NULL, channel BIGINT NOT NULL, PRIMARY KEY (guild, channel))",
        "CREATE TABLE ignored (guild BIGINT NOT NULL, member BIGINT NOT NULL, PRIMARY KEY (guild, member))",
        "CREATE TABLE backfill (guild BIGINT NOT NULL, channel BIGINT NOT NULL, before_id BIGINT,"
        " learned BIGINT NOT NULL, target BIGINT NOT NULL, done BOOLEAN NOT NULL, PRIMARY KEY (guild, channel))",
        "CREATE TABLE settings (guild BIGINT PRIMARY KEY, max_messages BIGINT NOT NULL,"
        " retention_days DOUBLE PRECISION)",
    ),
    ("CREATE INDEX messages_by_author ON messages (author, guild)",),  # 2: `forget me` reads by author
)
SCHEMA_VERSION = len(MIGRATIONS)

_COLUMNS = "id, guild, channel, author, created, text"
_GUILD_TABLES = ("messages", "channels", "ignored", "backfill", "settings", "guilds")


class SqlStore:
    """The SQL and the write batching shared by the backends. A backend supplies
    `_transaction()` (a connection inside one transaction, committed on exit),
    `_read()` (a connection for reads), `_placeholder`, and the schema version hooks."""

    _placeholder = "?"

    def __init__(self, flush_interval: float | None = FLUSH_INTERVAL) -> None:
        self._pending: list[Message] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # commits of batches in the order they were learned
        self._stop = threading.Event()
        self._flush_failed = False
        self._flusher: threading.Thread | None = None
        if flush_interval is not None:
            self._flusher = threading.Thread(
                target=self._flush_loop, args=(flush_interval,), name="wordbot-store-flush", daemon=True
            )

    # -- backend hooks --------------------------------------------------------------------
    def _transaction(self) -> contextlib.AbstractContextManager[Any]:
        raise NotImplementedError

    def _read(self) -> contextlib.AbstractContextManager[Any]:
        return self._transaction()

    def _schema_version(self, conn: Any) -> int:
        raise NotImplementedError

    def _set_schema_version(self, conn: Any, version: int) -> None:
        raise NotImplementedError

    # -- shared machinery -----------------------------------------------------------------
    def _run(self, conn: Any, sql: str, params: tuple = ()) -> Any:
        if self._placeholder != "?":
            sql = sql.replace("?", self._placeholder)
        return conn.execute(sql, params) if params else conn.execute(sql)

    def _migrate(self, conn: Any, target: int = SCHEMA_VERSION) -> None:
        """Bring the schema to `target`; the caller holds the backend's migration lock."""
        version = self._schema_version(conn)
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store's schema is version {version}, newer than this wordbot knows ({SCHEMA_VERSION}):"
                " upgrade wordbot"
            )
        for step in range(version, target):
            for statement in MIGRATIONS[step]:
                self._run(conn, statement)
        if target > version:
            self._set_schema_version(conn, target)
            log.info("store schema migrated from version %d to %d", version, target)

    def schema_version(self) -> int:
        with self._read() as conn:
            return self._schema_version(conn)

    def _start_flusher(self) -> None:
        if self._flusher is not None:
            self._flusher.start()

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.wait(interval):
            try:
                self.flush()
            except Exception as e:  # kept pending; retried at the next tick
                if not self._flush_failed:
                    log.warning("store: learned messages not committed yet, will retry: %s", e)
                self._flush_failed = True
            else:
                if self._flush_failed:
                    log.warning("store: learned messages committed again")
                self._flush_failed = False

    def add_message(self, message: Message) -> None:
        with self._pending_lock:
            self._pending.append(Message(*message))
            full = len(self._pending) >= FLUSH_BATCH
        if full:
            self.flush()

    def flush(self) -> None:
        with self._flush_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            try:
                with self._transaction() as conn:
                    self._insert(conn, batch)
            except BaseException:
                with self._pending_lock:
                    self._pending[:0] = batch
                raise

    def _insert(self, conn: Any, batch: list[Message]) -> None:
        sql = f"INSERT INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        conn.cursor().executemany(sql.replace("?", self._placeholder), batch)
        for guild in sorted({m.guild for m in batch}):
            self._register(conn, guild)
            self._trim(conn, guild)

    def _register(self, conn: Any, guild: int) -> None:
        self._run(conn, "INSERT INTO guilds (guild) VALUES (?) ON CONFLICT DO NOTHING", (guild,))

    def _trim(self, conn: Any, guild: int) -> None:
        cap = self._settings(conn, guild).max_messages
        (count,) = self._run(conn, "SELECT count(*) FROM messages WHERE guild = ?", (guild,)).fetchone()
        if count > cap:
            self._run(
                conn,
                "DELETE FROM messages WHERE id IN"
                " (SELECT id FROM messages WHERE guild = ? ORDER BY created, id LIMIT ?)",
                (guild, count - cap),
            )

    def edit_message(self, id: int, text: str) -> Message | None:
        self.flush()
        with self._transaction() as conn:
            row = self._run(conn, f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (id,)).fetchone()
            if row is not None:
                self._run(conn, "UPDATE messages SET text = ? WHERE id = ?", (text, id))
        return None if row is None else Message(*row)

    def delete_messages(self, ids: Iterable[int]) -> list[Message]:
        ids = list(dict.fromkeys(ids))
        self.flush()
        removed: list[Message] = []
        with self._transaction() as conn:
            for start in range(0, len(ids), PAGE):
                chunk = tuple(ids[start : start + PAGE])
                marks = ", ".join("?" * len(chunk))
                rows = self._run(conn, f"SELECT {_COLUMNS} FROM messages WHERE id IN ({marks})", chunk).fetchall()
                self._run(conn, f"DELETE FROM messages WHERE id IN ({marks})", chunk)
                removed += [Message(*row) for row in rows]
        return sorted(removed, key=lambda m: (m.time, m.id))

    def messages(self, guild: int) -> Iterator[Message]:
        self.flush()
        after: tuple[float, int] = (float("-inf"), -(2**63))
        while True:  # pages by (time, id), so no lock or transaction is held between pages
            with self._read() as conn:
                rows = self._run(
                    conn,
                    f"SELECT {_COLUMNS} FROM messages WHERE guild = ? AND (created > ? OR (created = ? AND id > ?))"
                    " ORDER BY created, id LIMIT ?",
                    (guild, after[0], after[0], after[1], PAGE),
                ).fetchall()
            for row in rows:
                yield Message(*row)
            if len(rows) < PAGE:
                return
            after = (rows[-1][4], rows[-1][0])

    def count(self, guild: int) -> int:
        self.flush()
        with self._read() as conn:
            return self._run(conn, "SELECT count(*) FROM messages WHERE guild = ?", (guild,)).fetchone()[0]

    def forget_author(self, author: int, guild: int | None = None) -> int:
        self.flush()
        with self._transaction() as conn:
            if guild is None:
                return self._run(conn, "DELETE FROM messages WHERE author = ?", (author,)).rowcount
            return self._run(conn, "DELETE FROM messages WHERE author = ? AND guild = ?", (author, guild)).rowcount

    def forget_guild(self, guild: int) -> int:
        self.flush()
        with self._transaction() as conn:
            removed = [self._run(conn, f"DELETE FROM {t} WHERE guild = ?", (guild,)).rowcount for t in _GUILD_TABLES]
        return removed[0]

    def _change(self, sql: str, params: tuple, guild: int | None = None) -> bool:
        with self._transaction() as conn:
            if guild is not None:
                self._register(conn, guild)
            return self._run(conn, sql, params).rowcount > 0

    def listen(self, guild: int, channel: int) -> bool:
        sql = "INSERT INTO channels (guild, channel) VALUES (?, ?) ON CONFLICT DO NOTHING"
        return self._change(sql, (guild, channel), guild)

    def unlisten(self, guild: int, channel: int) -> bool:
        return self._change("DELETE FROM channels WHERE guild = ? AND channel = ?", (guild, channel))

    def channels(self, guild: int) -> list[int]:
        with self._read() as conn:
            rows = self._run(conn, "SELECT channel FROM channels WHERE guild = ? ORDER BY channel", (guild,))
            return [row[0] for row in rows.fetchall()]

    def ignore(self, guild: int, member: int) -> bool:
        sql = "INSERT INTO ignored (guild, member) VALUES (?, ?) ON CONFLICT DO NOTHING"
        return self._change(sql, (guild, member), guild)

    def unignore(self, guild: int, member: int) -> bool:
        return self._change("DELETE FROM ignored WHERE guild = ? AND member = ?", (guild, member))

    def is_ignored(self, guild: int, member: int) -> bool:
        with self._read() as conn:
            sql = "SELECT 1 FROM ignored WHERE guild = ? AND member = ?"
            return self._run(conn, sql, (guild, member)).fetchone() is not None

    def backfill_state(self, guild: int, channel: int) -> Backfill | None:
        found = [b for b in self._backfills("guild = ? AND channel = ?", (guild, channel))]
        return found[0] if found else None

    def backfills(self, guild: int | None = None) -> list[Backfill]:
        if guild is None:
            return self._backfills("NOT done", ())
        return self._backfills("NOT done AND guild = ?", (guild,))

    def _backfills(self, where: str, params: tuple) -> list[Backfill]:
        with self._read() as conn:
            sql = f"SELECT guild, channel, before_id, learned, target, done FROM backfill WHERE {where}"
            rows = self._run(conn, sql + " ORDER BY guild, channel", params).fetchall()
        return [Backfill(*row[:5], bool(row[5])) for row in rows]

    def set_backfill_state(self, state: Backfill) -> None:
        b = Backfill(*state)
        with self._transaction() as conn:
            self._register(conn, b.guild)
            self._run(
                conn,
                "INSERT INTO backfill (guild, channel, before_id, learned, target, done) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (guild, channel) DO UPDATE SET before_id = excluded.before_id,"
                " learned = excluded.learned, target = excluded.target, done = excluded.done",
                (b.guild, b.channel, b.before, b.learned, b.limit, bool(b.done)),
            )

    def _settings(self, conn: Any, guild: int) -> GuildSettings:
        sql = "SELECT max_messages, retention_days FROM settings WHERE guild = ?"
        row = self._run(conn, sql, (guild,)).fetchone()
        return GuildSettings() if row is None else GuildSettings(*row)

    def settings(self, guild: int) -> GuildSettings:
        with self._read() as conn:
            return self._settings(conn, guild)

    def set_settings(self, guild: int, settings: GuildSettings) -> None:
        s = GuildSettings(*settings)
        if s.max_messages < 1 or (s.retention_days is not None and s.retention_days <= 0):
            raise ValueError(f"max_messages must be ≥ 1 and retention_days > 0 or None, not {s}")
        self.flush()
        with self._transaction() as conn:
            self._register(conn, guild)
            self._run(
                conn,
                "INSERT INTO settings (guild, max_messages, retention_days) VALUES (?, ?, ?) ON CONFLICT (guild)"
                " DO UPDATE SET max_messages = excluded.max_messages, retention_days = excluded.retention_days",
                (guild, s.max_messages, s.retention_days),
            )
            self._trim(conn, guild)

    def prune(self, now: float) -> dict[int, int]:
        self.flush()
        dropped: dict[int, int] = {}
        with self._transaction() as conn:
            sql = "SELECT guild, retention_days FROM settings WHERE retention_days IS NOT NULL ORDER BY guild"
            for guild, days in self._run(conn, sql).fetchall():
                sql = "DELETE FROM messages WHERE guild = ? AND created < ?"
                n = self._run(conn, sql, (guild, now - days * DAY)).rowcount
                if n:
                    dropped[guild] = n
        return dropped

    def guilds(self) -> list[int]:
        self.flush()
        with self._read() as conn:
            return [row[0] for row in self._run(conn, "SELECT guild FROM guilds ORDER BY guild").fetchall()]

    def _stop_flusher(self) -> None:
        self._stop.set()
        if self._flusher is not None and self._flusher.is_alive():
            self._flusher.join()
        self.flush()


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
    ) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
            self._conn.execute("PRAGMA journal_mode = WAL")
            self._conn.execute("PRAGMA synchronous = FULL")  # a commit survives power loss, not only a kill
            with self._transaction() as conn:
                self._migrate(conn, schema_version)
        except (OSError, sqlite3.Error) as e:
            raise StoreError(f"cannot open the SQLite store {self.path}: {e}") from None
        super().__init__(flush_interval)
        self._start_flusher()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    @contextlib.contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            yield self._conn

    def _schema_version(self, conn: sqlite3.Connection) -> int:
        return conn.execute("PRAGMA user_version").fetchone()[0]

    def _set_schema_version(self, conn: sqlite3.Connection, version: int) -> None:
        conn.execute(f"PRAGMA user_version = {int(version)}")

    def close(self) -> None:
        if getattr(self, "_conn", None) is None:
            return
        self._stop_flusher()
        with self._lock:
            self._conn.close()
            self._conn = None


def default_path() -> Path:
    """$WORDBOT_STATE_DIR/wordbot.sqlite3, else the user's state directory's."""
    state_dir = os.environ.get(STATE_DIR_ENV) or None
    if state_dir is None:
        import platformdirs

        state_dir = platformdirs.user_state_dir("wordbot")
    return Path(state_dir) / DEFAULT_FILE


def safe_url(url: str) -> str:
    """`url` without its password, fit for a log line or an error."""
    try:
        parts = urlsplit(url)
        if parts.password is None:
            return url
        netloc = parts.netloc.rsplit("@", 1)
        user = (parts.username or "") + ":***"
        return parts._replace(netloc=f"{user}@{netloc[-1]}").geturl()
    except ValueError:
        return "<unparsable URL>"


def open_store(url: str | None = None, **options: Any) -> SqlStore:
    """`sqlite:///PATH` (relative; `sqlite:////abs/path` for an absolute one), `sqlite://`
    or None (the default file in the state directory), or `postgresql://USER:PASSWORD@HOST/DB`."""
    if url is None or url in ("sqlite:", "sqlite://"):
        return SQLiteStore(default_path(), **options)
    scheme = url.split(":", 1)[0].lower() if ":" in url else ""
    if scheme == "sqlite":
        if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
            raise StoreError(f"bad SQLite store URL {url!r}: write sqlite:///relative/path or sqlite:////absolute/path")
        return SQLiteStore(url[len("sqlite:///") :], **options)
    if scheme in ("postgresql", "postgres"):
        from wordbot.bot.store_postgres import PostgresStore

        return PostgresStore(url, **options)
    raise StoreError(f"unknown store URL {safe_url(url)!r}: use sqlite:///PATH or postgresql://USER@HOST/DATABASE")
