"""The Discord bot, tested through discord.py's real client talking to the fake Discord in
wordbot/testing/fake_discord.py over 127.0.0.1: commands, replies, mentions, bursts, errors, reconnects."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import discord
import pytest
import pytest_asyncio
import yarl
from discord.ext import commands

from wordbot import cli
from wordbot.bot import build_bot, intents, invite_url, read_token
from wordbot.bot.cog import COOLDOWN_PER, COOLDOWN_RATE, PERMISSIONS
from wordbot.bot.render import MAX_OUTPUT_CHARS, plain
from wordbot.limits import BOT_MAX_INPUT_CHARS as MAX_INPUT_CHARS
from wordbot.testing.fake_discord import MESSAGE_CONTENT_INTENT, FakeDiscord, FakeDiscordThread
from wordbot.testing.processes import sigterm_at_end
from wordbot.text import is_word, tokenize

from .test_bot_text import bold_balanced

NO_PINGS = {"parse": [], "replied_user": False}
StartBot = Callable[..., Awaitable[commands.Bot]]


@pytest.fixture(autouse=True)
def state_dir(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    # `wordbot discord` keeps its store in the state directory: a temporary one, not the user's.
    monkeypatch.setenv("WORDBOT_STATE_DIR", str(tmp_path / "state"))


@pytest_asyncio.fixture
async def start_bot(server: FakeDiscord, tiny_predictor: Any) -> AsyncIterator[StartBot]:
    """Starts a real bot against the fake server and waits until it is ready."""
    running: list[tuple[commands.Bot, asyncio.Task[None]]] = []

    async def start(predictor: Any = None, **options: Any) -> commands.Bot:
        options.setdefault("guild_ready_timeout", 0.05)
        bot = build_bot(predictor or tiny_predictor, **options)
        task = asyncio.create_task(bot.start(server.token))
        running.append((bot, task))
        ready = asyncio.create_task(bot.wait_until_ready())
        await asyncio.wait([ready, task], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raise what stopped it
        assert bot.is_ready(), "the bot did not become ready"
        return bot

    yield start
    for bot, task in running:
        await bot.close()
        await asyncio.wait_for(task, 10)


@pytest_asyncio.fixture
async def bot(start_bot: StartBot) -> commands.Bot:
    # Burst-friendly by default; the cooldown test starts its own bot.
    return await start_bot(cooldown_rate=1000)


def words_of(content: str) -> list[str]:
    return [part.split("**")[0] for part in content.split("→", 1)[1].split("**")[1::2]]


# -- round trips ---------------------------------------------------------------------------


@pytest.mark.asyncio
async def test_next_replies_with_the_predictors_top_words(server, bot, tiny_predictor):
    message = await server.send_message("!next the cat is")
    reply = await server.wait_for_reply(message)
    expected = [p.word for p in tiny_predictor.next_words("the cat is", 5)]
    assert reply.content.startswith("the cat is → ")
    assert words_of(reply.content) == [discord.utils.escape_markdown(w) for w in expected]
    assert reply.content.count("%") == len(expected)
    assert reply.payload["allowed_mentions"] == NO_PINGS
    assert server.unhandled == []


@pytest.mark.asyncio
async def test_next_takes_k_up_to_ten(server, bot):
    message = await server.send_message("!next the cat k=50")
    reply = await server.wait_for_reply(message)
    assert reply.content.startswith("the cat → ")
    assert len(words_of(reply.content)) == 10


@pytest.mark.asyncio
async def test_empty_next_predicts_the_first_word_of_a_message(server, bot, tiny_predictor):
    message = await server.send_message("!next")
    reply = await server.wait_for_reply(message)
    assert reply.content.startswith("*(start of a message)* → ")
    assert len(words_of(reply.content)) == len(tiny_predictor.next_words("", 5))


@pytest.mark.asyncio
async def test_continue_shows_the_prompt_then_the_continuation_in_bold(server, bot):
    message = await server.send_message("!continue once upon a time 7")
    reply = await server.wait_for_reply(message)
    assert reply.content.startswith("once upon a time")
    rest = reply.content[len("once upon a time") :]
    assert "**" in rest or "nothing to add" in rest
    if "**" in rest:
        written = rest.split("**")[1]
        assert 1 <= len(written.split()) <= 7 * 2  # 7 words, plus any punctuation tokens
    assert reply.payload["allowed_mentions"] == NO_PINGS


@pytest.mark.asyncio
async def test_about_describes_the_commands_and_the_model(server, bot, tiny_predictor):
    message = await server.send_message("!wordbot")
    reply = await server.wait_for_reply(message)
    assert "!next" in reply.content and "!continue" in reply.content
    assert tiny_predictor.describe() in reply.content


@pytest.mark.asyncio
async def test_a_bot_of_your_own_gets_the_commands_as_an_extension(server, monkeypatch):
    # Closing the bot unloads the extension, and discord.py then drops every wordbot.bot.*
    # module from sys.modules (how it reloads extensions); later imports would make new
    # classes that the other tests' imported names are not. Keep this test's purge to itself.
    for name in [n for n in sys.modules if n == "wordbot.bot" or n.startswith("wordbot.bot.")]:
        monkeypatch.setitem(sys.modules, name, sys.modules[name])
    own = commands.Bot(command_prefix="?", intents=intents(), guild_ready_timeout=0.05)
    await own.load_extension("wordbot.bot")  # the bundled default model
    task = asyncio.create_task(own.start(server.token))
    try:
        await asyncio.wait_for(own.wait_until_ready(), 30)
        reply = await server.wait_for_reply(await server.send_message("?next the cat"), timeout=30)
        assert reply.content.startswith("the cat → **")
    finally:
        await own.close()
        await asyncio.wait_for(task, 10)


@pytest.mark.asyncio
async def test_slash_commands_answer_too(server, bot, tiny_predictor):
    interaction = await server.send_interaction("next", {"text": "the cat is", "k": 3})
    answer = await server.wait_for_interaction_answer(interaction)
    expected = [p.word for p in tiny_predictor.next_words("the cat is", 3)]
    assert words_of(answer.content) == [discord.utils.escape_markdown(w) for w in expected]
    assert answer.payload["allowed_mentions"]["parse"] == []
    interaction = await server.send_interaction("continue", {"text": "@everyone once upon a", "words": 5})
    answer = await server.wait_for_interaction_answer(interaction)
    assert answer.content.startswith("@everyone once upon a")
    assert answer.payload["allowed_mentions"]["parse"] == []
    interaction = await server.send_interaction("next", {"text": "i am"})
    answer = await server.wait_for_interaction_answer(interaction)
    assert len(words_of(answer.content)) == len(tiny_predictor.next_words("i am", 5))
    interaction = await server.send_interaction("continue", {})
    answer = await server.wait_for_interaction_answer(interaction)
    assert answer.content and "Sorry" not in answer.content
    interaction = await server.send_interaction("wordbot", subcommand="about")
    answer = await server.wait_for_interaction_answer(interaction)
    assert "/next" in answer.content


@pytest.mark.asyncio
async def test_help_is_wordbots_own_short_help_as_a_muted_reply(server, start_bot, tiny_predictor):
    await start_bot()  # the default limits, as the help text states them
    for command in ("!help", "!HELP next"):
        message = await server.send_message(command)
        reply = await server.wait_for_reply(message)
        assert "!next" in reply.content and "!continue" in reply.content
        assert f"Model: {tiny_predictor.describe()}" in reply.content
        assert f"{MAX_INPUT_CHARS:,} characters" in reply.content
        assert f"{COOLDOWN_RATE} commands per {COOLDOWN_PER:g} seconds" in reply.content
        assert reply.payload["allowed_mentions"] == NO_PINGS
        assert len(reply.content) <= 800
    assert len(server.posted) == 2  # one answer each, nothing else in the channel


@pytest.mark.asyncio
async def test_help_counts_against_the_rate_limit(server, start_bot):
    await start_bot(cooldown_rate=2, cooldown_per=60)
    first = await server.wait_for_reply(await server.send_message("!help"))
    assert "Model:" in first.content
    second = await server.wait_for_reply(await server.send_message("!next the"))
    assert "→" in second.content
    answer = await server.wait_for_reply(await server.send_message("!help"))
    assert answer.content.startswith("Slow down")


@pytest.mark.asyncio
async def test_text_ending_in_whitespace_continues_without_a_doubled_space(server, bot):
    original = await server.send_message("it was a dark and\n", author="bob")
    replies = [await server.wait_for_reply(await server.send_message("!continue", reply_to=original))]
    replies.append(await server.wait_for_reply(await server.send_message("!continue hello \n 5")))
    interaction = await server.send_interaction("continue", {"text": "hello  \n", "words": 5})
    replies.append(await server.wait_for_interaction_answer(interaction))
    for reply in replies:
        shown = reply.content.replace("**", "")
        assert shown.startswith(("it was a dark and", "hello"))
        assert not re.search(r"\s\s|\s[.,;:!?]", shown), shown


# -- reply and mention forms ---------------------------------------------------------------


@pytest.mark.asyncio
async def test_a_command_replying_to_a_message_uses_that_messages_text(server, bot):
    original = await server.send_message("the dog sat on the", author="bob")
    for command in ("!next", "!continue"):
        message = await server.send_message(command, reply_to=original)
        reply = await server.wait_for_reply(message)
        assert reply.content.startswith("the dog sat on the")


@pytest.mark.asyncio
async def test_a_reply_whose_message_is_not_in_the_event_is_fetched(server, bot):
    original = await server.send_message("a man walks into", author="bob")
    payload = server.message_payload("!next", reply_to=original)
    del payload["referenced_message"]  # Discord omits it sometimes; the bot must fetch
    server.messages[int(payload["id"])] = payload
    await server.dispatch("MESSAGE_CREATE", payload)
    reply = await server.wait_for_reply(payload)
    assert reply.content.startswith("a man walks into →")
    assert ("GET", f"/channels/{server.channel_id}/messages/{original['id']}") in server.requests


@pytest.mark.asyncio
async def test_mentioning_the_bot_continues_the_text(server, bot):
    message = await server.send_message(f"{server.mention()} the weather today", mentions=[server.bot_user])
    reply = await server.wait_for_reply(message)
    assert reply.content.startswith("the weather today")
    assert "<@" not in reply.content
    assert reply.payload["allowed_mentions"] == NO_PINGS


@pytest.mark.asyncio
async def test_a_number_after_a_mention_sets_how_many_words(server, bot):
    lengths = []
    for _ in range(3):  # sampled: a continuation may also end at once ("nothing to add")
        message = await server.send_message(f"{server.mention()} the weather today 3", mentions=[server.bot_user])
        reply = await server.wait_for_reply(message)
        assert reply.content.startswith("the weather today")
        rest = reply.content[len("the weather today") :].lstrip()
        if rest.startswith("**"):
            lengths.append(sum(is_word(t) for t in tokenize(rest.split("**")[1])))
    # Words (punctuation does not count); a continuation may end early, never run longer.
    assert lengths and max(lengths) >= 1 and all(n <= 3 for n in lengths)
    message = await server.send_message(f"{server.mention()} born in 1984", mentions=[server.bot_user])
    assert (await server.wait_for_reply(message)).content.startswith("born in 1984")


@pytest.mark.asyncio
async def test_a_bare_mention_replying_to_a_message_continues_that_message(server, bot):
    original = await server.send_message("it was a dark and", author="carol")
    message = await server.send_message(server.mention(), reply_to=original, mentions=[server.bot_user])
    reply = await server.wait_for_reply(message)
    assert reply.content.startswith("it was a dark and")


@pytest.mark.asyncio
async def test_a_reply_to_the_bot_without_a_written_mention_is_not_answered(server, bot):
    first = await server.send_message("!next hello")
    answer = await server.wait_for_reply(first)
    # Discord lists the replied-to author in `mentions` when a reply pings; that is no request.
    silent = await server.send_message("thanks!", reply_to=answer.message, mentions=[server.bot_user])
    control = await server.send_message("!next thanks")
    await server.wait_for_reply(control)
    assert all(p.reply_to != int(silent["id"]) for p in server.posted)


@pytest.mark.asyncio
async def test_a_count_alone_in_a_reply_is_the_length_not_the_text(server, bot):
    original = await server.send_message("it was a dark and stormy", author="bob")
    for text, mentions in (("!continue 3", None), (f"{server.mention()} 3", [server.bot_user])):
        reply = await server.wait_for_reply(await server.send_message(text, reply_to=original, mentions=mentions))
        assert reply.content.startswith("it was a dark and stormy"), reply.content
        written = reply.content.split("**")[1] if "**" in reply.content else ""
        assert sum(is_word(t) for t in tokenize(written)) <= 3


@pytest.mark.asyncio
async def test_the_command_lines_options_work_in_the_channel_too(server, bot):
    reply = await server.wait_for_reply(await server.send_message("!next the cat -k 3"))
    assert reply.content.startswith("the cat →") and len(words_of(reply.content)) == 3
    reply = await server.wait_for_reply(await server.send_message("!continue once upon a time -n 3"))
    assert reply.content.startswith("once upon a time") and "-n" not in reply.content


@pytest.mark.asyncio
async def test_a_reply_to_a_message_without_text_or_to_a_deleted_one_says_so(server, bot):
    picture = await server.send_message("", author="bob")  # an attachment or embed, no text
    for command in ("!next", "!continue"):
        reply = await server.wait_for_reply(await server.send_message(command, reply_to=picture))
        assert reply.content == "The message you replied to has no text for me to work with."
    gone = await server.send_message("soon deleted", author="bob")
    del server.messages[int(gone["id"])]
    for content, mentions in (("!continue", None), (server.mention(), [server.bot_user])):
        payload = server.message_payload(content, reply_to=gone, mentions=mentions)
        del payload["referenced_message"]  # deleted: Discord sends none, and fetching it fails
        await server.dispatch("MESSAGE_CREATE", payload)
        reply = await server.wait_for_reply(payload)
        assert reply.content.startswith("I can't see the message you replied to"), reply.content


@pytest.mark.asyncio
async def test_a_reply_to_a_long_message_uses_its_end_rather_than_refusing(server, bot):
    long = await server.send_message("word " * 300 + "the end of the", author="bob")
    reply = await server.wait_for_reply(await server.send_message("!next", reply_to=long))
    assert "→" in reply.content and reply.content.startswith("…") and "the end of the →" in reply.content


@pytest.mark.asyncio
async def test_continuing_the_bots_own_answer_continues_the_story_not_its_markdown(server, bot):
    first = await server.wait_for_reply(await server.send_message("!continue once upon a time_machine 5"))
    assert first.content.startswith("once upon a time\\_machine")
    story = plain(first.content)
    assert story.startswith("once upon a time_machine") and "**" not in story
    again = await server.wait_for_reply(await server.send_message("!continue 5", reply_to=first.message))
    assert again.content.startswith(discord.utils.escape_markdown(story)), (story, again.content)
    hint = await server.wait_for_reply(await server.send_message("!next", reply_to=first.message))
    assert hint.content.split(" → ")[0] == discord.utils.escape_markdown(story)


@pytest.mark.asyncio
async def test_mentioning_the_bots_role_counts_as_mentioning_the_bot(server, bot):
    message = await server.send_message(f"{server.role_mention()} the weather today")
    reply = await server.wait_for_reply(message)
    assert reply.content.startswith("the weather today") and "<@" not in reply.content


@pytest.mark.asyncio
async def test_a_bare_mention_gets_the_help_not_a_random_continuation(server, bot, tiny_predictor):
    reply = await server.wait_for_reply(await server.send_message(server.mention(), mentions=[server.bot_user]))
    assert "!next" in reply.content and tiny_predictor.describe() in reply.content


@pytest.mark.asyncio
async def test_links_in_answers_do_not_unfurl_into_embeds(server, bot):
    reply = await server.wait_for_reply(await server.send_message("!next see https://example.com for"))
    assert "https://example.com" in reply.content
    assert reply.payload.get("flags", 0) & discord.MessageFlags.suppress_embeds.flag
    interaction = await server.send_interaction("continue", {"text": "see https://example.com", "words": 3})
    answer = await server.wait_for_interaction_answer(interaction)
    assert answer.payload.get("flags", 0) & discord.MessageFlags.suppress_embeds.flag


@pytest.mark.asyncio
async def test_the_bot_answers_in_direct_messages(server, bot):
    dm = server.new_id()
    message = await server.send_message("!next the", dm_channel=dm)
    reply = await server.wait_for_reply(message)
    assert reply.channel_id == dm and reply.content.startswith("the →")
    message = await server.send_message(f"{server.mention()} the", dm_channel=dm, mentions=[server.bot_user])
    assert (await server.wait_for_reply(message)).content.startswith("the")


# -- what users write: mentions, emoji, invisible characters -----------------------------

UNKNOWN_USER, UNKNOWN_CHANNEL, UNKNOWN_ROLE = "<@123456789012345678>", "<#234567890123456789>", "<@&345678901234567890>"


class Recorder:
    """The tiny predictor, noting every text it is asked about: what the model got."""

    def __init__(self, predictor: Any) -> None:
        self.predictor, self.texts = predictor, []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.predictor, name)

    def next_words(self, text: str, k: int = 5) -> Any:
        self.texts.append(text)
        return self.predictor.next_words(text, k)

    def continue_text(self, text: str, words: int) -> Any:
        self.texts.append(text)
        return self.predictor.continue_text(text, words)


@pytest.mark.asyncio
async def test_mentions_and_custom_emoji_reach_the_model_and_the_answer_as_users_see_them(
    server, start_bot, tiny_predictor
):
    model = Recorder(tiny_predictor)
    await start_bot(model, cooldown_rate=1000)
    bob = server.users["bob"]["id"]
    written = (
        f"I asked <@{bob}> and <@!{bob}> about <#{server.other_channel_id}> and :smile: <:blob:345678901234567890>"
        f" with <@&{server.role_id}> <a:party_parrot:456789012345678901> {UNKNOWN_USER} {UNKNOWN_CHANNEL}"
        f" {UNKNOWN_ROLE}"
    )
    seen = (
        "I asked @Bobby and @Bobby about #random and :smile: :blob: with @moderators :party_parrot:"
        " @unknown-user #unknown-channel @unknown-role"
    )
    mentions = [server.mentioned("bob", nick="Bobby")]
    for command in ("!next", "!continue"):
        reply = await server.wait_for_reply(await server.send_message(f"{command} {written}", mentions=mentions))
        assert reply.content.startswith(discord.utils.escape_markdown(seen)), reply.content
        assert "<" not in reply.content.split("**")[0]
        assert model.texts[-1] == seen
    # A nickname or role that reads "@everyone" is quoted as it reads, and pings nobody.
    everyone = f"!continue hi <@{bob}> and <@&{server.guild_id}> 3"
    mentions = [server.mentioned("bob", nick="everyone")]
    reply = await server.wait_for_reply(await server.send_message(everyone, mentions=mentions))
    assert reply.content.startswith("hi @everyone and @everyone") and model.texts[-1] == "hi @everyone and @everyone"
    assert reply.payload["allowed_mentions"] == NO_PINGS


@pytest.mark.asyncio
async def test_mentions_read_as_names_in_slash_commands_replies_and_the_mention_form(server, start_bot, tiny_predictor):
    model = Recorder(tiny_predictor)
    await start_bot(model, cooldown_rate=1000)
    alice, me = server.users["alice"]["id"], server.bot_user["id"]
    # A slash command's text comes without the mentions Discord resolves for a message: names
    # come from the cache (the user who ran it, the bot, the server's roles and channels).
    text = (
        f"<@{alice}> asks <@{me}> in <#{server.channel_id}> about <@&{server.role_id}> {UNKNOWN_USER}"
        " <:blob:345678901234567890>"
    )
    seen = "@alice asks @wordbot in #general about @moderators @unknown-user :blob:"
    interaction = await server.send_interaction("next", {"text": text})
    answer = await server.wait_for_interaction_answer(interaction)
    assert answer.content.startswith(f"{seen} →"), answer.content
    assert model.texts[-1] == seen
    # The message replied to, with its own mentions.
    carol = server.users["carol"]["id"]
    original = await server.send_message(
        f"<@{carol}> meet me in <#{server.other_channel_id}> <a:wave:456789012345678901>",
        author="bob",
        mentions=[server.mentioned("carol", nick="Caz")],
    )
    reply = await server.wait_for_reply(await server.send_message("!next", reply_to=original))
    assert reply.content.startswith("@Caz meet me in #random :wave: →"), reply.content
    # The mention form: the bot's own mention is taken out, the others read as names.
    message = await server.send_message(
        f"{server.mention()} tell <@&{server.role_id}> and {UNKNOWN_USER} that", mentions=[server.bot_user]
    )
    reply = await server.wait_for_reply(message)
    assert reply.content.startswith("tell @moderators and @unknown-user that"), reply.content
    assert model.texts[-1] == "tell @moderators and @unknown-user that"


INVISIBLE = ["\u200b", "\u200c\u200d", "\u2060", "\ufeff", " \u200b \u2060 "]


@pytest.mark.asyncio
@pytest.mark.parametrize("nothing", INVISIBLE, ids=["zwsp", "zwnj-zwj", "word-joiner", "bom", "mixed"])
async def test_text_of_only_invisible_characters_counts_as_no_text(server, bot, nothing):
    reply = await server.wait_for_reply(await server.send_message(f"!next {nothing}"))
    assert reply.content.startswith("*(start of a message)* → "), repr(reply.content)
    reply = await server.wait_for_reply(await server.send_message(f"!continue {nothing}"))
    assert reply.content.startswith(("**", "*(the model has nothing to add)*")), repr(reply.content)
    answer = await server.wait_for_interaction_answer(await server.send_interaction("next", {"text": nothing}))
    assert answer.content.startswith("*(start of a message)* → "), repr(answer.content)
    # As a reply: the replied-to message's text, as with no text at all.
    original = await server.send_message("the dog sat on the", author="bob")
    for content, mentions in ((f"!next {nothing}", None), (f"{server.mention()} {nothing}", [server.bot_user])):
        reply = await server.wait_for_reply(await server.send_message(content, reply_to=original, mentions=mentions))
        assert reply.content.startswith("the dog sat on the"), repr(reply.content)
    # Replying to a message with nothing visible in it, or mentioning the bot with nothing else.
    empty = await server.send_message(nothing, author="bob")
    reply = await server.wait_for_reply(await server.send_message("!continue", reply_to=empty))
    assert reply.content == "The message you replied to has no text for me to work with."
    reply = await server.wait_for_reply(
        await server.send_message(f"{server.mention()}{nothing}", mentions=[server.bot_user])
    )
    assert "!next" in reply.content and "Model:" in reply.content  # the help, as for a bare mention


@pytest.mark.asyncio
async def test_slash_command_mentions_and_timestamps_read_as_the_client_shows_them(server, start_bot, tiny_predictor):
    model = Recorder(tiny_predictor)
    await start_bot(model, cooldown_rate=1000)
    written = (
        "try </help:123456789012345678> or </settings notify:234567890123456789> since <t:1700000000>"
        " (<t:1700000000:R>, at <t:1700000000:t> on <t:1700000000:D>, <t:1700000000:F>) not <t:99999999999999999>"
    )
    seen = (
        "try /help or /settings notify since 2023-11-14 22:13 UTC (2023-11-14 22:13 UTC, at 22:13 UTC on"
        " 2023-11-14, Tuesday 2023-11-14 22:13 UTC) not <t:99999999999999999>"  # past the year 9999: as written
    )
    reply = await server.wait_for_reply(await server.send_message(f"!next {written}"))
    assert reply.content.startswith(f"{seen} →"), reply.content
    assert model.texts[-1] == seen
    answer = await server.wait_for_interaction_answer(await server.send_interaction("continue", {"text": written}))
    assert answer.content.startswith(seen), answer.content
    assert model.texts[-1] == seen
    original = await server.send_message("see </ping:345678901234567890> at <t:0:T> then", author="bob")
    reply = await server.wait_for_reply(await server.send_message("!next", reply_to=original))
    assert reply.content.startswith("see /ping at 00:00:00 UTC then →"), reply.content


@pytest.mark.asyncio
@pytest.mark.parametrize("nothing", ["\u200b", "\u2060", "\ufeff\u200d"], ids=["zwsp", "word-joiner", "bom-zwj"])
async def test_an_invisible_character_right_after_the_command_name_is_nothing(
    server, start_bot, tiny_predictor, nothing
):
    model = Recorder(tiny_predictor)
    await start_bot(model, cooldown_rate=1000)
    reply = await server.wait_for_reply(await server.send_message(f"!next{nothing}the cat"))
    assert reply.content.startswith("the cat → "), repr(reply.content)
    assert model.texts[-1] == "the cat"
    reply = await server.wait_for_reply(await server.send_message(f"!next{nothing}"))
    assert reply.content.startswith("*(start of a message)* → "), repr(reply.content)
    reply = await server.wait_for_reply(await server.send_message(f"!{nothing}continue{nothing} once upon a time 3"))
    assert reply.content.startswith("once upon a time"), repr(reply.content)
    assert model.texts[-1] == "once upon a time"
    reply = await server.wait_for_reply(await server.send_message(f"!NEXT{nothing}the dog k=2"))
    assert reply.content.startswith("the dog → ") and len(words_of(reply.content)) == 2
    # As a reply: the command alone, so the replied-to message's text.
    original = await server.send_message("the dog sat on the", author="bob")
    reply = await server.wait_for_reply(await server.send_message(f"!continue{nothing}", reply_to=original))
    assert reply.content.startswith("the dog sat on the"), repr(reply.content)
    # The command answers, not the mention form as well.
    message = await server.send_message(f"!next{nothing}{server.mention()} hi", mentions=[server.bot_user])
    reply = await server.wait_for_reply(message)
    assert reply.content.startswith("@wordbot hi → "), repr(reply.content)
    await asyncio.sleep(0.1)
    assert sum(p.reply_to == int(message["id"]) for p in server.posted) == 1
    # Not a command of this bot, however it is hidden: still silence.
    ignored = await server.send_message(f"!nope{nothing}the cat")
    await server.wait_for_reply(await server.send_message("!next the"))
    assert all(p.reply_to != int(ignored["id"]) for p in server.posted)


@pytest.mark.asyncio
async def test_an_answer_cut_to_discords_limit_keeps_its_bold_closed(server, start_bot, tiny_predictor):
    from wordbot.predictor import Prediction

    class Verbose:
        def __getattr__(self, name: str) -> Any:
            return getattr(tiny_predictor, name)

        def continue_text(self, text: str, words: int) -> str:
            return " " + "and so on and so forth, " * 120  # far past 2,000 characters

        def next_words(self, text: str, k: int = 5) -> list[Prediction]:
            return [Prediction("super*cali" * 25, 0.1 * (i + 1)) for i in range(k)]

    await start_bot(Verbose(), cooldown_rate=1000)
    replies = [await server.wait_for_reply(await server.send_message("!continue once upon a time"))]
    replies.append(await server.wait_for_reply(await server.send_message("!next the cat k=10")))
    replies.append(
        await server.wait_for_interaction_answer(await server.send_interaction("continue", {"text": "once upon"}))
    )
    for reply in replies:
        assert len(reply.content) <= MAX_OUTPUT_CHARS, len(reply.content)
        assert bold_balanced(reply.content), reply.content[-80:]
        assert "…" in reply.content[-3:] and not re.search(r"\\+…|\*\*…\*\*$", reply.content), reply.content[-80:]
    assert replies[0].content.startswith("once upon a time **and so on") and replies[0].content.endswith("…**")


# -- what a server admin expects -----------------------------------------------------------


@pytest.mark.asyncio
async def test_a_burst_of_100_commands_from_several_users_is_all_answered(server, bot, tiny_predictor):
    users = ["alice", "bob", "carol", "dave"]
    prompts = ["the", "i am", "what is the", "you can", "it is a"]
    sent = []
    for i in range(100):
        prompt = prompts[i % len(prompts)]
        command = "!next" if i % 3 else "!continue"
        sent.append((command, prompt, await server.send_message(f"{command} {prompt}", author=users[i % 4])))
    replies = await asyncio.gather(*(server.wait_for_reply(m, timeout=30) for _, _, m in sent))
    for (command, prompt, _), reply in zip(sent, replies, strict=True):
        assert reply.content.startswith(prompt)
        if command == "!next":
            expected = [p.word for p in tiny_predictor.next_words(prompt, 5)]
            assert words_of(reply.content) == [discord.utils.escape_markdown(w) for w in expected]
        assert reply.payload["allowed_mentions"] == NO_PINGS
    assert len(server.posted) == 100


@pytest.mark.asyncio
async def test_a_user_past_the_cooldown_is_asked_to_slow_down(server, start_bot):
    await start_bot(cooldown_rate=2, cooldown_per=60)
    answers = []
    for _ in range(3):
        answers.append(await server.wait_for_reply(await server.send_message("!next the")))
    assert "→" in answers[0].content and "→" in answers[1].content
    assert answers[2].content.startswith("Slow down")
    # Another user has their own budget.
    other = await server.wait_for_reply(await server.send_message("!next the", author="bob"))
    assert "→" in other.content


@pytest.mark.asyncio
async def test_a_burst_past_the_cooldown_gets_one_slow_down_not_one_per_message(server, start_bot):
    await start_bot(cooldown_rate=2, cooldown_per=60)
    sent = [await server.send_message("!next the") for _ in range(4)]
    sent.append(await server.send_message(f"{server.mention()} the", mentions=[server.bot_user]))
    sent += [await server.send_message("!continue the") for _ in range(3)]
    await server.wait_for_reply(await server.send_message("!next the", author="bob"))  # bob has his own
    await asyncio.sleep(0.2)
    answers = [p.content for p in server.posted if p.reply_to in {int(m["id"]) for m in sent}]
    assert sum("→" in a for a in answers) == 2
    assert sum(a.startswith("Slow down") for a in answers) == 1, answers
    assert len(answers) == 3
    # A slash command must always be answered; only its user sees it.
    interaction = await server.send_interaction("next", {"text": "the"})
    answer = await server.wait_for_interaction_answer(interaction)
    assert answer.content.startswith("Slow down")
    assert server.interaction_responses[-1]["data"]["flags"] & discord.MessageFlags.ephemeral.flag


@pytest.mark.asyncio
async def test_where_the_bot_may_not_send_it_logs_one_line_and_stays_quiet(server, bot, caplog):
    server.forbidden_channels.add(server.channel_id)  # Discord answers 403: a role was taken away
    with caplog.at_level(logging.DEBUG):
        for content in ("!next the", "!continue the", f"{server.mention()} the", "!next " + "x" * 1500):
            await server.send_message(content, mentions=[server.bot_user])
        await server.wait_until(lambda: sum(m == "POST" for m, _ in server.requests) >= 4)
        await asyncio.sleep(0.2)
    assert server.posted == []
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info], caplog.text
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and r.name == "wordbot.bot"]
    assert len(warnings) == 1 and "cannot send messages in #general" in warnings[0].getMessage()
    server.forbidden_channels.clear()  # the permission is back
    reply = await server.wait_for_reply(await server.send_message("!next the"))
    assert "→" in reply.content


@pytest.mark.asyncio
async def test_a_channel_denying_send_costs_no_refused_requests(server, bot, caplog):
    deny_send = {"id": server.bot_user["id"], "type": 1, "allow": "0", "deny": str(1 << 11)}
    await server.set_channel_overwrites([deny_send])
    await server.wait_until(lambda: bot.get_channel(server.channel_id).overwrites)
    posts = sum(m == "POST" for m, _ in server.requests)
    with caplog.at_level(logging.WARNING, logger="wordbot.bot"):
        for _ in range(3):
            await server.send_message("!next the")
        await asyncio.sleep(0.3)
    # Discord counts refused requests against the bot (too many and it is locked out for an
    # hour): where the cache says it may not send, it does not try.
    assert sum(m == "POST" for m, _ in server.requests) == posts
    assert len(caplog.records) == 1
    await server.set_channel_overwrites([])
    await server.wait_until(lambda: not bot.get_channel(server.channel_id).overwrites)
    assert "→" in (await server.wait_for_reply(await server.send_message("!next the"))).content


@pytest.mark.asyncio
async def test_without_read_message_history_it_answers_without_the_reply_link(server, bot, caplog):
    server.no_history_channels.add(server.channel_id)  # Discord refuses replies (160002)
    with caplog.at_level(logging.WARNING):
        await server.send_message("!next what is the")
        answer = await server.wait_for(lambda p: p.content.startswith("what is the →"))
    assert answer.reply_to is None
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.mark.asyncio
async def test_refusals_of_slash_commands_are_seen_only_by_their_user(server, bot):
    interaction = await server.send_interaction("next", {"text": "word " * 250})
    answer = await server.wait_for_interaction_answer(interaction)
    assert f"{MAX_INPUT_CHARS:,} characters" in answer.content
    assert server.interaction_responses[-1]["data"]["flags"] & discord.MessageFlags.ephemeral.flag


@pytest.mark.asyncio
@pytest.mark.parametrize(
    "text",
    [
        "!next @everyone @here hello",
        "!continue <@&123456789012345678> and <@123456789012345678> said",
        "@everyone",  # nothing for the bot: the next command must still go out muted
    ],
)
async def test_mentions_in_the_input_never_ping(server, bot, text):
    first = await server.send_message(text)
    if text.startswith("!"):
        reply = await server.wait_for_reply(first)
    else:
        reply = await server.wait_for_reply(await server.send_message("!next @everyone"))
    assert reply.payload["allowed_mentions"]["parse"] == []
    assert reply.payload["allowed_mentions"]["replied_user"] is False


@pytest.mark.asyncio
async def test_messages_from_bots_are_ignored(server, bot):
    from_bot = await server.send_message("!next the", author="otherbot")
    mention_from_bot = await server.send_message(
        f"{server.mention()} hi", author="otherbot", mentions=[server.bot_user]
    )
    control = await server.send_message("!next the")
    await server.wait_for_reply(control)
    await asyncio.sleep(0.2)
    ignored = {int(from_bot["id"]), int(mention_from_bot["id"])}
    assert not [p for p in server.posted if p.reply_to in ignored]


@pytest.mark.asyncio
async def test_over_long_input_is_refused_politely(server, bot):
    for command in ("!next ", "!continue ", f"{server.mention()} "):
        message = await server.send_message(command + "word " * 250, mentions=[server.bot_user])
        reply = await server.wait_for_reply(message)
        assert f"{MAX_INPUT_CHARS:,} characters" in reply.content
        assert "→" not in reply.content


@pytest.mark.asyncio
async def test_awkward_input_does_not_break_it(server, bot):
    for text in ["🙂🙂🙂", "```python\nprint('hi')\n```", "**bold** _it_ ~~x~~ ||spoiler||", "zxqv blorp"]:
        for command in ("!next", "!continue"):
            reply = await server.wait_for_reply(await server.send_message(f"{command} {text}"))
            assert 0 < len(reply.content) <= MAX_OUTPUT_CHARS
            assert "Sorry" not in reply.content


@pytest.mark.asyncio
async def test_a_long_run_of_whitespace_between_words_gets_its_answer(server, bot, tiny_predictor):
    # It made the old trailing-count regex take quadratic time on the event loop.
    reply = await server.wait_for_reply(await server.send_message("!next a" + " " * 1990 + "x"), timeout=5)
    assert reply.content.startswith("a x → ")
    assert words_of(reply.content) == [p.word for p in tiny_predictor.next_words("a x", 5)]
    mention = await server.send_message(f"{server.mention()} a" + "\n" * 3900 + "x 3", mentions=[server.bot_user])
    reply = await server.wait_for_reply(mention, timeout=5)
    assert reply.content.startswith("a x") and reply.content.endswith("**") and "Sorry" not in reply.content


@pytest.mark.asyncio
async def test_bidi_controls_cannot_reorder_the_bots_answer(server, start_bot, tiny_predictor):
    from wordbot.predictor import Prediction

    class Rtl:  # words and continuations that carry controls, as learned users' words may
        def __getattr__(self, name: str) -> Any:
            return getattr(tiny_predictor, name)

        def next_words(self, text: str, k: int = 5) -> list[Prediction]:
            return [Prediction("evil\u202e", 0.5), Prediction("\u2066x", 0.25)]

        def continue_text(self, text: str, words: int) -> str:
            return " and\u202d then\u2069"

    await start_bot(Rtl(), cooldown_rate=1000)
    replies = [
        await server.wait_for_reply(await server.send_message("!next hello \u202eevil")),
        await server.wait_for_reply(await server.send_message("!continue hello \u202bthere")),
        await server.wait_for_interaction_answer(await server.send_interaction("next", {"text": "hi \u2068you"})),
    ]
    assert replies[0].content == "hello <U+202E>evil → **evil<U+202E>** 50% · **<U+2066>x** 25%"
    assert replies[1].content == "hello <U+202B>there **and<U+202D> then<U+2069>**"
    for reply in replies:
        assert not re.search("[\u202a-\u202e\u2066-\u2069]", reply.content), ascii(reply.content)


@pytest.mark.asyncio
async def test_prediction_runs_off_the_event_loop(server, start_bot, tiny_predictor):
    class Slow:
        def __getattr__(self, name: str) -> Any:
            return getattr(tiny_predictor, name)

        def next_words(self, text: str, k: int = 5) -> Any:
            time.sleep(0.5)  # a slow model: blocking, as real computation is
            return tiny_predictor.next_words(text, k)

    await start_bot(Slow(), cooldown_rate=1000)
    loop = asyncio.get_running_loop()
    worst = 0.0

    async def watch() -> None:
        nonlocal worst
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            worst = max(worst, loop.time() - before - 0.01)

    watcher = asyncio.create_task(watch())
    sent = [await server.send_message(f"!next the {i}", author=u) for i, u in enumerate(["alice", "bob", "carol"])]
    await asyncio.gather(*(server.wait_for_reply(m) for m in sent))
    watcher.cancel()
    assert worst < 0.4, f"the event loop stalled for {worst:.2f} s"


@pytest.mark.asyncio
async def test_an_error_in_prediction_gets_an_apology_and_the_bot_keeps_answering(
    server, start_bot, tiny_predictor, caplog
):
    class Flaky:
        def __init__(self) -> None:
            self.failed = False

        def __getattr__(self, name: str) -> Any:
            return getattr(tiny_predictor, name)

        def next_words(self, text: str, k: int = 5) -> Any:
            if not self.failed:
                self.failed = True
                raise RuntimeError("the model fell over")
            return tiny_predictor.next_words(text, k)

    await start_bot(Flaky(), cooldown_rate=1000)
    with caplog.at_level(logging.ERROR, logger="wordbot.bot"):
        apology = await server.wait_for_reply(await server.send_message("!next the"))
    assert apology.content.startswith("Sorry")
    assert "Traceback" not in apology.content and "fell over" not in apology.content
    assert any(r.exc_info and "fell over" in str(r.exc_info[1]) for r in caplog.records)
    answer = await server.wait_for_reply(await server.send_message("!next the"))
    assert "→" in answer.content


@pytest.mark.asyncio
async def test_the_bot_resumes_after_the_gateway_connection_drops(server, bot):
    first = await server.wait_for_reply(await server.send_message("!next the"))
    assert "→" in first.content
    (session_id,) = server.sessions
    await server.drop_connections()
    # Sent while the bot is away: the RESUME replays it.
    while_away = await server.send_message("!next it is")
    reply = await server.wait_for_reply(while_away, timeout=20)
    assert reply.content.startswith("it is →")
    assert [r["session_id"] for r in server.resumes] == [session_id]
    assert len(server.identifies) == 1
    after = await server.wait_for_reply(await server.send_message("!continue and then"), timeout=10)
    assert after.content.startswith("and then")


@pytest.mark.asyncio
async def test_the_bot_identifies_again_when_its_session_cannot_be_resumed(server, start_bot, monkeypatch):
    async def no_identify_delay(self: Any, shard_id: int | None, *, initial: bool = False) -> None:
        return None  # discord.py waits 5 s before a repeated IDENTIFY

    monkeypatch.setattr(commands.Bot, "before_identify_hook", no_identify_delay)
    await start_bot(cooldown_rate=1000)
    await server.drop_connections()
    server.sessions.clear()  # the server forgot the session: RESUME gets INVALID_SESSION
    await server.wait_until(lambda: len(server.identifies) == 2 and bool(server.sessions), timeout=20)
    reply = await server.wait_for_reply(await server.send_message("!next it is"), timeout=10)
    assert reply.content.startswith("it is →")
    assert len(server.resumes) == 1


@pytest.mark.asyncio
async def test_the_bot_asks_for_the_message_content_intent(server, bot):
    assert server.identifies[0]["intents"] & MESSAGE_CONTENT_INTENT


@pytest.mark.asyncio
async def test_slash_commands_are_registered_once_not_on_every_start(server, start_bot):
    await start_bot()
    assert {c["name"] for c in server.commands} == {"next", "continue", "wordbot"}
    options = [o for c in server.commands if c["name"] != "wordbot" for o in c.get("options", [])]
    assert {o["name"] for o in options} == {"text", "k", "words"}
    assert all(len(o["description"]) > 5 for o in options)  # described, not discord.py's "…"
    assert server.command_puts == 1
    await start_bot()  # a restart with the same commands
    assert server.command_puts == 1


@pytest.mark.asyncio
async def test_shards_run_an_auto_sharded_bot_that_answers(server, start_bot, monkeypatch):
    async def no_identify_delay(self: Any, shard_id: int | None, *, initial: bool = False) -> None:
        return None  # real Discord wants 5 s between shard IDENTIFYs; the fake does not

    monkeypatch.setattr(commands.AutoShardedBot, "before_identify_hook", no_identify_delay)
    bot = await start_bot(shards=2, cooldown_rate=1000)
    assert isinstance(bot, commands.AutoShardedBot)
    assert sorted(tuple(i["shard"]) for i in server.identifies) == [(0, 2), (1, 2)]
    reply = await server.wait_for_reply(await server.send_message("!next the"))
    assert "→" in reply.content


@pytest.mark.asyncio
async def test_shard_ids_run_only_that_range_of_the_shard_count(server, start_bot, monkeypatch):
    async def no_identify_delay(self: Any, shard_id: int | None, *, initial: bool = False) -> None:
        return None

    monkeypatch.setattr(commands.AutoShardedBot, "before_identify_hook", no_identify_delay)
    bot = await start_bot(shards=2, shard_ids=(1,), cooldown_rate=1000)
    assert isinstance(bot, commands.AutoShardedBot)
    assert [tuple(i["shard"]) for i in server.identifies] == [(1, 2)]  # shard 0 is another process's
    assert set(bot.shards) == {1} and bot.shard_count == 2
    # Discord sends a server's events to the shard (guild_id >> 22) % shard_count only.
    assert (bot.get_guild(server.guild_id) is not None) == ((server.guild_id >> 22) % 2 == 1)


@pytest.mark.asyncio
async def test_two_processes_each_running_one_shard_answer_only_their_own_server(server, start_bot, monkeypatch):
    async def no_identify_delay(self: Any, shard_id: int | None, *, initial: bool = False) -> None:
        return None

    monkeypatch.setattr(commands.AutoShardedBot, "before_identify_hook", no_identify_delay)
    first = await start_bot(shards=2, shard_ids=(0,), cooldown_rate=1000)
    second = await start_bot(shards=2, shard_ids=(1,), cooldown_rate=1000)
    assert sorted(tuple(i["shard"]) for i in server.identifies) == [(0, 2), (1, 2)]
    owner, other = (first, second) if (server.guild_id >> 22) % 2 == 0 else (second, first)
    assert owner.get_guild(server.guild_id) is not None and other.get_guild(server.guild_id) is None
    for _ in range(3):
        await server.wait_for_reply(await server.send_message("!next the"))
    await asyncio.sleep(0.2)  # room for a wrong second answer to arrive
    assert len(server.posted) == 3  # one answer each, from the one process that owns the server


# -- formatting and parsing, directly ------------------------------------------------------


def test_the_invite_url_asks_for_what_the_bot_needs():
    url = invite_url(1234)
    assert "client_id=1234" in url and "scope=bot+applications.commands" in url
    assert f"permissions={PERMISSIONS.value}" in url
    assert PERMISSIONS.read_message_history and PERMISSIONS.send_messages


# -- starting up ---------------------------------------------------------------------------


@pytest.fixture
def nowhere(monkeypatch: pytest.MonkeyPatch) -> int:
    """Points discord.py at a closed port on 127.0.0.1: a bot that tries to log in fails at
    once, and never reaches the real Discord. Undoes the logging bot.run() sets up."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setattr(discord.http.Route, "BASE", f"http://127.0.0.1:{port}/api/v10")
    monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(f"ws://127.0.0.1:{port}/"))
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.root.level)
    return port


