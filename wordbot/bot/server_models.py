"""Per-server models (`wordbot discord --server-models DIR`): `DIR/<guild id>/` is served to
that server, with the server's memory on top, loaded off the event loop, at most a few in
memory (least recently used dropped), reloaded when its directory changes, and never served
once a message it was trained on is forgotten, deleted or edited.

How a model knows what it was trained on: `wordbot train --discord-server` writes
`server-messages.json` (each message id with a CRC-32 of its stored text) beside the model.
How the bot knows what the server still lets it keep: the server's memory (a
`MirroredMemory`) holds every stored message's text and counts each removal or edit in its
`generation`; a model is checked again only when that changed. The memory also feeds the
server model's own memory (`follow`), since a model's vocabulary may differ from the bundled one.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
import zlib
from collections import OrderedDict, deque
from collections.abc import Hashable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wordbot.bot.communities import Communities
from wordbot.memory import Memory

if TYPE_CHECKING:
    from wordbot.bot.store import Message
    from wordbot.predictor import Predictor

log = logging.getLogger("wordbot.bot")

TRAINED_FILE = "server-messages.json"  # in a server model's directory: what it was trained on
MAX_TRAINED_BYTES = 64 << 20  # 200,000 messages (a server's default cap) take about 7 MB
DEFAULT_CAPACITY = 4  # server models kept in memory at once
CHECK_EVERY = 2.0  # seconds between looks at a server's directory (has it changed?)
REMOVALS_KEPT = 10_000  # a server memory's latest removals and edits, for cheap checks
FILL_WAIT = 1.0  # seconds a request waits for a server model to learn the server's memory
RETRAIN = "retrain with `wordbot train --from default --discord-server {guild}`"

_generations = itertools.count(1)  # unique over every memory, so a new memory never repeats an old mark


def digest(text: str) -> int:
    """What identifies a message's text (an edit changes it)."""
    return zlib.crc32(text.encode("utf-8", "surrogatepass"))


def trained_record(guild: int, messages: list[Message]) -> tuple[dict, bytes]:
    """The manifest's `discord_server` section and the `server-messages.json` bytes for a model
    trained on `messages` (all of one guild): which ones, so the bot can tell later whether
    any was removed."""
    ids = [m.id for m in messages]
    digests = [digest(m.text) for m in messages]
    listed = json.dumps({"guild": guild, "ids": ids, "crc32": digests}, separators=(",", ":")).encode()
    section = {
        "guild": str(guild),  # a string: snowflakes pass 2**53, where JSON readers lose digits
        "messages": len(messages),
        "fingerprint": "sha256:" + _sha256(listed),
        "last_message_id": str(max(ids)) if ids else None,
        "last_message_time": max((m.time for m in messages), default=None),
        "read_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "messages_file": TRAINED_FILE,
    }
    return section, listed


def _sha256(data: bytes) -> str:
    import hashlib

    return hashlib.sha256(data).hexdigest()


def read_trained(directory: Path, guild: int) -> dict[int, int]:
    """{message id: digest} of what the model in `directory` was trained on; ValueError when the
    file is missing, too large, malformed, or names another server."""
    path = directory / TRAINED_FILE
    size = path.stat().st_size
    if size > MAX_TRAINED_BYTES:
        raise ValueError(f"{path} is {size:,} bytes (at most {MAX_TRAINED_BYTES:,})")
    data = json.loads(path.read_bytes())
    if not isinstance(data, dict) or str(data.get("guild")) != str(guild):
        raise ValueError(f"{path} is not about server {guild}")
    ids, digests = data.get("ids"), data.get("crc32")
    if not isinstance(ids, list) or not isinstance(digests, list) or len(ids) != len(digests):
        raise ValueError(f"{path} has no list of message ids with their crc32")
    if not all(type(i) is int for i in ids) or not all(type(d) is int for d in digests):
        raise ValueError(f"{path}: message ids and crc32 must be whole numbers")
    return dict(zip(ids, digests, strict=True))


