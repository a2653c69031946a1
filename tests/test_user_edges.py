"""Rough edges met by using the commands as their users do (a person at a terminal, a
shell script, someone trying options), each pinned down through the real command: the
CLI's `main`, `python -m wordbot` in a pipe, or the REPL in a pseudo-terminal."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wordbot.cli import main
from wordbot.repl import Repl
from wordbot.testing.processes import discord_command, sigterm_at_end

ROOT = Path(__file__).resolve().parent.parent


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "WORDBOT_STATE_DIR": str(tmp_path / "state"), "PYTHONPATH": str(ROOT), **extra}


# ---- wordbot continue: which option is wrong ----


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-n", "-1"], "need --words >= 0, not -1"),
        (["--temperature", "-1"], "need finite --temperature >= 0, not -1"),
        (["--temperature", "nan"], "need finite --temperature >= 0, not nan"),
        (["--top-p", "0"], "need 0 < --top-p <= 1, not 0"),
        (["--top-p", "1.5"], "need 0 < --top-p <= 1, not 1.5"),
        (["--top-k", "-2"], "need --top-k >= 0 (0: no limit), not -2"),
        (["--seed", "-5"], "need --seed >= 0, not -5"),
    ],
)
def test_continue_names_the_one_option_that_is_out_of_range_and_its_value(tiny_model_dir, args, message, capsys):
    # It used to print every rule at once ("need --words >= 0, finite --temperature >= 0,
    # 0 < --top-p <= 1, ...") whichever option was wrong, leaving the user to guess.
    assert main(["continue", "hi", *args, "--model", str(tiny_model_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"wordbot: error: {message}\n"


def test_continue_help_says_what_top_k_0_means(capsys):
    with pytest.raises(SystemExit):
        main(["continue", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "--top-k TOP_K sample among the k likeliest tokens; 0: no limit (default 40)" in help_text


# ---- the REPL in a pipe: why it learns nothing ----


def test_learned_in_a_pipe_says_piped_lines_are_not_learned_rather_than_blaming_no_learn(tiny_model_dir, tmp_path):
    command = [sys.executable, "-m", "wordbot", "repl", "--model", str(tiny_model_dir)]
    piped = subprocess.run(command, input=":learned\n", capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    assert piped.returncode == 0, piped.stderr
    assert "learning is off (lines read from a pipe are never learned)" in piped.stdout
    assert "--no-learn" not in piped.stdout  # the user never gave it
    told = subprocess.run(
        [*command, "--no-learn"], input=":learned\n", capture_output=True, text=True, env=_env(tmp_path), timeout=60
    )
    assert "learning is off (--no-learn)" in told.stdout


# ---- the REPL's history: private, and a clear reason when it cannot be kept ----


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_the_state_directory_and_history_file_the_repl_makes_are_readable_by_their_owner_only(tiny_model_dir, tmp_path):
    # What a person types (and the REPL learns from) was world-readable (0644 in a 0755
    # directory) on a shared machine; a shell keeps its history 0600.
    pexpect = pytest.importorskip("pexpect")
    state = tmp_path / "state"
    child = pexpect.spawn(
        sys.executable,
        ["-m", "wordbot", "repl", "--model", str(tiny_model_dir)],
        env=_env(tmp_path, TERM="xterm"),
        dimensions=(24, 80),
        timeout=30,
    )
    try:
        child.expect("Ctrl-D")
        child.send("my secret plans\r")
        child.expect("next words|continued|%")
        child.send("\x04")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    history = state / "history"
    assert "my secret plans" in history.read_text(encoding="utf-8")
    assert _mode(history) & 0o077 == 0, oct(_mode(history))
    assert _mode(state) & 0o077 == 0, oct(_mode(state))


def test_a_history_file_its_owner_made_keeps_the_mode_they_gave_it(tiny_predictor, tmp_path):
    state = tmp_path / "state"
    state.mkdir(mode=0o755)
    state.chmod(0o755)
    (state / "history").write_text("\n# 2026-01-01\n+shared on purpose\n", encoding="utf-8")
    (state / "history").chmod(0o644)
    said: list[str] = []
    repl = Repl(tiny_predictor, state_dir=state, write=lambda text, style: said.append(text))
    assert list(repl.history().load_history_strings()) == ["shared on purpose"]
    assert (_mode(state / "history"), _mode(state)) == (0o644, 0o755) and not said


@pytest.mark.parametrize("where", ["state", "state/deeper"])
def test_a_file_where_the_state_directory_should_be_is_said_as_such(tiny_predictor, tmp_path, where):
    # The reason read "(file exists)", which sends a user looking for a history file.
    (tmp_path / "state").write_text("not a directory")
    said: list[tuple[str, str]] = []
    repl = Repl(tiny_predictor, state_dir=tmp_path / where, write=lambda text, style: said.append((style, text)))
    repl.history()
    ((style, line),) = said
    assert style == "error"
    history = tmp_path / where / "history"
    assert line == f"history will not be kept: cannot use {history} (a file stands where a directory should be)"


# ---- wordbot discord: where the learned messages are kept ----


def test_the_bots_start_line_names_the_sqlite_file_it_keeps_messages_in(tmp_path, monkeypatch):
    # `--store sqlite:///var/lib/wordbot/bot.db` is a path relative to where the bot starts
    # (four slashes make it absolute); the start line said only the URL, so an admin could
    # not tell that the messages went to ./var/lib/wordbot/bot.db.
    from wordbot.bot.config import describe, load

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WORDBOT_STATE_DIR", str(tmp_path / "state"))
    relative = describe(load(environ={}, options={"store": "sqlite:///var/lib/wordbot/bot.db"}))
    assert f"store=sqlite:///var/lib/wordbot/bot.db (the file {tmp_path}/var/lib/wordbot/bot.db)," in relative
    absolute = describe(load(environ={}, options={"store": "sqlite:////srv/bot.db"}))
    assert "store=sqlite:////srv/bot.db," in absolute
    default = describe(load(environ={}))
    assert f"store=SQLite in the state directory ({tmp_path / 'state' / 'wordbot.sqlite3'})," in default


def test_the_store_option_says_how_to_write_an_absolute_sqlite_path(capsys):
    with pytest.raises(SystemExit):
        main(["discord", "--help"])
    help_text = "".join(capsys.readouterr().out.split())  # argparse wraps (and may hyphen-break) it
    assert "sqlite:///RELATIVE/PATHorsqlite:////ABSOLUTE/PATH" in help_text
    assert main(["discord", "--store", "sqlite:///"]) == 2
    assert capsys.readouterr().err == (
        "wordbot: error: --store must be sqlite:///relative/path or sqlite:////absolute/path\n"
    )


# ---- the REPL's :model answers, on a narrow terminal ----


@pytest.mark.parametrize("argument", ["", " default", " /no/such/model/directory/anywhere/on/this/machine"])
def test_what_model_says_wraps_between_words_to_the_terminal_width(tiny_predictor, tmp_path, argument):
    # The start screen wrapped the model's line, but `:model` printed it whole, so a
    # terminal cut it mid-word ("vo" / "cabulary").
    from tests.test_repl import ENTER, Driver, _SizedOutput

    said: list[str] = []
    repl = Repl(tiny_predictor, state_dir=tmp_path, write=lambda text, style: said.append(text))
    with Driver(repl, _SizedOutput(40)) as d:
        d.type(":model" + argument + ENTER)
        d.wait(lambda: said[-1].startswith(("model: ", "cannot load model")), "the answer to :model")
    rows = said[-1].splitlines()
    # Whole words in rows of at most 39 columns; only a word longer than that (a path) stands alone.
    assert len(rows) > 1 and all(len(row) <= 39 or len(row.split()) == 1 for row in rows), rows
    assert rows[0].startswith(("model: ", "cannot load model")) and all(row.startswith("  ") for row in rows[1:])


def test_in_a_pipe_what_model_says_stays_one_line(tiny_model_dir, tmp_path):
    command = [sys.executable, "-m", "wordbot", "repl", "--model", str(tiny_model_dir)]
    piped = subprocess.run(command, input=":model\n", capture_output=True, text=True, env=_env(tmp_path), timeout=60)
    (line,) = [row for row in piped.stdout.splitlines() if row.startswith("model: ")]
    assert line.endswith("(:model PATH loads another)")


def test_a_long_lines_report_wraps_between_words_to_the_terminal_width(tiny_predictor, tmp_path):
    # "  continued: <the line's end> <twenty words>" ran past the terminal's edge and was
    # cut mid-word there.
    from tests.test_repl import ENTER, Driver, _SizedOutput

    said: list[str] = []
    repl = Repl(tiny_predictor, state_dir=tmp_path, write=lambda text, style: said.append(text))
    line = "when the going gets tough and the night is long and the road is"
    with Driver(repl, _SizedOutput(40)) as d:
        d.type(line + ENTER)
        d.wait(lambda: any("next words:" in text for text in said), "the line's report")
    shown = next(text for text in said if "next words:" in text)
    rows = shown.splitlines()
    assert all(len(row) <= 39 or len(row.split()) == 1 for row in rows), rows
    repl.width = lambda: None  # as in a pipe: the same report, a line each
    assert shown.split() == repl.report(line).split()
    assert len(rows) > len(repl.report(line).splitlines())


# ---- wordbot --help: where the files are ----


def test_help_says_where_wordbot_keeps_its_files_and_the_variables_that_move_them(tmp_path, monkeypatch, capsys):
    # A user looking for the history the REPL learns from, or the bot's store, had no
    # answer short of the docs.
    monkeypatch.setenv("WORDBOT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(SystemExit) as exit:
        main(["--help"])
    assert exit.value.code == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert f"store are kept in {tmp_path / 'state'} (WORDBOT_STATE_DIR moves them)" in shown
    assert f"weight copies in {tmp_path / 'cache'} (WORDBOT_CACHE_DIR; safe to delete)" in shown
    assert "DISCORD_TOKEN or --token-file" in shown


# ---- wordbot discord: a token file saved by an ordinary editor ----

_NOTEPAD_FORMS = {
    "UTF-8 with a byte-order mark": lambda token: b"\xef\xbb\xbf" + token.encode() + b"\r\n",
    "UTF-16 (Notepad's 'Unicode')": lambda token: (token + "\r\n").encode("utf-16"),
    "an environment file's line": lambda token: f"DISCORD_TOKEN={token}\n".encode(),
    "a shell's export line": lambda token: f'export DISCORD_TOKEN="{token}"\n'.encode(),
}


@pytest.mark.parametrize("form", list(_NOTEPAD_FORMS))
def test_a_token_file_as_editors_and_env_files_write_it_gives_the_token(form, tmp_path, monkeypatch):
    # Each was refused ("does not hold a Discord bot token", "not UTF-8 text") or, for
    # DISCORD_TOKEN=..., sent to Discord whole, which rejects it as a wrong token.
    from wordbot.bot import read_token

    token = "MTA1NjQ4OTk5OTk5OTk5OTk5OQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"
    path = tmp_path / "token"
    path.write_bytes(_NOTEPAD_FORMS[form](token))
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    assert read_token(path) == token


def test_the_bot_logs_in_with_a_token_file_notepad_saved(tiny_model_dir, tmp_path):
    """`wordbot discord --token-file` for real, in a process of its own, against the fake
    Discord: it identifies with the token, then SIGTERM ends it cleanly."""

    from wordbot.testing.fake_discord import FakeDiscordThread

    side = FakeDiscordThread()
    server = side.server
    path = tmp_path / "token.txt"
    path.write_bytes(_NOTEPAD_FORMS["UTF-16 (Notepad's 'Unicode')"](server.token))
    env = {k: v for k, v in _env(tmp_path).items() if k != "DISCORD_TOKEN"}
    command = discord_command(server, "--token-file", str(path), "--model", str(tiny_model_dir))
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with sigterm_at_end(proc) as ended:
            side.call_sync(server.wait_until(lambda: bool(server.identifies) or proc.poll() is not None, timeout=30))
            assert proc.poll() is None, proc.communicate()[1]
    finally:
        side.close()
    assert server.identifies and ended.returncode == 0, ended.err
    assert server.token not in ended.out + ended.err


# ---- the REPL's toolbar on a narrow terminal ----


@pytest.mark.parametrize("columns", [45, 60, 80, 120])
def test_the_toolbar_keeps_help_and_quit_in_sight_on_a_narrow_terminal(tiny_predictor, tmp_path, columns):
    # At 60 columns the toolbar ended "Alt-F word  :he": the terminal cut off how to quit.
    from tests.test_repl import Driver, _SizedOutput

    repl = Repl(tiny_predictor, state_dir=tmp_path, write=lambda text, style: None)
    with Driver(repl, _SizedOutput(columns)) as d:
        d.type("the ")
        d.menu()
        d.wait(lambda: repl.settings.last_ms is not None, "a suggestion's time")
        bar = "".join(text for _, text in repl.toolbar())
    assert len(bar) < columns, bar
    assert bar.endswith(":help  Ctrl-D quit"), bar
    if columns >= 80:
        assert "Tab pick  Right accept  Alt-F word  :help  Ctrl-D quit" in bar


# ---- wordbot next - at a terminal ----


def test_next_dash_at_a_terminal_says_it_is_reading_and_how_to_end(tiny_model_dir, tmp_path):
    # `wordbot next -` typed at a terminal waited for standard input without a word, as
    # if it hung.
    pexpect = pytest.importorskip("pexpect")
    command = ["-m", "wordbot", "next", "-", "-k", "2", "--model", str(tiny_model_dir)]
    child = pexpect.spawn(sys.executable, command, env=_env(tmp_path), timeout=30, encoding="utf-8")
    try:
        child.expect("reading the text from the terminal; end it with Ctrl-D")
        child.send("the cat\n")
        child.sendeof()
        child.expect(pexpect.EOF)
        answer = child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0
    assert len([row for row in answer.splitlines() if row.rstrip().endswith("%")]) == 2, answer


# ---- wordbot discord: a misspelt WORDBOT_ variable ----


@pytest.mark.parametrize(
    ("name", "meant"),
    [
        ("WORDBOT_PREFX", "WORDBOT_PREFIX"),
        ("WORDBOT_LIMIT_K", "WORDBOT_LIMITS_K"),
        ("WORDBOT_STATEDIR", "WORDBOT_STATE_DIR"),
    ],
)
def test_a_misspelt_wordbot_variable_is_refused_naming_the_one_meant(name, meant, monkeypatch, capsys):
    # The config file refuses an unknown key ("did you mean prefix?"), but a misspelt
    # variable was ignored: the bot started with the default and nothing said why.
    monkeypatch.setenv(name, "?")
    monkeypatch.setenv("DISCORD_TOKEN", "not-used")
    assert main(["discord"]) == 2
    assert capsys.readouterr().err == f"wordbot: error: {name} is not read (did you mean {meant}?)\n"


def test_wordbot_variables_that_belong_to_nothing_near_a_setting_are_left_alone():
    from wordbot.bot.config import BotConfig, load

    assert load(environ={"WORDBOT_DEBUG": "1", "WORDBOT_HOME": "/x", "WORDBOT_CACHE_DIR": "/c"}) == BotConfig()


# ---- the REPL's :learned and :forget say what is so ----


def test_learned_says_so_while_the_history_file_is_still_being_learned(tiny_predictor, tmp_path):
    # Right after start, :learned said "learned 9 lines" of a 10,000-line history, which
    # reads as all there is.
    state = tmp_path / "state"
    state.mkdir()
    lines = [f"line {i} of what I typed before, with a few more words in it" for i in range(3000)]
    (state / "history").write_text("".join(f"\n# 2026-01-01\n+{line}\n" for line in lines), encoding="utf-8")
    said: list[str] = []
    repl = Repl(tiny_predictor, state_dir=state, write=lambda text, style: said.append(text), learn=True)
    repl.start_learning()
    seen_busy = False
    while repl.learner.thread.is_alive():
        repl.commit(":learned")
        if repl.learner.thread.is_alive():  # alive before and after: it must have said so
            seen_busy = True
            assert said[-1].endswith("; still learning your history file"), said[-1]
        time.sleep(0.01)
    repl.learner.thread.join()
    repl.commit(":learned")
    assert said[-1].startswith("learned 3,000 lines") and "still" not in said[-1], said[-1]
    assert seen_busy


def test_forget_says_no_history_file_is_kept_when_none_could_be(tiny_predictor, tmp_path):
    # It said "the history file is empty" of a file that could not exist.
    (tmp_path / "state").write_text("not a directory")
    said: list[str] = []
    repl = Repl(tiny_predictor, state_dir=tmp_path / "state", write=lambda text, style: said.append(text), learn=True)
    repl.ask = lambda question: "y"
    repl.commit("a line")
    repl.commit(":forget")
    assert said[-1] == "forgotten: nothing learned, and no history file is kept"
    ok = Repl(tiny_predictor, state_dir=tmp_path / "fine", write=lambda text, style: said.append(text), learn=True)
    ok.history().append_string("a line")
    ok.ask = lambda question: "yes"
    ok.commit(":forget")
    assert said[-1] == "forgotten: nothing learned, the history file is empty"
    assert (tmp_path / "fine" / "history").read_bytes() == b""