def one_error_line(err: str) -> str:
    """The one `wordbot: error: ...` line in `err` (discord.py's log lines may come before it)."""
    lines = [line for line in err.splitlines() if line.startswith("wordbot:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("wordbot: error: ")
    return lines[0]


def wordbot_discord(**options: Any) -> int:
    """`wordbot discord` with these options (`token_file=...` is `--token-file ...`), through the
    real command line, which reports what the bot raises."""
    argv = ["discord"]
    for name, value in options.items():
        argv.append(f"--{name.replace('_', '-')}={value}")
    return cli.main(argv)


def test_run_without_a_token_says_how_to_get_one_and_returns_nonzero(monkeypatch, capsys):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert wordbot_discord() == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert len(err.strip().splitlines()) == 1 and err.startswith("wordbot: error: ")
    assert "DISCORD_TOKEN" in err and "--token-file" in err


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"shards": -1}, "--shards must be 0"),
        ({"prefix": ""}, "--prefix must be"),
        ({"prefix": "! "}, "--prefix must be"),
        ({"prefix": "word bot"}, "--prefix must be"),
    ],
)
def test_run_refuses_a_bad_shard_count_or_prefix_before_logging_in(options, expected, nowhere, monkeypatch, capsys):
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token")
    assert wordbot_discord(**options) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1  # nothing logged: it did not try to log in
    assert expected in one_error_line(err)