class MirroredMemory(Memory):
    """A server's memory that also keeps each message's text, counts removals and edits in
    `generation`, and repeats every change into the memories that `follow` it."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.texts: dict[Hashable, str] = {}
        self.followers: list[Memory] = []
        self._catching_up: list[list[tuple]] = []  # changes made while a follower replays
        self.generation = next(_generations)
        # The latest removals and edits, (generation, key): a model is checked against those
        # since its last check, not against every message it was trained on.
        self._removals: deque[tuple[int, Hashable]] = deque(maxlen=REMOVALS_KEPT)
        self._cleared_at = 0
        super().__init__(*args, **kwargs)

    def _repeat(self, *change: Any) -> None:
        for memory in self.followers:
            _apply(memory, change)
        for changes in self._catching_up:
            changes.append(change)

    def clear(self) -> None:
        with self._lock:
            super().clear()
            self.texts = {}
            self.generation = self._cleared_at = next(_generations)
            self._repeat("clear")

    def _added(self, key: Hashable, text: str) -> None:
        """Each message `add` or `add_many` counted (under the lock): kept, an edit counted,
        repeated into the followers."""
        old = self.texts.get(key)
        self.texts[key] = text
        if old is not None and old != text:  # an edit
            self.generation = next(_generations)
            self._removals.append((self.generation, key))
        self._repeat("add", key, text)

    def remove(self, key: Hashable) -> bool:
        with self._lock:
            removed = super().remove(key)
            if removed:
                del self.texts[key]
                self.generation = next(_generations)
                self._removals.append((self.generation, key))
                self._repeat("remove", key)
            return removed

    def follow(self, memory: Memory) -> None:
        """Fill `memory` with what this one learned and keep it in step from then on. The
        replay runs without the lock (a big server's messages take seconds); what changes
        meanwhile is applied after it."""
        changes: list[tuple] = []
        with self._lock:
            snapshot = list(self.texts.items())
            self._catching_up.append(changes)
        try:
            for key, text in snapshot:
                memory.add(key, text)
        finally:
            with self._lock:
                self._catching_up.remove(changes)
                for change in changes:
                    _apply(memory, change)
                self.followers.append(memory)

    def unfollow(self, memory: Memory) -> None:
        with self._lock:
            self.followers = [m for m in self.followers if m is not memory]

    def removed_since(self, generation: int) -> list[Hashable] | None:
        """The keys removed or edited after `generation`; None when that is no longer known
        (everything was cleared since, or more removals came than are kept)."""
        with self._lock:
            removals = self._removals
            if self._cleared_at > generation:
                return None
            if len(removals) == removals.maxlen and removals[0][0] > generation:
                return None
            return [key for at, key in removals if at > generation]

    def holds(self, guild: int, trained: dict[int, int]) -> bool:
        """Whether every message of `trained` ({id: digest}) is still here, unedited."""
        with self._lock:
            texts = self.texts
            for id, crc in trained.items():
                text = texts.get((guild, id))
                if text is None or digest(text) != crc:
                    return False
            return True


def _apply(memory: Memory, change: tuple) -> None:
    if change[0] == "add":
        memory.add(change[1], change[2])
    elif change[0] == "remove":
        memory.remove(change[1])
    else:
        memory.clear()


class ServedCommunities(Communities):
    """`Communities` whose server memories are `MirroredMemory`s, so a server model can follow them."""

    def view(self, guild: int) -> Predictor:
        with self._lock:
            found = self._views.get(guild)
            if found is None:
                memory = MirroredMemory(self.predictor.tokenizer.vocab)
                found = self._views[guild] = self.predictor.view(memory)
            return found


@dataclass
class _Model:
    """One server's model as loaded, and what is known about it."""

    guild: int
    stamp: tuple  # its manifest's (inode, size, mtime): another means the directory changed
    predictor: Predictor | None  # None: it could not be loaded (`problem` says why)
    trained: dict[int, int] = field(default_factory=dict)
    problem: str = ""
    stale: bool = False  # trained on a message since forgotten: never served again
    checked: tuple | None = None  # (server memory, its generation) it was last checked against
    source: MirroredMemory | None = None  # the server memory its own memory follows
    view: Predictor | None = None  # the model with its own copy of the server's memory

    filled: threading.Event = field(default_factory=threading.Event)  # `view` holds the server's memory

    def drop_view(self) -> None:
        if self.source is not None and self.view is not None:
            self.source.unfollow(self.view.memory)
        self.source = self.view = None


def _fill(model: _Model) -> None:
    """Give the model's view the server's memory (in a thread of its own)."""
    source, view = model.source, model.view
    source.follow(view.memory)
    if model.view is not view:  # dropped meanwhile
        source.unfollow(view.memory)
    model.filled.set()


class ServerModels:
    """The server models of one directory, chosen per request by `choose` (blocking: call it
    through `asyncio.to_thread`). Thread-safe."""

    def __init__(self, directory: str | os.PathLike, *, capacity: int = DEFAULT_CAPACITY, check_every=CHECK_EVERY):
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.directory = Path(directory)
        self.capacity, self.check_every = capacity, check_every
        self._loaded: OrderedDict[int, _Model] = OrderedDict()  # least recently used first
        self._looked: dict[int, tuple[float, tuple | None]] = {}  # guild -> (when, stamp) of the last look
        self._status: dict[int, str] = {}  # guild -> what serves it, as `describe` says it
        self._lock = threading.Lock()
        self._guild_locks: dict[int, threading.Lock] = {}
        self.loads = 0  # models loaded so far (tests and logs)

    def loaded(self) -> list[int]:
        with self._lock:
            return list(self._loaded)

    def choose(self, guild: int, view: Predictor | None, bundled: Predictor, ready: bool = True) -> Predictor:
        """What answers `guild`: its model with its memory on top when there is one that may be
        served, else `view` (the bundled model with the server's memory; None: no memory, so
        `bundled`). `ready`: whether the server's memory was read from the store yet."""
        with self._lock:
            lock = self._guild_locks.setdefault(guild, threading.Lock())
        with lock:
            model = self._current(guild)
            fallback = view if view is not None else bundled
            if model is None:
                self._status[guild] = "the bundled model"
                return fallback
            if model.predictor is None:
                self._status[guild] = f"the bundled model (this server's model cannot be loaded: {model.problem})"
                return fallback
            if view is None:
                return self._serving(model, model.predictor)
            memory = view.memory
            if not isinstance(memory, MirroredMemory):
                return self._serving(model, model.predictor)
            if not ready:
                self._status[guild] = "the bundled model, until this server's stored messages are read"
                return fallback
            if self._is_stale(model, memory):
                model.drop_view()
                self._status[guild] = (
                    "the bundled model: a server model exists but was trained on messages since forgotten; "
                    + RETRAIN.format(guild=guild)
                )
                return fallback
            if model.source is not memory:
                model.drop_view()
                model.source, model.view, model.filled = memory, model.predictor.view(), threading.Event()
                threading.Thread(target=_fill, args=(model,), name=f"wordbot-server-model-{guild}", daemon=True).start()
            # A big server's memory takes a while to learn again (200,000 messages: about a
            # minute): the bundled model answers meanwhile, rather than keeping the request.
            if not model.filled.wait(FILL_WAIT):
                self._status[guild] = "the bundled model, while this server's own model reads the server's memory"
                return fallback
            return self._serving(model, model.view)

    def _serving(self, model: _Model, predictor: Predictor) -> Predictor:
        trained = f", trained on {len(model.trained):,} messages" if model.trained else ""
        self._status[model.guild] = f"this server's own model ({model.predictor.name}{trained})"
        return predictor

    def describe(self, guild: int) -> str:
        """Which model served `guild` last (`choose` says it)."""
        return self._status.get(guild, "the bundled model")

    def _is_stale(self, model: _Model, memory: MirroredMemory) -> bool:
        if model.stale:
            return True
        generation = memory.generation  # read first: a removal during the check is checked next time
        if model.checked is not None and model.checked[0] is memory:
            if model.checked[1] == generation:
                return False
            removed = memory.removed_since(model.checked[1])
            if removed is not None:  # only what was removed since the last check
                guild, trained = model.guild, model.trained
                model.stale = any(isinstance(k, tuple) and k[0] == guild and k[1] in trained for k in removed)
        else:
            removed = None
        if removed is None:  # a first check, another memory, or too much removed since: all of it
            model.stale = not memory.holds(model.guild, model.trained)
        model.checked = (memory, generation)
        if model.stale:
            log.info("server %s: its model was trained on messages since forgotten; not served", model.guild)
        return model.stale

    def _current(self, guild: int) -> _Model | None:
        """The guild's model as its directory is now (looked at most every `check_every`
        seconds), loaded if need be; None when the directory holds none."""
        now = time.monotonic()
        with self._lock:
            model = self._loaded.get(guild)
            if model is not None:
                self._loaded.move_to_end(guild)
            looked = self._looked.get(guild)
        if looked is not None and now - looked[0] < self.check_every:
            stamp = looked[1]
        else:
            stamp = self._stamp(guild)
            with self._lock:
                self._looked[guild] = (now, stamp)
        if stamp is None:
            if model is not None:
                self._forget(guild)
            return None
        if model is not None and model.stamp == stamp:
            return model
        if model is not None:
            log.info("server %s: its model directory changed; loading it again", guild)
        model = self._load(guild, stamp)
        with self._lock:
            old = self._loaded.pop(guild, None)
            self._loaded[guild] = model
            dropped = [self._loaded.popitem(last=False)[1] for _ in range(len(self._loaded) - self.capacity)]
        for gone in ([old] if old is not None else []) + dropped:
            gone.drop_view()
        return model

    def _forget(self, guild: int) -> None:
        with self._lock:
            model = self._loaded.pop(guild, None)
        if model is not None:
            model.drop_view()

    def _stamp(self, guild: int) -> tuple | None:
        try:
            found = os.stat(self.directory / str(guild) / "manifest.json")
        except OSError:
            return None
        return (found.st_ino, found.st_size, found.st_mtime_ns)

    def _load(self, guild: int, stamp: tuple) -> _Model:
        from wordbot.errors import WordbotError
        from wordbot.predictor import Predictor

        directory = self.directory / str(guild)
        try:
            predictor = Predictor.load(directory)
            trained = read_trained(directory, guild)
        except (WordbotError, OSError, ValueError) as e:
            problem = " ".join(str(e).split())[:300]
            log.warning("server %s: cannot load its model from %s: %s", guild, directory, problem)
            return _Model(guild, stamp, None, problem=problem)
        self.loads += 1
        log.info("server %s: serving its own model from %s (%d messages)", guild, directory, len(trained))
        return _Model(guild, stamp, predictor, trained)
