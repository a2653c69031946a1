"""The bot's store, run whole against SQLite and against a real PostgreSQL server: what
a server's members rely on (forgetting is exact and kept apart per server), and what the
operator relies on (nothing committed is lost, schemas migrate, no password leaks)."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from wordbot.bot.health import UNREACHABLE
from wordbot.bot.store import (
    DEFAULT_MAX_MESSAGES,
    FLUSH_BATCH,
    PAGE,
    SCHEMA_VERSION,
    Backfill,
    GuildSettings,
    Message,
    SQLiteStore,
    StoreError,
    StoreUnavailable,
    open_store,
)

from .postgres import (  # noqa: F401  (fixtures)
    PostgresServer,
    postgres_server,
    restartable,
    stoppable_postgres,
    unavailable,
)

ROOT = Path(__file__).resolve().parent.parent
GUILD, OTHER = 111, 222
ALICE, BOB = 1001, 1002


@pytest.fixture(params=["sqlite", "postgresql"])
def store_url(request, tmp_path) -> str:
    """A fresh, empty store's URL, for each backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'wordbot.sqlite3'}"
    return request.getfixturevalue("postgres_server").new_database()


@pytest.fixture
def store(store_url):
    opened = open_store(store_url)
    yield opened
    opened.close()


def said(caplog: pytest.LogCaptureFixture, text: str) -> int:
    """How many log lines hold `text`."""
    return sum(text in record.getMessage() for record in caplog.records)


def message(id: int, guild: int = GUILD, author: int = ALICE, time: float | None = None, text: str = "") -> Message:
    return Message(id, guild, 10 * guild, author, float(id if time is None else time), text or f"message {id}")


def test_messages_come_back_per_guild_in_time_order_with_every_field(store):
    store.add_message(message(3, time=30.5, text="third, with ünïcode ✓"))
    store.add_message(message(1, time=10.25))
    store.add_message(message(2, guild=OTHER, author=BOB, time=20.0))
    store.add_message(message(4, time=10.25))  # same time: then by id
    big = message(2**62, time=40.0)  # Discord snowflakes need 64 bits
    store.add_message(big)
    third = message(3, time=30.5, text="third, with ünïcode ✓")
    assert list(store.messages(GUILD)) == [message(1, time=10.25), message(4, time=10.25), third, big]
    assert list(store.messages(OTHER)) == [message(2, guild=OTHER, author=BOB, time=20.0)]
    assert (store.count(GUILD), store.count(OTHER), store.count(333)) == (4, 1, 0)
    assert store.guilds() == [GUILD, OTHER]


def test_a_message_seen_twice_is_kept_once(store):
    store.add_message(message(1))
    store.flush()
    store.add_message(message(1))  # a backfill reading what the listener already learned
    store.add_message(message(1))
    assert store.count(GUILD) == 1


def test_iterating_pages_through_many_messages_with_equal_times(store):
    for i in range(PAGE * 2 + 7):
        store.add_message(message(i, time=5.0 if i % 2 else 6.0))
    got = list(store.messages(GUILD))
    assert len(got) == PAGE * 2 + 7 and len({m.id for m in got}) == len(got)
    assert [(m.time, m.id) for m in got] == sorted((m.time, m.id) for m in got)


def test_learned_messages_are_committed_within_a_second_without_flush(store_url):
    writer, reader = open_store(store_url), open_store(store_url)
    try:
        writer.add_message(message(1))
        deadline = time.monotonic() + 1.5  # commits every 0.5 s; slack for a loaded machine
        while reader.count(GUILD) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.count(GUILD) == 1
    finally:
        writer.close()
        reader.close()


def test_a_full_batch_is_committed_before_the_next_tick(store_url):
    writer, reader = open_store(store_url, flush_interval=30.0), open_store(store_url)
    try:
        for i in range(FLUSH_BATCH):
            writer.add_message(message(i))
        deadline = time.monotonic() + 5.0
        while reader.count(GUILD) < FLUSH_BATCH and time.monotonic() < deadline:
            time.sleep(0.05)
        assert reader.count(GUILD) == FLUSH_BATCH
    finally:
        writer.close()
        reader.close()


