"""A DM `forget me` reaching every process of a bot that runs as several shard processes on
one PostgreSQL store.

Only that forget needs a broadcast: it covers every server, and the other processes hold the
memories of their own servers. `forget server`, `/wordbot forget me` in a server, deletes and
edits are about one server, and Discord sends them to the shard that owns it, whose process
holds that server's memory.

How it travels: the process that gets the DM deletes the member's messages and, in the same
transaction, writes one row per removed message to `wordbot_forgotten` (a sequence number,
the author, the server, the message id; no text; one row without a message when none was
stored) and runs `NOTIFY wordbot_forget`, so the rows and the notification exist only if the
forget committed. Forgets take an advisory lock for that write, so the sequence numbers are
committed in order. Every process LISTENs on a connection of its own (`ForgetListener`, one
thread) and, on a notification, on (re)connecting and every `CATCH_UP` seconds anyway, reads
the rows past the last sequence number it applied, and for them:

- drops those messages from the memories it holds;
- sweeps the author's messages it learned but had not committed yet when the forget ran (the
  store batches learned messages for up to a second, longer while the database is down): it
  commits them, deletes every message of that author still stored, drops those too, and, if
  there were any, publishes them the same way, so the process that holds them hears of it.
  A sweep that finds nothing publishes nothing, so this ends.

A dropped connection is retried with backoff and reported once; on reconnecting, what was
forgotten meanwhile is applied from the table, so nothing is missed. Rows are kept for
`KEEP_DAYS` days.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

log = logging.getLogger("wordbot.bot")

CHANNEL = "wordbot_forget"
NAME = "wordbot-forget-listener"  # the listener's thread, and its connection's application_name
FORGET_LOCK = 0x776F7264626F75  # the advisory lock a forget holds while it writes its rows
KEEP_DAYS = 7  # how long the forgotten ids are kept for processes that were disconnected
CATCH_UP = 5.0  # seconds between reads of the table without a notification: a safety net
TICK = 0.5  # seconds between checks whether to stop
BACKOFF = (0.5, 30.0)  # first and longest pause before reconnecting

SCHEMA = (
    "CREATE TABLE IF NOT EXISTS wordbot_forgotten (seq BIGSERIAL PRIMARY KEY, author BIGINT NOT NULL,"
    " guild BIGINT, id BIGINT, at TIMESTAMPTZ NOT NULL DEFAULT now())",
    "CREATE INDEX IF NOT EXISTS wordbot_forgotten_at ON wordbot_forgotten (at)",
)

Forgotten = tuple[int, int | None, int | None]  # (author, guild, message id); no message: (author, None, None)


def publish(conn: Any, author: int, removed: Iterable[Any]) -> None:
    """In the forget's transaction: record what `author`'s forget removed (messages with `guild`
    and `id`) and notify every listening process when it commits."""
    conn.execute("SELECT pg_advisory_xact_lock(%s)", (FORGET_LOCK,))  # sequence numbers commit in order
    rows = [(author, m.guild, m.id) for m in removed] or [(author, None, None)]
    conn.cursor().executemany("INSERT INTO wordbot_forgotten (author, guild, id) VALUES (%s, %s, %s)", rows)
    conn.execute("DELETE FROM wordbot_forgotten WHERE at < now() - make_interval(days => %s)", (KEEP_DAYS,))
    conn.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(author)))


def position(conn: Any, since: float | None = None) -> int:
    """The last sequence number written: a new listener applies only what comes after it.
    `since` (seconds): the last one before the forgets of the last `since` seconds instead."""
    last = conn.execute("SELECT coalesce(max(seq), 0) FROM wordbot_forgotten").fetchone()[0]
    if since is None:
        return last
    sql = "SELECT min(seq) - 1 FROM wordbot_forgotten WHERE at >= now() - make_interval(secs => %s)"
    first = conn.execute(sql, (since,)).fetchone()[0]
    return last if first is None else first


class ForgetListener:
    """Listens for forgets on a connection of its own, in a daemon thread, and calls
    `apply(rows)` with the rows of the forgets committed after `start` (by any process, this
    one too), in order. `start` None (the database was unreachable when it was made): those
    committed since it was made, found by their time when it first connects. `connect()` opens
    an autocommit connection; `describe(error)` makes a log line of an error (without the
    password). When `apply` raises, the rows are applied again at the next catch-up (it must not
    mind seeing a row twice)."""

    def __init__(
        self,
        connect: Callable[[], Any],
        apply: Callable[[list[Forgotten]], object],
        start: int | None,
        *,
        describe: Callable[[BaseException], str] = str,
        catch_up: float = CATCH_UP,
    ) -> None:
        self._connect, self._apply, self._describe = connect, apply, describe
        self._failing = False
        self._catch_up_every = catch_up
        self.applied = start  # the last sequence number applied
        self._made = time.monotonic()
        self.connected = threading.Event()
        self.reconnects = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=NAME, daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        import psycopg

        delay, lost = BACKOFF[0], False
        while not self._stop.is_set():
            try:
                with self._connect() as conn:
                    conn.execute(f"LISTEN {CHANNEL}")
                    if self.applied is None:
                        self.applied = position(conn, since=time.monotonic() - self._made + 1.0)
                    self._catch_up(conn)  # what was forgotten while this process was not listening
                    if lost:
                        self.reconnects += 1
                        log.warning("forget listener: connected again, caught up to forget %d", self.applied)
                    delay, lost = BACKOFF[0], False
                    self.connected.set()
                    self._listen(conn)
            except psycopg.Error as e:
                self.connected.clear()
                if not lost:  # reported once, not at every retry
                    log.warning("forget listener: cannot reach the database, retrying: %s", self._describe(e))
                lost = True
                self._stop.wait(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, BACKOFF[1])
        self.connected.clear()

    def _listen(self, conn: Any) -> None:
        last = time.monotonic()
        while not self._stop.is_set():
            heard = False
            for _ in conn.notifies(timeout=TICK, stop_after=1):  # those that came meanwhile are kept for it
                heard = True
            if heard or time.monotonic() - last >= self._catch_up_every:
                self._catch_up(conn)  # a dead connection fails here too, even one that went silently
                last = time.monotonic()

    def _catch_up(self, conn: Any) -> None:
        rows = conn.execute(
            "SELECT seq, author, guild, id FROM wordbot_forgotten WHERE seq > %s ORDER BY seq", (self.applied,)
        ).fetchall()
        if not rows:
            return
        try:
            self._apply([row[1:] for row in rows])
        except Exception as e:  # the store failed under the sweep: again at the next catch-up
            if not self._failing:
                log.warning("forget listener: could not apply forgets yet, will retry: %s", self._describe(e))
            self._failing = True
            return
        if self._failing:
            log.warning("forget listener: forgets applied again")
        self._failing = False
        self.applied = rows[-1][0]
