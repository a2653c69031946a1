"""Several bot processes on one PostgreSQL store: a DM `forget me` reaches every process
(wordbot/bot/notify.py). Against a real PostgreSQL server (tests/postgres.py), the store's
listener alone, then two real `wordbot discord` processes, shards 0 and 1 of 2, against one
fake Discord (wordbot/testing/fake_discord.py) that routes each server to its shard."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from wordbot.bot.store import Message
from wordbot.testing.fake_discord import FakeDiscordThread
from wordbot.testing.processes import discord_command

from .postgres import postgres_server  # noqa: F401

LISTENER = "wordbot-forget-listener"  # the application_name of the listener's connection


class Heard:
    """What a store's forget listener passed on, with a way to wait for it."""

    def __init__(self) -> None:
        self.keys: list[tuple[int, int]] = []
        self._changed = threading.Condition()

    def __call__(self, keys: list[tuple[int, int]]) -> None:
        with self._changed:
            self.keys.extend(keys)
            self._changed.notify_all()

    def wait_for(self, count: int, timeout: float = 10.0) -> list[tuple[int, int]]:
        with self._changed:
            assert self._changed.wait_for(lambda: len(self.keys) >= count, timeout), self.keys
            return list(self.keys)


@pytest.fixture
def two_stores(postgres_server) -> Iterator[tuple[Any, Any]]:  # noqa: F811
    """Two processes' stores on one database (each its own pool, as two processes would have)."""
    from wordbot.bot.store_postgres import PostgresStore

    url = postgres_server.new_database()
    stores = [PostgresStore(url, flush_interval=None) for _ in range(2)]
    yield stores[0], stores[1]
    for store in stores:
        store.close()


def teach(store: Any) -> None:
    for i, (guild, author) in enumerate([(1, 7), (2, 7), (2, 8), (1, 8), (2, 7)]):
        store.add_message(Message(100 + i, guild, 10, author, float(i), f"message {i}"))
    store.flush()


def test_a_forget_in_every_server_reaches_the_other_processes_listener(two_stores):
    here, there = two_stores
    heard = Heard()
    there.listen_forgets(heard)
    teach(here)
    removed = here.forget_author(7)  # a DM `forget me`: every server
    assert heard.wait_for(3) == [(m.guild, m.id) for m in removed] == [(1, 100), (2, 101), (2, 104)]
    # Per-server forgets are not broadcast (Discord sends them to the process that holds that
    # server): only the DM forget after it arrives.
    assert [m.id for m in here.forget_author(8, guild=1)] == [103]
    assert [m.id for m in here.forget_author(8)] == [102]
    assert heard.wait_for(4)[3:] == [(2, 102)]
    assert [m.id for m in there.messages(1)] + [m.id for m in there.messages(2)] == []


def test_what_another_process_learned_but_had_not_committed_yet_is_forgotten_too(two_stores):
    here, there = two_stores
    heard = Heard()
    there.listen_forgets(heard)
    teach(here)
    there.add_message(Message(200, 3, 30, 7, 9.0, "learned there a moment ago"))  # still in its batch
    removed = here.forget_author(7)
    assert heard.wait_for(4)[:4] == [(m.guild, m.id) for m in removed] + [(3, 200)]
    assert [m.id for m in there.messages(3)] == [] and [m.id for m in here.messages(3)] == []
    assert {m.author for g in (1, 2) for m in here.messages(g)} == {8}


def test_a_forget_that_is_rolled_back_reaches_nobody(two_stores):
    here, there = two_stores
    heard = Heard()
    there.listen_forgets(heard)
    teach(here)
    with pytest.raises(RuntimeError), here._transaction() as conn:
        here._forgotten(conn, 7, None, [Message(100, 1, 10, 7, 0.0, "")])
        raise RuntimeError("the forget failed before it committed")
    here.forget_author(8)
    assert heard.wait_for(2) == [(2, 102), (1, 103)]  # only the committed forget, nothing of author 7's


def test_the_listener_reconnects_and_applies_what_was_forgotten_while_it_was_cut_off(two_stores, caplog):
    here, there = two_stores
    heard = Heard()
    listener = there.listen_forgets(heard)
    assert listener.connected.wait(10)
    teach(here)
    caplog.set_level(logging.WARNING, logger="wordbot.bot")
    with here._transaction() as conn:  # the server drops the listener's connection
        cut = conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s", (LISTENER,)
        ).fetchall()
    assert cut == [(True,)]
    removed = here.forget_author(7)  # while it is away (it waits before connecting again)
    assert heard.wait_for(3) == [(m.guild, m.id) for m in removed]
    assert listener.reconnects == 1
    lost = [r for r in caplog.records if "cannot reach the database" in r.getMessage()]
    assert len(lost) == 1 and "password" not in lost[0].getMessage()
    here.forget_author(8)  # and it listens again
    assert heard.wait_for(5)[3:] == [(2, 102), (1, 103)]