def test_edit_replaces_the_text_and_returns_the_old_message(store):
    store.add_message(message(1, text="old words"))
    assert store.edit_message(1, "new words") == message(1, text="old words")
    assert [m.text for m in store.messages(GUILD)] == ["new words"]
    assert store.edit_message(99, "unknown") is None
    assert store.count(GUILD) == 1


def test_delete_one_and_bulk_returns_what_was_stored(store):
    for i in range(1, 6):
        store.add_message(message(i))
    store.add_message(message(6, guild=OTHER))
    assert store.delete_messages([3]) == [message(3)]
    assert store.delete_messages([5, 1, 77, 1, 6]) == [message(1), message(5), message(6, guild=OTHER)]
    assert [m.id for m in store.messages(GUILD)] == [2, 4]
    assert store.count(OTHER) == 0
    assert store.delete_messages([]) == []


def test_delete_reaches_a_message_not_yet_committed(store_url):
    store = open_store(store_url, flush_interval=None)  # nothing commits by itself
    try:
        store.add_message(message(1))
        assert store.delete_messages([1]) == [message(1)]
        assert store.count(GUILD) == 0
    finally:
        store.close()


def test_forget_author_in_one_guild_or_all_says_exactly_what_went(store):
    for i, (guild, author) in enumerate([(GUILD, ALICE), (GUILD, ALICE), (GUILD, BOB), (OTHER, ALICE), (OTHER, BOB)]):
        store.add_message(message(i, guild=guild, author=author))
    assert store.forget_author(ALICE, GUILD) == [message(0), message(1)]  # what to drop from the memory
    assert [m.author for m in store.messages(GUILD)] == [BOB]
    assert [m.author for m in store.messages(OTHER)] == [ALICE, BOB]
    store.add_message(message(9, author=ALICE))
    assert store.forget_author(ALICE) == [message(3, guild=OTHER), message(9)]  # a DM `forget me`: every guild
    assert {m.author for g in (GUILD, OTHER) for m in store.messages(g)} == {BOB}
    assert store.forget_author(ALICE) == []


def test_forget_guild_removes_everything_about_it_and_nothing_else(store):
    for guild in (GUILD, OTHER):
        store.add_message(message(guild, guild=guild))
        store.listen(guild, 5)
        store.ignore(guild, BOB)
        store.set_backfill_state(Backfill(guild, 5, before=100, learned=3, limit=10))
        store.set_settings(guild, GuildSettings(max_messages=50, retention_days=7))
    assert store.forget_guild(GUILD) == 1
    assert store.guilds() == [OTHER]
    assert (store.count(GUILD), store.channels(GUILD), store.is_ignored(GUILD, BOB)) == (0, [], False)
    assert (store.backfill_state(GUILD, 5), store.settings(GUILD)) == (None, GuildSettings())
    assert (store.count(OTHER), store.channels(OTHER), store.is_ignored(OTHER, BOB)) == (1, [5], True)
    assert store.settings(OTHER) == GuildSettings(50, 7)
    assert store.forget_guild(GUILD) == 0


def test_listened_channels_and_ignored_members_are_per_guild(store):
    assert store.listen(GUILD, 7) and store.listen(GUILD, 3) and not store.listen(GUILD, 7)
    assert store.channels(GUILD) == [3, 7] and store.channels(OTHER) == []
    assert store.unlisten(GUILD, 7) and not store.unlisten(GUILD, 7)
    assert store.channels(GUILD) == [3]
    assert store.ignore(GUILD, ALICE) and not store.ignore(GUILD, ALICE)
    assert store.is_ignored(GUILD, ALICE) and not store.is_ignored(OTHER, ALICE)
    assert store.unignore(GUILD, ALICE) and not store.unignore(GUILD, ALICE)
    assert not store.is_ignored(GUILD, ALICE)


def test_backfill_state_resumes_after_reopening(store_url):
    store = open_store(store_url)
    assert store.backfill_state(GUILD, 5) is None
    store.set_backfill_state(Backfill(GUILD, 5, before=None, learned=0, limit=10_000))
    store.set_backfill_state(Backfill(GUILD, 5, before=2**61, learned=200, limit=10_000))
    store.set_backfill_state(Backfill(OTHER, 6, before=9, learned=5, limit=5, done=True))
    store.close()
    store = open_store(store_url)
    try:
        assert store.backfill_state(GUILD, 5) == Backfill(GUILD, 5, 2**61, 200, 10_000, False)
        assert store.backfills() == [Backfill(GUILD, 5, 2**61, 200, 10_000, False)]  # the one to resume
        assert store.backfills(OTHER) == []
        assert store.backfill_state(OTHER, 6).done is True
    finally:
        store.close()


