"""What the bot remembers per Discord server (guild), behind one small interface: `Store`.
`SqlStore` holds the SQL and the batching every backend shares; `store_sqlite.SQLiteStore` is
the default (one file in the state directory), `store_postgres.PostgresStore` the one for
several processes, and `open_store(url)` picks one."""

from __future__ import annotations

import collections
import logging
import operator
import threading
from collections.abc import Callable, Collection, Iterable, Iterator
from pathlib import Path
from typing import Any, NamedTuple, Protocol

from wordbot.bot.health import Availability, StoreError, StoreUnavailable
from wordbot.limits import state_dir

log = logging.getLogger(__name__)

DEFAULT_FILE = "wordbot.sqlite3"
DEFAULT_MAX_MESSAGES = 200_000  # per guild; the oldest are dropped beyond it
FLUSH_INTERVAL = 0.5  # seconds between commits of learned messages: committed within a second
FLUSH_BATCH = 500  # pending learned messages that trigger a commit at once
PAGE = 1000  # rows per query when iterating a guild's messages


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
    calls it through `asyncio.to_thread`). Whatever removes data (edit, delete, forget,
    prune, a lower cap) is one transaction, committed before it returns; `add_message` may
    batch, and its messages are committed within a second (or by `flush()` or `close()`).
    `on_drop(messages)` is told, once committed, what a cap or a retention dropped (maybe [])."""

    def add_message(self, message: Message) -> None: ...  # a message id seen twice is kept once
    def edit_message(self, id: int, text: str) -> Message | None: ...  # the message as it was; None: unknown
    def delete_messages(self, ids: Iterable[int]) -> list[Message]: ...  # one or a bulk; those that were stored
    def messages(self, guild: int) -> Iterator[Message]: ...  # oldest first, to rebuild a memory at start
    def count(self, guild: int) -> int: ...  # messages kept for a guild
    def forget_author(self, author: int, guild: int | None = None) -> list[Message]: ...  # None: every guild
    def forget_guild(self, guild: int) -> int: ...  # everything about a guild; how many messages went
    def listen(self, guild: int, channel: int) -> bool: ...  # learn from a channel; False: already did
    def unlisten(self, guild: int, channel: int) -> bool: ...  # False: was not listened to
    def channels(self, guild: int) -> list[int]: ...  # the channels listened to
    def ignore(self, guild: int, member: int) -> bool: ...  # learn nothing more from them; False: already
    def unignore(self, guild: int, member: int) -> bool: ...  # False: was not ignored
    def is_ignored(self, guild: int, member: int) -> bool: ...
    def backfill_state(self, guild: int, channel: int) -> Backfill | None: ...
    def set_backfill_state(self, state: Backfill) -> None: ...
    def backfills(self, guild: int | None = None) -> list[Backfill]: ...  # those not done, to resume at start
    def settings(self, guild: int) -> GuildSettings: ...
    def set_settings(self, guild: int, settings: GuildSettings) -> None: ...  # a lower cap applies at once
    def prune(self, now: float, guilds: Collection[int] | None = None) -> dict[int, int]: ...  # None: all; {guild: n}
    def guilds(self) -> list[int]: ...  # every guild the store holds anything about
    @property
    def available(self) -> bool: ...  # False from a lost connection until a retry reaches it again
    def on_availability(self, callback: Callable[[bool], None]) -> None: ...  # called on each change
    def flush(self) -> None: ...  # commit the learned messages still pending
    def close(self) -> None: ...  # flush, then release the file or the connections


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
OLDEST_FIRST = operator.attrgetter("time", "id")  # the order of `messages()` and of what a removal returns
_GUILD_TABLES = ("messages", "channels", "ignored", "backfill", "settings", "guilds")


class SqlStore(Availability):
    """The SQL and the write batching shared by the backends. A backend supplies `_placeholder`,
    `_transaction()` (a connection in one transaction, committed on a clean exit), `_read()`, the
    hooks `_schema_version(conn)` and `_set_schema_version(conn, version)`, `_ping()` (reach the
    database again after it was lost, see `health.Availability`), and calls `__init__` last."""

    _placeholder = "?"
    _forgotten: Callable[..., None] = staticmethod(lambda conn, author, guild, removed: None)  # a hook: notify.py

    def __init__(
        self,
        flush_interval: float | None = FLUSH_INTERVAL,
        retry: tuple[float, float] | None = None,  # (first, most) seconds between tries; None: the defaults
    ) -> None:
        self._init_availability(retry)
        self._pending: list[Message] = []
        self._pending_lock = threading.Lock()
        self._flush_lock = threading.Lock()  # commits of batches in the order they were learned
        self._stop = threading.Event()
        self._wake = threading.Event()  # a full batch wakes the flusher before its tick
        self._flush_failed = False
        self.on_drop: Callable[[list[Message]], None] = lambda dropped: None
        self._flusher: threading.Thread | None = None
        if flush_interval is not None:
            self._flusher = threading.Thread(
                target=self._flush_loop, args=(flush_interval,), name="wordbot-store-flush", daemon=True
            )
            self._flusher.start()
        self._opened = True

    def _run(self, conn: Any, sql: str, params: tuple = ()) -> Any:
        if self._placeholder != "?":
            sql = sql.replace("?", self._placeholder)
        return conn.execute(sql, params) if params else conn.execute(sql)

    def _migrate(self, conn: Any, target: int = SCHEMA_VERSION) -> None:
        """Bring the schema to `target`; the caller holds the backend's migration lock."""
        version = self._schema_version(conn)
        if version > SCHEMA_VERSION:
            raise StoreError(f"the store's schema {version} is newer than this wordbot knows: upgrade wordbot")
        for step in range(version, target):
            for statement in MIGRATIONS[step]:
                self._run(conn, statement)
        if target > version:
            self._set_schema_version(conn, target)
            log.info("store schema migrated from version %d to %d", version, target)

    def schema_version(self) -> int:
        with self._read() as conn:
            return self._schema_version(conn)

    def _flush_loop(self, interval: float) -> None:
        while not self._stop.is_set():
            self._wake.wait(interval)
            self._wake.clear()
            try:
                self.flush()
            except StoreUnavailable:  # kept pending; reported once and retried by `_retry_loop`
                continue
            except Exception as e:  # kept pending; retried after a pause
                if not self._flush_failed:
                    log.warning("store: learned messages not committed yet, will retry: %s", e)
                self._flush_failed = True
                self._stop.wait(interval)
                continue
            if self._flush_failed:
                log.warning("store: learned messages committed again")
            self._flush_failed = False

    def add_message(self, message: Message) -> None:
        with self._pending_lock:
            self._pending.append(Message(*message))
            full = len(self._pending) >= FLUSH_BATCH
        if full:  # committed by the flusher, so the caller never waits for the disk (without one: here)
            self._wake.set() if self._flusher is not None else self.flush()

    def flush(self) -> None:
        with self._flush_lock:
            with self._pending_lock:
                batch, self._pending = self._pending, []
            if not batch:
                return
            if self._down_since is not None:
                with self._pending_lock:
                    self._pending[:0] = batch
                self._check_available()
            try:
                with self._transaction() as conn:
                    capped = self._insert(conn, batch)
            except BaseException:
                with self._pending_lock:
                    self._pending[:0] = batch
                raise
        self.on_drop(capped)

    def _insert(self, conn: Any, batch: list[Message]) -> list[Message]:
        sql = f"INSERT INTO messages ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO NOTHING"
        conn.cursor().executemany(sql.replace("?", self._placeholder), batch)
        guilds = sorted({m.guild for m in batch})
        for guild in guilds:
            self._register(conn, guild)
        return [m for guild in guilds for m in self._trim(conn, guild)]

    def _register(self, conn: Any, guild: int) -> None:
        self._run(conn, "INSERT INTO guilds (guild) VALUES (?) ON CONFLICT DO NOTHING", (guild,))

    def _trim(self, conn: Any, guild: int) -> list[Message]:
        cap = self._settings(conn, guild).max_messages
        (count,) = self._run(conn, "SELECT count(*) FROM messages WHERE guild = ?", (guild,)).fetchone()
        oldest = "SELECT id FROM messages WHERE guild = ? ORDER BY created, id LIMIT ?"
        return self._delete(conn, f"id IN ({oldest})", (guild, count - cap)) if count > cap else []

    def edit_message(self, id: int, text: str) -> Message | None:
        self.flush()
        with self._transaction() as conn:
            row = self._run(conn, f"SELECT {_COLUMNS} FROM messages WHERE id = ?", (id,)).fetchone()
            if row is not None:
                self._run(conn, "UPDATE messages SET text = ? WHERE id = ?", (text, id))
        return None if row is None else Message(*row)

    def delete_messages(self, ids: Iterable[int]) -> list[Message]:
        ids = list(dict.fromkeys(ids))
        chunks = [tuple(ids[start : start + PAGE]) for start in range(0, len(ids), PAGE)]
        self.flush()
        with self._transaction() as conn:
            removed = [m for c in chunks for m in self._delete(conn, f"id IN ({', '.join('?' * len(c))})", c)]
        return sorted(removed, key=OLDEST_FIRST)

    def _delete(self, conn: Any, where: str, params: tuple) -> list[Message]:
        """Delete and say exactly what went (RETURNING: no row slips in between a read and the delete)."""
        rows = self._run(conn, f"DELETE FROM messages WHERE {where} RETURNING {_COLUMNS}", params).fetchall()
        return [Message(*row) for row in rows]

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

    def _rows(self, sql: str, params: tuple = ()) -> list[tuple]:
        with self._read() as conn:
            return self._run(conn, sql, params).fetchall()

    def count(self, guild: int) -> int:
        self.flush()
        return self._rows("SELECT count(*) FROM messages WHERE guild = ?", (guild,))[0][0]

    def forget_author(self, author: int, guild: int | None = None) -> list[Message]:
        where, params = ("author = ?", (author,)) if guild is None else ("author = ? AND guild = ?", (author, guild))
        self.flush()
        with self._transaction() as conn:
            removed = sorted(self._delete(conn, where, params), key=OLDEST_FIRST)
            self._forgotten(conn, author, guild, removed)  # PostgreSQL: a DM `forget me` reaches every process
            return removed

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
        return [row[0] for row in self._rows("SELECT channel FROM channels WHERE guild = ? ORDER BY channel", (guild,))]

    def ignore(self, guild: int, member: int) -> bool:
        sql = "INSERT INTO ignored (guild, member) VALUES (?, ?) ON CONFLICT DO NOTHING"
        return self._change(sql, (guild, member), guild)

    def unignore(self, guild: int, member: int) -> bool:
        return self._change("DELETE FROM ignored WHERE guild = ? AND member = ?", (guild, member))

    def is_ignored(self, guild: int, member: int) -> bool:
        return bool(self._rows("SELECT 1 FROM ignored WHERE guild = ? AND member = ?", (guild, member)))

    def backfill_state(self, guild: int, channel: int) -> Backfill | None:
        found = self._backfills("guild = ? AND channel = ?", (guild, channel))
        return found[0] if found else None

    def backfills(self, guild: int | None = None) -> list[Backfill]:
        every = guild is None
        return self._backfills("NOT done" + ("" if every else " AND guild = ?"), () if every else (guild,))

    def _backfills(self, where: str, params: tuple) -> list[Backfill]:
        sql = f"SELECT guild, channel, before_id, learned, target, done FROM backfill WHERE {where}"
        rows = self._rows(sql + " ORDER BY guild, channel", params)
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
            capped = self._trim(conn, guild)
        self.on_drop(capped)

    def prune(self, now: float, guilds: Collection[int] | None = None) -> dict[int, int]:
        self.flush()
        expired: list[Message] = []
        with self._transaction() as conn:
            sql = "SELECT guild, retention_days FROM settings WHERE retention_days IS NOT NULL ORDER BY guild"
            for guild, days in [r for r in self._run(conn, sql).fetchall() if guilds is None or r[0] in guilds]:
                expired += self._delete(conn, "guild = ? AND created < ?", (guild, now - days * 86_400))
        self.on_drop(expired)
        return dict(collections.Counter(m.guild for m in expired))

    def guilds(self) -> list[int]:
        self.flush()
        return [row[0] for row in self._rows("SELECT guild FROM guilds ORDER BY guild")]

    def _stop_flusher(self) -> None:
        self._stop.set()
        self._wake.set()
        for thread in (self._flusher, self._retrier):
            if thread is not None and thread.is_alive() and thread is not threading.current_thread():
                thread.join()
        try:
            self.flush()
        except StoreUnavailable:  # closing during an outage: what was not committed goes
            log.warning("%d learned messages not committed: the database is unreachable", len(self._pending))


