"""`wordbot discord --config`: the settings file, the WORDBOT_* variables and the options merged
in that order of precedence; every key's type and range checked with one line naming the key;
the token and a database password in no message and no log; the systemd unit."""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from wordbot import cli
from wordbot.bot import config as bot_config
from wordbot.bot.config import SETTINGS, BotConfig, describe, load, redacted_store
from wordbot.errors import ConfigError
from wordbot.limits import BOT_K, BOT_MAX_INPUT_CHARS, BOT_WORDS
from wordbot.testing.fake_discord import FakeDiscordThread
from wordbot.testing.processes import discord_command, sigterm_at_end

from .postgres import postgres_server  # noqa: F401  (a fixture, used through request)

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "bot.example.toml"
UNIT = ROOT / "contrib" / "wordbot-discord.service"
TOKEN = "MTA1NjQ4OTk5OTk5OTk5OTk5OQ.GaBcDe.abcdefghijklmnopqrstuvwxyz0123456789AB"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bot.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(*args: Any, **kwargs: Any) -> str:
    with pytest.raises(ConfigError) as caught:
        load(*args, **kwargs)
    message = str(caught.value)
    assert "\n" not in message
    return message


# -- the example file ---------------------------------------------------------------------------


def test_the_example_file_loads_and_gives_the_defaults():
    assert load(EXAMPLE, environ={}) == BotConfig()


def test_the_example_file_documents_every_key():
    text = EXAMPLE.read_text(encoding="utf-8")
    for setting in SETTINGS:
        table, _, key = setting.key.rpartition(".")
        assert f"{key} =" in text, setting.key
        if table:
            assert f"[{table}]" in text, setting.key


def test_the_example_files_commented_keys_are_all_accepted(tmp_path):
    # Every "# key = value" line of the example, uncommented, is a valid setting (the shard keys
    # in their two forms, each on its own).
    lines = EXAMPLE.read_text(encoding="utf-8").splitlines()
    commented = [line[2:] for line in lines if re.fullmatch(r'# [a-z_]+ = ("[^"]*"|\S+)', line)]
    assert len(commented) == 6
    config = load(write(tmp_path, "\n".join(commented) + "\n"), environ={})
    assert config.token_file == "/etc/wordbot/token" and config.backend == "mix" and config.server_models_max == 4
    assert load(write(tmp_path, "shards = 0\n"), environ={}).shards == 0
    ranged = load(write(tmp_path, 'shard_ids = "0-3"\nshard_count = 8\n'), environ={})
    assert ranged.shard_ids == (0, 1, 2, 3) and ranged.shard_count == 8


# -- precedence -----------------------------------------------------------------------------------


def test_the_environment_overrides_the_file_and_options_override_both(tmp_path):
    path = write(tmp_path, 'prefix = "?"\nlog_level = "debug"\n[limits]\nk = 3\nwords = 40\n')
    environ = {"WORDBOT_PREFIX": "$", "WORDBOT_LIMITS_K": "4", "WORDBOT_LOG_LEVEL": "WARNING"}
    config = load(path, environ=environ, options={"prefix": "%", "log_level": None})
    assert config.prefix == "%"  # option > environment > file
    assert config.max_k == 4  # environment > file
    assert config.log_level == "warning"  # an option left out (None) does not count
    assert config.max_words == 40  # only the file says
    assert config.cooldown_commands == BotConfig().cooldown_commands  # nobody says: the default


def test_every_setting_can_be_set_by_its_environment_variable():
    environ = {
        "WORDBOT_TOKEN_FILE": "/run/token",
        "WORDBOT_PREFIX": "?",
        "WORDBOT_MODEL": "/srv/model",
        "WORDBOT_BACKEND": "ngram",
        "WORDBOT_SERVER_MODELS": "/srv/servers",
        "WORDBOT_SERVER_MODELS_MAX": "2",
        "WORDBOT_STORE": "postgresql://wordbot@db/wordbot",
        "WORDBOT_SHARD_IDS": "2-3",
        "WORDBOT_SHARD_COUNT": "4",
        "WORDBOT_COOLDOWN_COMMANDS": "9",
        "WORDBOT_COOLDOWN_SECONDS": "2.5",
        "WORDBOT_LIMITS_K": "7",
        "WORDBOT_LIMITS_WORDS": "50",
        "WORDBOT_LIMITS_INPUT_CHARS": "500",
        "WORDBOT_LOG_LEVEL": "error",
    }
    assert {s.env for s in SETTINGS} - set(environ) == {"WORDBOT_SHARDS"}  # the other shard form
    config = load(environ=environ)
    assert config == BotConfig(
        token_file="/run/token",
        prefix="?",
        model="/srv/model",
        backend="ngram",
        server_models="/srv/servers",
        server_models_max=2,
        store="postgresql://wordbot@db/wordbot",
        shard_ids=(2, 3),
        shard_count=4,
        cooldown_commands=9,
        cooldown_seconds=2.5,
        max_k=7,
        max_words=50,
        max_input_chars=500,
        log_level="error",
    )


