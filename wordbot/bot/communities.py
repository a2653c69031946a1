"""One memory per server, kept in step with the store (and, while its database is down, with the
journal): what the learning cog changes, in the order the store must see it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from itertools import islice
from typing import TYPE_CHECKING, Any, TypeVar

from wordbot.bot.health import StoreUnavailable
from wordbot.bot.journal import Journal
from wordbot.bot.store import Message
from wordbot.limits import state_dir

if TYPE_CHECKING:
    from wordbot.bot.store import Store
    from wordbot.predictor import Predictor

log = logging.getLogger("wordbot.bot")
REBUILD_BATCH = 256  # stored messages learned again at once (`Predictor.learn_many`)
T = TypeVar("T")


class Communities:
    """The store and one memory per server, kept in step: every change goes to the store
    first, then to the memory. While the store cannot take it (its database is unreachable, or
    journaled operations still wait), a removal goes to the journal first, then to the memory,
    and nothing new is learned. Its methods block (the store, the journal's fsync): the bot
    calls them through `asyncio.to_thread`."""

    def __init__(self, predictor: Predictor, store: Store, journal: Journal | None = None) -> None:
        self.predictor, self.store = predictor, store
        self.journal = journal if journal is not None else Journal(state_dir() / "journal.jsonl")
        self._views: dict[int, Predictor] = {}
        self._listened: dict[int, set[int]] = {}  # guild -> channels, read from the store once
        self._listen_changes = 0  # bumped by every change, so a read that raced one is not kept
        self._owners: dict[int, tuple[int, int]] = {}  # message id -> (guild, author): to forget while down
        self._lock = threading.Lock()
        # While the memories are rebuilt, what changed meanwhile (key -> new text, None: gone),
        # so the rebuild never brings back a message deleted or edited under it.
        self._changed: dict[tuple[int, int], str | None] | None = None
        self._catching_up = threading.Lock()
        self._complete = False  # whether a rebuild read every stored message
        self.rebuilt = threading.Event()
        # Whether a server is this process's (its shards'): a rebuild loads those alone.
        self.owns: Callable[[int], bool] = lambda guild: True
        store.on_drop = self._unlearn  # what a cap or a retention drops from the store leaves the memory too
        store.on_availability(self._availability)

    @property
    def learning(self) -> bool:
        """Whether the store takes changes now: reachable, with no journaled operation waiting."""
        return self.store.available and not self.journal.pending

    def _availability(self, available: bool) -> None:
        if available:  # in a thread of its own: the store's retry thread must not wait for a rebuild
            threading.Thread(target=self.catch_up, name="wordbot-catch-up", daemon=True).start()

    def catch_up(self) -> None:
        """Apply what the journal kept to the store, then rebuild the memories if an outage cut
        the rebuild short; at start, and whenever the database is back."""
        with self._catching_up:
            try:
                self.journal.replay(self.store)
            except StoreUnavailable:
                return  # called again when the database is back
            if not self._complete:
                self.rebuild()

    def view(self, guild: int) -> Predictor:
        """The server's predictor: the shared model with this server's memory."""
        with self._lock:
            found = self._views.get(guild)
            if found is None:
                found = self._views[guild] = self.predictor.view()
            return found

    def rebuild(self) -> int:
        """Learn every stored message again (at start, in a background thread); how many. What
        the journal still holds is applied on top, so a forgotten message never comes back."""
        with self._lock:
            self._changed = {}
        learned = 0
        try:
            for guild in self.store.guilds():
                if not self.owns(guild):
                    continue  # another process's shard holds that server's memory
                view, messages = self.view(guild), iter(self.store.messages(guild))
                while batch := list(islice(messages, REBUILD_BATCH)):
                    learned += self._learn_again(guild, view, batch)
                    time.sleep(0)  # let answers have the interpreter between batches: they never wait long
            self._complete = True
        except StoreUnavailable:
            log.info("learning the stored messages again stopped at %d; goes on when the database is back", learned)
            return learned
        finally:
            with self._lock:
                self._changed = None
            self.rebuilt.set()
        log.info("learned %d stored messages again", learned)
        return learned

    def _learn_again(self, guild: int, view: Predictor, batch: list[Message]) -> int:
        """Learn a batch of stored messages again at once (`learn_many`), then what changed
        under them meanwhile (noted in `_changed`): each ends as it is now. Their owners are
        known before they are learned, so a `forget me` meanwhile (while the database is down:
        by the owners) reaches them too."""
        found = [(message, self.journal.after(message)) for message in batch]
        kept = [(message, text) for message, text in found if text is not None]
        with self._lock:
            self._owners.update((message.id, (guild, message.author)) for message, _ in kept)
        view.learn_many([text for _, text in kept], keys=[(guild, message.id) for message, _ in kept])
        for message, text in found:
            key = (guild, message.id)
            with self._lock:
                change = self._changed.get(key, text)
            if change is None:
                self._drop(key)
            elif change != text:
                view.learn(change, key=key)
        return len(batch)

    def _note(self, key: tuple[int, int], text: str | None) -> None:
        with self._lock:
            if self._changed is not None:
                self._changed[key] = text

    def listened(self, guild: int) -> set[int]:
        with self._lock:
            found, changes = self._listened.get(guild), self._listen_changes
        if found is None:
            try:
                found = set(self.store.channels(guild))
            except StoreUnavailable:
                return set()  # learning is paused anyway; asked again once the database is back
            with self._lock:
                if self._listen_changes == changes:  # else `listen` ran meanwhile: this read may predate it
                    self._listened[guild] = found
        return found

    def listen(self, guild: int, channel: int, on: bool) -> bool:
        changed = self.store.listen(guild, channel) if on else self.store.unlisten(guild, channel)
        with self._lock:
            self._listened.pop(guild, None)
            self._listen_changes += 1
        return changed

    def learn(self, message: Message) -> bool:
        """Store and learn one message, unless its author chose `ignore me` or the store cannot
        take it now (then it is not learned at all: answers and store stay in step)."""
        if not self.learning:
            return False
        try:
            if self.store.is_ignored(message.guild, message.author):
                return False
        except StoreUnavailable:
            return False
        self.store.add_message(message)  # batched: kept pending through an outage, committed after
        self.view(message.guild).learn(message.text, key=(message.guild, message.id))
        with self._lock:
            self._owners[message.id] = (message.guild, message.author)
        return True

    def learn_many(self, messages: list[Message]) -> int:
        return sum(self.learn(message) for message in messages)

    def _drop(self, key: tuple[int, int]) -> bool:
        """Forget one message from its server's memory; whether it was there."""
        with self._lock:
            self._owners.pop(key[1], None)
        self._note(key, None)
        return self.view(key[0]).forget(key)

    def _unlearn(self, messages: list[Message]) -> int:
        for message in messages:
            self._drop((message.guild, message.id))
        return len(messages)

    def _via_store(self, op: str, run: Callable[[], T], **fields: Any) -> tuple[bool, T | None]:
        """`(True, run())` when the store takes changes now; else (or when its database is lost
        meanwhile) the operation is journaled: `(False, None)`, and the caller changes the
        memories from what they hold."""
        if self.learning:
            try:
                return True, run()
            except StoreUnavailable:
                pass
        self.journal.append(op, **fields)
        return False, None

    def _guild_of(self, id: int) -> int | None:
        with self._lock:
            owner = self._owners.get(id)
        return None if owner is None else owner[0]

    def delete(self, ids: list[int]) -> int:
        stored, removed = self._via_store("delete", lambda: self.store.delete_messages(ids), ids=ids)
        if stored:
            return self._unlearn(removed)
        keys = [(guild, id) for id in ids if (guild := self._guild_of(id)) is not None]
        return sum(self._drop(key) for key in keys)

    def edit(self, id: int, text: str) -> None:
        """A message was edited: its new text replaces the old; with nothing learnable left, it goes."""
        if not text:
            self.delete([id])
            return
        stored, old = self._via_store("edit", lambda: self.store.edit_message(id, text), id=id, text=text)
        guild = (None if old is None else old.guild) if stored else self._guild_of(id)
        if guild is not None:
            key = (guild, id)
            self._note(key, text)
            self.view(guild).learn(text, key=key)

    def forget_author(self, author: int, guild: int | None) -> int:
        forget = lambda: self.store.forget_author(author, guild)  # noqa: E731
        stored, removed = self._via_store("forget_author", forget, author=author, guild=guild)
        if stored:
            return self._unlearn(removed)
        with self._lock:
            keys = [(g, id) for id, (g, a) in self._owners.items() if a == author and guild in (None, g)]
        return sum(self._drop(key) for key in keys)

    def drop(self, keys: list[tuple[int, int]]) -> int:
        """Out of the memories held here, without touching the store: the (guild, message id) of
        messages a DM `forget me` removed, maybe in another process (see notify.py)."""
        dropped = 0
        for guild, id in keys:
            self._note((guild, id), None)  # a rebuild under way must not bring it back
            with self._lock:
                self._owners.pop(id, None)
                view = self._views.get(guild)
            if view is not None and view.forget((guild, id)):
                dropped += 1
        return dropped

    def forget_guild(self, guild: int) -> int:
        stored, removed = self._via_store("forget_guild", lambda: self.store.forget_guild(guild), guild=guild)
        with self._lock:
            view = self._views.pop(guild, None)
            self._listened.pop(guild, None)
            self._listen_changes += 1
            self._owners = {id: owner for id, owner in self._owners.items() if owner[0] != guild}
        if not stored:
            removed = 0 if view is None else view.memory.messages
        if view is not None:
            view.forget_all()  # answers still holding the view learn nothing more from it
        return removed
