"""The bodies of the `/wordbot` subcommands that choose what the bot learns, how long it keeps
it, and make it forget (`listen`, `unlisten`, `channels`, `learn`, `keep`, `cap`, `forget`,
`ignore`, `unignore`, `stats`).
`cog.WordbotCog` attaches them to its `wordbot` group, so their `self` is that cog; the work
is done by `learning.LearningCog`. Admin ones check Manage Server when they run."""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from wordbot.bot.learning import (
    DEFAULT_BACKFILL,
    MAX_BACKFILL,
    NO_PINGS,
    STATS_WORDS,
    LearningCog,
    backfill_progress,
    forgotten,
)
from wordbot.bot.store import DEFAULT_MAX_MESSAGES, Backfill, StoreUnavailable

KEEP_DAYS = (1, 3650)  # what `keep` accepts, besides "forever"
CAP_MESSAGES = (100, DEFAULT_MAX_MESSAGES)  # what `cap` accepts
CONFIRM_TIMEOUT = 60.0  # seconds the admin has to confirm listening to a channel not everyone reads


class Subcommands:
    """The bodies of the `/wordbot` subcommands; `self` is the `WordbotCog` they are attached to."""

    @app_commands.describe(channel="the channel to learn from", confirm="say yes for a channel not everyone can read")
    async def listen(
        self: Any, ctx: commands.Context, channel: discord.TextChannel, confirm: Literal["confirm"] | None = None
    ) -> None:
        """Learn from the messages posted in a channel from now on (Manage Server)."""
        learning = await admin(self, ctx)
        if learning is None:
            return
        everyone = channel.permissions_for(channel.guild.default_role)
        if not everyone.read_messages and confirm is None:
            view = ConfirmListen(learning, ctx.author.id, channel)
            text = (
                f"Not every member can read {channel.mention}: what I learn there may appear in my answers"
                f" anywhere in this server. Press Confirm if that is fine (within {CONFIRM_TIMEOUT:g} seconds)."
            )
            view.message = await ctx.reply(
                text, view=view, allowed_mentions=NO_PINGS, mention_author=False, ephemeral=True
            )
            return
        await self.respond(ctx, await start_listening(learning, channel))

    @app_commands.describe(channel="the channel to stop learning from")
    async def unlisten(self: Any, ctx: commands.Context, channel: discord.TextChannel) -> None:
        """Stop learning from a channel; what was learned stays until forgotten (Manage Server)."""
        learning = await admin(self, ctx)
        if learning is None:
            return
        changed = await asyncio.to_thread(learning.communities.listen, ctx.guild.id, channel.id, False)
        state = "I no longer learn from" if changed else "I was not learning from"
        await self.respond(ctx, f"{state} {channel.mention}.")

    async def channels(self: Any, ctx: commands.Context) -> None:
        """The channels this server lets me learn from."""
        learning = await in_server(self, ctx)
        if learning is None:
            return
        listened = sorted(await asyncio.to_thread(learning.communities.listened, ctx.guild.id))
        if not listened:
            await self.respond(ctx, "I learn from no channel here. An admin can add one with `wordbot listen`.")
            return
        await self.respond(ctx, "I learn from " + ", ".join(f"<#{channel}>" for channel in listened) + ".")

    @app_commands.describe(what="me: what you wrote; server: everything (Manage Server)")
    async def forget(self: Any, ctx: commands.Context, what: Literal["me", "server"]) -> None:
        """Forget everything learned from you here (in a DM: everywhere), or from the whole server."""
        learning = self.bot.get_cog("learning")
        if learning is None:
            await self.respond(ctx, LEARNING_OFF, quiet=True)
        elif what == "me":
            guild = ctx.guild.id if ctx.guild is not None else None
            removed = await asyncio.to_thread(learning.communities.forget_author, ctx.author.id, guild)
            await self.respond(ctx, forgotten(removed, everywhere=guild is None) + AGAIN, quiet=True)
        elif await admin(self, ctx) is not None:
            removed = await learning.forget_guild(ctx.guild.id)
            await self.respond(ctx, f"Done: I forgot all {removed:,} messages learned in this server.")

    async def ignore(self: Any, ctx: commands.Context, who: Literal["me"]) -> None:
        """Never learn from you in this server (until `unignore me`)."""
        learning = await in_server(self, ctx)
        if learning is not None:
            await asyncio.to_thread(learning.communities.store.ignore, ctx.guild.id, ctx.author.id)
            await self.respond(
                ctx, "I won't learn from your messages here. (`forget me` removes the past ones.)", quiet=True
            )

    async def unignore(self: Any, ctx: commands.Context, who: Literal["me"]) -> None:
        """Learn from you again in the channels this server chose."""
        learning = await in_server(self, ctx)
        if learning is not None:
            await asyncio.to_thread(learning.communities.store.unignore, ctx.guild.id, ctx.author.id)
            await self.respond(ctx, "I'll learn from your messages here again.", quiet=True)

    @app_commands.describe(
        channel="a channel this server listens to", limit=f"how many messages, at most {MAX_BACKFILL:,}"
    )
    async def learn(
        self: Any,
        ctx: commands.Context,
        channel: discord.TextChannel,
        limit: commands.Range[int, 1, MAX_BACKFILL] = DEFAULT_BACKFILL,
    ) -> None:
        """Learn from a listened channel's past messages (Manage Server)."""
        learning = await admin(self, ctx)
        if learning is None:
            return
        if channel.id not in await asyncio.to_thread(learning.communities.listened, ctx.guild.id):
            await self.respond(ctx, f"Listen to {channel.mention} first (`wordbot listen`).", quiet=True)
            return
        if not channel.permissions_for(ctx.guild.me).read_message_history:
            await self.respond(ctx, f"I need the Read Message History permission in {channel.mention}.", quiet=True)
            return
        if channel.id in learning._backfilling:
            await self.respond(ctx, f"I am already reading {channel.mention}'s history.", quiet=True)
            return
        state = Backfill(ctx.guild.id, channel.id, None, 0, limit)
        await asyncio.to_thread(learning.communities.store.set_backfill_state, state)
        progress = await ctx.reply(
            backfill_progress(channel, state), allowed_mentions=NO_PINGS, mention_author=False, ephemeral=True
        )
        learning.start_backfill(state, progress)

    @app_commands.describe(days=f"a number of days ({KEEP_DAYS[0]} to {KEEP_DAYS[1]:,}), or forever")
    async def keep(self: Any, ctx: commands.Context, days: str) -> None:
        """How long what I learn here is kept: a number of days, or forever (Manage Server)."""
        learning = await admin(self, ctx)
        if learning is None:
            return
        retention = read_days(days)
        if retention is None and days.strip().lower() != "forever":
            low, high = KEEP_DAYS
            await self.respond(ctx, f"Say a whole number of days from {low} to {high:,}, or `forever`.", quiet=True)
            return
        dropped = await asyncio.to_thread(change_settings, learning, ctx.guild.id, retention_days=retention)
        await self.respond(ctx, f"What I learn here is {kept_for(retention).lower()}. " + went(dropped, "older"))

    @app_commands.describe(messages=f"the most messages kept here ({CAP_MESSAGES[0]} to {CAP_MESSAGES[1]:,})")
    async def cap(
        self: Any, ctx: commands.Context, messages: commands.Range[int, CAP_MESSAGES[0], CAP_MESSAGES[1]]
    ) -> None:
        """The most messages I keep learned here; beyond it the oldest go (Manage Server)."""
        learning = await admin(self, ctx)
        if learning is None:
            return
        dropped = await asyncio.to_thread(change_settings, learning, ctx.guild.id, max_messages=messages)
        await self.respond(ctx, f"I keep at most {messages:,} messages learned here. " + went(dropped, "oldest"))

    async def stats(self: Any, ctx: commands.Context) -> None:
        """How much I learned in this server, from where, and its own words."""
        learning = await in_server(self, ctx)
        if learning is None:
            return
        memory = learning.view(ctx.guild.id).memory
        listened = sorted(await asyncio.to_thread(learning.communities.listened, ctx.guild.id))
        try:
            settings = await asyncio.to_thread(learning.communities.store.settings, ctx.guild.id)
            cap = settings.max_messages
            kept = f"{kept_for(settings.retention_days)}, at most {cap:,} messages (the oldest go first)."
        except StoreUnavailable:
            kept = "Learning paused: my database is unreachable just now (answers go on from what I know)."
        own = sorted(memory.words, key=memory.count, reverse=True)[:STATS_WORDS]
        lines = [
            f"Learned here: {memory.messages:,} messages, {memory.tokens:,} words.",
            "Channels: " + (", ".join(f"<#{channel}>" for channel in listened) or "none"),
            kept,
            "Words of this server the model did not know: "
            + (", ".join(discord.utils.escape_markdown(memory.written(w) or w) for w in own) or "none yet"),
        ]
        if self.server_models is not None:  # `wordbot discord --server-models`: which model answers here
            await self.predictor_for(ctx.guild)
            lines.append("Model: " + self.server_models.describe(ctx.guild.id) + ".")
        await self.respond(ctx, "\n".join(lines))


