"""The bot's settings: `BotConfig`, and `load()`, the one place where a TOML file, `WORDBOT_…`
environment variables and command-line options are merged (options win over the environment,
which wins over the file) and checked. Every problem is one line naming the key as its source
spells it (`limits.k` in the file, `WORDBOT_LIMITS_K`, `--shard-ids`); no message carries the token
or a database password."""

from __future__ import annotations

import dataclasses
import difflib
import math
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from wordbot.bot.cog import COOLDOWN_PER, COOLDOWN_RATE
from wordbot.bot.server_models import DEFAULT_CAPACITY
from wordbot.errors import ConfigError
from wordbot.limits import BOT_K, BOT_MAX_INPUT_CHARS, BOT_WORDS

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

MAX_CONFIG_BYTES = 64 * 1024  # a settings file is a few hundred bytes
MAX_SHARDS = 1 << 16  # far past any bot Discord would shard (it asks for one shard per 1,000 servers)
LOG_LEVELS = ("debug", "info", "warning", "error")


@dataclass(frozen=True)
class BotConfig:
    """Everything `wordbot discord` is started with. Build it with `load()`, which checks it."""

    token_file: str | None = None  # a file holding the bot token; None: the DISCORD_TOKEN variable
    prefix: str = "!"  # what starts a command in a message (`!next`)
    model: str | None = None  # the model directory; None: the bundled model
    backend: str | None = None  # rnn, ngram or mix; None: what the model's manifest recommends
    server_models: str | None = None  # a directory of per-server models, one folder per server id
    server_models_max: int = DEFAULT_CAPACITY  # server models kept in memory at once (least recently used dropped)
    store: str | None = None  # sqlite:///PATH or postgresql://…; None: SQLite in the state directory
    shards: int | None = None  # one process runs every shard: None unsharded, 0 Discord chooses, N
    shard_ids: tuple[int, ...] | None = None  # this process runs only these shards of shard_count
    shard_count: int | None = None  # the whole bot's shards, over every process (with shard_ids)
    cooldown_commands: int = COOLDOWN_RATE  # commands a user may send per cooldown_seconds
    cooldown_seconds: float = COOLDOWN_PER  # the window of the per-user cooldown
    max_k: int = BOT_K[1]  # most next words one `!next` offers (`k=`), at most limits.BOT_K
    max_words: int = BOT_WORDS[1]  # most words one `!continue` writes, at most limits.BOT_WORDS
    max_input_chars: int = BOT_MAX_INPUT_CHARS  # longest text read, at most limits.BOT_MAX_INPUT_CHARS
    log_level: str = "info"  # debug, info, warning or error


# -- reading one value ---------------------------------------------------------------------------

# The shape of a bot token (three base64url parts): never shown back in a message.
_TOKEN_SHAPE = re.compile(r"[\w-]{20,}\.[\w-]{4,}\.[\w-]{20,}")


def _shown(value: Any) -> str:
    """`value` as a message may show it: short, and never something shaped like a token."""
    text = repr(value)
    if _TOKEN_SHAPE.search(text):
        return "a value shaped like a bot token (not shown)"
    return text if len(text) <= 60 else text[:57] + "..."


def _integer(low: int, high: int) -> Callable[[Any, str], int]:
    def parse(value: Any, name: str) -> int:
        if isinstance(value, str):
            try:
                value = int(value.strip(), 10)
            except ValueError:
                raise ConfigError(f"{name} must be a whole number, got {_shown(value)}") from None
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be a whole number, got {_shown(value)}")
        if not low <= value <= high:
            raise ConfigError(f"{name} must be from {low} to {high}, got {value}")
        return value

    return parse


def _seconds(value: Any, name: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ConfigError(f"{name} must be a number of seconds, got {_shown(value)}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number of seconds, got {_shown(value)}")
    if not (math.isfinite(value) and 0 < value <= 86_400):
        raise ConfigError(f"{name} must be more than 0 and at most 86400 seconds, got {value}")
    return float(value)


def _text(value: Any, name: str) -> str:
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str) or not value or "\x00" in value:
        raise ConfigError(f"{name} must be a non-empty string, got {_shown(value)}")
    return value


