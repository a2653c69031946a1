"""Per-server models (`wordbot discord --server-models DIR`): served to their own server only,
with its memory on top, no longer served once a message they were trained on is forgotten,
reloaded when their directory changes. Through discord.py's real client against the fake
Discord (wordbot/testing/fake_discord.py), with a real SQLite store and real model directories."""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import pytest_asyncio
from discord.ext import commands

from wordbot.artifacts import load_model
from wordbot.bot import build_bot
from wordbot.bot.server_models import TRAINED_FILE, MirroredMemory, ServerModels, trained_record
from wordbot.bot.store import Message, SQLiteStore
from wordbot.predictor import Predictor
from wordbot.saving import save_model
from wordbot.testing.fake_discord import FakeDiscord

PROMPT = "!next the"


def server_model(tiny_model_dir: Path, out: Path, word: str, guild: int, messages: list[Message]) -> Path:
    """The tiny model whose next word is always `word`, as `wordbot train --discord-server`
    leaves it: with the list of the server's messages it was trained on."""
    manifest, tokenizer, weights = load_model(tiny_model_dir)
    weights = {name: np.array(w) for name, w in weights.items()}
    bias = next(name for name in weights if name.endswith("output/bias"))
    weights[bias][tokenizer.index[word]] = 50.0  # every other word next to nothing
    section, listed = trained_record(guild, messages)
    manifest = {k: manifest[k] for k in ("architecture", "corpus", "config", "metrics")} | {"discord_server": section}
    return save_model(out, manifest, tokenizer, weights, files={TRAINED_FILE: listed})


def stored(guild: int, author: int, count: int, start: int) -> list[Message]:
    return [Message(start + i, guild, 1, author, 1000.0 + i, f"message {i} says hello") for i in range(count)]