def test_the_command_line_options_override_the_file_and_the_environment(tmp_path, monkeypatch):
    path = write(tmp_path, 'store = "sqlite:///a.sqlite3"\nshard_ids = "0-1"\nshard_count = 4\n')
    monkeypatch.setenv("WORDBOT_SHARD_COUNT", "6")
    args = cli.build_parser().parse_args(
        ["discord", "--config", str(path), "--store", "postgresql://h/db", "--shard-ids", "4-5", "--prefix", "?"]
    )
    config = load(args.config, options=vars(args))
    assert (config.store, config.shard_ids, config.shard_count, config.prefix) == ("postgresql://h/db", (4, 5), 6, "?")


def test_relative_paths_in_the_file_are_taken_from_the_files_folder(tmp_path):
    folder = tmp_path / "etc"
    folder.mkdir()
    path = folder / "bot.toml"
    path.write_text('token_file = "token"\nmodel = "../model"\nstore = "sqlite:///state/w.sqlite3"\n')
    config = load(path, environ={})
    assert config.token_file == str(folder / "token")
    assert config.model == str(tmp_path / "model")
    assert config.store == f"sqlite:///{folder / 'state' / 'w.sqlite3'}"
    # From the environment or an option a relative path stays relative: to where it was typed.
    assert load(path, environ={"WORDBOT_MODEL": "m"}).model == "m"


# -- every key's type and range ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("prefix = 1", "prefix must be 1 to 32 characters"),
        ('prefix = "word bot"', "prefix must be 1 to 32 characters"),
        ('prefix = ""', "prefix must be 1 to 32 characters"),
        ("token_file = 3", "token_file must be a non-empty string"),
        ("model = []", "model must be a non-empty string"),
        ('backend = "lstm"', "backend must be one of rnn, ngram, mix"),
        ("server_models = false", "server_models must be a non-empty string"),
        ('store = "mysql://x/y"', "store must be sqlite:///PATH or postgresql://"),
        ('store = "sqlite://relative"', "store must be sqlite:///relative/path or sqlite:////absolute/path"),
        ("store = 5", "store must be a URL string"),
        ("shards = -1", "shards must be 0 (Discord chooses) or a shard count of at least 1"),
        ('shards = "many"', "shards must be a number, not a string"),
        ("shards = true", "shards must be 0"),
        ('shard_ids = "3-1"\nshard_count = 4', "shard_ids must be shard numbers like 0-3"),
        ('shard_ids = "a"\nshard_count = 4', "shard_ids must be shard numbers like 0-3"),
        ("shard_ids = [0, -1]\nshard_count = 4", "shard_ids must be shard numbers like 0-3"),
        ("shard_ids = []\nshard_count = 4", "shard_ids must be shard numbers like 0-3"),
        ("shard_ids = [0]\nshard_count = 0", "shard_count must be from 1 to"),
        ("shard_ids = [0]\nshard_count = 1.5", "shard_count must be a whole number"),
        ("[cooldown]\ncommands = 0", "cooldown.commands must be from 1 to 10000"),
        ('[cooldown]\ncommands = "5"', "cooldown.commands must be a number, not a string"),
        ("[cooldown]\nseconds = 0", "cooldown.seconds must be more than 0"),
        ("[cooldown]\nseconds = inf", "cooldown.seconds must be more than 0"),
        ("[cooldown]\nseconds = nan", "cooldown.seconds must be more than 0"),
        ("[cooldown]\nseconds = [1]", "cooldown.seconds must be a number of seconds"),
        (f"[limits]\nk = {BOT_K[1] + 1}", f"limits.k must be from 1 to {BOT_K[1]}, got {BOT_K[1] + 1}"),
        ("[limits]\nk = 0", f"limits.k must be from 1 to {BOT_K[1]}"),
        ("[limits]\nk = 2.0", "limits.k must be a whole number"),
        (f"[limits]\nwords = {BOT_WORDS[1] + 1}", f"limits.words must be from 1 to {BOT_WORDS[1]}"),
        (
            f"[limits]\ninput_chars = {BOT_MAX_INPUT_CHARS + 1}",
            f"limits.input_chars must be from 1 to {BOT_MAX_INPUT_CHARS}",
        ),
        ('log_level = "loud"', "log_level must be one of debug, info, warning, error"),
    ],
)
def test_a_bad_value_in_the_file_is_one_line_naming_the_file_and_the_key(toml, expected, tmp_path):
    path = write(tmp_path, toml + "\n")
    message = error_of(path, environ={})
    assert message.startswith(f"{path}: ") and expected in message