def _prefix(value: Any, name: str) -> str:
    if not isinstance(value, str) or not value or any(c.isspace() for c in value) or len(value) > 32:
        raise ConfigError(f"{name} must be 1 to 32 characters without spaces, got {_shown(value)}")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[Any, str], str]:
    def parse(value: Any, name: str) -> str:
        if isinstance(value, str) and value.strip().lower() in choices:
            return value.strip().lower()
        raise ConfigError(f"{name} must be one of {', '.join(choices)}, got {_shown(value)}")

    return parse


def _shards(value: Any, name: str) -> int:
    if isinstance(value, str):
        value = int(value.strip(), 10) if value.strip().isdecimal() and len(value.strip()) < 7 else value
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_SHARDS:
        raise ConfigError(f"{name} must be 0 (Discord chooses) or a shard count of at least 1, got {_shown(value)}")
    return value


def _shard_ids(value: Any, name: str) -> tuple[int, ...]:
    """`0-3`, `0,2,5`, `1` (or in the file a list of numbers) as a sorted tuple of shard ids."""
    problem = ConfigError(f"{name} must be shard numbers like 0-3 or 0,2,5, got {_shown(value)}")
    if isinstance(value, int) and not isinstance(value, bool):
        value = [value]
    if isinstance(value, str):
        parts: list[Any] = []
        for part in value.split(",")[:MAX_SHARDS]:
            low, dash, high = part.strip().partition("-")
            if not (low.isdecimal() and (not dash or high.isdecimal())) or len(low) > 6 or len(high) > 6:
                raise problem
            if int(high or low) < int(low) or int(high or low) >= MAX_SHARDS:
                raise problem
            parts.extend(range(int(low), int(high or low) + 1))
        value = parts
    if not isinstance(value, list) or not value or len(value) > MAX_SHARDS:
        raise problem
    if any(isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < MAX_SHARDS for i in value):
        raise problem
    return tuple(sorted(set(value)))


def _store(value: Any, name: str) -> str:
    """A store URL, checked for its form only: the store module opens it. Only the scheme is
    ever shown back, since a PostgreSQL URL may hold a password."""
    if not isinstance(value, str):
        raise ConfigError(f"{name} must be a URL string (sqlite:///PATH or postgresql://…)")
    scheme = value.partition(":")[0].lower() if ":" in value else ""
    if value in ("sqlite:", "sqlite://"):
        return value  # the store's own spelling of its default: SQLite in the state directory
    if scheme == "sqlite":
        if not value.startswith("sqlite:///") or len(value) == len("sqlite:///") or "\x00" in value:
            raise ConfigError(f"{name} must be sqlite:///relative/path or sqlite:////absolute/path")
        return value
    if scheme in ("postgresql", "postgres"):
        if not value.lower().startswith(f"{scheme}://"):
            raise ConfigError(f"{name} must be postgresql://[user[:password]@]host[:port]/database")
        return value
    shown = f" (got a URL of scheme {scheme[:20]!r})" if scheme.isalnum() else ""
    raise ConfigError(f"{name} must be sqlite:///PATH or postgresql://…{shown}")


def redacted_store(url: str | None) -> str:
    """The store URL as a log may show it: a password (before the last @, or a `password=`
    parameter) replaced by ***. Errs towards hiding: a password may hold any character."""
    if url is None:
        return "SQLite in the state directory"
    scheme, sep, rest = url.partition("://")
    userinfo, at, host = rest.rpartition("@")
    if sep and at and ":" in userinfo:
        url = f"{scheme}://{userinfo.partition(':')[0]}:***@{host}"
    return re.sub(r"(?i)(password=)[^&]*", r"\1***", url)


def _store_shown(url: str | None) -> str:
    """The store as the start-up line shows it: a password hidden, an SQLite file's full path."""
    if url is None or url in ("sqlite:", "sqlite://"):
        from wordbot.bot.store import DEFAULT_FILE
        from wordbot.limits import state_dir

        return f"SQLite in the state directory ({state_dir() / DEFAULT_FILE})"
    if url.startswith("sqlite:///") and not url.startswith("sqlite:////"):
        return f"{url} (the file {os.path.abspath(url[len('sqlite:///') :])})"
    return redacted_store(url)


# -- the settings, and where each comes from ---------------------------------------------------