@pytest.mark.parametrize("content", [b"\xff\xfe\x00s\x00e\x00c\x00r\x00e\x00t", b"secret\x00token\x07"])
def test_run_with_a_token_file_that_is_not_text_names_the_file_in_one_line(content, tmp_path, nowhere, capsys):
    path = tmp_path / "token.bin"
    path.write_bytes(content)
    assert wordbot_discord(token_file=path) == 2
    err = capsys.readouterr().err
    line = one_error_line(err)
    assert str(path) in line and len(err.strip().splitlines()) == 1
    assert "secret" not in err and "s\x00e" not in err and "0xff" not in err


def test_run_without_a_route_to_discord_says_so_in_one_line(tiny_model_dir, nowhere, monkeypatch, capsys):
    monkeypatch.setenv("DISCORD_TOKEN", "secret-token")
    assert wordbot_discord(model=tiny_model_dir) == 1
    err = capsys.readouterr().err
    line = one_error_line(err)
    assert line.startswith("wordbot: error: cannot reach Discord: ") and f"127.0.0.1:{nowhere}" in line
    assert "secret-token" not in err


def test_run_with_an_unreadable_token_file_returns_nonzero(tmp_path, capsys):
    assert wordbot_discord(token_file=tmp_path / "missing.txt") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_run_with_a_bad_model_directory_says_so_in_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISCORD_TOKEN", "not-used")
    assert wordbot_discord(model=tmp_path / "no-such-model") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("wordbot: error: ") and "does not exist" in err  # as the other commands say it
    assert "not-used" not in err


