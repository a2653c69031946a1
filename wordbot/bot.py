"""The Discord face: a `commands.Cog` with `!next`, `!continue` and `!wordbot` (each also a
slash command), the reply and mention forms, `build_bot()` and `run()`.

A thin adapter over `Predictor`: it parses, asks the predictor off the event loop, and formats.
Intents: the default ones plus Message Content (privileged; enable it in the developer
portal), which the prefix, reply and mention forms need to read what users wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import re
import signal
import sys
import time
import unicodedata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands
from discord.ext.commands.view import StringView

from wordbot.errors import WordbotError

if TYPE_CHECKING:
    from wordbot.predictor import Prediction, Predictor

log = logging.getLogger(__name__)

MAX_INPUT_CHARS = 1000  # longer input gets a polite refusal
MAX_OUTPUT_CHARS = 2000  # Discord's limit for a message
ECHO_CHARS = 200  # how much of the user's text is quoted back in an answer
DEFAULT_K, MAX_K = 5, 10  # next words offered by !next
DEFAULT_WORDS, MAX_WORDS = 20, 100  # words written by !continue
COOLDOWN_RATE, COOLDOWN_PER = 5, 10.0  # per user: 5 commands per 10 seconds, all commands together

# Everything the bot sends goes out with this, whatever the text says: no @everyone, no
# role or user pings, not even the author of the message it replies to.
NO_MENTIONS = discord.AllowedMentions.none()

# What the bot needs in a channel: see it, read the message it replies to, answer (in threads too).
PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, read_message_history=True
)

NO_TOKEN_MESSAGE = (
    "no Discord bot token. Create a bot at https://discord.com/developers/applications "
    "(Bot -> Reset Token), then set DISCORD_TOKEN=<token> or pass --token-file PATH."
)

# A trailing "k=7" on !next, and "words=50" or just "50" on !continue, in the prefix form; also
# the command line's spellings ("-k 7", "-n 50") and "n=50".
_TRAILING_COUNT = re.compile(
    r"(?:^|\s+)(?:(?P<key>[a-z]+)=|--?(?P<flag>[a-z]+)(?:=|\s+))?(?P<count>\d{1,4})\s*$", re.IGNORECASE
)
_COUNT_NAMES = {"k": {"k"}, "words": {"words", "n"}}


def split_count(
    text: str, key: str, *, bare: bool, bare_max: int = MAX_WORDS, alone: bool = False
) -> tuple[str, int | None]:
    """Take a trailing count option off prefix-command text: `("deep learning k=3", "k")` ->
    `("deep learning", 3)`. A bare trailing number counts only when `bare` is true and
    it is at most `bare_max` ("born in 1984" keeps its year), and a number that is the whole
    text only when `alone` is true (a reply: "!continue 30" on another message)."""
    match = _TRAILING_COUNT.search(text)
    if match is None:
        return text, None
    named = match["key"] or match["flag"]
    if named and named.lower() not in _COUNT_NAMES.get(key, {key}):
        return text, None
    if not named and (not bare or (match.start() == 0 and not alone) or int(match["count"]) > bare_max):
        return text, None  # "!continue 1984", "!continue born in 1984": the number is the text
    return text[: match.start()], int(match["count"])


# Discord's markup for a mention of a user (<@id>, or <@!id> from older clients), a role (<@&id>)
# or a channel (<#id>), for a custom emoji (<:name:id>, animated <a:name:id>), for a slash
# command (</name:id>, </group sub:id>, </group subgroup sub:id>; names may be in any script) and
# for a timestamp (<t:seconds>, or <t:seconds:style> with one of discord.py's TimestampStyle).
_NAME = r"(?u:[-\w]{1,32})"
_MARKUP = re.compile(
    r"<(?P<kind>@[!&]?|#)(?P<id>\d{15,20})>|<a?:(?P<emoji>\w+):\d{15,20}>"
    rf"|</(?P<command>{_NAME}(?: {_NAME}){{0,2}}):\d{{15,20}}>"
    r"|<t:(?P<time>-?\d{1,17})(?::(?P<style>[tTdDfFsSR]))?>",
    re.ASCII,
)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")


def timestamp(seconds: int, style: str | None = None) -> str | None:
    """A `<t:seconds:style>` timestamp as plain text, the same for every reader: UTC, ISO dates,
    24-hour times (`2023-11-14 22:13 UTC`), where each client shows it in its reader's locale and
    time zone. The style keeps its parts: `t` `22:13 UTC`, `T` `22:13:20 UTC`, `d` and `D`
    `2023-11-14`, `F` `Tuesday 2023-11-14 22:13 UTC`, `S` `2023-11-14 22:13:20 UTC`; `f` (the
    default), `s` and `R` `2023-11-14 22:13 UTC` (a relative time, "2 years ago", depends on when
    it is read: the time itself is what the writer meant). None for a time `datetime` cannot hold
    (beyond the year 9999)."""
    try:
        when = datetime.datetime.fromtimestamp(seconds, tz=datetime.timezone.utc)
    except (OverflowError, OSError, ValueError):
        return None
    date, full = when.date().isoformat(), when.time().isoformat("seconds")  # not strftime: locale, year 999
    minutes = full[:5]
    if style in ("d", "D"):
        return date
    if style == "t":
        return f"{minutes} UTC"
    if style == "T":
        return f"{full} UTC"
    if style == "S":
        return f"{date} {full} UTC"
    weekday = f"{_WEEKDAYS[when.weekday()]} " if style == "F" else ""
    return f"{weekday}{date} {minutes} UTC"


# Characters that show as nothing besides whitespace and Unicode's format characters (Cf: the
# zero-width space, joiners and non-joiner, word joiner, byte-order mark, soft hyphen...):
# the combining grapheme joiner, variation selectors, the Hangul fillers and the braille blank.
_INVISIBLE = frozenset("\u034f\u115f\u1160\u2800\u3164\uffa0" + "".join(map(chr, range(0xFE00, 0xFE10))))


def invisible(char: str) -> bool:
    """Whether `char` shows as nothing and is not whitespace (a zero-width space, a joiner...)."""
    return char in _INVISIBLE or unicodedata.category(char) == "Cf"


def blank(text: str) -> bool:
    """Whether `text` shows as nothing: only whitespace and invisible characters (or nothing)."""
    return all(c.isspace() or invisible(c) for c in text)


def readable(text: str, message: discord.Message, client: discord.Client) -> str:
    """`text` as its writer saw it in their client: user, member, role and channel mentions as
    `@Name`, `@role`, `#channel`, custom emoji as `:name:`, slash command mentions as
    `/name` (`/group sub`), timestamps as their date and time (see `timestamp`). Names are looked up as discord.py's
    `Message.clean_content` and `commands.clean_content` do (the message's own mentions, then the
    cache); an id neither knows becomes `@unknown-user`, `@unknown-role` or `#unknown-channel`.
    `message` is the one `text` came from (for a slash command, discord.py's synthetic one: no
    mentions, its author the user who ran it). Mentions are not escaped: nothing can ping, as
    every message goes out with NO_MENTIONS."""
    guild = message.guild

    def user(id: int) -> str:
        known = (
            discord.utils.get(message.mentions, id=id)
            or (message.author if message.author.id == id else None)
            or (guild.get_member(id) if guild is not None else None)
            or client.get_user(id)
        )
        return f"@{known.display_name}" if known is not None else "@unknown-user"

    def role(id: int) -> str:
        known = discord.utils.get(message.role_mentions, id=id) or (guild.get_role(id) if guild is not None else None)
        if known is None:
            return "@unknown-role"
        return "@everyone" if known.is_default() else f"@{known.name}"  # that role's name is "@everyone"

    def channel(id: int) -> str:
        name = getattr(client.get_channel(id), "name", None)
        return f"#{name}" if name else "#unknown-channel"

    def replace(match: re.Match[str]) -> str:
        if match["emoji"] is not None:
            return f":{match['emoji']}:"
        if match["command"] is not None:
            return f"/{match['command']}"
        if match["time"] is not None:
            return timestamp(int(match["time"]), match["style"]) or match[0]
        kind, id = match["kind"], int(match["id"])
        return role(id) if kind == "@&" else channel(id) if kind == "#" else user(id)

    return _MARKUP.sub(replace, text)


# What markdown is made of, for cutting it: an escaped character, a bold delimiter, anything else.
_MARKDOWN_PIECE = re.compile(r"\\[\s\S]|\*\*|[\s\S]")


def fit(content: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """Cut `content` to Discord's message limit, marking the cut with "…". The cut keeps the
    markdown whole: never inside a backslash escape or a `**`, and a bold it falls inside is
    closed after the "…" (a bold just opened is cut off before it), so the rest of the message
    does not turn bold or show stray asterisks."""
    if len(content) <= limit:
        return content
    cut, closing = 0, ""  # the longest cut that fits so far, and what closes its bold
    bold, previous = False, ""
    for piece in _MARKDOWN_PIECE.finditer(content):
        close = "**" if bold else ""
        if piece.start() + len("…") + len(close) > limit:
            break
        if not (bold and previous == "**"):  # not just after a bold's opening: "**…**" says nothing
            cut, closing = piece.start(), close
        previous = piece[0]
        if previous == "**":
            bold = not bold
    return content[:cut] + "…" + closing


def echo(text: str) -> str:
    """The user's text as quoted back: its last ECHO_CHARS characters, markdown escaped."""
    text = " ".join(text.split())
    if len(text) > ECHO_CHARS:
        text = "…" + text[-ECHO_CHARS:].lstrip()
    return discord.utils.escape_markdown(text)