def sqlite_path(url: str | None) -> Path | None:
    """The SQLite file a store URL names (None: the default one in the state directory), or
    None for another kind of store."""
    if url is None or url in ("sqlite:", "sqlite://"):
        return state_dir() / DEFAULT_FILE
    if (url.split(":", 1)[0].lower() if ":" in url else "") != "sqlite":
        return None
    if not url.startswith("sqlite:///") or len(url) == len("sqlite:///"):
        raise StoreError(f"bad SQLite store URL {url!r}: write sqlite:///relative/path or sqlite:////absolute/path")
    return Path(url[len("sqlite:///") :])


def open_store(url: str | None = None, **options: Any) -> SqlStore:
    """`sqlite:///PATH` (relative; `sqlite:////abs/path` for an absolute one), `sqlite://`
    or None (the default file in the state directory), or `postgresql://USER:PASSWORD@HOST/DB`."""
    from wordbot.bot.store_sqlite import SQLiteStore

    path = sqlite_path(url)
    if path is not None:
        return SQLiteStore(path, **options)
    scheme = url.split(":", 1)[0].lower() if url and ":" in url else ""
    if scheme in ("postgresql", "postgres"):
        from wordbot.bot.store_postgres import PostgresStore

        return PostgresStore(url, **options)
    what = f"scheme {scheme!r}" if scheme else repr(url)  # only the scheme: the rest may hold a password
    raise StoreError(f"unknown store URL {what}: use sqlite:///PATH or postgresql://USER@HOST/DATABASE")


def __getattr__(name: str) -> Any:
    if name == "SQLiteStore":  # it lives in store_sqlite.py (which imports this module); importable from here too
        from wordbot.bot.store_sqlite import SQLiteStore

        return SQLiteStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