@pytest.mark.asyncio
async def test_the_token_never_reaches_the_log(server, start_bot, caplog):
    with caplog.at_level(logging.DEBUG):
        await start_bot()
        await server.wait_for_reply(await server.send_message("!next the"))
        await server.drop_connections()
        await server.wait_for_reply(await server.send_message("!next the"), timeout=20)
    assert caplog.records
    assert server.token not in caplog.text


@pytest.mark.parametrize(
    ("options", "token", "expected"),
    [
        ({}, "wrong-token", "rejected the token"),
        ({"message_content_allowed": False}, "fake-token", "Message Content intent"),
    ],
)
def test_run_explains_what_discord_refused_in_one_line(options, token, expected, tiny_model_dir, monkeypatch, capsys):
    # bot.run() sets up logging on the root logger; undo that after the test.
    monkeypatch.setattr(logging.root, "handlers", [])
    monkeypatch.setattr(logging.root, "level", logging.root.level)
    side = FakeDiscordThread(**options)
    try:
        side.server.point_client_here(monkeypatch)
        monkeypatch.setenv("DISCORD_TOKEN", token)
        assert wordbot_discord(model=tiny_model_dir) == 1
    finally:
        side.close()
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("wordbot:")]
    assert len(lines) == 1 and expected in lines[0]
    assert "Traceback" not in err and token not in err


