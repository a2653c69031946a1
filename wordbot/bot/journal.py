"""Forgets, deletes and edits that arrive while the store's database is unreachable: kept on the
process's own disk (one JSON line each, fsynced before the bot says it is done) and applied to
the store in order once it is back; the file goes only after the store committed every line.
Each operation is idempotent, so a replay cut short (a crash, another outage) is simply run again."""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wordbot.bot.health import StoreError
from wordbot.limits import PRIVATE_DIRECTORY, PRIVATE_FILE

if TYPE_CHECKING:
    from wordbot.bot.store import Message, Store

log = logging.getLogger("wordbot.bot")

MAX_BYTES = 64 * 2**20  # about 300,000 forgets or 15,000 edits of full-length messages
OPERATIONS = ("delete", "edit", "forget_author", "forget_guild")


class JournalFull(StoreError):
    """The journal reached MAX_BYTES while the database is still unreachable."""


class Journal:
    """One process's journal file (`journal-<shards>.jsonl` in the state directory). Lines:
    {"op": "delete", "ids": [...]}, {"op": "edit", "id": N, "text": "..."},
    {"op": "forget_author", "author": N, "guild": N or null}, {"op": "forget_guild", "guild": N}."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()  # appends, and the replay's final cut, one at a time
        self._overlay = _Overlay(self._read()[0])  # what the waiting lines do to stored messages

    @property
    def pending(self) -> bool:
        """Whether lines wait to be applied to the store."""
        with self._lock:
            return bool(self._overlay)

    def append(self, op: str, **fields: Any) -> None:
        """Keep one operation durably (written and fsynced) before it returns."""
        if op not in OPERATIONS:
            raise ValueError(f"unknown journal operation {op!r}")
        entry = {"op": op, **fields}
        line = (json.dumps(entry, ensure_ascii=False, separators=(",", ":")) + "\n").encode()
        with self._lock:
            _, end = self._read()  # also cuts a line torn by a crash, so this one starts clean
            if end + len(line) > MAX_BYTES:
                raise JournalFull(f"the journal {self.path} is full ({MAX_BYTES:,} bytes): try again later")
            created = not self.path.exists()
            self.path.parent.mkdir(PRIVATE_DIRECTORY, parents=True, exist_ok=True)
            with os.fdopen(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE), "ab") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            if created:
                _sync_directory(self.path.parent)
            self._overlay.add(entry)

    def after(self, message: Message) -> str | None:
        """A stored message's text once the waiting lines are applied; None: they remove it."""
        with self._lock:
            return self._overlay.text(message)

    def replay(self, store: Store) -> int:
        """Apply every waiting line to the store, oldest first; remove the file once the store
        committed them all (lines appended meanwhile are kept, then applied too). How many were
        applied. A StoreUnavailable stops it with the file intact."""
        applied = 0
        while True:
            with self._lock:
                entries, end = self._read()
            if not entries:
                return applied
            for entry in entries:
                apply(store, entry)
            applied += len(entries)
            with self._lock:
                self._drop_first(end)
            log.info("applied %d journaled forgets, deletes and edits to the store", len(entries))

    def _read(self) -> tuple[list[dict[str, Any]], int]:
        """The complete lines and where they end; a torn last line (a crash mid-write, never
        acknowledged) is cut off."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return [], 0
        end = data.rfind(b"\n") + 1
        if end < len(data):
            log.warning("journal %s: cut a torn last line (%d bytes)", self.path, len(data) - end)
            os.truncate(self.path, end)
        entries = []
        for number, line in enumerate(data[:end].splitlines(), 1):
            try:
                entry = json.loads(line)
                if entry.get("op") not in OPERATIONS:
                    raise ValueError(f"unknown operation {entry.get('op')!r}")
            except ValueError as e:
                log.error("journal %s line %d skipped: %s", self.path, number, e)
                continue
            entries.append(entry)
        return entries, end

    def _drop_first(self, end: int) -> None:
        """The first `end` bytes were applied: keep only what was appended since."""
        rest = self.path.read_bytes()[end:]
        if rest:
            partial = self.path.with_name(self.path.name + ".partial")
            with os.fdopen(os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE), "wb") as f:
                f.write(rest)
                f.flush()
                os.fsync(f.fileno())
            os.replace(partial, self.path)
        else:
            self.path.unlink()
        _sync_directory(self.path.parent)
        self._overlay = _Overlay(self._read()[0])


def apply(store: Store, entry: dict[str, Any]) -> None:
    """One journaled operation, committed by the store (each is idempotent)."""
    op = entry["op"]
    if op == "delete":
        store.delete_messages(int(i) for i in entry["ids"])
    elif op == "edit":
        store.edit_message(int(entry["id"]), str(entry["text"]))
    elif op == "forget_author":
        guild = entry.get("guild")
        store.forget_author(int(entry["author"]), None if guild is None else int(guild))
    else:
        store.forget_guild(int(entry["guild"]))


class _Overlay:
    """The waiting lines, summed up for `Journal.after`: a forget or a delete removes a message
    whatever came before or after it (an edit of a removed message finds nothing), else the
    last edit gives its text."""

    def __init__(self, entries: Iterable[dict[str, Any]] = ()) -> None:
        self.count = 0
        self.deleted: set[int] = set()
        self.edited: dict[int, str] = {}
        self.authors: set[tuple[int, int | None]] = set()
        self.guilds: set[int] = set()
        for entry in entries:
            self.add(entry)

    def __bool__(self) -> bool:
        return self.count > 0

    def add(self, entry: dict[str, Any]) -> None:
        self.count += 1
        op = entry["op"]
        if op == "delete":
            self.deleted.update(int(i) for i in entry["ids"])
        elif op == "edit":
            self.edited[int(entry["id"])] = str(entry["text"])
        elif op == "forget_author":
            guild = entry.get("guild")
            self.authors.add((int(entry["author"]), None if guild is None else int(guild)))
        else:
            self.guilds.add(int(entry["guild"]))

    def text(self, message: Message) -> str | None:
        if not self.count:
            return message.text
        gone = (
            message.id in self.deleted
            or message.guild in self.guilds
            or (message.author, None) in self.authors
            or (message.author, message.guild) in self.authors
        )
        return None if gone else self.edited.get(message.id, message.text)


def _sync_directory(directory: Path) -> None:
    """A created, renamed or removed file survives a power loss only once its directory is synced."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