def test_the_cap_drops_the_oldest_messages(store):
    assert store.settings(GUILD) == GuildSettings(DEFAULT_MAX_MESSAGES, None) == GuildSettings(200_000)
    store.set_settings(GUILD, GuildSettings(max_messages=5))
    for i in range(8):
        store.add_message(message(i, time=100 - i))  # the highest ids are the oldest
    store.add_message(message(50, guild=OTHER))
    assert [m.id for m in store.messages(GUILD)] == [4, 3, 2, 1, 0]
    store.set_settings(GUILD, GuildSettings(max_messages=2))  # lowering the cap applies at once
    assert [m.id for m in store.messages(GUILD)] == [1, 0]
    assert store.count(OTHER) == 1
    with pytest.raises(ValueError):
        store.set_settings(GUILD, GuildSettings(max_messages=0))


def test_prune_drops_messages_older_than_the_retention(store):
    now = 1_000_000.0
    store.set_settings(GUILD, GuildSettings(retention_days=2))
    for i, age_days in enumerate([0.5, 1.9, 2.1, 30]):
        store.add_message(message(i, time=now - age_days * 86_400))
        store.add_message(message(100 + i, guild=OTHER, time=now - age_days * 86_400))  # no retention
    assert store.prune(now) == {GUILD: 2}
    assert [m.id for m in store.messages(GUILD)] == [1, 0]
    assert store.count(OTHER) == 4
    assert store.prune(now) == {}


def test_what_a_cap_or_a_retention_drops_is_told_to_on_drop_after_the_commit(store):
    told: list[list[int]] = []

    def on_drop(messages: list[Message]) -> None:
        kept = {m.id for guild in (GUILD, OTHER) for m in store.messages(guild)}
        assert not kept & {m.id for m in messages}  # told once committed: the store no longer has them
        told.append(sorted(m.id for m in messages))

    store.on_drop = on_drop
    now = 1_000_000.0
    for i in range(6):
        store.add_message(message(i, time=now - i * 86_400))  # message i is i days old
        store.add_message(message(100 + i, guild=OTHER, time=now - i * 86_400))
    store.flush()
    store.set_settings(GUILD, GuildSettings(max_messages=4))  # the two oldest go
    store.set_settings(OTHER, GuildSettings(retention_days=2.5))
    store.set_settings(GUILD, GuildSettings(max_messages=4, retention_days=1.5))
    assert store.prune(now, [GUILD]) == {GUILD: 2}  # only the guilds asked for: OTHER keeps its old ones
    assert store.count(OTHER) == 6
    store.add_message(message(6, time=now + 1))
    store.set_settings(GUILD, GuildSettings(max_messages=1))
    assert store.prune(now) == {OTHER: 3}
    assert [x for x in told if x] == [[4, 5], [2, 3], [0, 1], [103, 104, 105]]


def test_everything_survives_closing_and_reopening(store_url):
    store = open_store(store_url)
    store.add_message(message(1))  # pending: close commits it
    store.listen(GUILD, 5)
    store.ignore(GUILD, BOB)
    store.close()
    store.close()  # twice is harmless
    store = open_store(store_url)
    try:
        assert list(store.messages(GUILD)) == [message(1)]
        assert (store.channels(GUILD), store.is_ignored(GUILD, BOB)) == ([5], True)
        assert store.schema_version() == SCHEMA_VERSION
    finally:
        store.close()


def test_threads_write_and_read_at_once(store):
    errors: list[BaseException] = []

    def writer(base: int, guild: int) -> None:
        try:
            for i in range(200):
                store.add_message(message(base + i, guild=guild))
                if i % 50 == 0:
                    store.count(guild)
                    store.delete_messages([base + i])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(n * 1000, GUILD + n % 2)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert store.count(GUILD) + store.count(GUILD + 1) == 4 * (200 - 4)