@dataclass(frozen=True)
class _Setting:
    key: str  # as the file writes it (a dotted key is a table: limits.k)
    field: str  # the BotConfig field
    parse: Callable[[Any, str], Any]
    option: bool = False  # whether `wordbot discord` has an option for it (--token-file for token_file)
    path: bool = False  # a file path: relative to the config file when written there
    number: bool = False  # a number: the file must write it as one (the environment has only strings)

    @property
    def env(self) -> str:
        return "WORDBOT_" + self.key.replace(".", "_").upper()


SETTINGS = (
    _Setting("token_file", "token_file", _text, option=True, path=True),
    _Setting("prefix", "prefix", _prefix, option=True),
    _Setting("model", "model", _text, option=True, path=True),
    _Setting("backend", "backend", _choice(("rnn", "ngram", "mix")), option=True),
    _Setting("server_models", "server_models", _text, option=True, path=True),
    _Setting("server_models_max", "server_models_max", _integer(1, 1000), option=True, number=True),
    _Setting("store", "store", _store, option=True),
    _Setting("shards", "shards", _shards, option=True, number=True),
    _Setting("shard_ids", "shard_ids", _shard_ids, option=True),
    _Setting("shard_count", "shard_count", _integer(1, MAX_SHARDS), option=True, number=True),
    _Setting("cooldown.commands", "cooldown_commands", _integer(1, 10_000), number=True),
    _Setting("cooldown.seconds", "cooldown_seconds", _seconds, number=True),
    _Setting("limits.k", "max_k", _integer(1, BOT_K[1]), number=True),
    _Setting("limits.words", "max_words", _integer(1, BOT_WORDS[1]), number=True),
    _Setting("limits.input_chars", "max_input_chars", _integer(1, BOT_MAX_INPUT_CHARS), number=True),
    _Setting("log_level", "log_level", _choice(LOG_LEVELS), option=True),
)
_BY_KEY = {s.key: s for s in SETTINGS}


def load(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    options: Mapping[str, Any] | None = None,
) -> BotConfig:
    """The settings: the TOML file at `path` (if any), then `environ`'s WORDBOT_… variables
    (default: os.environ), then `options` (BotConfig's field names, as argparse names the
    options; None means not given). Raises
    ConfigError, one line naming the key, for anything unknown, mistyped, out of range or
    inconsistent."""
    environ = os.environ if environ is None else environ
    options = options or {}
    values: dict[str, Any] = {}
    named: dict[str, str] = {}  # field -> how its winning source names it, for later messages
    if path is not None:
        for setting, value in _read_file(path):
            name = f"{os.fspath(path)}: {setting.key}"
            values[setting.field] = _in_file(setting, value, name, path)
            named[setting.field] = name
    if environ.get("WORDBOT_TOKEN"):
        raise ConfigError("WORDBOT_TOKEN is not read: the token comes from DISCORD_TOKEN or a token file")
    _check_variable_names(environ)
    for setting in SETTINGS:
        if environ.get(setting.env, "").strip():
            values[setting.field] = setting.parse(environ[setting.env].strip(), setting.env)
            named[setting.field] = setting.env
    for setting in SETTINGS:
        if options.get(setting.field) is not None:
            name = "--" + setting.field.replace("_", "-") if setting.option else setting.field
            values[setting.field] = setting.parse(options[setting.field], name)
            named[setting.field] = name
    config = BotConfig(**values)
    _check_shards(config, named)
    return config


# WORDBOT_ variables read elsewhere: not settings of the bot, but not typos either.
_OTHER_VARIABLES = ("WORDBOT_STATE_DIR", "WORDBOT_CACHE_DIR", "WORDBOT_TOKEN")


def _check_variable_names(environ: Mapping[str, str]) -> None:
    """Refuse a WORDBOT_ variable that is a near miss of a setting's (WORDBOT_PREFX), as the
    file refuses an unknown key: ignored, it would leave the setting at its default unseen.
    Names far from every setting's are left alone; they may belong to something else."""
    known = [setting.env for setting in SETTINGS] + list(_OTHER_VARIABLES)
    for name in sorted(environ):
        if name.startswith("WORDBOT_") and name not in known:
            close = difflib.get_close_matches(name, known, n=1, cutoff=0.85)
            if close:
                raise ConfigError(f"{name} is not read (did you mean {close[0]}?)")


