"""Starting the bot: the `commands.Bot` that `build_bot` makes (intents, sharding, slash command
sync), the token, and `run()` for `wordbot discord`, which closes cleanly on Ctrl-C and SIGTERM.
Problems a user can fix before connecting are raised as `WordbotError` for the CLI to report."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import json
import logging
import os
import re
import signal
import stat
import sys
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands
from discord.ext.commands.view import StringView

from wordbot.bot.cog import COOLDOWN_PER, COOLDOWN_RATE, NO_MENTIONS, WordbotCog
from wordbot.bot.communities import Communities
from wordbot.bot.config import BotConfig, describe, load
from wordbot.bot.learning import LearningCog
from wordbot.bot.parse import RAW_LIMIT, unhide_command
from wordbot.bot.server_models import ServedCommunities, ServerModels
from wordbot.bot.store import open_store
from wordbot.bounded import shown
from wordbot.errors import WordbotError
from wordbot.threads import one_blas_thread

if TYPE_CHECKING:
    from wordbot.bot.store import Store
    from wordbot.predictor import Predictor

log = logging.getLogger("wordbot.bot")

NO_TOKEN_MESSAGE = (
    "no Discord bot token. Create a bot at https://discord.com/developers/applications "
    "(Bot -> Reset Token), then set DISCORD_TOKEN=<token> or pass --token-file PATH."
)

MAX_TOKEN_FILE_BYTES = 1024  # a token is under 200 characters; room for quotes, "Bot " and a newline


def intents() -> discord.Intents:
    """The default intents plus Message Content: the prefix, reply and mention forms read text."""
    wanted = discord.Intents.default()
    wanted.message_content = True
    return wanted


class _VisibleCommandNames:
    """Mixed into the bot's class: a message's text is bounded (`parse.RAW_LIMIT`) before
    discord.py reads its arguments, and `!next\u200bhello` runs `!next hello` (see
    `unhide_command`). Bot.get_context is where discord.py reads the command's name (and
    `process_commands`, the mention form and `ctx.valid` all go through it); the message itself
    is left as it was."""

    async def get_context(self, origin: Any, /, *, cls: Any = discord.utils.MISSING) -> Any:
        ctx = await super().get_context(origin, cls=cls)  # type: ignore[misc]
        if ctx.prefix is None or not isinstance(origin, discord.Message):
            return ctx  # not a prefix command; a slash command's options come parsed
        rest = origin.content[len(ctx.prefix) : len(ctx.prefix) + RAW_LIMIT + 1]  # the prefix is at the start
        visible = unhide_command(rest)
        if visible == rest and len(origin.content) <= len(ctx.prefix) + RAW_LIMIT:
            return ctx
        # What Bot.get_context does after the prefix, on the bounded text without those characters.
        view = StringView(ctx.prefix + visible)
        view.skip_string(ctx.prefix)
        if self.strip_after_prefix:  # type: ignore[attr-defined]
            view.skip_ws()
        ctx.view = view
        ctx.invoked_with = view.get_word()
        ctx.command = self.all_commands.get(ctx.invoked_with)  # type: ignore[attr-defined]
        return ctx


class WordBot(_VisibleCommandNames, commands.Bot):
    """The bot `build_bot` makes: a `commands.Bot` that bounds what it reads and sees through
    invisible characters around a command's name."""


class ShardedWordBot(_VisibleCommandNames, commands.AutoShardedBot):
    """`WordBot`, auto-sharded."""


def build_bot(
    predictor: Predictor,
    *,
    prefix: str = "!",
    shards: int | None = None,
    shard_ids: tuple[int, ...] | None = None,
    sync_commands: bool = True,
    cooldown_rate: int = COOLDOWN_RATE,
    cooldown_per: float = COOLDOWN_PER,
    store: Store | None = None,
    server_models: ServerModels | None = None,
    **options: Any,
) -> commands.Bot:
    """The bot, ready for `bot.start(token)`. `shards`: None runs one connection; 0 runs
    `AutoShardedBot` with as many shards as Discord recommends; N > 0 runs exactly N. With
    `shard_ids`, `shards` is the whole bot's count and this process runs only those shards.
    `store`: where it keeps what servers let it learn (see `learning.py`); None: it learns
    nothing. `server_models`: the per-server models (`--server-models DIR`). `options` go to
    discord.py (e.g. `guild_ready_timeout` in tests) and to the cog (`max_k`, `max_words`,
    `max_input_chars`)."""
    cog_options = {key: options.pop(key) for key in ("max_k", "max_words", "max_input_chars") if key in options}
    bot = _bot_class(shards, shard_ids, options)(
        command_prefix=prefix,
        intents=intents(),
        allowed_mentions=NO_MENTIONS,
        case_insensitive=True,
        strip_after_prefix=True,
        help_command=None,  # `!help` is the cog's own `!wordbot`: short, a reply, rate-limited
        **options,
    )

    async def setup_hook() -> None:
        await bot.add_cog(
            WordbotCog(
                bot,
                predictor,
                cooldown_rate=cooldown_rate,
                cooldown_per=cooldown_per,
                server_models=server_models,
                **cog_options,
            )
        )
        if store is not None:
            await _add_learning(bot, predictor, store, server_models)
        if sync_commands:
            await sync_if_changed(bot)

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