def test_a_string_where_a_number_goes_is_refused_in_the_file_but_read_from_the_environment(tmp_path):
    # The file has types; the environment has only strings, so there a number is read from one.
    assert "number, not a string" in error_of(write(tmp_path, '[limits]\nk = "5"\n'), environ={})
    assert load(environ={"WORDBOT_LIMITS_K": " 5 "}).max_k == 5


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"WORDBOT_LIMITS_K": "11"}, f"WORDBOT_LIMITS_K must be from 1 to {BOT_K[1]}, got 11"),
        ({"WORDBOT_LIMITS_WORDS": "ten"}, "WORDBOT_LIMITS_WORDS must be a whole number, got 'ten'"),
        ({"WORDBOT_COOLDOWN_SECONDS": "-1"}, "WORDBOT_COOLDOWN_SECONDS must be more than 0"),
        ({"WORDBOT_SHARDS": "-2"}, "WORDBOT_SHARDS must be 0"),
        ({"WORDBOT_BACKEND": "gpt"}, "WORDBOT_BACKEND must be one of"),
        ({"WORDBOT_STORE": "redis://x"}, "WORDBOT_STORE must be sqlite:///PATH or postgresql://"),
    ],
)
def test_a_bad_environment_variable_is_named_in_one_line(environ, expected):
    assert expected in error_of(environ=environ)


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"shards": "-1"}, "--shards must be 0 (Discord chooses)"),
        ({"prefix": "! "}, "--prefix must be"),
        ({"shard_ids": "0-1"}, "--shard-ids needs the whole bot's shard count"),
        ({"shard_count": "4"}, "--shard-count needs the shards this process runs"),
        ({"shard_ids": "2-5", "shard_count": "4"}, "--shard-ids goes up to shard 5, but --shard-count is 4"),
        ({"shards": "4", "shard_ids": "0", "shard_count": "4"}, "--shards runs every shard in one process"),
    ],
)
def test_bad_or_inconsistent_options_are_one_line_naming_the_option(options, expected):
    assert expected in error_of(environ={}, options=options)


def test_an_inconsistency_between_sources_names_each_key_as_its_source_spells_it(tmp_path):
    path = write(tmp_path, 'shard_ids = "0-7"\n')
    message = error_of(path, environ={"WORDBOT_SHARD_COUNT": "4"})
    assert f"{path}: shard_ids goes up to shard 7, but WORDBOT_SHARD_COUNT is 4" in message