def test_a_token_file_that_is_a_device_a_directory_or_huge_is_refused_in_one_line(tmp_path, nowhere, capsys):
    huge = tmp_path / "huge"
    huge.write_bytes(b"a" * 2_000_000)  # before, taken whole as a "token", then sent to Discord
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # before, opening it waited forever for a writer
    for path, expected in [
        ("/dev/zero", "not a regular file"),  # before, read until MemoryError
        (tmp_path, "not a regular file"),
        (fifo, "not a regular file"),
        (huge, "larger than 1024 bytes"),
    ]:
        assert wordbot_discord(token_file=path) == 2
        err = capsys.readouterr().err
        assert expected in one_error_line(err) and str(path) in err and len(err.strip().splitlines()) == 1


def test_a_token_passed_as_the_token_file_is_not_printed_back(tmp_path, monkeypatch, capsys):
    token = "MTA1NjQ4OTk5OTk5OTk5OTk5OQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
    monkeypatch.chdir(tmp_path)
    assert wordbot_discord(token_file=token) == 2
    err = capsys.readouterr().err
    assert token not in err and token[:20] not in err
    assert "not the token itself" in one_error_line(err)


def test_a_token_pasted_with_quotes_or_the_bot_prefix_is_taken(tmp_path, monkeypatch):
    path = tmp_path / "token"
    for written in ('"abc.def.ghi"\n', "Bot abc.def.ghi\n", "'abc.def.ghi'"):
        path.write_text(written)
        assert read_token(path) == "abc.def.ghi"
    monkeypatch.setenv("DISCORD_TOKEN", "Bot abc.def.ghi")
    assert read_token(None) == "abc.def.ghi"


