"""The bot keeps answering while its database is killed and restarted: tested through discord.py's
real client against the fake Discord (wordbot/testing/fake_discord.py), with a real PostgreSQL
server of the module's own, killed the hard way (`pg_ctl stop -m immediate`) mid-burst."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from discord.ext import commands

from wordbot.bot import build_bot
from wordbot.bot.cog import DATABASE_DOWN
from wordbot.bot.health import UNREACHABLE
from wordbot.bot.store import open_store
from wordbot.testing.fake_discord import FakeDiscord

from .postgres import restartable, stoppable_postgres  # noqa: F401  (fixtures)

APOLOGY = "Sorry, something went wrong"
BURST = 4  # rounds of (a command, a message in the listened channel) while the database is down


def learned(bot: commands.Bot, server: FakeDiscord, message: dict[str, Any]) -> bool:
    return (server.guild_id, int(message["id"])) in bot.get_cog("learning").view(server.guild_id).memory


async def say(server: FakeDiscord, content: str, **kwargs: Any) -> str:
    """A command; the bot's answer."""
    return (await server.wait_for_reply(await server.send_message(content, **kwargs))).content


async def taught(bot: commands.Bot, server: FakeDiscord, content: str, **kwargs: Any) -> dict[str, Any]:
    message = await server.send_message(content, **kwargs)
    await server.wait_until(lambda: learned(bot, server, message))
    return message


def stored(url: str, guild: int) -> list[str]:
    """What the database holds for `guild`, read by a store of its own."""
    store = open_store(url, flush_interval=None)
    try:
        return [m.text for m in store.messages(guild)]
    finally:
        store.close()


@pytest.mark.slow
@pytest.mark.asyncio
async def test_the_database_killed_and_restarted_during_a_burst(
    server,
    restartable,  # noqa: F811
    tiny_predictor,
    tmp_path,
    monkeypatch,
    caplog,
):
    caplog.set_level(logging.INFO)
    monkeypatch.setenv("WORDBOT_STATE_DIR", str(tmp_path / "state"))  # where the journal goes
    url = restartable.new_database()
    store = open_store(url, flush_interval=0.1, pool_timeout=0.5, retry=(0.1, 0.5))
    bot = build_bot(tiny_predictor, store=store, guild_ready_timeout=0.05, cooldown_rate=1000)
    task = asyncio.create_task(bot.start(server.token))
    try:
        ready = asyncio.create_task(bot.wait_until_ready())
        await asyncio.wait([ready, task], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        assert bot.is_ready()
        communities = bot.get_cog("learning").communities
        assert (await say(server, f"!wordbot listen <#{server.channel_id}>")).startswith("I'll learn from")
        await taught(bot, server, "we deploy the Zorblax cluster")
        await taught(bot, server, "bob deploys Frobnic daily", author="bob")
        await asyncio.to_thread(store.flush)  # committed before the kill
        assert "Frobnic" in await say(server, "!next bob deploys k=10")

        await asyncio.to_thread(restartable.stop_server)
        commands_sent, burst = [], []
        for n in range(BURST):  # commands and messages interleaved, the way a channel goes on
            commands_sent.append(await server.send_message("!next we deploy the k=10", author=("alice", "bob")[n % 2]))
            burst.append(await server.send_message(f"while down Blorptastic {n}"))
        answers = [(await server.wait_for_reply(sent, timeout=30)).content for sent in commands_sent]
        assert all("Zorblax" in answer for answer in answers), answers  # answered from the memories
        assert "1 message of yours" in await say(server, "!wordbot forget me", author="bob")
        assert "Frobnic" not in await say(server, "!next bob deploys k=10")  # effective at once
        stats = await say(server, "!wordbot stats")
        assert "Learned here" in stats and "Learning paused" in stats, stats
        assert await say(server, "!wordbot ignore me", author="bob") == DATABASE_DOWN
        assert not any(learned(bot, server, message) for message in burst)  # learning paused
        assert not store.available and communities.journal.pending
        assert communities.journal.path == tmp_path / "state" / "journal.jsonl"

        await asyncio.to_thread(restartable.start_server)
        await server.wait_until(lambda: store.available and not communities.journal.pending, timeout=30)
        assert await asyncio.to_thread(stored, url, server.guild_id) == ["we deploy the Zorblax cluster"]
        await taught(bot, server, "the outage ended with Quasarine")  # learning resumes
        assert "Quasarine" in await say(server, "!next the outage ended with k=10")
        await asyncio.to_thread(store.flush)
        assert "the outage ended with Quasarine" in await asyncio.to_thread(stored, url, server.guild_id)
    finally:
        await bot.close()
        await asyncio.wait_for(task, 10)
        store.close()
    said = [record.getMessage() for record in caplog.records]
    assert sum(UNREACHABLE in line for line in said) == 1, said  # reported once, not per message
    assert sum("database back" in line for line in said) == 1
    assert restartable.password not in caplog.text
    for posted in server.posted:  # every answer a sentence for people: no traceback, no apology
        assert "Traceback" not in posted.content and APOLOGY not in posted.content, posted.content