def test_shard_ids_read_ranges_lists_and_single_numbers():
    def ids(value: str) -> tuple[int, ...] | None:
        return load(environ={"WORDBOT_SHARD_IDS": value, "WORDBOT_SHARD_COUNT": "16"}).shard_ids

    assert ids("0-3") == (0, 1, 2, 3)
    assert ids("7") == (7,)
    assert ids("0, 2,5-6, 2") == (0, 2, 5, 6)
    # A range past any shard count is refused before it is spelt out.
    assert "shard numbers" in error_of(environ={"WORDBOT_SHARD_IDS": ",".join(["0-999999"] * 1000)})


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ('prefx = "!"', "unknown key prefx (did you mean prefix?)"),
        ("[limits]\nkk = 3", "unknown key limits.kk (did you mean limits.k?)"),
        ("[limit]\nk = 3", "unknown key limit (did you mean"),
        ("shard_id = [1]", "unknown key shard_id (did you mean shard_ids?)"),
        ('colour = "blue"', "unknown key colour; known keys: token_file, prefix"),
    ],
)
def test_an_unknown_key_is_refused_with_the_closest_known_one(toml, expected, tmp_path):
    assert expected in error_of(write(tmp_path, toml + "\n"), environ={})


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b"prefix = \n", "cannot read config"),
        (b"\xff\xfe", "not UTF-8 text"),
        (b"# " + b"x" * 70_000, "larger than 65536 bytes"),
    ],
)
def test_a_file_that_is_not_toml_is_one_line(content, expected, tmp_path):
    path = tmp_path / "bot.toml"
    path.write_bytes(content)
    assert expected in error_of(path, environ={})
    assert "no such file" in error_of(tmp_path / "missing.toml", environ={}).lower()


# -- secrets --------------------------------------------------------------------------------------------


def test_a_token_written_in_the_file_is_refused_without_showing_it(tmp_path):
    for key in ("token", "discord_token"):
        message = error_of(write(tmp_path, f'{key} = "{TOKEN}"\n'), environ={})
        assert "token_file" in message and TOKEN not in message and TOKEN[:20] not in message
    message = error_of(environ={"WORDBOT_TOKEN": TOKEN})  # not silently ignored, and not shown
    assert "DISCORD_TOKEN" in message and TOKEN[:20] not in message


@pytest.mark.parametrize("key", ["prefix", "backend", "store", "log_level"])
def test_a_token_pasted_into_any_key_is_not_shown_back(key, tmp_path):
    message = error_of(write(tmp_path, f'{key} = "{TOKEN}"\n'), environ={})
    assert TOKEN not in message and TOKEN[:20] not in message
    message = error_of(environ={f"WORDBOT_{key.upper()}": TOKEN})
    assert TOKEN not in message and TOKEN[:20] not in message


def test_a_database_password_is_never_shown():
    url = "postgresql://wordbot:hunter2secret@db.example:5432/wordbot"
    config = load(environ={"WORDBOT_STORE": url})
    assert config.store == url  # passed on whole to the store
    assert "hunter2secret" not in describe(config) and "wordbot:***@db.example" in describe(config)
    assert redacted_store("postgres://u:p%40ss@h/db") == "postgres://u:***@h/db"
    assert redacted_store("postgresql://u:pa/ss@w:rd@h:5432/db") == "postgresql://u:***@h:5432/db"
    assert redacted_store("postgresql://h/db?user=u&password=s3cret&sslmode=require") == (
        "postgresql://h/db?user=u&password=***&sslmode=require"
    )
    assert redacted_store("sqlite:////var/lib/wordbot/w.sqlite3") == "sqlite:////var/lib/wordbot/w.sqlite3"
    assert redacted_store(None) == "SQLite in the state directory"
    assert load(environ={"WORDBOT_STORE": "sqlite://"}).store == "sqlite://"  # open_store's default, too
    message = error_of(environ={"WORDBOT_STORE": "postgresql:hunter2secret@db"})
    assert "hunter2secret" not in message


def test_the_token_never_reaches_the_log_even_at_debug_level(tiny_model_dir, tmp_path, request):
    """`wordbot discord --config` for real, in a process of its own with the log at debug level:
    it connects with the token from its token file, opens its store on a real PostgreSQL
    server, answers, stops on SIGTERM, and neither the token nor the database password is
    anywhere in what it wrote."""
    store_url = request.getfixturevalue("postgres_server").new_database()
    password = store_url.split("://", 1)[1].split("@", 1)[0].split(":", 1)[1]
    side = FakeDiscordThread(token=TOKEN)
    server = side.server
    (tmp_path / "token").write_text(TOKEN + "\n")
    path = write(
        tmp_path,
        f'token_file = "token"\nlog_level = "debug"\nstore = "{store_url}"\n' + "[limits]\nk = 2\ninput_chars = 40\n",
    )
    env = {k: v for k, v in os.environ.items() if k != "DISCORD_TOKEN" and not k.startswith("WORDBOT_")}
    command = discord_command(server, "--config", str(path), "--model", str(tiny_model_dir))
    proc = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with sigterm_at_end(proc) as ended:
            side.call_sync(server.wait_until(lambda: bool(server.identifies), timeout=30))
            reply = side.call_sync(server.wait_for_reply(side.call_sync(server.send_message("!next the k=9"))))
            too_long = side.call_sync(server.send_message("!next " + "word " * 10))
            refusal = side.call_sync(server.wait_for_reply(too_long))
    finally:
        side.close()
    out, err = ended.out, ended.err
    assert ended.returncode == 0, err
    assert reply.content.count("**") == 2 * 2  # limits.k = 2 from the file: two words, though 9 were asked
    assert "under 40 characters" in refusal.content  # limits.input_chars
    assert "DEBUG" in err and "starting with" in err  # the level from the file; a log worth searching
    assert TOKEN not in out + err and TOKEN[:20] not in out + err
    assert password not in out + err