def test_sigterm_closes_the_connection_and_exits_cleanly(tiny_model_dir):
    side = FakeDiscordThread()
    server = side.server
    script = (
        "import sys, discord, yarl\n"
        "discord.http.Route.BASE = sys.argv[1]\n"
        "discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sys.argv[2])\n"
        "from wordbot.bot import run\n"
        "sys.exit(run(model=sys.argv[3]))\n"
    )
    env = {**os.environ, "DISCORD_TOKEN": server.token}
    proc = subprocess.Popen(
        [sys.executable, "-c", script, server.api_base, server.gateway_url, str(tiny_model_dir)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        with sigterm_at_end(proc) as ended:
            side.call_sync(server.wait_until(lambda: bool(server.identifies), timeout=30))
            message = side.call_sync(server.send_message("!next the"))
            assert "→" in side.call_sync(server.wait_for_reply(message)).content
    finally:
        side.close()
    out, err = ended.out, ended.err
    assert ended.returncode == 0, err
    assert "Traceback" not in err and server.token not in err + out
    # A close frame (discord.py's code), not a dropped socket: Discord shows the bot offline at once.
    assert server.closes == [1000], server.closes


def test_the_token_file_wins_over_the_environment(tmp_path, monkeypatch):
    path = tmp_path / "token"
    path.write_text("from-file\n")
    monkeypatch.setenv("DISCORD_TOKEN", "from-env")
    assert read_token(path) == "from-file"
    assert read_token(None) == "from-env"


def _python(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN"}
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, timeout=60, check=False)


def test_the_command_line_without_a_token_exits_cleanly():
    result = _python("-m", "wordbot", "discord")
    if "invalid choice" in result.stderr:
        pytest.skip("the CLI has no `discord` subcommand yet")
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "DISCORD_TOKEN" in result.stderr


def test_importing_the_bot_does_not_import_tensorflow():
    result = _python("-c", "import sys, wordbot.bot; print('tensorflow' in sys.modules)")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"