def _bot_class(shards: int | None, shard_ids: tuple[int, ...] | None, options: dict[str, Any]) -> type[commands.Bot]:
    """One connection, or shards (`options` get their count and ids)."""
    if shards is None:
        return WordBot
    if shards > 0:
        options["shard_count"] = shards
    if shard_ids is not None:
        options["shard_ids"] = list(shard_ids)
    return ShardedWordBot


async def _add_learning(bot: commands.Bot, predictor: Predictor, store: Store,
                        server_models: ServerModels | None) -> None:  # fmt: skip
    # With server models, server memories a server model's memory can follow.
    communities = ServedCommunities if server_models is not None else Communities
    learning = LearningCog(bot, predictor, store, communities=communities)
    # Several processes on one PostgreSQL store: a DM `forget me` that another one gets drops
    # those messages here too. Listening starts before the memories are rebuilt (cog_load).
    listen = getattr(store, "listen_forgets", None)  # SQLite: one process, nothing to hear
    if listen is not None:
        await asyncio.to_thread(listen, learning.communities.drop)
    await bot.add_cog(learning)


def _command_key(command: dict[str, Any]) -> str:
    # Normalise a command the way discord.py parses Discord's answer, so that the local
    # definition and the registered one compare equal when nothing changed.
    options = [
        app_commands.Argument(parent=None, data=option).to_dict()  # type: ignore[arg-type]
        for option in command.get("options", [])
    ]
    return json.dumps([command["name"], command.get("description", ""), options], sort_keys=True)


async def sync_if_changed(bot: commands.Bot) -> bool:
    """Register the slash commands with Discord, but only when they differ from what is
    registered: a restart must not spend the daily command-update limit. Returns whether it
    synced. A failure (e.g. the bot was invited without the applications.commands scope) is
    logged and the prefix commands keep working."""
    try:
        registered = await bot.http.get_global_commands(bot.application_id)  # type: ignore[arg-type]
        local = [command.to_dict(bot.tree) for command in bot.tree.get_commands()]
        if sorted(map(_command_key, registered)) == sorted(map(_command_key, local)):
            log.info("slash commands are up to date")
            return False
        await bot.tree.sync()
        log.info("synced %d slash commands", len(local))
        return True
    except discord.HTTPException:
        log.exception("could not sync slash commands; the prefix commands still work")
        return False


# The shape of a bot token (three base64url parts), to recognise one passed where a path goes.
_TOKEN_SHAPE = re.compile(r"[\w-]{20,}\.[\w-]{4,}\.[\w-]{20,}")


def read_token(token_file: str | os.PathLike[str] | None = None) -> str | None:
    """The token from `token_file` if given, else from DISCORD_TOKEN; None when there is none.
    Raises WordbotError when the file cannot be read or what it holds cannot be a token
    (the message names the file, never what is in it). Quotes around the token and a
    leading "Bot " (as in the Authorization header) are taken off."""
    if token_file is not None:
        if _TOKEN_SHAPE.fullmatch(os.fspath(token_file)) and not os.path.exists(token_file):
            # `--token-file <the token>`: echoing the "path" back would print the token.
            raise WordbotError(
                "--token-file takes the path of a file that holds the token, not the token itself"
                " (it is now in your shell history: consider resetting it in the developer portal)"
            )
        where = f"the token file {os.fspath(token_file)}"
        token = _token_text(_read_small_file(token_file, where), where)
    else:
        where = "DISCORD_TOKEN"
        token = os.environ.get("DISCORD_TOKEN", "").strip()
    # An environment file's line (`DISCORD_TOKEN=...`, as systemd's EnvironmentFile= and
    # .env files write it) copied whole into the token file.
    token = _ENV_ASSIGNMENT.sub("", token, count=1).strip()
    if len(token) > 1 and token[0] == token[-1] and token[0] in "'\"":
        token = token[1:-1].strip()
    if token[:4].lower() == "bot ":
        token = token[4:].strip()
    # A token is printable ASCII; anything else would fail deep inside the HTTP client.
    if token and not (token.isascii() and token.isprintable() and not any(c.isspace() for c in token)):
        raise WordbotError(f"{where} does not hold a Discord bot token (it has spaces or other characters)")
    return token or None


_ENV_ASSIGNMENT = re.compile(r"^(?:export\s+)?DISCORD_TOKEN\s*=\s*")


def _token_text(data: bytes, where: str) -> str:
    """A token file's text: UTF-8, with or without a byte-order mark, or UTF-16 with one
    (Notepad saves both), stripped of surrounding blanks."""
    try:
        if data[:2] in (codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE):
            return data.decode("utf-16").strip()
        return data.decode("utf-8-sig").strip()
    except UnicodeDecodeError:
        raise WordbotError(f"cannot read {where}: it is not UTF-8 text") from None


