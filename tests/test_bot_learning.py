"""The bot learns from the channels a server opts in, and forgets on request: tested through
discord.py's real client against the fake Discord (wordbot/testing/fake_discord.py), with a
real SQLite store in a temporary directory."""

from __future__ import annotations

import asyncio
import contextlib
import datetime
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import discord
import pytest
import pytest_asyncio
from discord.ext import commands

import wordbot.bot.learning
import wordbot.bot.subcommands
from wordbot.bot import build_bot
from wordbot.bot.learning import Communities, learnable
from wordbot.bot.store import Backfill, GuildSettings, Message, SQLiteStore
from wordbot.testing.fake_discord import FakeDiscord

TAUGHT = "we deploy the Zorblax cluster"
StartBot = Callable[..., Awaitable[commands.Bot]]


class Running:
    """Bots started against the fake server, each with its SQLite store; `stop` closes one."""

    def __init__(self, server: FakeDiscord, predictor: Any, path: Path) -> None:
        self.server, self.predictor, self.path = server, predictor, path
        self.bots: dict[commands.Bot, tuple[asyncio.Task[None], SQLiteStore]] = {}

    async def start(self, **options: Any) -> commands.Bot:
        store = SQLiteStore(self.path)
        bot = build_bot(self.predictor, store=store, guild_ready_timeout=0.05, cooldown_rate=1000, **options)
        task = asyncio.create_task(bot.start(self.server.token))
        self.bots[bot] = (task, store)
        ready = asyncio.create_task(bot.wait_until_ready())
        await asyncio.wait([ready, task], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()
        assert bot.is_ready()
        return bot

    async def stop(self, bot: commands.Bot) -> None:
        task, store = self.bots.pop(bot)
        await bot.close()
        await asyncio.wait_for(task, 10)
        store.close()


@contextlib.asynccontextmanager
async def started_bots(server: FakeDiscord, predictor: Any, path: Path) -> AsyncIterator[Running]:
    """A `Running` on one SQLite store; every bot still running is stopped at the end."""
    bots = Running(server, predictor, path)
    try:
        yield bots
    finally:
        for bot in list(bots.bots):
            await bots.stop(bot)


@pytest_asyncio.fixture
async def running(server: FakeDiscord, tiny_predictor: Any, tmp_path: Path) -> AsyncIterator[Running]:
    async with started_bots(server, tiny_predictor, tmp_path / "wordbot.sqlite3") as bots:
        yield bots


@pytest_asyncio.fixture
async def bot(running: Running) -> commands.Bot:
    return await running.start()


def memory(bot: commands.Bot, server: FakeDiscord) -> Any:
    return bot.get_cog("learning").view(server.guild_id).memory


def learned(bot: commands.Bot, server: FakeDiscord, message: dict[str, Any]) -> bool:
    return (server.guild_id, int(message["id"])) in memory(bot, server)


async def say(server: FakeDiscord, content: str, **kwargs: Any) -> str:
    """A command; the bot's answer."""
    return (await server.wait_for_reply(await server.send_message(content, **kwargs))).content


async def listening(server: FakeDiscord, channel: int | None = None) -> None:
    answer = await say(server, f"!wordbot listen <#{channel or server.channel_id}>")
    assert answer.startswith("I'll learn from"), answer


async def taught(bot: commands.Bot, server: FakeDiscord, content: str, **kwargs: Any) -> dict[str, Any]:
    """A message posted in a listened channel, once the bot learned it."""
    message = await server.send_message(content, **kwargs)
    await server.wait_until(lambda: learned(bot, server, message))
    return message


# -- listening -------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_only_members_who_manage_the_server_choose_the_channels(server, bot):
    general = f"<#{server.channel_id}>"
    refused = await say(server, f"!wordbot listen {general}", author="bob")
    assert "Manage Server" in refused
    assert "I learn from no channel" in await say(server, "!wordbot channels", author="bob")
    await listening(server)  # alice owns the server
    assert general in await say(server, "!wordbot channels", author="bob")
    assert "Manage Server" in await say(server, f"!wordbot unlisten {general}", author="bob")
    assert general in await say(server, "!wordbot channels")
    assert (await say(server, f"!wordbot unlisten {general}")).startswith("I no longer learn from")
    assert "I learn from no channel" in await say(server, "!wordbot channels")


async def hide_general(server: FakeDiscord, bot: commands.Bot) -> None:
    """#general becomes a channel @everyone cannot read (the bot still can)."""
    hidden = [
        {"id": str(server.guild_id), "type": 0, "allow": "0", "deny": str(1 << 10)},  # @everyone: no View Channel
        {"id": str(server.bot_role_id), "type": 0, "allow": str((1 << 10) | (1 << 11) | (1 << 16)), "deny": "0"},
    ]
    await server.set_channel_overwrites(hidden)
    await server.wait_until(lambda: bot.get_channel(server.channel_id).overwrites)


async def asked_to_confirm(server: FakeDiscord) -> int:
    """`!wordbot listen #general`, which asks with buttons; the id of the question."""
    asked = await server.wait_for_reply(await server.send_message(f"!wordbot listen <#{server.channel_id}>"))
    assert "Not every member can read" in asked.content, asked.content
    assert set(server.buttons(int(asked.message["id"]))) == {"Confirm", "Cancel"}
    return int(asked.message["id"])


async def pressed(server: FakeDiscord, question: int, label: str) -> str:
    """The question once the admin pressed `label` and the bot updated it: its new text."""
    edits = len(server.edited)
    await server.press_button(question, label)
    await server.wait_until(lambda: len(server.edited) > edits)
    assert server.edited[-1]["id"] == str(question) and not server.buttons(question)  # the buttons are gone
    return server.edited[-1]["content"]


@pytest.mark.asyncio
async def test_a_channel_not_everyone_can_read_is_listened_to_only_once_its_admin_confirms(server, bot):
    await hide_general(server, bot)
    question = await asked_to_confirm(server)
    refused = await server.press_button(question, "Confirm", author="bob")  # not the admin who asked
    assert "Only the member who asked" in (await server.wait_for_interaction_answer(refused)).content
    assert "Cancelled" in await pressed(server, question, "Cancel")
    assert "I learn from no channel" in await say(server, "!wordbot channels")
    assert (await pressed(server, await asked_to_confirm(server), "Confirm")).startswith("I'll learn from")
    assert f"<#{server.channel_id}>" in await say(server, "!wordbot channels")
    await taught(bot, server, TAUGHT)  # learned from then on
    assert (await say(server, f"!wordbot unlisten <#{server.channel_id}>")).startswith("I no longer learn")
    confirmed = await say(server, f"!wordbot listen <#{server.channel_id}> confirm")  # the typed form
    assert confirmed.startswith("I'll learn from")


@pytest.mark.asyncio
async def test_an_unanswered_confirmation_times_out_with_its_buttons_disabled(server, bot, monkeypatch):
    monkeypatch.setattr(wordbot.bot.subcommands, "CONFIRM_TIMEOUT", 0.2)
    await hide_general(server, bot)
    question = await asked_to_confirm(server)
    await server.wait_until(lambda: any(e["id"] == str(question) for e in server.edited))
    assert "No answer in time" in server.messages[question]["content"]
    assert all(button.get("disabled") for button in server.buttons(question).values())
    await server.press_button(question, "Confirm")  # too late: Discord greys it out; the bot ignores it
    await asyncio.sleep(0.2)
    assert "I learn from no channel" in await say(server, "!wordbot channels")


@pytest.mark.asyncio
async def test_the_slash_listen_asks_its_admin_alone_with_buttons(server, bot):
    await hide_general(server, bot)
    interaction = await server.send_interaction("wordbot", {"channel": str(server.channel_id)}, subcommand="listen")
    asked = await server.wait_for_interaction_answer(interaction)
    assert asked.payload.get("flags", 0) & 64  # ephemeral: only the admin sees the question
    question = int(asked.message["id"])
    assert (await pressed(server, question, "Confirm")).startswith("I'll learn from")
    await taught(bot, server, TAUGHT)


@pytest.mark.asyncio
async def test_it_learns_what_people_write_in_listened_channels_and_nothing_else(server, bot, tiny_predictor):
    await listening(server)
    kept = await taught(bot, server, TAUGHT)
    skipped = [
        await server.send_message("Quuxify the secret plans", channel=server.other_channel_id),
        await server.send_message("we deploy the Botword cluster", author="otherbot"),
        await server.send_message("we deploy the Hookword cluster", webhook=True),
        await server.send_message("!next we deploy the"),
        await server.send_message("https://example.com/only-a-link"),
        await server.send_message(f"{server.mention()} we deploy", mentions=[server.bot_user]),
    ]
    last = await taught(bot, server, TAUGHT + " again", author="bob")
    await asyncio.sleep(0.2)
    assert learned(bot, server, kept) and learned(bot, server, last)
    assert not any(learned(bot, server, message) for message in skipped)
    assert memory(bot, server).messages == 2
    # The server's answers use its words; a DM's do not, nor does the model itself.
    assert "Zorblax" in await say(server, "!next we deploy the k=10")
    assert "Zorblax" not in await say(server, "!next we deploy the k=10", dm_channel=server.new_id())
    assert "zorblax" not in {p.word.lower() for p in tiny_predictor.next_words("we deploy the", 10)}


def test_a_channel_listened_to_while_its_list_was_being_read_is_learned_from(tiny_predictor, tmp_path):
    """The message that runs `!wordbot listen` is itself checked against the listened
    channels in a thread: a read of the store taken just before the listen commits must not
    be kept as the list afterwards (the channel would then never be learned from)."""
    import threading

    store = SQLiteStore(tmp_path / "wordbot.sqlite3")
    communities = Communities(tiny_predictor, store)
    read, go_on = threading.Event(), threading.Event()
    channels = store.channels

    def slow_channels(guild: int) -> list[int]:
        found = channels(guild)  # read before the listen below commits...
        read.set()
        go_on.wait(5)  # ...and kept only after it
        return found

    store.channels = slow_channels
    reader = threading.Thread(target=communities.listened, args=(1,))
    reader.start()
    assert read.wait(5)
    communities.listen(1, 10, True)
    go_on.set()
    reader.join()
    store.channels = channels
    assert 10 in communities.listened(1)
    store.close()


def test_one_servers_words_never_reach_anothers_answers(tiny_predictor, tmp_path):
    store = SQLiteStore(tmp_path / "wordbot.sqlite3")
    communities = Communities(tiny_predictor, store)
    for i in range(3):
        communities.learn(Message(i, 1, 10, 100, float(i), TAUGHT))
    ours, theirs = communities.view(1), communities.view(2)
    assert "Zorblax" in [p.word for p in ours.next_words("we deploy the", 10)]
    assert theirs.next_words("we deploy the", 10) == tiny_predictor.next_words("we deploy the", 10)
    assert "Zorblax" in [p.word for p in ours.complete("we deploy the Zor")]
    assert "Zorblax" not in [p.word for p in theirs.complete("we deploy the Zor")]
    store.close()


def test_what_is_learned_leaves_out_links_mentions_and_markup():
    assert learnable("see https://example.com <@123> and <#456> <:wave:789>") == "see and"
    assert learnable("https://example.com") == ""
    assert learnable("<@123> <t:1700000000:R>") == ""
    assert learnable("") == ""


# -- forgetting ------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_forget_me_removes_everything_from_that_member_and_says_how_much(server, bot):
    await listening(server)
    mine = [await taught(bot, server, f"bob says {word}", author="bob") for word in ("Frobnic", "Glorp")]
    hers = await taught(bot, server, TAUGHT)
    answer = await say(server, "!wordbot forget me", author="bob")
    assert "2 messages" in answer and "this server" in answer
    assert not any(learned(bot, server, message) for message in mine)
    assert learned(bot, server, hers)
    assert bot.get_cog("learning").communities.store.count(server.guild_id) == 1


@pytest.mark.asyncio
async def test_forget_me_in_a_dm_forgets_every_server(server, bot):
    await listening(server)
    await taught(bot, server, TAUGHT)
    await taught(bot, server, "bob's own words", author="bob")
    dm = server.new_id()
    await server.send_message("forget me", dm_channel=dm)  # plain text: a DM holds only the bot
    answer = (await server.wait_for(lambda p: p.channel_id == dm)).content
    assert "1 message of yours in every server" in answer
    assert memory(bot, server).messages == 1  # bob's stays
    store = bot.get_cog("learning").communities.store
    assert [m.author for m in store.messages(server.guild_id)] == [int(server.users["bob"]["id"])]


@pytest.mark.asyncio
async def test_forget_me_as_a_slash_command_is_seen_only_by_its_user(server, bot):
    await listening(server)
    await taught(bot, server, TAUGHT)
    interaction = await server.send_interaction("wordbot", {"what": "me"}, subcommand="forget")
    answer = await server.wait_for_interaction_answer(interaction)
    assert "1 message of yours" in answer.content
    assert memory(bot, server).messages == 0
    about = await server.wait_for_interaction_answer(await server.send_interaction("wordbot", subcommand="about"))
    assert "/next" in about.content


@pytest.mark.asyncio
async def test_ignore_me_stops_learning_from_a_member_until_unignore(server, bot):
    await listening(server)
    assert "won't learn" in await say(server, "!wordbot ignore me", author="bob")
    ignored = await server.send_message("bob's Secretword here", author="bob")
    later = await taught(bot, server, TAUGHT)
    await asyncio.sleep(0.1)
    assert not learned(bot, server, ignored) and learned(bot, server, later)
    assert "again" in await say(server, "!wordbot unignore me", author="bob")
    await taught(bot, server, "bob is back", author="bob")


@pytest.mark.asyncio
async def test_forget_server_needs_manage_server_and_wipes_the_memory(server, bot):
    await listening(server)
    await taught(bot, server, TAUGHT, author="bob")
    assert "Manage Server" in await say(server, "!wordbot forget server", author="bob")
    assert memory(bot, server).messages == 1
    assert "all 1 messages" in await say(server, "!wordbot forget server")
    assert memory(bot, server).messages == 0


@pytest.mark.asyncio
async def test_deleted_and_edited_messages_are_removed_or_replaced(server, bot):
    await listening(server)
    first, second, third, fourth = [await taught(bot, server, f"{TAUGHT} {n}") for n in ("one", "two", "three", "four")]
    bot._connection._messages.clear()  # uncached: only the raw events can tell
    await server.delete_message(first)
    await server.wait_until(lambda: not learned(bot, server, first))
    await server.bulk_delete([second, third])
    await server.wait_until(lambda: not learned(bot, server, second) and not learned(bot, server, third))
    assert memory(bot, server).count("zorblax") == 1
    await server.edit_message(fourth, "we deploy the Quasar cluster")
    await server.wait_until(lambda: memory(bot, server).count("zorblax") == 0)
    assert memory(bot, server).count("quasar") == 1 and learned(bot, server, fourth)
    store = bot.get_cog("learning").communities.store
    assert [m.text for m in store.messages(server.guild_id)] == ["we deploy the Quasar cluster"]
    await server.edit_message(fourth, "https://example.com")  # nothing left to learn: it goes
    await server.wait_until(lambda: not learned(bot, server, fourth))


@pytest.mark.asyncio
async def test_a_burst_of_messages_is_learned_in_the_order_it_was_written(server, bot):
    """The order a restart learns them in again (the store's): the learned weight's evidence
    depends on it, so the answers after a restart are the ones before it."""
    await listening(server)
    sent = [await server.send_message(f"{TAUGHT} number {n}", author=("alice", "bob")[n % 2]) for n in range(24)]
    await server.wait_until(lambda: all(learned(bot, server, m) for m in sent))
    keys = [key for key in memory(bot, server)._messages if key[1] in {int(m["id"]) for m in sent}]
    assert keys == [(server.guild_id, int(m["id"])) for m in sent]


@pytest.mark.asyncio
async def test_an_edit_or_delete_right_after_a_message_applies_to_it(server, bot):
    await listening(server)
    for _ in range(5):
        edited = await server.send_message(f"{TAUGHT} soon edited")
        await server.edit_message(edited, "we deploy the Quasar cluster")
        deleted = await server.send_message(f"{TAUGHT} soon deleted")
        await server.delete_message(deleted)
        marker = await taught(bot, server, "a message after them")
        await asyncio.sleep(0.05)
        found = memory(bot, server)
        assert learned(bot, server, edited) and not learned(bot, server, deleted) and learned(bot, server, marker)
        assert found.count("zorblax") == 0 and found.count("quasar") >= 1
        store = bot.get_cog("learning").communities.store
        assert "soon" not in " ".join(m.text for m in store.messages(server.guild_id))


@pytest.mark.asyncio
async def test_what_was_learned_survives_a_restart_of_the_bot(server, running):
    first = await running.start()
    await listening(server)
    kept = await taught(first, server, TAUGHT)
    gone = await taught(first, server, "a message deleted later")
    await running.stop(first)
    second = await running.start()
    await asyncio.wait_for(asyncio.to_thread(second.get_cog("learning").communities.rebuilt.wait), 10)
    assert learned(second, server, kept) and learned(second, server, gone)
    await taught(second, server, "still listening")  # the listened channel was kept too
    await server.delete_message(gone)
    await server.wait_until(lambda: not learned(second, server, gone))
    assert "Zorblax" in await say(server, "!next we deploy the k=10")


@pytest.mark.asyncio
async def test_a_server_that_removes_the_bot_is_forgotten(server, bot):
    await listening(server)
    await taught(bot, server, TAUGHT)
    store = bot.get_cog("learning").communities.store
    await server.remove_guild()
    await server.wait_until(lambda: store.guilds() == [])
    assert store.count(server.guild_id) == 0 and memory(bot, server).messages == 0


@pytest.mark.asyncio
async def test_a_server_removed_while_the_bot_was_offline_is_forgotten_at_start(server, running):
    first = await running.start()
    await listening(server)
    await taught(first, server, TAUGHT)
    await running.stop(first)
    server.guild_present = False  # kicked while the bot was away
    second = await running.start()
    store = second.get_cog("learning").communities.store
    await server.wait_until(lambda: store.guilds() == [])
    assert store.count(server.guild_id) == 0


# -- stats -----------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_stats_show_how_much_was_learned_where_and_the_servers_own_words(server, bot):
    await listening(server)
    for _ in range(2):
        await taught(bot, server, TAUGHT)
    answer = await say(server, "!wordbot stats", author="bob")
    assert "2 messages" in answer and f"<#{server.channel_id}>" in answer
    assert "Zorblax" in answer.split("did not know:")[1]


# -- reading a channel's history -------------------------------------------------------


def history(server: FakeDiscord, count: int) -> list[dict[str, Any]]:
    """`count` old messages in #general, oldest first: people's, and every tenth a bot's."""
    return [
        server.add_history(f"old message {i} about Zorblax", author="otherbot" if i % 10 == 9 else "bob")
        for i in range(count)
    ]


@pytest.mark.asyncio
async def test_learn_reads_the_history_in_pages_through_a_rate_limit_and_says_how_far_it_got(server, bot):
    old = history(server, 250)
    await listening(server)
    server.rate_limit_history_at = 2  # Discord says "slow down" in the middle
    assert "Manage Server" in await say(server, f"!wordbot learn <#{server.channel_id}> 220", author="bob")
    assert server.history_requests == 0
    await server.send_message(f"!wordbot learn <#{server.channel_id}> 220")
    await server.wait_until(lambda: any(e["content"].startswith("Done") for e in server.edited))
    assert "220 messages" in server.edited[-1]["content"]
    assert server.history_requests == 4  # 100 + (a 429, then the same page again) + 20
    # The newest 220: the commands and the bot's answers after the old messages, then old ones.
    read = sorted(i for i, m in server.messages.items() if m["channel_id"] == str(server.channel_id))[-220:]
    people = [m for m in old if int(m["id"]) in read and m["author"]["username"] == "bob"]
    assert len(people) > 150 and all(learned(bot, server, m) for m in people)
    assert not any(learned(bot, server, m) for m in old if m not in people)
    assert memory(bot, server).messages == len(people)  # no command, no bot's answer
    state = bot.get_cog("learning").communities.store.backfill_state(server.guild_id, server.channel_id)
    assert state.done and state.learned == 220


@pytest.mark.asyncio
async def test_learn_skips_members_who_chose_ignore_me(server, bot):
    old = history(server, 30)
    await listening(server)
    await say(server, "!wordbot ignore me", author="bob")
    carol = server.add_history("carol wrote this", author="carol")
    await server.send_message(f"!wordbot learn <#{server.channel_id}>")
    await server.wait_until(lambda: any(e["content"].startswith("Done") for e in server.edited))
    assert learned(bot, server, carol) and not any(learned(bot, server, m) for m in old)


@pytest.mark.asyncio
async def test_a_history_read_interrupted_by_a_restart_goes_on_where_it_stopped(server, running, tmp_path):
    old = history(server, 150)
    first = await running.start()
    await listening(server)
    await running.stop(first)
    # As the store stands when the bot stopped after one page of a 120-message read.
    store = SQLiteStore(tmp_path / "wordbot.sqlite3")
    store.set_backfill_state(Backfill(server.guild_id, server.channel_id, int(old[-100]["id"]), 100, 120))
    store.close()
    second = await running.start()
    states = second.get_cog("learning").communities.store
    await server.wait_until(lambda: states.backfill_state(server.guild_id, server.channel_id).done)
    resumed = [m for m in old[-120:-100] if m["author"]["username"] == "bob"]
    assert resumed and all(learned(second, server, m) for m in resumed)
    assert not any(learned(second, server, m) for m in old[:-120] + old[-100:])  # before, and already read


# -- how long and how much is kept -----------------------------------------------------


async def read_history(server: FakeDiscord, limit: int = 1000) -> None:
    """`!wordbot learn` on #general, until its progress message says it is done."""
    done = len([e for e in server.edited if e["content"].startswith("Done")])
    await server.send_message(f"!wordbot learn <#{server.channel_id}> {limit}")
    await server.wait_until(lambda: len([e for e in server.edited if e["content"].startswith("Done")]) > done)


@pytest.mark.asyncio
async def test_keep_drops_older_messages_at_once_from_the_store_and_the_memory(server, bot):
    now = datetime.datetime.now(datetime.timezone.utc)
    old = [server.add_history(f"ancient Oldword {i}", written=now - datetime.timedelta(days=40)) for i in range(3)]
    recent = [server.add_history(f"recent Newword {i}", written=now - datetime.timedelta(days=2)) for i in range(2)]
    await listening(server)
    await read_history(server)
    assert all(learned(bot, server, m) for m in old + recent)
    assert "Manage Server" in await say(server, "!wordbot keep 30", author="bob")
    for wrong in ("0", "3651", "soon", "-5", "2.5"):
        assert "from 1 to 3,650, or `forever`" in await say(server, f"!wordbot keep {wrong}")
    assert memory(bot, server).messages == 5  # nothing changed by a refused or unreadable keep
    answer = await say(server, "!wordbot keep 30")
    assert answer == "What I learn here is kept for 30 days. 3 older messages went now.", answer
    assert not any(learned(bot, server, m) for m in old) and all(learned(bot, server, m) for m in recent)
    assert memory(bot, server).count("oldword") == 0
    store = bot.get_cog("learning").communities.store
    assert sorted(m.id for m in store.messages(server.guild_id)) == sorted(int(m["id"]) for m in recent)
    assert "Kept for 30 days, at most 200,000 messages" in await say(server, "!wordbot stats", author="bob")
    assert "2 older messages went now" in await say(server, "!wordbot keep 1")
    assert memory(bot, server).messages == 0
    assert "kept until forgotten. Nothing had to go now." in await say(server, "!wordbot keep forever")
    assert "Kept until forgotten" in await say(server, "!wordbot stats")


@pytest.mark.asyncio
async def test_cap_drops_the_oldest_messages_at_once_and_as_new_ones_come(server, bot):
    old = [server.add_history(f"message {i} about Zorblax", author="bob") for i in range(105)]
    await listening(server)
    await read_history(server)
    assert memory(bot, server).messages == 105
    assert "Manage Server" in await say(server, "!wordbot cap 100", author="bob")
    assert "from 100 to 200,000" in await say(server, "!wordbot cap 99")
    assert "I couldn't read that" in await say(server, "!wordbot cap lots")
    assert (
        await say(server, "!wordbot cap 100") == "I keep at most 100 messages learned here. 5 oldest messages went now."
    )
    assert memory(bot, server).messages == 100
    assert not any(learned(bot, server, m) for m in old[:5]) and all(learned(bot, server, m) for m in old[5:])
    newest = await taught(bot, server, TAUGHT)  # one more: the oldest left goes, from the memory too
    await server.wait_until(lambda: not learned(bot, server, old[5]))
    assert memory(bot, server).messages == 100 and learned(bot, server, newest)
    assert bot.get_cog("learning").communities.store.count(server.guild_id) == 100
    assert "at most 100 messages" in await say(server, "!wordbot stats")


@pytest.mark.asyncio
async def test_keep_and_cap_as_slash_commands_answer_only_their_user(server, bot):
    kept = await server.send_interaction("wordbot", {"days": "90"}, subcommand="keep")
    assert "kept for 90 days" in (await server.wait_for_interaction_answer(kept)).content
    capped = await server.send_interaction("wordbot", {"messages": 5000}, subcommand="cap")
    assert "at most 5,000 messages" in (await server.wait_for_interaction_answer(capped)).content
    refused = await server.send_interaction("wordbot", {"days": "forever"}, author="bob", subcommand="keep")
    assert "Manage Server" in (await server.wait_for_interaction_answer(refused)).content
    store = bot.get_cog("learning").communities.store
    assert store.settings(server.guild_id) == GuildSettings(max_messages=5000, retention_days=90)


@pytest.mark.asyncio
async def test_messages_past_the_retention_are_dropped_while_the_bot_runs(server, running, monkeypatch):
    monkeypatch.setattr(wordbot.bot.learning, "PRUNE_EVERY", 0.05)
    bot = await running.start()
    await listening(server)
    message = await taught(bot, server, TAUGHT)
    store = bot.get_cog("learning").communities.store
    # Days are what `keep` takes; the store takes any length: 2 seconds, so the test need not wait a day.
    await asyncio.to_thread(store.set_settings, server.guild_id, GuildSettings(retention_days=2 / 86_400))
    await server.wait_until(lambda: not learned(bot, server, message))  # nobody asked: the bot prunes by itself
    assert store.count(server.guild_id) == 0
    assert "Zorblax" not in await say(server, "!next we deploy the k=10")


# -- learning at start never delays an answer ------------------------------------------


@pytest.mark.asyncio
async def test_the_first_answer_does_not_wait_for_the_stored_messages_to_be_learned_again(server, running, tmp_path):
    stored = 10_000
    store = SQLiteStore(tmp_path / "wordbot.sqlite3", flush_interval=None)
    store.listen(server.guild_id, server.channel_id)
    for i in range(stored):
        text = f"stored message {i} says that we deploy the Zorblax cluster on every second day"
        store.add_message(Message(i + 1, server.guild_id, server.channel_id, 7, float(i), text))
    store.close()
    bot = await running.start()
    communities = bot.get_cog("learning").communities
    assert "→ **" in await say(server, "!next we deploy the k=10")  # an answer, with words
    assert not communities.rebuilt.is_set()  # answered while the stored messages were still being learned
    live = await taught(bot, server, TAUGHT)  # and a new message is learned at once meanwhile
    assert not communities.rebuilt.is_set()
    await asyncio.wait_for(asyncio.to_thread(communities.rebuilt.wait), 120)
    assert memory(bot, server).messages == stored + 1 and learned(bot, server, live)
    assert "Zorblax" in await say(server, "!next we deploy the k=10")


@pytest.mark.asyncio
async def test_a_process_prunes_and_clears_the_servers_of_every_shard_it_runs(tmp_path, tiny_predictor):
    """`--shards 2` in one process runs both shards (discord.py leaves `shard_ids` None then):
    its servers on shard 1 are its own too, so their retention is pruned there; a process
    given `--shard-ids 1` owns shard 1's servers only."""
    from wordbot.bot.journal import Journal
    from wordbot.bot.learning import LearningCog

    on_0, on_1 = (1 << 22) * 2 + 7, (1 << 22) * 3 + 7  # (id >> 22) % 2: shard 0, shard 1
    store = SQLiteStore(tmp_path / "wordbot.sqlite3")
    intents = discord.Intents.none()
    bots = {
        "one bot": (commands.Bot(command_prefix="!", intents=intents), {on_0, on_1}),
        "--shards 2": (commands.AutoShardedBot(command_prefix="!", intents=intents, shard_count=2), {on_0, on_1}),
        "--shard-ids 1": (
            commands.AutoShardedBot(command_prefix="!", intents=intents, shard_count=2, shard_ids=[1]),
            {on_1},
        ),
    }
    store.add_message(Message(1, on_0, 10, 100, 1.0, "zorblax on shard zero"))
    store.add_message(Message(2, on_1, 11, 100, 2.0, "frobnic on shard one"))
    store.flush()
    try:
        for name, (bot, expected) in bots.items():
            cog = LearningCog(bot, tiny_predictor, store, journal=Journal(tmp_path / f"{name}.jsonl"))
            assert {g for g in (on_0, on_1) if cog.is_ours(g)} == expected, name
            cog.communities.rebuild()  # the memories this process serves: its own servers' alone
            held = {g for g in (on_0, on_1) if cog.communities.view(g).memory.messages}
            assert held == expected, name
    finally:
        store.close()