def test_a_listener_made_while_the_database_is_unreachable_applies_what_was_forgotten_since(two_stores):
    """(A process that starts while its database is down.) Its first connections are refused,
    for real (nothing listens on port 1); once it connects, it applies the forgets committed
    since it was made, not those before."""
    import psycopg

    from wordbot.bot import notify

    here, _ = two_stores
    teach(here)
    here.forget_author(8)  # before the listener: not its to apply
    time.sleep(1.5)  # past the margin it allows for clocks
    attempts: list[bool] = []
    reachable = threading.Event()

    def connect() -> Any:
        attempts.append(reachable.is_set())
        url = here._dsn if reachable.is_set() else "postgresql://wordbot:x@127.0.0.1:1/tests"
        return psycopg.connect(url, autocommit=True, connect_timeout=2)

    rows: list[Any] = []
    listener = notify.ForgetListener(connect, rows.extend, None)
    try:
        poll(lambda: len(attempts) >= 1, 10, "a first attempt")
        removed = here.forget_author(7)  # while it cannot connect
        reachable.set()
        assert listener.connected.wait(30)
        poll(lambda: len(rows) >= 3, 10, "the forget made while it was unreachable")
        assert rows == [(7, m.guild, m.id) for m in removed]
    finally:
        listener.close()


# -- two bot processes --------------------------------------------------------------------


def start_shard(side: FakeDiscordThread, shard: int, count: int, store: str, model: Path, logs: Path) -> Any:
    """`wordbot discord --shard-ids SHARD --shard-count COUNT --store STORE` in a process of its own."""
    server = side.server
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORDBOT_")}
    env |= {"DISCORD_TOKEN": server.token, "WORDBOT_STATE_DIR": str(logs / f"state-{shard}")}
    env |= {"WORDBOT_COOLDOWN_COMMANDS": "10000"}  # the test asks often
    args = ["--shard-ids", str(shard), "--shard-count", str(count), "--store", store, "--model", str(model)]
    with open(logs / f"shard-{shard}.log", "w") as log:  # a file, not a pipe nobody reads while it runs
        return subprocess.Popen(
            discord_command(server, *args),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


def ask(side: FakeDiscordThread, content: str, *, timeout: float = 5.0, **where: Any) -> str:
    """A command sent in a server's channel (`channel=`); the bot's answer."""
    server = side.server
    message = side.call_sync(server.send_message(content, **where))
    return side.call_sync(server.wait_for_reply(message, timeout=timeout)).content


def poll(condition: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.2)


def first_answer(side: FakeDiscordThread, channel: int, timeout: float = 90.0) -> str:
    """The first answer in `channel`, once its shard's process is up (it loads the model first)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return ask(side, "!next the", channel=channel, timeout=2.0)
        except (RuntimeError, TimeoutError):  # no session for that shard yet, or not ready
            assert time.monotonic() < deadline, "the shard's process did not answer"
            time.sleep(0.5)


def committed(store: str, author: int) -> int:
    import psycopg

    with psycopg.connect(store) as conn:
        return conn.execute("SELECT count(*) FROM messages WHERE author = %s", (author,)).fetchone()[0]


def stop(procs: list[Any]) -> list[int | None]:
    for proc in procs:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
    codes = []
    for proc in procs:
        try:
            codes.append(proc.wait(timeout=30))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            codes.append(None)
    return codes


def test_two_shard_processes_serve_their_servers_and_a_dm_forget_reaches_both(
    postgres_server,  # noqa: F811
    tiny_model_dir,
    tmp_path,
):
    store = postgres_server.new_database()
    side = FakeDiscordThread()
    server = side.server
    (_, ours), (_, theirs) = server.add_guild(0, 2), server.add_guild(1, 2)  # a server for each shard
    procs = [start_shard(side, shard, 2, store, tiny_model_dir, tmp_path) for shard in (0, 1)]
    try:
        for channel in (ours, theirs):
            assert "→" in first_answer(side, channel)
        assert sorted(tuple(i["shard"]) for i in server.identifies) == [(0, 2), (1, 2)]
        for channel in (ours, theirs):
            assert ask(side, f"!wordbot listen <#{channel}>", channel=channel).startswith("I'll learn from")
        side.call_sync(server.send_message("we deploy the Zorblax cluster", channel=ours))
        side.call_sync(server.send_message("we deploy the Frobnic cluster", channel=theirs, author="bob"))
        side.call_sync(server.send_message("we deploy the Quasar cluster", channel=theirs, author="carol"))

        def words(channel: int) -> str:
            return ask(side, "!next we deploy the k=10", channel=channel)

        # Each process answers its own server, with that server's memory alone.
        poll(lambda: "Zorblax" in words(ours), 20, "shard 0 learned its server's word")
        poll(lambda: {"Frobnic", "Quasar"} <= set(words(theirs).replace("*", " ").split()), 20, "shard 1 learned")
        assert "Frobnic" not in words(ours) and "Zorblax" not in words(theirs)
        bob = int(server.users["bob"]["id"])
        poll(lambda: committed(store, bob) == 1, 10, "shard 1 committed bob's message")  # batched: within a second

        # Bob's DM reaches shard 0's process (Discord sends DMs to shard 0), which forgets him in
        # the database; shard 1's process drops his words from its server's memory.
        dm = server.new_id()
        side.call_sync(server.send_message("forget me", dm_channel=dm, author="bob"))
        answer = side.call_sync(server.wait_for(lambda p: p.channel_id == dm, timeout=10))
        assert "1 message of yours in every server" in answer.content
        poll(lambda: "Frobnic" not in words(theirs), 10, "shard 1 forgot bob's words")
        assert "Quasar" in words(theirs) and "Zorblax" in words(ours)  # the others' words stay
        assert committed(store, bob) == 0
    finally:
        codes = stop(procs)
        side.close()
    logs = {shard: (tmp_path / f"shard-{shard}.log").read_text() for shard in (0, 1)}
    assert codes == [0, 0], logs
    assert not any("Traceback" in log for log in logs.values()), logs
    assert postgres_server.password not in "".join(logs.values())