def test_a_bad_config_through_the_command_line_is_one_line_with_status_2(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("DISCORD_TOKEN", TOKEN)
    path = write(tmp_path, "[limits]\nk = 50\n")
    assert cli.main(["discord", "--config", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and err == f"wordbot: error: {path}: limits.k must be from 1 to {BOT_K[1]}, got 50\n"
    assert cli.main(["discord", "--shard-ids", "0-3"]) == 2
    assert "--shard-ids needs" in capsys.readouterr().err


def test_run_takes_a_config_or_settings(monkeypatch):
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    from wordbot.bot import run

    with pytest.raises(TypeError):
        run(BotConfig(), prefix="?")
    with pytest.raises(ConfigError, match="--shards must be 0"):
        run(shards=-1)


# -- the systemd unit -----------------------------------------------------------------------------------


def unit_settings() -> dict[str, list[str]]:
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text(encoding="utf-8").splitlines():
        if "=" in line and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def test_the_unit_restarts_runs_as_its_own_user_and_takes_the_token_as_a_credential():
    settings = unit_settings()
    assert settings["Restart"] == ["on-failure"]
    assert settings.get("DynamicUser") == ["yes"] or settings.get("User") == ["wordbot"]
    assert settings["StateDirectory"] == ["wordbot"]
    assert "WORDBOT_STATE_DIR=%S/wordbot" in " ".join(settings["Environment"])
    assert settings["LoadCredential"] == ["discord-token:/etc/wordbot/token"]
    (command,) = settings["ExecStart"]
    assert " discord " in f"{command} " and "--token-file ${CREDENTIALS_DIRECTORY}/discord-token" in command
    assert settings["KillSignal"] == ["SIGTERM"]
    assert not any("DISCORD_TOKEN" in value for values in settings.values() for value in values)


def systemd_verify(text: str, folder: Path) -> list[str]:
    """What `systemd-analyze verify` says about a unit of this text (its lines about this unit)."""
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed (apt-get install systemd)")
    # The unit names /usr/local/bin/wordbot and verify checks that ExecStart's program exists:
    # check a copy that runs this checkout's console script instead.
    wordbot = shutil.which("wordbot") or str(Path(sys.executable).with_name("wordbot"))
    copy = folder / UNIT.name
    copy.write_text(text.replace("/usr/local/bin/wordbot", wordbot), encoding="utf-8")
    result = subprocess.run(
        [analyze, "verify", "--man=no", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    problems = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    return problems if result.returncode == 0 else [*problems, f"exit status {result.returncode}"]


def test_systemd_analyze_verifies_the_unit(tmp_path):
    assert systemd_verify(UNIT.read_text(encoding="utf-8"), tmp_path) == []
    # The check can fail: a misspelt key is reported (systemd only warns and carries on).
    broken = UNIT.read_text(encoding="utf-8").replace("RestartSec=", "RestartSecs=")
    assert any("RestartSecs" in line for line in systemd_verify(broken, tmp_path))


def test_the_config_module_has_one_field_comment_per_setting():
    source = Path(bot_config.__file__).read_text(encoding="utf-8")
    for field in dataclasses.fields(BotConfig):
        line = next(line for line in source.splitlines() if line.strip().startswith(f"{field.name}:"))
        assert "  # " in line, field.name
    assert {s.field for s in SETTINGS} == {f.name for f in dataclasses.fields(BotConfig)}