def plain(content: str) -> str:
    """The text of one of the bot's own answers without its formatting, so that `!continue` in
    reply to an answer continues the story rather than the markdown: the prompt of a `!next`
    answer, the prompt and continuation of a `!continue` one."""
    if " → " in content:
        content = content.split(" → ", 1)[0]
    for note in ("*(start of a message)*", "*(the model has nothing to add)*"):
        content = content.replace(note, "")
    content = re.sub(r"\\(.)", r"\1", content.replace("**", ""))  # escape_markdown's backslashes
    return content.lstrip("…").strip()


def tail(text: str, limit: int = MAX_INPUT_CHARS) -> str:
    """The last `limit` characters of `text`, from a word boundary: the end is what a
    prediction needs."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    return cut if text[-limit - 1].isspace() else re.sub(r"^\S*\s*", "", cut, count=1)


def percent(prob: float) -> str:
    return f"{prob:.0%}" if prob >= 0.005 else "<1%"


def format_next(text: str, predictions: list[Prediction]) -> str:
    """`deep learning is a → **subset** 31% · **neural** 12% · ...`"""
    prompt = "*(start of a message)*" if blank(text) else echo(text)
    if not predictions:
        return fit(f"{prompt} → I have no guess.")
    words = " · ".join(f"**{discord.utils.escape_markdown(word)}** {percent(prob)}" for word, prob in predictions)
    return fit(f"{prompt} → {words}")


def format_continuation(text: str, continuation: str) -> str:
    """The user's text plain, the model's continuation in bold after it."""
    prompt = "" if blank(text) else echo(text)
    written = continuation.strip()
    if not written:
        return fit(f"{prompt} *(the model has nothing to add)*".strip())
    bold = f"**{discord.utils.escape_markdown(written)}**"
    # The predictor says whether its text joins with a space ("is a test") or hugs ("'s").
    joiner = " " if prompt and continuation[:1].isspace() else ""
    return fit(f"{prompt}{joiner}{bold}")


# The commands' parameters, described for `!help` (and, through app_commands.describe, for the
# slash commands, whose option descriptions discord.py does not take from these).
NEXT_TEXT = commands.parameter(
    default="", displayed_default="nothing", description="the text so far (nothing: a message's first word)"
)
NEXT_K = commands.parameter(default=DEFAULT_K, description=f"how many words, at most {MAX_K} (!next ... k=7)")
CONTINUE_TEXT = commands.parameter(default="", displayed_default="nothing", description="the text to continue")
CONTINUE_WORDS = commands.parameter(
    default=DEFAULT_WORDS, description=f"how many words, at most {MAX_WORDS} (!continue ... 50)"
)


class NoText(commands.CommandError):
    """A command or mention replied to a message whose text the bot cannot use; the message
    says why, for the user."""


class WordbotCog(commands.Cog, name="wordbot"):
    """Next-word prediction and text continuation."""

    def __init__(
        self,
        bot: commands.Bot,
        predictor: Predictor,
        *,
        cooldown_rate: int = COOLDOWN_RATE,
        cooldown_per: float = COOLDOWN_PER,
    ) -> None:
        self.bot = bot
        self.predictor = predictor
        self.cooldown_rate, self.cooldown_per = cooldown_rate, cooldown_per
        # One budget per user shared by every command, `!help` and the mention form.
        self.cooldown = commands.CooldownMapping.from_cooldown(cooldown_rate, cooldown_per, commands.BucketType.user)
        self._warned_until: dict[int, float] = {}  # user id -> until when "slow down" was said
        self._mute_channels: set[int] = set()  # channels where the bot could not send, warned once

    async def cog_load(self) -> None:
        # `!help` is `!wordbot`, unless the bot has a help command of its own (this cog loaded
        # as an extension into another bot); build_bot() turns discord.py's default one off.
        if self.bot.help_command is None and self.bot.get_command("help") is None:
            self.about.aliases = [*self.about.aliases, "help"]

    # -- the commands --------------------------------------------------------------------

    @commands.hybrid_command(name="next")
    @app_commands.describe(text=NEXT_TEXT.description, k=NEXT_K.description)
    async def next_(
        self,
        ctx: commands.Context,
        *,
        text: str = NEXT_TEXT,
        k: commands.Range[int, 1, MAX_K] = NEXT_K,
    ) -> None:
        """The likeliest next words, with their probabilities (add k=10 for more)."""
        if ctx.interaction is None:
            text, count = split_count(text, "k", bare=False, alone=ctx.message.reference is not None)
            # In the prefix form discord.py stops at the free text; k comes only from "k=N".
            k = min(max(count, 1), MAX_K) if count is not None else DEFAULT_K
        text = await self.text_or_replied(ctx.message, self.user_text(text, ctx.message))
        if not await self.check_length(ctx, text):
            return
        await ctx.defer()
        predictions = await asyncio.to_thread(self.predictor.next_words, text, k)
        await self.respond(ctx, format_next(text, predictions))

    @commands.hybrid_command(name="continue")
    @app_commands.describe(text=CONTINUE_TEXT.description, words=CONTINUE_WORDS.description)
    async def continue_(
        self,
        ctx: commands.Context,
        *,
        text: str = CONTINUE_TEXT,
        words: commands.Range[int, 1, MAX_WORDS] = CONTINUE_WORDS,
    ) -> None:
        """Continues your text with words sampled from the model (a number up to 100 at the end sets how many)."""
        if ctx.interaction is None:
            text, count = split_count(text, "words", bare=True, alone=ctx.message.reference is not None)
            words = min(max(count, 1), MAX_WORDS) if count is not None else DEFAULT_WORDS
        text = await self.text_or_replied(ctx.message, self.user_text(text, ctx.message))
        if not await self.check_length(ctx, text):
            return
        await ctx.defer()
        continuation = await asyncio.to_thread(self.predictor.continue_text, text, words)
        await self.respond(ctx, format_continuation(text, continuation))

    @commands.hybrid_command(name="wordbot")
    async def about(self, ctx: commands.Context) -> None:
        """What this bot does, its commands, and the model it runs."""
        await self.respond(ctx, self.about_text("/" if ctx.interaction else ctx.clean_prefix))

    def about_text(self, prefix: str) -> str:
        lines = [
            "**wordbot** predicts the next word with a small recurrent language model.",
            f"`{prefix}next <text>` — the likeliest next words and their probabilities (`k=10` for up to {MAX_K}).",
            f"`{prefix}continue <text> [words]` — continues your text"
            f" ({DEFAULT_WORDS} words unless you say, at most {MAX_WORDS}).",
            "Reply to a message with just a command to use that message's text;"
            " mention me with some text (and a number of words, if you like) and I'll continue it.",
            f"Limits: {MAX_INPUT_CHARS:,} characters of text; {self.cooldown_rate} commands"
            f" per {self.cooldown_per:g} seconds for each user.",
            f"Model: {self.predictor.describe()}",
        ]
        return "\n".join(lines)

    @commands.Cog.listener()
    async def on_ready(self) -> None:
        # Fires again after every re-IDENTIFY; worth a line each time.
        me = self.bot.user
        log.info(
            "logged in as %s in %d servers; invite it with %s",
            me,
            len(self.bot.guilds),
            invite_url(self.bot.application_id or (me.id if me else 0)),
        )

    # -- the mention form ----------------------------------------------------------------

    @commands.Cog.listener()
    async def on_message(self, message: discord.Message) -> None:
        """`@wordbot some text` continues the text; as a reply with no text, the replied one."""
        me = self.bot.user
        if message.author.bot or me is None:
            return
        # Discord's @ autocomplete offers the bot's own role next to the bot; either means the bot.
        role = message.guild.self_role if message.guild is not None else None
        mention = re.compile(rf"<@!?{me.id}>" + (rf"|<@&{role.id}>" if role is not None else ""))
        # Only a mention written in the text counts: a reply to the bot pings it silently,
        # and that alone should not make it talk.
        if not mention.search(message.content):
            return
        if (await self.bot.get_context(message)).valid:
            return  # a command that happens to mention the bot: the command answers
        try:
            retry_after = self.cooldown.update_rate_limit(message)
            if retry_after:
                if self.first_warning(message.author.id, retry_after):
                    await self.send_reply(message, slow_down(retry_after))
                return
            # As with !continue, a number at the end says how many words.
            text, count = split_count(
                mention.sub(" ", message.content).strip(), "words", bare=True, alone=message.reference is not None
            )
            words = min(max(count, 1), MAX_WORDS) if count is not None else DEFAULT_WORDS
            text = self.user_text(text, message)
            if not text and message.reference is None and count is None:
                # Just "@wordbot": someone wondering what this bot is.
                prefix = self.bot.command_prefix if isinstance(self.bot.command_prefix, str) else "!"
                await self.send_reply(message, self.about_text(prefix))
                return
            text = await self.text_or_replied(message, text)
            if len(text) > MAX_INPUT_CHARS:
                await self.send_reply(message, too_long())
                return
            continuation = await asyncio.to_thread(self.predictor.continue_text, text, words)
            await self.send_reply(message, format_continuation(text, continuation))
        except NoText as exc:
            await self.send_reply(message, str(exc))
        except Exception:
            log.exception("the mention form failed for message %s", message.id)
            await self.apologise(message)

    # -- shared pieces -------------------------------------------------------------------

    async def cog_before_invoke(self, ctx: commands.Context) -> None:
        # Not a check: discord.py runs checks also to ask whether a command could run
        # (`can_run`), and asking must not spend the budget.
        bucket = self.cooldown.get_bucket(ctx.message)
        retry_after = self.cooldown.update_rate_limit(ctx.message)
        if retry_after and bucket is not None:
            raise commands.CommandOnCooldown(bucket, retry_after, commands.BucketType.user)

    @commands.Cog.listener()
    async def on_command_error(self, ctx: commands.Context, error: commands.CommandError) -> None:
        """Every command error ends here (having this listener silences discord.py's default)."""
        if isinstance(error, commands.CommandNotFound):
            return  # "!" followed by anything: not necessarily meant for us
        if isinstance(error, commands.CommandOnCooldown):
            # Said once per wait, not to every message of a burst: the warning must not become
            # the flood. A slash command always gets an answer (only its user sees it).
            if ctx.interaction is not None or self.first_warning(ctx.author.id, error.retry_after):
                await self.respond(ctx, slow_down(error.retry_after), quiet=True)
        elif isinstance(error, NoText):
            await self.respond(ctx, str(error), quiet=True)
        elif isinstance(error, commands.UserInputError):
            usage = f"{ctx.clean_prefix}{ctx.command.qualified_name} {ctx.command.signature}".strip()
            await self.respond(ctx, f"I couldn't read that. Usage: `{usage}`", quiet=True)
        elif isinstance(error, commands.CheckFailure):
            await self.respond(ctx, "That command isn't available here.", quiet=True)
        else:
            original = getattr(error, "original", error)
            log.error("command %s failed", ctx.command, exc_info=original)
            await self.apologise(ctx)

    def first_warning(self, user_id: int, retry_after: float) -> bool:
        """Whether to tell this user to slow down: once, until their wait is over."""
        now = time.monotonic()
        if self._warned_until.get(user_id, 0.0) > now:
            return False
        if len(self._warned_until) > 1000:
            self._warned_until = {u: t for u, t in self._warned_until.items() if t > now}
        self._warned_until[user_id] = now + retry_after
        return True

    def user_text(self, text: str, message: discord.Message) -> str:
        """What a user wrote in `message`, as the model gets it and the answer quotes it: markup
        made readable (see `readable`), and "" when nothing in it shows (zero-width spaces)."""
        return "" if blank(text) else readable(text, message, self.bot)

    async def text_or_replied(self, message: discord.Message, text: str) -> str:
        """`text`, or when it is empty and `message` replies to another, that message's text
        (made readable, as `user_text` does; its end, if it is long; the plain text, if it is
        one of the bot's own answers). Raises NoText when that message has no text that shows
        or cannot be read."""
        if not blank(text) or message.reference is None or message.reference.message_id is None:
            return text
        replied = message.reference.resolved
        if not isinstance(replied, discord.Message):
            try:
                replied = await message.channel.fetch_message(message.reference.message_id)
            except discord.HTTPException:
                raise NoText(
                    "I can't see the message you replied to (deleted, or I may not read this channel's history)."
                ) from None
        content = replied.content
        if self.bot.user is not None and replied.author.id == self.bot.user.id:
            content = plain(content)
        content = self.user_text(content, replied)
        if not content:
            raise NoText("The message you replied to has no text for me to work with.")
        return tail(content)

    async def check_length(self, ctx: commands.Context, text: str) -> bool:
        if len(text) <= MAX_INPUT_CHARS:
            return True
        await self.respond(ctx, too_long(), quiet=True)
        return False

    async def respond(self, ctx: commands.Context, content: str, *, quiet: bool = False) -> None:
        """Answer a command: a reply to the invoking message that pings nobody (for a slash
        command, the interaction response; `quiet` makes that one visible only to the user)."""
        content = fit(content)
        if ctx.interaction is not None:
            await ctx.send(content, allowed_mentions=NO_MENTIONS, ephemeral=quiet, suppress_embeds=True)
        else:
            await self.send_reply(ctx.message, content)

    async def send_reply(self, message: discord.Message, content: str) -> None:
        """Reply to `message`, pinging nobody and unfurling no link (an echoed URL). Where the bot
        may not send, it logs one line per channel (no traceback) and sends nothing: no apology
        that would fail the same way, no stream of 403s, which Discord counts against the bot.
        Without Read Message History, Discord refuses replies: then a plain message."""
        channel = message.channel
        may_send, may_reply = self.permissions_in(channel)
        if not may_send:
            self.cannot_send(channel, "it lacks the Send Messages permission")
            return
        # A deleted invoking message should not turn the answer into an error.
        reference = message.to_reference(fail_if_not_exists=False) if may_reply else None
        try:
            try:
                await self._send(channel, content, reference)
            except discord.Forbidden as exc:
                if exc.code != 160002 or reference is None:
                    raise
                await self._send(channel, content, None)  # replying needs Read Message History
        except discord.Forbidden as exc:
            self.cannot_send(channel, f"Discord answered {exc.status} {exc.text or ''}".strip())
            return
        self._mute_channels.discard(channel.id)

    async def _send(self, channel: Any, content: str, reference: discord.MessageReference | None) -> None:
        await channel.send(
            fit(content),
            reference=reference,  # type: ignore[arg-type]
            mention_author=False,
            allowed_mentions=NO_MENTIONS,
            suppress_embeds=True,
        )

    def permissions_in(self, channel: Any) -> tuple[bool, bool]:
        """(may send, may reply) in `channel`, as far as the cache knows: True where it cannot tell."""
        guild = getattr(channel, "guild", None)
        me = guild.me if guild is not None else None
        if me is None or not isinstance(channel, (discord.abc.GuildChannel, discord.Thread)):
            return True, True  # a DM, or a channel the cache does not hold: let Discord decide
        try:
            perms = channel.permissions_for(me)
        except discord.ClientException:  # a thread whose parent is not cached
            return True, True
        send = perms.send_messages_in_threads if isinstance(channel, discord.Thread) else perms.send_messages
        return send, perms.read_message_history

    def cannot_send(self, channel: Any, why: str) -> None:
        if channel.id in self._mute_channels:
            return
        self._mute_channels.add(channel.id)
        guild = getattr(channel, "guild", None)
        where = f"#{getattr(channel, 'name', channel.id)}" + (f" in {guild.name}" if guild is not None else "")
        log.warning("cannot send messages in %s: %s; staying quiet there until it can", where, why)

    async def apologise(self, target: commands.Context | discord.Message) -> None:
        """A short apology in the channel; never the traceback (that goes to the log)."""
        text = "Sorry, something went wrong on my side. Please try again."
        try:
            if isinstance(target, commands.Context):
                await self.respond(target, text)
            else:
                await self.send_reply(target, text)
        except discord.HTTPException:
            log.exception("could not even apologise")


def slow_down(retry_after: float) -> str:
    return f"Slow down a little, please — try again in {max(retry_after, 1):.0f} s."


def too_long() -> str:
    return f"That's a bit long for me: please keep it under {MAX_INPUT_CHARS:,} characters."


def invite_url(application_id: int) -> str:
    """The link that adds the bot to a server with the permissions it needs and its slash commands."""
    return discord.utils.oauth_url(application_id, permissions=PERMISSIONS, scopes=("bot", "applications.commands"))


def intents() -> discord.Intents:
    """The default intents plus Message Content: the prefix, reply and mention forms read text."""
    wanted = discord.Intents.default()
    wanted.message_content = True
    return wanted


def unhide_command(rest: str) -> str:
    """The text after a command prefix without the invisible characters before the command's name
    and between it and its text: `"\u200bnext\u200bhello"` -> `"next hello"`, `"next\u200b"` ->
    `"next "`; `rest` itself where there are none. Pasted text brings them, and discord.py, which
    splits at whitespace only, would take `next\u200bhello` for a command it does not know."""

    def gap(start: int) -> int:  # where the run of whitespace and invisible characters from `start` ends
        while start < len(rest) and (rest[start].isspace() or invisible(rest[start])):
            start += 1
        return start

    name_start = gap(0)
    name_end = name_start
    while name_end < len(rest) and not (rest[name_end].isspace() or invisible(rest[name_end])):
        name_end += 1
    text_start = gap(name_end)
    if not any(map(invisible, rest[:text_start])):
        return rest
    before = "".join(c for c in rest[:name_start] if c.isspace())  # kept: strip_after_prefix decides
    between = "".join(c for c in rest[name_end:text_start] if c.isspace()) or " "
    return before + rest[name_start:name_end] + between + rest[text_start:]


class _VisibleCommandNames:
    """Mixed into the bot's class: `!next\u200bhello` runs `!next hello` (see `unhide_command`).
    Bot.get_context is where discord.py reads the command's name (and `process_commands`, the
    mention form and `ctx.valid` all go through it); the message itself is left as it was."""

    async def get_context(self, origin: Any, /, *, cls: Any = discord.utils.MISSING) -> Any:
        ctx = await super().get_context(origin, cls=cls)  # type: ignore[misc]
        if ctx.prefix is None or not isinstance(origin, discord.Message):
            return ctx  # not a prefix command; a slash command's options come parsed
        rest = origin.content[len(ctx.prefix) :]  # Bot.get_context matched the prefix at the start
        visible = unhide_command(rest)
        if visible == rest:
            return ctx
        # What Bot.get_context does after the prefix, on the text without those characters.
        view = StringView(ctx.prefix + visible)
        view.skip_string(ctx.prefix)
        if self.strip_after_prefix:  # type: ignore[attr-defined]
            view.skip_ws()
        ctx.view = view
        ctx.invoked_with = view.get_word()
        ctx.command = self.all_commands.get(ctx.invoked_with)  # type: ignore[attr-defined]
        return ctx


class WordBot(_VisibleCommandNames, commands.Bot):
    """The bot `build_bot` makes: a `commands.Bot` that sees through invisible characters
    around a command's name."""


class ShardedWordBot(_VisibleCommandNames, commands.AutoShardedBot):
    """`WordBot`, auto-sharded."""


def build_bot(
    predictor: Predictor,
    *,
    prefix: str = "!",
    shards: int | None = None,
    sync_commands: bool = True,
    cooldown_rate: int = COOLDOWN_RATE,
    cooldown_per: float = COOLDOWN_PER,
    **options: Any,
) -> commands.Bot:
    """The bot, ready for `bot.start(token)`. `shards`: None runs one connection; 0 runs
    `AutoShardedBot` with as many shards as Discord recommends; N > 0 runs exactly N.
    `options` go to discord.py (e.g. `guild_ready_timeout` in tests)."""
    bot_class: type[commands.Bot] = WordBot
    if shards is not None:
        bot_class = ShardedWordBot
        if shards > 0:
            options["shard_count"] = shards
    bot = bot_class(
        command_prefix=prefix,
        intents=intents(),
        allowed_mentions=NO_MENTIONS,
        case_insensitive=True,
        strip_after_prefix=True,
        help_command=None,  # `!help` is the cog's own `!wordbot`: short, a reply, rate-limited
        **options,
    )

    async def setup_hook() -> None:
        await bot.add_cog(WordbotCog(bot, predictor, cooldown_rate=cooldown_rate, cooldown_per=cooldown_per))
        if sync_commands:
            await sync_if_changed(bot)

    bot.setup_hook = setup_hook  # type: ignore[method-assign]
    return bot


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


async def setup(bot: commands.Bot) -> None:
    """Extension entry point: `await bot.load_extension("wordbot.bot")` adds the commands,
    running the bundled default model."""
    from wordbot.predictor import Predictor

    predictor = await asyncio.to_thread(Predictor.load, None)
    await bot.add_cog(WordbotCog(bot, predictor))


# The shape of a bot token (three base64url parts), to recognise one passed where a path goes.
_TOKEN_SHAPE = re.compile(r"[\w-]{20,}\.[\w-]{4,}\.[\w-]{20,}")


def read_token(token_file: str | os.PathLike[str] | None = None) -> str | None:
    """The token from `token_file` if given, else from DISCORD_TOKEN; None when there is none.
    Raises WordbotError when the file cannot be read or what it holds cannot be a token
    (the message names the file, never what is in it). Quotes around the token and a
    leading "Bot " (as in the Authorization header) are taken off."""
    if token_file is not None:
        if _TOKEN_SHAPE.fullmatch(os.fspath(token_file)) and not Path(token_file).exists():
            # `--token-file <the token>`: echoing the "path" back would print the token.
            raise WordbotError(
                "--token-file takes the path of a file that holds the token, not the token itself"
                " (it is now in your shell history: consider resetting it in the developer portal)"
            )
        where = f"the token file {os.fspath(token_file)}"
        try:
            token = Path(token_file).read_text(encoding="utf-8").strip()
        except UnicodeDecodeError:
            raise WordbotError(f"cannot read {where}: it is not UTF-8 text") from None
        except OSError as exc:
            raise WordbotError(f"cannot read {where}: {exc.strerror or exc}") from None
    else:
        where = "DISCORD_TOKEN"
        token = os.environ.get("DISCORD_TOKEN", "").strip()
    if len(token) > 1 and token[0] == token[-1] and token[0] in "'\"":
        token = token[1:-1].strip()
    if token[:4].lower() == "bot ":
        token = token[4:].strip()
    # A token is printable ASCII; anything else would fail deep inside the HTTP client.
    if token and not (token.isascii() and token.isprintable() and not any(c.isspace() for c in token)):
        raise WordbotError(f"{where} does not hold a Discord bot token (it has spaces or other characters)")
    return token or None


def check_options(prefix: str, shards: int | None) -> None:
    """Raise WordbotError for options discord.py would take and then misbehave with."""
    if shards is not None and shards < 0:
        raise WordbotError(f"--shards must be 0 (Discord chooses) or a shard count of at least 1, got {shards}")
    if not prefix or any(c.isspace() for c in prefix):
        raise WordbotError(f"--prefix must be one or more characters without spaces, got {prefix!r}")


def run(
    model: str | os.PathLike[str] | None = None,
    prefix: str = "!",
    token_file: str | os.PathLike[str] | None = None,
    shards: int | None = None,
    backend: str | None = None,
) -> int:
    """`wordbot discord`: load the model, connect, answer until Ctrl-C. Returns an exit status;
    problems a user can fix are one line on stderr, never a traceback, never the token."""
    try:
        return _run(model, prefix, token_file, shards, backend)
    except WordbotError as exc:
        print(f"wordbot: error: {exc}", file=sys.stderr)
        return 2


def _run(
    model: str | os.PathLike[str] | None,
    prefix: str,
    token_file: str | os.PathLike[str] | None,
    shards: int | None,
    backend: str | None,
) -> int:
    check_options(prefix, shards)
    token = read_token(token_file)
    if token is None:
        raise WordbotError(NO_TOKEN_MESSAGE)

    from wordbot.predictor import Predictor

    try:
        predictor = Predictor.load(model, backend=backend)
    except (ValueError, OSError) as exc:
        raise WordbotError(str(exc)) from None

    bot = build_bot(predictor, prefix=prefix, shards=shards)
    discord.utils.setup_logging(level=logging.INFO, root=True)
    try:
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
    gateway gets a close frame and the bot goes offline at once, not after a heartbeat timeout."""
    loop = asyncio.get_running_loop()
    closing: list[asyncio.Task[None]] = []

    def on_sigterm() -> None:
        log.info("SIGTERM: closing the connection to Discord")
        if not closing:
            closing.append(loop.create_task(bot.close()))

    # Not on Windows, nor outside the main thread.
    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
        loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    async with bot:
        await bot.start(token)


def _fail(message: str) -> int:
    print(f"wordbot: error: {message}", file=sys.stderr)
    return 1
