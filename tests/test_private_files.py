"""What the faces keep about people is their user's alone: the bot's SQLite store and its
journal (members' messages and ids), like the REPL's history (tests/test_user_edges.py),
are made readable by the user running wordbot only. A directory or file the user made
keeps the mode they gave it."""

from __future__ import annotations

import os
import stat

import pytest

from wordbot.bot.journal import Journal
from wordbot.bot.store import Message
from wordbot.bot.store_sqlite import SQLiteStore


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_bots_store_and_its_directory_are_private(tmp_path):
    state = tmp_path / "state"
    store = SQLiteStore(state / "wordbot.sqlite3", flush_interval=None)
    try:
        store.add_message(Message(1, 10, 20, 30, 1.0, "a member's words"))
        store.flush()
        made = [p for p in state.iterdir()]
        assert {p.name for p in made} >= {"wordbot.sqlite3", "wordbot.sqlite3-wal"}
        assert mode(state) == 0o700
        assert {p.name: mode(p) for p in made} == {p.name: 0o600 for p in made}
    finally:
        store.close()


def test_a_store_in_a_directory_the_user_made_keeps_its_modes(tmp_path):
    shared = tmp_path / "shared"
    shared.mkdir(0o755)
    os.chmod(shared, 0o755)
    path = shared / "bot.sqlite3"
    path.touch()
    os.chmod(path, 0o640)
    SQLiteStore(path, flush_interval=None).close()
    assert (mode(shared), mode(path)) == (0o755, 0o640)


def test_the_journal_is_private_and_stays_so_when_rewritten(tmp_path):
    path = tmp_path / "state" / "journal.jsonl"
    journal = Journal(path)
    journal.append("delete", ids=[1, 2])
    assert (mode(path.parent), mode(path)) == (0o700, 0o600)
    first_end = journal._read()[1]
    journal.append("delete", ids=[3])
    with journal._lock:
        journal._drop_first(first_end)  # what replay does once the store took the first line
    assert mode(path) == 0o600 and journal.pending


def test_a_file_where_the_state_directory_should_be_is_said_in_words(tmp_path):
    from wordbot.bot.health import StoreError

    (tmp_path / "state").write_text("not a directory")
    with pytest.raises(StoreError) as caught:
        SQLiteStore(tmp_path / "state" / "wordbot.sqlite3", flush_interval=None)
    assert str(caught.value) == (
        f"cannot open the SQLite store {tmp_path / 'state' / 'wordbot.sqlite3'}: "
        f"a file stands where a directory should be ({tmp_path / 'state'})"
    )
