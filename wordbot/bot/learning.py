"""What the bot learns from the channels a server opts in. `Communities` keeps one memory per
server (a `Predictor.view`) in step with the store, rebuilt from it at start in a background
thread; while the store's database is unreachable it learns nothing new, and forgets, deletes
and edits change the memories at once and wait in the journal (`journal.py`) for the store.
`LearningCog` learns from listened channels and forgets on delete, edit and leave; the
`/wordbot` subcommands that drive it are in `subcommands.py`."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from typing import TYPE_CHECKING, Any, TypeVar

import discord
from discord.ext import commands

from wordbot.bot.communities import Communities
from wordbot.bot.health import StoreError, StoreUnavailable
from wordbot.bot.journal import Journal
from wordbot.bot.store import Backfill, Message
from wordbot.limits import state_dir
from wordbot.memory import MAX_MESSAGE_CHARS
from wordbot.text import is_word, tokenize

if TYPE_CHECKING:
    from wordbot.bot.store import Store
    from wordbot.predictor import Predictor

log = logging.getLogger("wordbot.bot")
T = TypeVar("T")

STATS_WORDS = 10  # how many of the server's own words `stats` shows
DEFAULT_BACKFILL, MAX_BACKFILL = 10_000, 100_000  # messages of history `learn` reads
PAGE = 100  # messages per history request: Discord's most
PROGRESS_EVERY = 2.0  # seconds between edits of the progress message
PRUNE_EVERY = 600.0  # seconds between drops of the messages past a server's retention
_LINK = re.compile(r"<?https?://\S+")
_MARKUP = re.compile(r"<(?:@[!&]?|#)\d+>|<t:-?\d+(?::\w)?>|<a?:\w+:\d+>")  # mentions, channels, times, emoji


def learnable(text: str) -> str:
    """What of a message's text is learned: its words without links, mentions, channel links,
    timestamps or custom emoji; "" when no word is left (only links, only attachments)."""
    text = " ".join(_MARKUP.sub(" ", _LINK.sub(" ", text[:MAX_MESSAGE_CHARS])).split())
    return text if any(is_word(token) for token in tokenize(text)) else ""


class LearningCog(commands.Cog, name="learning"):
    """Learns from the channels a server listens to; forgets what is deleted, edited or left."""

    def __init__(
        self,
        bot: commands.Bot,
        predictor: Predictor,
        store: Store,
        journal: Journal | None = None,
        communities: type[Communities] = Communities,  # server_models.ServedCommunities: per-server models follow
    ) -> None:
        self.bot = bot
        self.communities = communities(predictor, store, journal or Journal(state_dir() / journal_name(bot)))
        self.communities.owns = self.is_ours
        self._rebuild: asyncio.Future[int] | None = None
        self._pruning: asyncio.Future[None] | None = None
        self._backfilling: dict[int, tuple[int, asyncio.Future[None]]] = {}  # channel -> (guild, its read)
        self._in_order: dict[int | None, asyncio.Lock] = {}  # guild -> its messages' changes, one at a time

    def in_order(self, guild: int | None) -> asyncio.Lock:
        """A server's messages are learned, edited and deleted one at a time, in the order
        their events came: taken before a handler's first await, an asyncio lock is FIFO.
        Else a delete or edit right after a message could run before its learn (and the
        deleted message stay learned), and a burst would be learned in another order than
        a restart learns it again."""
        found = self._in_order.get(guild)
        if found is None:
            found = self._in_order[guild] = asyncio.Lock()
        return found

    async def cog_load(self) -> None:
        # In the background: the bot answers at once, with what is learned so far.
        # What a previous run journaled goes to the store first (when it is reachable).
        self._rebuild = asyncio.ensure_future(asyncio.to_thread(self.communities.catch_up))
        self._pruning = asyncio.ensure_future(self.prune_forever())

    async def cog_unload(self) -> None:
        if self._pruning is not None:
            self._pruning.cancel()
        for _, task in list(self._backfilling.values()):
            task.cancel()
        await asyncio.to_thread(self.communities.store.flush)

    def view(self, guild: int) -> Predictor:
        return self.communities.view(guild)

    async def prune_forever(self) -> None:
        """Drop the messages older than their server's retention (`wordbot keep`) once connected
        and every PRUNE_EVERY seconds; the store tells the memories what went (`Store.on_drop`).
        Only this process's servers: the process that holds a server's memory is the one to prune it."""
        await self.bot.wait_until_ready()
        while True:
            try:
                ours = {
                    guild for guild in await asyncio.to_thread(self.communities.store.guilds) if self.is_ours(guild)
                }
                dropped = await asyncio.to_thread(self.communities.store.prune, time.time(), ours)
                for guild, count in dropped.items():
                    log.info("server %s: dropped %d messages past its retention", guild, count)
            except StoreUnavailable:
                pass  # reported once by the store; pruned when it is back
            except Exception:
                log.exception("dropping the messages past their retention failed; trying again later")
            await asyncio.sleep(PRUNE_EVERY)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        """Servers that removed the bot while it was offline: their data goes."""
        present = {guild.id for guild in self.bot.guilds}
        try:
            stored = await asyncio.to_thread(self.communities.store.guilds)
        except StoreUnavailable:
            return  # checked at the next start; forgets meanwhile are journaled
        for guild in stored:
            if guild not in present and self.is_ours(guild):
                removed = await self.forget_guild(guild)
                log.info("server %s removed the bot while it was away: forgot %d messages", guild, removed)
        await self.resume_backfills()

    def is_ours(self, guild: int) -> bool:
        """Whether this process's shards would hold `guild` (another process serves the rest)."""
        shards = getattr(self.bot, "shard_ids", None)
        if shards is None:  # an AutoShardedBot without shard ids runs every shard; a plain bot, the one
            if isinstance(self.bot, commands.AutoShardedBot) or self.bot.shard_id is None:
                return True
            shards = [self.bot.shard_id]
        return (guild >> 22) % (self.bot.shard_count or 1) in shards

    @commands.Cog.listener()
    async def on_guild_remove(self, guild: discord.Guild) -> None:
        removed = await self.forget_guild(guild.id)
        log.info("left server %s: forgot %d messages", guild.id, removed)

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        if message.guild is None:
            if not message.author.bot and " ".join(message.content.lower().split()) == "forget me":
                removed = await asyncio.to_thread(self.communities.forget_author, message.author.id, None)
                await message.channel.send(forgotten(removed, everywhere=True), allowed_mentions=NO_PINGS)
            return
        async with self.in_order(message.guild.id):
            if message.channel.id not in await asyncio.to_thread(self.communities.listened, message.guild.id):
                return
            stored = await self.to_learn(message)
            if stored is not None:
                await asyncio.to_thread(self.communities.learn, stored)

    async def to_learn(self, message: discord.Message) -> Message | None:
        """The message as the store keeps it, if it is one to learn: written by a person (not a
        bot, not a webhook), not a command nor a request to the bot, with words besides links."""
        if message.author.bot or message.webhook_id is not None or message.type not in LEARNED_TYPES:
            return None
        text = learnable(message.content)
        me = self.bot.user
        if not text or (me is not None and me in message.mentions) or (await self.bot.get_context(message)).valid:
            return None
        guild = message.guild.id if message.guild is not None else 0
        return Message(message.id, guild, message.channel.id, message.author.id, message.created_at.timestamp(), text)

    async def backfill(self, state: Backfill, progress: discord.Message | None = None) -> Backfill:
        """Read a channel's history, newest first, a page at a time, until `state.limit` messages
        were read; the state is saved after each page, so a restart resumes where it stopped.
        discord.py waits out rate limits (429) by itself. `progress` is edited as it goes."""
        channel = self.bot.get_channel(state.channel)
        if not isinstance(channel, discord.abc.Messageable):
            return state
        shown = time.monotonic()
        while not state.done:
            before = discord.Object(state.before) if state.before is not None else None
            page = [m async for m in channel.history(limit=min(PAGE, state.limit - state.learned), before=before)]
            batch = [stored for stored in [await self.to_learn(m) for m in page] if stored is not None]
            await asyncio.to_thread(self.communities.learn_many, batch)
            learned = state.learned + len(page)
            done = not page or learned >= state.limit
            state = state._replace(before=page[-1].id if page else state.before, learned=learned, done=done)
            await asyncio.to_thread(self.communities.store.set_backfill_state, state)
            if progress is not None and (done or time.monotonic() - shown > PROGRESS_EVERY):
                shown = time.monotonic()
                with contextlib.suppress(discord.HTTPException):
                    await progress.edit(content=backfill_progress(channel, state), allowed_mentions=NO_PINGS)
        return state

    async def resume_backfills(self) -> None:
        """Backfills a restart interrupted go on, for the servers this process serves."""
        try:
            states = await asyncio.to_thread(self.communities.store.backfills)
        except StoreUnavailable:
            return
        for state in states:
            if self.bot.get_guild(state.guild) is not None and state.channel not in self._backfilling:
                self.start_backfill(state)

    async def forget_guild(self, guild: int) -> int:
        """Everything about a server goes, and its history reads stop first."""
        for owner, task in list(self._backfilling.values()):
            if owner == guild:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return await asyncio.to_thread(self.communities.forget_guild, guild)

    def start_backfill(self, state: Backfill, progress: discord.Message | None = None) -> None:

        async def run() -> None:
            try:
                done = await self.backfill(state, progress)
                log.info("read %d messages of channel %s's history", done.learned, state.channel)
            except discord.HTTPException as exc:
                log.warning("reading the history of channel %s stopped: %s", state.channel, exc)
            except StoreError as exc:  # an outage: resumed at the next start, from the saved state
                log.info("reading the history of channel %s stopped: %s", state.channel, exc)
            finally:
                self._backfilling.pop(state.channel, None)

        self._backfilling[state.channel] = (state.guild, asyncio.ensure_future(run()))

    @commands.Cog.listener()
    async def on_raw_message_delete(self, payload: discord.RawMessageDeleteEvent) -> None:
        async with self.in_order(payload.guild_id):
            await asyncio.to_thread(self.communities.delete, [payload.message_id])

    @commands.Cog.listener()
    async def on_raw_bulk_message_delete(self, payload: discord.RawBulkMessageDeleteEvent) -> None:
        async with self.in_order(payload.guild_id):
            await asyncio.to_thread(self.communities.delete, list(payload.message_ids))

    @commands.Cog.listener()
    async def on_raw_message_edit(self, payload: discord.RawMessageUpdateEvent) -> None:
        content = payload.data.get("content")
        if content is not None:  # an update of embeds only leaves the text as it was
            async with self.in_order(payload.guild_id):
                await asyncio.to_thread(self.communities.edit, payload.message_id, learnable(content))


LEARNED_TYPES = (discord.MessageType.default, discord.MessageType.reply)
NO_PINGS = discord.AllowedMentions.none()


def journal_name(bot: commands.Bot) -> str:
    """The journal file of this process: one per shard range, so processes sharing a state
    directory keep apart, and a restarted process finds its own."""
    shards = getattr(bot, "shard_ids", None)
    return f"journal-shards-{'-'.join(map(str, sorted(shards)))}.jsonl" if shards else "journal.jsonl"


def backfill_progress(channel: Any, state: Backfill) -> str:
    where = getattr(channel, "mention", "the channel")
    if state.done:
        return f"Done: I read {state.learned:,} messages of {where}'s history."
    return f"Reading {where}'s history: {state.learned:,} of at most {state.limit:,} messages so far…"


def forgotten(removed: int, *, everywhere: bool = False) -> str:
    where = "every server" if everywhere else "this server"
    return f"Done: I forgot {removed:,} message{'s' * (removed != 1)} of yours in {where}."