def test_an_old_schema_is_migrated_and_keeps_its_data(store_url):
    old = open_store(store_url, schema_version=1)
    assert old.schema_version() == 1
    old.add_message(message(1))
    old.close()
    store = open_store(store_url)
    try:
        assert store.schema_version() == SCHEMA_VERSION == 2
        assert list(store.messages(GUILD)) == [message(1)]
    finally:
        store.close()


def test_several_openers_at_once_migrate_once(store_url):
    opened, errors = [], []

    def opener() -> None:
        try:
            opened.append(open_store(store_url))
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=opener) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    try:
        assert errors == [] and len(opened) == 6
        assert {s.schema_version() for s in opened} == {SCHEMA_VERSION}
    finally:
        for s in opened:
            s.close()


def test_a_newer_schema_is_refused_with_one_line(store_url):
    store = open_store(store_url)
    with store._transaction() as conn:
        store._set_schema_version(conn, SCHEMA_VERSION + 1)
    store.close()
    with pytest.raises(StoreError, match="is newer than this wordbot knows: upgrade wordbot") as e:
        open_store(store_url)
    assert "\n" not in str(e.value)


# The SQLite file ---------------------------------------------------------------------------

CRASH_WRITER = textwrap.dedent(
    """
    import sys
    from wordbot.bot.store import Message, SQLiteStore
    store = SQLiteStore(sys.argv[1], flush_interval=None)
    start = int(sys.argv[2])
    for batch in range(start, start + 10_000):
        for i in range(50):  # one batch: one transaction
            n = batch * 50 + i
            store.add_message(Message(n, n % 3, 7, n % 5, float(n), "word " * (n % 40)))
        store.flush()
        print(batch, flush=True)  # committed
        if batch % 4 == 3:
            store.forget_author(batch % 5, batch % 3)
    """
)