@pytest_asyncio.fixture
async def server(monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[FakeDiscord]:
    fake = FakeDiscord()
    fake.add_guild()  # a second server, with no model of its own
    await fake.start()
    fake.point_client_here(monkeypatch)
    yield fake
    await fake.close()


class Setup:
    """A store holding the main server's messages (alice's and bob's), a directory of server
    models, and the bot started on them."""

    def __init__(self, server: FakeDiscord, tiny_model_dir: Path, tmp_path: Path) -> None:
        self.server, self.tiny_model_dir = server, tiny_model_dir
        self.guild = server.guild_id
        self.other_guild = next(iter(server.extra_guilds))
        alice, bob = (int(server.users[name]["id"]) for name in ("alice", "bob"))
        self.alices, self.bobs = stored(self.guild, alice, 30, 1 << 40), stored(self.guild, bob, 20, 1 << 41)
        self.store = SQLiteStore(tmp_path / "wordbot.sqlite3")
        for message in self.alices + self.bobs:
            self.store.add_message(message)
        self.store.flush()
        self.directory = tmp_path / "servers"
        self.models = ServerModels(self.directory, check_every=0)
        self.bot: commands.Bot | None = None
        self.task: asyncio.Task[None] | None = None

    def write_model(self, word: str, messages: list[Message]) -> Path:
        return server_model(self.tiny_model_dir, self.directory / str(self.guild), word, self.guild, messages)

    async def start(self, predictor: Predictor) -> commands.Bot:
        bot = build_bot(
            predictor,
            store=self.store,
            server_models=self.models,
            guild_ready_timeout=0.05,
            cooldown_rate=1000,
        )
        self.bot, self.task = bot, asyncio.create_task(bot.start(self.server.token))
        ready = asyncio.create_task(bot.wait_until_ready())
        await asyncio.wait([ready, self.task], timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if self.task.done():
            self.task.result()
        learning = bot.get_cog("learning")
        await self.server.wait_until(lambda: learning.communities.rebuilt.is_set())
        return bot

    async def stop(self) -> None:
        if self.bot is not None:
            await self.bot.close()
            await asyncio.wait_for(self.task, 10)
        self.store.close()


@pytest_asyncio.fixture
async def setup(server: FakeDiscord, tiny_model_dir: Path, tmp_path: Path) -> AsyncIterator[Setup]:
    made = Setup(server, tiny_model_dir, tmp_path)
    yield made
    await made.stop()


async def say(server: FakeDiscord, content: str, **kwargs: Any) -> str:
    return (await server.wait_for_reply(await server.send_message(content, **kwargs))).content


def first_word(answer: str) -> str:
    return answer.split("→ **", 1)[1].split("**", 1)[0]


@pytest.mark.asyncio
async def test_a_server_model_is_served_to_its_server_only_until_what_it_learned_is_forgotten(
    setup, server, tiny_predictor
):
    vocab = tiny_predictor.tokenizer.vocab
    bundled_first = tiny_predictor.next_words("the", 1)[0].word
    marker = next(w for w in vocab[10:] if w.isalpha() and w != bundled_first)
    setup.write_model(marker, setup.alices + setup.bobs)
    await setup.start(tiny_predictor)

    assert first_word(await say(server, PROMPT)) == marker  # its own server: its own model
    assert first_word(await say(server, PROMPT, guild=setup.other_guild)) == bundled_first  # another: bundled
    stats = await say(server, "!wordbot stats")
    assert "Model: this server's own model" in stats and "trained on 50 messages" in stats
    assert "Model: the bundled model." in await say(server, "!wordbot stats", guild=setup.other_guild)
    # The memory stays on top of the server's model: what the server writes is learned into it too.
    served = setup.models.choose(setup.guild, setup.bot.get_cog("learning").view(setup.guild), tiny_predictor)
    assert served.memory.messages == 50 and served.tokenizer is not tiny_predictor.tokenizer

    # Bob asks to be forgotten: the model learned from his messages, so it is no longer served.
    assert "I forgot 20 messages" in await say(server, "!wordbot forget me", author="bob")
    assert first_word(await say(server, PROMPT)) == bundled_first
    stats = await say(server, "!wordbot stats")
    assert "a server model exists but was trained on messages since forgotten" in stats
    assert f"wordbot train --from default --discord-server {setup.guild}" in stats

    # Trained again without them (a changed directory): served again, reloaded without a restart.
    retrained_marker = next(w for w in vocab[10:] if w.isalpha() and w not in (bundled_first, marker))
    setup.write_model(retrained_marker, setup.alices)
    assert first_word(await say(server, PROMPT)) == retrained_marker
    assert setup.models.loads == 2
    assert "Model: this server's own model" in await say(server, "!wordbot stats")


@pytest.mark.asyncio
async def test_an_edited_or_deleted_message_the_model_learned_stops_it_too(setup, server, tiny_predictor):
    marker = next(w for w in tiny_predictor.tokenizer.vocab[10:] if w.isalpha())
    setup.write_model(marker, setup.alices)
    bot = await setup.start(tiny_predictor)
    assert first_word(await say(server, PROMPT)) == marker
    communities = bot.get_cog("learning").communities
    # An edit of a message it did not learn changes nothing; one of a message it learned does.
    await asyncio.to_thread(communities.edit, setup.bobs[0].id, "bob's words, edited")
    assert first_word(await say(server, PROMPT)) == marker
    await asyncio.to_thread(communities.edit, setup.alices[3].id, "alice's words, edited")
    assert "trained on messages since forgotten" in await say(server, "!wordbot stats")

    setup.write_model(marker, setup.alices[4:])  # retrained: served again; then a delete stops it
    assert first_word(await say(server, PROMPT)) == marker
    message = setup.alices[5]
    await server.dispatch("MESSAGE_DELETE", {"id": str(message.id), "channel_id": "1", "guild_id": str(setup.guild)})
    await server.wait_until(lambda: (setup.guild, message.id) not in communities.view(setup.guild).memory)
    assert "trained on messages since forgotten" in await say(server, "!wordbot stats")


# -- the cache, without Discord ------------------------------------------------------------------


def test_at_most_capacity_models_are_kept_and_they_load_off_the_calling_thread(tiny_model_dir, tmp_path):
    guilds = [11, 12, 13]
    for guild in guilds:
        server_model(tiny_model_dir, tmp_path / str(guild), "the", guild, stored(guild, 5, 3, guild * 100))
    loaded_in: list[str] = []

    class Recording(ServerModels):
        def _load(self, guild: int, stamp: tuple):
            loaded_in.append(threading.current_thread().name)
            return super()._load(guild, stamp)

    models = Recording(tmp_path, capacity=2, check_every=0)
    bundled = Predictor.load(tiny_model_dir)

    async def ask(guild: int) -> Predictor:  # as the cog asks: through a thread
        return await asyncio.to_thread(models.choose, guild, None, bundled)

    async def run() -> None:
        for guild in [*guilds, 12]:
            assert (await ask(guild)) is not bundled
        assert (await ask(99)) is bundled  # no directory: the bundled model

    asyncio.run(run())
    assert models.loaded() == [13, 12]  # 11, the least recently used, was dropped
    assert models.loads == 3 and threading.main_thread().name not in loaded_in


def test_a_model_directory_that_cannot_load_leaves_the_bundled_model_and_says_why(tiny_model_dir, tmp_path):
    broken = tmp_path / "21"
    server_model(tiny_model_dir, broken, "the", 21, stored(21, 5, 3, 100))
    os.remove(broken / TRAINED_FILE)
    models = ServerModels(tmp_path, check_every=0)
    bundled = Predictor.load(tiny_model_dir)
    assert models.choose(21, None, bundled) is bundled
    assert "cannot be loaded" in models.describe(21) and TRAINED_FILE in models.describe(21)


def test_a_follower_memory_learns_what_its_server_memory_learned_before_and_after(tiny_predictor):
    server = MirroredMemory(tiny_predictor.tokenizer.vocab)
    for i in range(5):
        server.add(("g", i), f"the zorblax number {i}")
    own = Predictor.load(tiny_predictor.manifest.get("_dir")) if False else tiny_predictor.view()
    generation = server.generation
    server.follow(own.memory)
    server.add(("g", 9), "the zorblax hums")
    server.remove(("g", 0))
    assert server.generation != generation  # a removal is a new generation
    expected = tiny_predictor.view()
    for i in [1, 2, 3, 4]:
        expected.learn(f"the zorblax number {i}", key=("g", i))
    expected.learn("the zorblax hums", key=("g", 9))
    assert own.memory.messages == expected.memory.messages == 5
    assert own.next_words("the", 3) == expected.next_words("the", 3)
    generation = server.generation
    server.add(("g", 10), "a new message")  # learning more is no removal
    assert server.generation == generation


def test_the_bundled_model_answers_while_a_server_model_reads_a_big_memory(tiny_model_dir, tmp_path, monkeypatch):
    from wordbot.bot import server_models

    monkeypatch.setattr(server_models, "FILL_WAIT", 0.0)  # as if the memory took longer than a request waits
    messages = stored(31, 5, 2000, 100)
    server_model(tiny_model_dir, tmp_path / "31", "the", 31, messages)
    bundled = Predictor.load(tiny_model_dir)
    view = bundled.view(MirroredMemory(bundled.tokenizer.vocab))
    for m in messages:
        view.learn(m.text, key=(31, m.id))
    models = ServerModels(tmp_path, check_every=0)
    assert models.choose(31, view, bundled) is view  # 2,000 messages take far longer than no wait
    assert "while this server's own model reads" in models.describe(31)
    models._loaded[31].filled.wait(60)
    served = models.choose(31, view, bundled)
    assert served is not view and served.memory.messages == 2000
    assert "this server's own model" in models.describe(31)


def test_a_model_is_checked_against_the_removals_since_its_last_check_or_all_when_they_are_too_many(
    tiny_model_dir, tmp_path, monkeypatch
):
    from wordbot.bot import server_models

    monkeypatch.setattr(server_models, "REMOVALS_KEPT", 3)
    messages = stored(41, 5, 20, 100)
    server_model(tiny_model_dir, tmp_path / "41", "the", 41, messages[:10])  # trained on the first ten
    bundled = Predictor.load(tiny_model_dir)

    def started() -> tuple[ServerModels, Predictor]:
        view = bundled.view(MirroredMemory(bundled.tokenizer.vocab))
        for m in messages:
            view.learn(m.text, key=(41, m.id))
        models = ServerModels(tmp_path, check_every=0)
        assert models.choose(41, view, bundled) is not view
        return models, view

    models, view = started()
    checked = models._loaded[41].checked[1]
    for m in messages[10:12]:  # removals of messages it was not trained on: still served
        view.forget((41, m.id))
    assert view.memory.removed_since(checked) == [(41, m.id) for m in messages[10:12]]  # what is checked
    assert models.choose(41, view, bundled) is not view
    view.forget((41, messages[0].id))  # one it was trained on
    assert models.choose(41, view, bundled) is view

    models, view = started()
    view.forget((41, messages[1].id))  # one it was trained on, then more than the 3 kept
    for m in messages[12:16]:
        view.forget((41, m.id))
    assert view.memory.removed_since(models._loaded[41].checked[1]) is None  # no longer known...
    assert models.choose(41, view, bundled) is view  # ...so every trained message is checked again
