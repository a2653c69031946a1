"""The Discord face: a `commands.Cog` with `!next`, `!continue` and `!wordbot` (each also a
slash command), the reply and mention forms, `build_bot()` and `run()` (`wordbot discord`).

A thin adapter over `Predictor`: `parse` bounds and reads what users wrote, `cog` asks the
predictor off the event loop, `render` formats what goes back, `run` builds and starts the bot.
Intents: the default ones plus Message Content (privileged; enable it in the developer portal),
which the prefix, reply and mention forms need to read what users wrote.

`await bot.load_extension("wordbot.bot")` adds the commands to a bot of your own (see `setup`).
"""

from __future__ import annotations

import asyncio

from discord.ext import commands

from wordbot.bot.cog import NO_MENTIONS, WordbotCog, invite_url
from wordbot.bot.render import format_continuation, format_next
from wordbot.bot.run import build_bot, intents, read_token, run

__all__ = [
    "NO_MENTIONS",
    "WordbotCog",
    "build_bot",
    "format_continuation",
    "format_next",
    "intents",
    "invite_url",
    "read_token",
    "run",
    "setup",
]


async def setup(bot: commands.Bot) -> None:
    """Extension entry point: `await bot.load_extension("wordbot.bot")` adds the commands,
    running the bundled default model."""
    from wordbot.predictor import Predictor

    predictor = await asyncio.to_thread(Predictor.load, None)
    await bot.add_cog(WordbotCog(bot, predictor))