def test_sigkill_loses_no_committed_message_and_leaves_no_half_batch(tmp_path):
    path = tmp_path / "wordbot.sqlite3"
    committed: set[int] = set()
    forgotten: set[tuple[int, int]] = set()  # (author, guild) forgotten after batches so far
    start = 0
    for delay in (0.3, 0.7, 1.1):
        child = subprocess.Popen(
            [sys.executable, "-c", CRASH_WRITER, str(path), str(start)],
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )
        last = None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # wait for a few commits, then kill mid-stream
            line = child.stdout.readline()
            if not line:
                break
            last = int(line)
            if last >= start + 3:
                time.sleep(delay)
                break
        child.send_signal(signal.SIGKILL)
        child.wait()
        rest = child.stdout.read().split()
        last = int(rest[-1]) if rest else last
        assert last is not None, "the writer committed nothing"
        committed |= set(range(start * 50, (last + 1) * 50))
        forgotten |= {(b % 5, b % 3) for b in range(start, last + 1) if b % 4 == 3}
        store = SQLiteStore(path, flush_interval=None)
        assert store._conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        ids = {m.id for g in range(3) for m in store.messages(g)}
        store.close()
        expected = {n for n in committed if (n % 5, n % 3) not in forgotten}
        assert expected <= ids  # every committed message that was not forgotten is there
        for b in range(last):  # the forgets that surely ran took everything before them
            if b % 4 == 3:
                assert not {n for n in ids if n // 50 <= b and (n % 5, n % 3) == (b % 5, b % 3)}
        extra = ids - committed  # the batch under way when killed: all of it or none
        if extra:
            batch = min(extra) // 50
            assert extra == set(range(batch * 50, batch * 50 + 50))
            committed |= extra
        start = max(ids | committed) // 50 + 1


def test_the_sqlite_file_is_in_wal_mode(tmp_path):
    store = SQLiteStore(tmp_path / "s.sqlite3")
    try:
        assert store._conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        store.close()


# Opening by URL ------------------------------------------------------------------------------


def test_open_store_picks_the_backend_and_the_default_file(tmp_path, monkeypatch):
    monkeypatch.setenv("WORDBOT_STATE_DIR", str(tmp_path / "state"))
    for url in (None, "sqlite://"):
        store = open_store(url)
        assert isinstance(store, SQLiteStore) and store.path == tmp_path / "state" / "wordbot.sqlite3"
        store.close()
    monkeypatch.chdir(tmp_path)
    store = open_store("sqlite:///rel/dir/bot.db")
    assert store.path.resolve() == tmp_path / "rel" / "dir" / "bot.db" and store.path.exists()
    store.close()


@pytest.mark.parametrize(
    "url, says",
    [
        ("mysql://u:hunter2@h/db", "unknown store URL"),
        ("sqlite:/x.db", "bad SQLite store URL"),
        ("sqlite:///", "bad SQLite store URL"),
        ("just-a-path.db", "unknown store URL"),
        ("redis://u:hunter2@[::1/0", "unknown store URL"),
        ("postgresql://u:hunter2@[::1/db", "PostgreSQL"),
    ],
)
def test_a_bad_url_is_one_line_that_names_no_password(url, says):
    with pytest.raises(StoreError, match=says) as e:
        open_store(url)
    assert "\n" not in str(e.value) and "hunter2" not in str(e.value)


def test_an_unwritable_sqlite_path_is_one_line(tmp_path):
    (tmp_path / "file").write_text("")
    with pytest.raises(StoreError, match="cannot open the SQLite store") as e:
        open_store(f"sqlite:///{tmp_path / 'file' / 'below' / 'x.sqlite3'}")
    assert "\n" not in str(e.value)


# PostgreSQL only -----------------------------------------------------------------------------


def test_a_wrong_postgres_password_never_appears_in_errors_or_logs(postgres_server, caplog):  # noqa: F811
    caplog.set_level(logging.DEBUG)
    wrong = "Wrong-Pa55word-xyzzy"
    with pytest.raises(StoreError, match="password authentication failed") as e:
        open_store(postgres_server.url(password=wrong))
    assert wrong not in str(e.value) and "\n" not in str(e.value)
    assert e.value.__cause__ is None and e.value.__suppress_context__
    assert wrong not in caplog.text
    assert logging.getLogger("psycopg.pool").filters == []  # a failed open leaves nothing behind
    malformed = f"postgresql://wordbot:{wrong}@[::1/db"  # libpq quotes a malformed URL whole
    with pytest.raises(StoreError) as e:
        open_store(malformed)
    assert wrong not in str(e.value) and "***" in str(e.value)
    right = postgres_server.url()
    store = open_store(right)
    try:
        store.add_message(message(1))
        assert store.count(GUILD) == 1
    finally:
        store.close()
    assert postgres_server.password not in caplog.text


@pytest.mark.slow
def test_learning_survives_the_database_going_down_and_coming_back(caplog):
    if (reason := unavailable()) is not None:
        pytest.skip(reason)  # postgres_server has the CI rule; this one needs its own server to stop
    server = PostgresServer()  # its own server: stopping the session's would disturb other tests
    server.start()
    try:
        store = open_store(server.url(), flush_interval=0.1, pool_timeout=0.5)
        store.add_message(message(1))
        store.flush()
        server.stop_server()
        for i in range(2, 50):  # a burst while the database is down: kept pending
            store.add_message(message(i))
        with pytest.raises(StoreUnavailable, match=r"error talking to PostgreSQL|unreachable"):
            store.count(GUILD)
        time.sleep(2.0)  # several failed commits
        assert said(caplog, UNREACHABLE) == 1  # reported once, not once per failed commit
        assert not store.available
        server.start_server()
        deadline = time.monotonic() + 30
        while (store._pending or not store.available) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert [m.id for m in store.messages(GUILD)] == list(range(1, 50))
        assert said(caplog, "database back") == 1 and said(caplog, UNREACHABLE) == 1
        assert server.password not in caplog.text
        store.close()
    finally:
        server.stop()


# While the database is down: the journal -----------------------------------------------------

# Alice's two messages in GUILD and one in OTHER, Bob's three in GUILD (one to edit, two to delete).
OUTAGE_MESSAGES = [
    message(1, text="alice writes about zorblax"),
    message(2, text="alice again on zorblax"),
    message(3, guild=OTHER, text="alice elsewhere"),
    message(4, author=BOB, text="bob keeps this one"),
    message(5, author=BOB, text="bob will edit this"),
    message(6, author=BOB, text="bob deletes this"),
    message(7, author=BOB, text="bob deletes that"),
]
# What the database must hold after `forget me` (Alice, GUILD), a bulk delete of 6 and 7 and
# the edit of 5, made while it was down.
AFTER_OUTAGE = {
    GUILD: [(4, "bob keeps this one"), (5, "bob edited it: quuxwise")],
    OTHER: [(3, "alice elsewhere")],
}


def rows(url: str) -> dict[int, list[tuple[int, str]]]:
    """What the database holds, read by a store of its own."""
    store = open_store(url, flush_interval=None)
    try:
        return {g: [(m.id, m.text) for m in store.messages(g)] for g in store.guilds()}
    finally:
        store.close()


def wait_for(condition, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_forgets_deletes_and_edits_made_while_the_database_is_down_reach_it_when_back(
    restartable,  # noqa: F811
    tiny_predictor,
    tmp_path,
    caplog,
):
    from wordbot.bot.journal import Journal
    from wordbot.bot.learning import Communities

    caplog.set_level(logging.INFO)
    url = restartable.new_database()
    store = open_store(url, flush_interval=0.1, pool_timeout=0.5, retry=(0.1, 0.5))
    journal = Journal(tmp_path / "journal.jsonl")
    communities = Communities(tiny_predictor, store, journal)
    communities.catch_up()
    assert communities.learn_many(OUTAGE_MESSAGES) == len(OUTAGE_MESSAGES)
    store.flush()
    memory = communities.view(GUILD).memory
    restartable.stop_server()
    try:
        # each answers from the memories at once, and is kept on disk
        assert communities.forget_author(ALICE, GUILD) == 2
        assert not store.available and journal.pending
        assert communities.delete([6, 7]) == 2
        communities.edit(5, "bob edited it: quuxwise")
        assert [(GUILD, i) in memory for i in range(1, 8)] == [False, False, False, True, True, False, False]
        assert memory.count("quuxwise") == 1 and memory.count("zorblax") == 0
        assert not communities.learn(message(8, text="learned while down"))  # learning is paused
        assert (GUILD, 8) not in memory
        assert len(journal.path.read_text().splitlines()) == 3
    finally:
        restartable.start_server()
    wait_for(lambda: store.available and not journal.pending)
    assert rows(url) == AFTER_OUTAGE
    assert not journal.path.exists()  # removed once the store committed every line
    assert communities.learn(message(9, text="learning again"))  # resumes
    store.flush()
    assert [i for i, _ in rows(url)[GUILD]] == [4, 5, 9]
    assert said(caplog, UNREACHABLE) == 1 and said(caplog, "database back") == 1
    assert restartable.password not in caplog.text
    store.close()


CRASHING = textwrap.dedent(
    """
    import sys
    from wordbot.bot.journal import Journal
    from wordbot.bot.learning import Communities
    from wordbot.bot.store import open_store
    from wordbot.predictor import Predictor

    url, journal, model = sys.argv[1:4]
    store = open_store(url, flush_interval=0.1, pool_timeout=0.5, retry=(0.1, 0.5))
    communities = Communities(Predictor.load(model), store, Journal(journal))
    print("open", store.available, flush=True)
    if sys.stdin.readline().strip() == "learn":
        communities.catch_up()
        communities.learn_many([{messages}])
        store.flush()
        print("learned", flush=True)
        sys.stdin.readline()  # the parent kills the database meanwhile
        print(communities.forget_author({alice}, {guild}), flush=True)
        print(communities.delete([6, 7]), flush=True)
        communities.edit(5, "bob edited it: quuxwise")
        print("journaled", flush=True)
    sys.stdin.readline()  # killed here: nothing applied to the store yet
    """
).format(messages=", ".join(f"Message{tuple(m)!r}" for m in OUTAGE_MESSAGES), alice=ALICE, guild=GUILD)


@pytest.mark.slow
def test_a_process_killed_with_a_journal_replays_it_after_a_restart_while_still_down(
    restartable,  # noqa: F811
    tiny_model_dir,
    tmp_path,
):
    url, journal = restartable.new_database(), tmp_path / "journal.jsonl"
    script = CRASHING.replace(
        "from wordbot.bot.store import open_store", "from wordbot.bot.store import Message, open_store"
    )

    def child() -> subprocess.Popen:
        return subprocess.Popen(
            [sys.executable, "-c", script, url, str(journal), str(tiny_model_dir)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )

    def tell(process: subprocess.Popen, line: str, expect: str) -> list[str]:
        process.stdin.write(line + "\n")
        process.stdin.flush()
        said = []
        while not said or not said[-1].startswith(expect):
            said.append(process.stdout.readline().strip())
            assert said[-1], f"the child ended: {said}"
        return said

    first = child()
    try:
        assert first.stdout.readline().strip() == "open True"
        tell(first, "learn", "learned")
        restartable.stop_server()
        assert tell(first, "forget", "journaled") == ["2", "2", "journaled"]  # answered from memory
    finally:
        first.kill()
        first.wait()
    assert len(journal.read_text().splitlines()) == 3
    second = child()  # a restart while the database is still down: it opens, down
    try:
        assert second.stdout.readline().strip() == "open False"
        restartable.start_server()
        wait_for(lambda: not journal.exists())  # replayed by the restarted process once it is back
        assert rows(url) == AFTER_OUTAGE
    finally:
        second.kill()
        second.wait()


def test_a_torn_last_line_is_cut_and_the_lines_before_it_kept(tmp_path):
    from wordbot.bot.journal import Journal

    path = tmp_path / "journal.jsonl"
    Journal(path).append("delete", ids=[1, 2])
    with open(path, "ab") as f:
        f.write(b'{"op":"forget_author","aut')  # a crash mid-write: never acknowledged
    journal = Journal(path)
    journal.append("edit", id=3, text="new")
    assert [line for line in path.read_text().splitlines()] == [
        '{"op":"delete","ids":[1,2]}',
        '{"op":"edit","id":3,"text":"new"}',
    ]
    kept = message(3, text="old")
    assert (
        journal.after(kept) == "new"
        and journal.after(message(1)) is None
        and journal.after(message(4)).startswith("message")
    )


def test_a_rebuild_before_the_replay_never_brings_a_forgotten_message_back(tmp_path, tiny_predictor):
    from wordbot.bot.journal import Journal
    from wordbot.bot.learning import Communities

    store = SQLiteStore(tmp_path / "s.sqlite3", flush_interval=None)
    for m in OUTAGE_MESSAGES:
        store.add_message(m)
    store.flush()
    journal = Journal(tmp_path / "journal.jsonl")  # what a process killed during an outage left
    journal.append("forget_author", author=ALICE, guild=GUILD)
    journal.append("delete", ids=[6, 7])
    journal.append("edit", id=5, text="bob edited it: quuxwise")
    communities = Communities(tiny_predictor, store, journal)
    communities.rebuild()  # e.g. started before the journal was applied
    memory = communities.view(GUILD).memory
    assert [(GUILD, i) in memory for i in (1, 2, 4, 5, 6, 7)] == [False, False, True, True, False, False]
    assert memory.count("quuxwise") == 1 and memory.count("zorblax") == 0
    assert not communities.learn(message(8))  # nothing new before the journal reached the store
    communities.catch_up()
    assert {g: [(m.id, m.text) for m in store.messages(g)] for g in store.guilds()} == AFTER_OUTAGE
    assert not journal.path.exists() and communities.learn(message(8))
    store.close()


def test_a_sqlite_file_locked_too_long_pauses_the_store_until_the_lock_goes(tmp_path, caplog):
    import sqlite3

    path = tmp_path / "s.sqlite3"
    store = SQLiteStore(path, flush_interval=0.05, retry=(0.05, 0.2))
    store._conn.execute("PRAGMA busy_timeout = 200")  # 30 s in service; the test does not wait that long
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")  # another process holding the write lock
    try:
        with pytest.raises(StoreUnavailable, match="database is locked"):
            store.listen(GUILD, 5)
        assert not store.available
        with pytest.raises(StoreUnavailable):  # at once: no second wait for the lock
            store.channels(GUILD)
        time.sleep(0.5)  # several tries, still locked
        assert not store.available
    finally:
        other.execute("ROLLBACK")
        other.close()
    wait_for(lambda: store.available, timeout=10)
    assert store.listen(GUILD, 5) and store.channels(GUILD) == [5]
    assert said(caplog, UNREACHABLE) == 1 and said(caplog, "database back") == 1
    store.close()