def _read_small_file(path: str | os.PathLike[str], where: str) -> bytes:
    """The bytes of `path`, which must be a regular file of at most MAX_TOKEN_FILE_BYTES: a
    device (/dev/zero), a pipe or a directory is refused before anything is read from it."""
    try:
        # O_NONBLOCK: opening a FIFO with no writer must not hang; fstat below refuses it.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise WordbotError(f"cannot read {where}: {exc.strerror or exc}") from None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise WordbotError(f"cannot read {where}: it is not a regular file (give the file that holds the token)")
        data = os.read(fd, MAX_TOKEN_FILE_BYTES + 1)
    except OSError as exc:
        raise WordbotError(f"cannot read {where}: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > MAX_TOKEN_FILE_BYTES:
        raise WordbotError(
            f"{where} is larger than {MAX_TOKEN_FILE_BYTES} bytes: it should hold only the token (under 200 characters)"
        )
    return data


def run(config: BotConfig | None = None, /, **settings: Any) -> int:
    """`wordbot discord`: load the model, connect, answer until Ctrl-C or SIGTERM. Returns an exit
    status. `config` (from `wordbot.bot.config.load`; default: the defaults and the environment)
    with `settings` (BotConfig's fields) on top. What a user can fix before connecting (settings,
    the token, the model) is raised as WordbotError, which `wordbot.cli` reports as one line with
    status 2; what Discord refuses is one line on stderr and status 1. Never a traceback, never
    the token."""
    if config is not None and settings:
        raise TypeError("run() takes a BotConfig or settings, not both")
    config = config or load(options=settings)
    if config.server_models is not None and not os.path.isdir(config.server_models):
        raise WordbotError(f"server_models: {shown(config.server_models)} is not a directory")
    token = read_token(config.token_file)
    if token is None:
        raise WordbotError(NO_TOKEN_MESSAGE)

    from wordbot.predictor import Predictor

    one_blas_thread()
    try:
        predictor = Predictor.load(config.model, backend=config.backend)
    except OSError as exc:  # not a ModelError: the loader met the file system (a WordbotError passes as it is)
        raise WordbotError(str(exc)) from None

    opened = open_store(config.store)  # a StoreError is a WordbotError: one line, status 2
    bot = build_bot(
        predictor,
        prefix=config.prefix,
        shards=config.shard_count if config.shard_ids is not None else config.shards,
        shard_ids=config.shard_ids,
        cooldown_rate=config.cooldown_commands,
        cooldown_per=config.cooldown_seconds,
        max_k=config.max_k,
        max_words=config.max_words,
        max_input_chars=config.max_input_chars,
        store=opened,
        server_models=None
        if config.server_models is None
        else ServerModels(config.server_models, capacity=config.server_models_max),
    )
    discord.utils.setup_logging(level=getattr(logging, config.log_level.upper()), root=True)
    log.info("starting with %s", describe(config))
    try:
        with contextlib.closing(opened):
            asyncio.run(_serve(bot, token))
    except KeyboardInterrupt:
        pass  # Ctrl-C: asyncio.run has cancelled the bot, which closed its connections
    except discord.LoginFailure:
        return _fail("Discord rejected the token; copy it again from the developer portal (Bot -> Reset Token).")
    except discord.PrivilegedIntentsRequired:
        return _fail(
            "enable the Message Content intent for this bot in the developer portal"
            " (Bot -> Privileged Gateway Intents), then start it again."
        )
    except (aiohttp.ClientError, OSError, asyncio.TimeoutError, discord.GatewayNotFound, discord.HTTPException) as exc:
        # No network, DNS, a firewall, Discord down: the reason in one line, not aiohttp's traceback.
        reason = " ".join(str(exc).split()) or type(exc).__name__
        return _fail(f"cannot reach Discord: {reason}")
    return 0


async def _serve(bot: commands.Bot, token: str) -> None:
    """`bot.run()`, but SIGTERM (systemd, docker stop, kill) closes the bot as Ctrl-C does: the
    task that reads the gateway is cancelled first, then `bot.close()` sends close code 1000, and
    Discord shows the bot offline at once. (Calling `bot.close()` while that task still reads
    makes it answer the close frame with 4000, a code that says "reconnecting".)"""
    loop = asyncio.get_running_loop()
    async with bot:  # on the way out, bot.close(): code 1000
        serving = asyncio.ensure_future(bot.start(token))
        terminated: list[bool] = []

        def on_sigterm() -> None:
            log.info("SIGTERM: closing the connection to Discord")
            terminated.append(True)
            serving.cancel()

        # Not on Windows, nor outside the main thread.
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            loop.add_signal_handler(signal.SIGTERM, on_sigterm)
        try:
            await serving
        except asyncio.CancelledError:
            if not terminated:
                raise  # Ctrl-C or a caller's cancellation: theirs to handle


def _fail(message: str) -> int:
    print(f"wordbot: error: {message}", file=sys.stderr)
    return 1
