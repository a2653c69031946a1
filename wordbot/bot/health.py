"""Whether the store's database can be reached. `Availability` (mixed into `store.SqlStore`)
marks the store down on a lost connection, says so once, retries with exponential backoff and
jitter in a thread of its own, says once when it is back and calls the listeners; meanwhile
every operation fails at once (`StoreUnavailable`) instead of waiting out a timeout per message."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable

from wordbot.errors import WordbotError

log = logging.getLogger("wordbot.bot.store")

RETRY_FIRST, RETRY_MAX = 0.5, 30.0  # seconds between tries to reach a lost database: doubling, jittered
UNREACHABLE = "database unreachable; answering without learning; retrying"  # logged once per outage


class StoreError(WordbotError, RuntimeError):
    """The store cannot be opened or used: a bad URL, an unreachable database, a newer schema."""


class StoreUnavailable(StoreError):
    """The database cannot be reached just now (a lost connection, a pool timeout, SQLite's disk
    I/O error or a lock held too long). The store retries in the background and says when it is
    back (`on_availability`); meanwhile every operation fails at once with this error."""


class Availability:
    """The down state and the retries. A backend turns a connection failure into
    `raise self._unavailable(reason)`, calls `_check_available()` before each operation, and
    supplies `_ping()` (reach the database again) and optionally `_went_down()`. It needs the
    store's `_stop` (set on close) and `_wake` (wakes the flusher) events, and `_opened`."""

    _down_since: float | None = None  # monotonic time the database was lost; None: reachable
    _opened = False  # until then (opening, migrating) a lost database is an error, not an outage
    _stop: threading.Event
    _wake: threading.Event
    retry_first, retry_max = RETRY_FIRST, RETRY_MAX

    def _init_availability(self, retry: tuple[float, float] | None) -> None:
        if retry is not None:
            self.retry_first, self.retry_max = retry
        self._health_lock = threading.Lock()
        self._listeners: list[Callable[[bool], None]] = []
        self._retrier: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return self._down_since is None

    def on_availability(self, callback: Callable[[bool], None]) -> None:
        """`callback(False)` when the database is lost, `callback(True)` when it is back; called
        from the store's threads (so it must not block on the event loop)."""
        self._listeners.append(callback)

    def _check_available(self) -> None:
        if self._down_since is not None:
            raise StoreUnavailable("the database is unreachable; retrying in the background")

    def _unavailable(self, reason: str) -> StoreUnavailable:
        """Mark the store down (reported once per outage) and start the retries; the error to raise."""
        with self._health_lock:
            first = self._down_since is None
            if first:
                self._down_since = time.monotonic()
        if first:
            log.warning("%s: %s", UNREACHABLE, reason)
            self._went_down()
            self._tell(False)
            if not self._stop.is_set():
                self._retrier = threading.Thread(target=self._retry_loop, name="wordbot-store-retry", daemon=True)
                self._retrier.start()
        return StoreUnavailable(f"the database is unreachable: {reason}")

    def _retry_loop(self) -> None:
        delay = self.retry_first
        while not self._stop.wait(random.uniform(delay / 2, delay)):  # jitter: processes do not retry in step
            try:
                self._ping()
            except Exception as e:
                log.debug("database still unreachable: %s", e)
                delay = min(delay * 2, self.retry_max)
                continue
            down = time.monotonic() - (self._down_since or time.monotonic())
            with self._health_lock:
                self._down_since = None
            log.warning("database back after %.1f s; learning again", down)
            self._wake.set()  # the learned messages still pending are committed now
            self._tell(True)
            return

    def _tell(self, available: bool) -> None:
        for callback in list(self._listeners):
            try:
                callback(available)
            except Exception:
                log.exception("a store availability callback failed")

    def _went_down(self) -> None:
        """Hook: what a backend lets go of when the database is lost (e.g. its pool)."""

    def _ping(self) -> None:
        """Reach the database again (raise if it still cannot be); a backend's own."""
        raise NotImplementedError