class ConfirmListen(discord.ui.View):
    """Confirm / Cancel under the question `listen` asks about a channel not every member can
    read. Only the admin who asked may answer; unanswered, the buttons are disabled after
    CONFIRM_TIMEOUT seconds and nothing changes."""

    def __init__(self, learning: LearningCog, admin: int, channel: discord.TextChannel) -> None:
        super().__init__(timeout=CONFIRM_TIMEOUT)
        self.learning, self.admin, self.channel = learning, admin, channel
        self.message: discord.Message | None = None

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id == self.admin and not self.is_finished():
            return True
        await interaction.response.send_message(
            "Only the member who asked can answer this.", ephemeral=True, allowed_mentions=NO_PINGS
        )
        return False

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.danger)
    async def confirm(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        answer = await start_listening(self.learning, self.channel)
        await interaction.response.edit_message(content=answer, view=None, allowed_mentions=NO_PINGS)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary)
    async def cancel(self, interaction: discord.Interaction, button: discord.ui.Button) -> None:
        self.stop()
        answer = f"Cancelled: I don't learn from {self.channel.mention}."
        await interaction.response.edit_message(content=answer, view=None, allowed_mentions=NO_PINGS)

    async def on_timeout(self) -> None:
        for item in self.children:
            if isinstance(item, discord.ui.Button):
                item.disabled = True
        if self.message is not None:
            answer = f"No answer in time: I don't learn from {self.channel.mention}. Ask again to change that."
            with contextlib.suppress(discord.HTTPException):
                await self.message.edit(content=answer, view=self, allowed_mentions=NO_PINGS)