def _read_file(path: str | os.PathLike[str]) -> list[tuple[_Setting, Any]]:
    """The file's settings, flattened to dotted keys; unknown keys refused with a suggestion."""
    where = os.fspath(path)
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_CONFIG_BYTES + 1)
        if len(data) > MAX_CONFIG_BYTES:
            raise ConfigError(f"cannot read config {where}: larger than {MAX_CONFIG_BYTES} bytes")
        # tomllib's messages give the line and column, never the line's text.
        table = tomllib.loads(data.decode("utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {where}: {exc.strerror or exc}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"cannot read config {where}: it is not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read config {where}: {exc}") from None
    found: list[tuple[_Setting, Any]] = []
    for key, value in _flatten(table):
        if key in ("token", "discord_token"):
            raise ConfigError(
                f"{where}: {key}: the token does not go in the config file; put it in a file of its own"
                " and name that file with token_file (or set DISCORD_TOKEN)"
            )
        if key not in _BY_KEY:
            close = difflib.get_close_matches(key, list(_BY_KEY), n=1, cutoff=0.6)
            hint = f" (did you mean {close[0]}?)" if close else f"; known keys: {', '.join(_BY_KEY)}"
            raise ConfigError(f"{where}: unknown key {_shown(key)[1:-1]}{hint}")
        found.append((_BY_KEY[key], value))
    return found


def _flatten(table: dict[str, Any], prefix: str = "") -> list[tuple[str, Any]]:
    flat: list[tuple[str, Any]] = []
    for key, value in table.items():
        dotted = f"{prefix}{key}"
        # A table of settings ([limits]) is read into dotted keys; any other table is a value.
        if isinstance(value, dict) and any(k.startswith(f"{dotted}.") for k in _BY_KEY):
            flat.extend(_flatten(value, f"{dotted}."))
        else:
            flat.append((dotted, value))
    return flat


def _in_file(setting: _Setting, value: Any, name: str, path: str | os.PathLike[str]) -> Any:
    """A value read from the file: parsed, and a relative path taken from the file's folder."""
    if setting.number and isinstance(value, str):
        raise ConfigError(f"{name} must be a number, not a string: write it without quotes")
    parsed = setting.parse(value, name)
    base = Path(path).parent
    if setting.path and not Path(parsed).is_absolute():
        return os.path.normpath(base / parsed)
    if setting.key == "store" and parsed.startswith("sqlite:///") and not parsed.startswith("sqlite:////"):
        return "sqlite:///" + os.path.normpath(base / parsed[len("sqlite:///") :])
    return parsed


def _check_shards(config: BotConfig, named: dict[str, str]) -> None:
    """Refuse the combinations discord.py would take and then misbehave with, naming the keys."""
    shards, ids, count = (named.get(f, f) for f in ("shards", "shard_ids", "shard_count"))
    if config.shards is not None and (config.shard_ids is not None or config.shard_count is not None):
        other = ids if config.shard_ids is not None else count
        raise ConfigError(
            f"{shards} runs every shard in one process; {other} is for a range of them: give one form, not both"
        )
    if config.shard_ids is not None and config.shard_count is None:
        raise ConfigError(
            f"{ids} needs the whole bot's shard count too (shard_count, WORDBOT_SHARD_COUNT, --shard-count)"
        )
    if config.shard_count is not None and config.shard_ids is None:
        raise ConfigError(
            f"{count} needs the shards this process runs (shard_ids, WORDBOT_SHARD_IDS, --shard-ids);"
            " to run every shard in one process, use shards (--shards N) alone"
        )
    if config.shard_ids is not None and config.shard_count is not None and config.shard_ids[-1] >= config.shard_count:
        raise ConfigError(
            f"{ids} goes up to shard {config.shard_ids[-1]}, but {count} is {config.shard_count}"
            f" (shards are numbered 0 to {config.shard_count - 1})"
        )


def describe(config: BotConfig) -> str:
    """One log line of what the bot runs with; no token, no password. An SQLite store is
    named with the file it opens, so an admin sees where the learned messages are kept
    (`sqlite:///PATH` is relative to where the bot starts, which surprises)."""
    shown = dataclasses.asdict(config) | {"store": _store_shown(config.store)}
    return ", ".join(f"{k}={v}" for k, v in shown.items() if v is not None)