async def start_listening(learning: LearningCog, channel: discord.TextChannel) -> str:
    changed = await asyncio.to_thread(learning.communities.listen, channel.guild.id, channel.id, True)
    state = "I'll learn from" if changed else "I already learn from"
    return f"{state} messages in {channel.mention} (not from bots or commands)."


AGAIN = " (`wordbot ignore me` keeps me from learning from you again.)"
LEARNING_OFF = "Learning is off for this bot (it runs without a store)."


async def in_server(cog: Any, ctx: commands.Context) -> LearningCog | None:
    """The learning cog, when the command runs in a server of a bot that learns; else says why."""
    learning = cog.bot.get_cog("learning")
    if learning is None or ctx.guild is None:
        await cog.respond(ctx, LEARNING_OFF if learning is None else "That works only in a server.", quiet=True)
        return None
    return learning


async def admin(cog: Any, ctx: commands.Context) -> LearningCog | None:
    """As `in_server`, and the author must have Manage Server: checked here, at run time, since
    Discord's default permissions apply to the whole `/wordbot` group and a server may change them."""
    learning = await in_server(cog, ctx)
    if learning is None:
        return None
    author = ctx.author
    if not isinstance(author, discord.Member) or not author.guild_permissions.manage_guild:
        await cog.respond(ctx, "Only members with the Manage Server permission can do that.", quiet=True)
        return None
    return learning


def read_days(text: str) -> float | None:
    """A retention in days as `keep` takes it: a whole number within KEEP_DAYS; else None."""
    text = text.strip().lower().removesuffix("days").removesuffix("d").strip()
    if not text.isdecimal() or len(text) > 5:
        return None
    days = int(text)
    return float(days) if KEEP_DAYS[0] <= days <= KEEP_DAYS[1] else None


def kept_for(retention_days: float | None) -> str:
    if retention_days is None:
        return "Kept until forgotten"
    return f"Kept for {retention_days:g} day{'s' * (retention_days != 1)}"


def went(dropped: int, which: str) -> str:
    return f"{dropped:,} {which} message{'s' * (dropped != 1)} went now." if dropped else "Nothing had to go now."


def change_settings(learning: LearningCog, guild: int, **changes: Any) -> int:
    """Change a server's settings; applied at once (a lower cap, a shorter retention), the store
    telling the memory what went. How many of its messages went. Blocks: call it in a thread."""
    store = learning.communities.store
    before = store.count(guild)
    store.set_settings(guild, store.settings(guild)._replace(**changes))
    store.prune(time.time(), [guild])
    return max(before - store.count(guild), 0)  # (messages learned meanwhile count against it)
