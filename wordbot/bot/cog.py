"""The bot's commands: `!next`, `!continue` and `!wordbot` (each also a slash command) and the
mention form, in one `commands.Cog`. Every form goes the same way: the raw text is bounded and
parsed (`parse.py`), the `Prompt` converter hands the command a `Request`, and `answer` asks the
predictor off the event loop and replies (`render.py` formats)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from wordbot.bot.health import StoreUnavailable
from wordbot.bot.parse import RAW_LIMIT, Request, bound, parse_prompt, squeeze, without_mentions
from wordbot.bot.render import (
    blank,
    fit,
    format_continuation,
    format_next,
    plain,
    readable,
    slow_down,
    tail,
    too_long,
)
from wordbot.bot.subcommands import Subcommands
from wordbot.limits import BOT_K, BOT_MAX_INPUT_CHARS, BOT_WORDS, DEFAULT_K

if TYPE_CHECKING:
    from wordbot.bot.server_models import ServerModels
    from wordbot.predictor import Predictor

log = logging.getLogger("wordbot.bot")

MAX_K = BOT_K[1]
DEFAULT_WORDS, MAX_WORDS = BOT_WORDS
COOLDOWN_RATE, COOLDOWN_PER = 5, 10.0  # per user: 5 commands per 10 seconds, all commands together

# Everything the bot sends goes out with this, whatever the text says: no @everyone, no
# role or user pings, not even the author of the message it replies to.
NO_MENTIONS = discord.AllowedMentions.none()
DATABASE_DOWN = "My database is unreachable just now, so I can't change that: please try again in a minute."

# What the bot needs in a channel: see it, read the message it replies to, answer (in threads too).
PERMISSIONS = discord.Permissions(
    view_channel=True, send_messages=True, send_messages_in_threads=True, read_message_history=True
)


def invite_url(application_id: int) -> str:
    """The link that adds the bot to a server with the permissions it needs and its slash commands."""
    return discord.utils.oauth_url(application_id, permissions=PERMISSIONS, scopes=("bot", "applications.commands"))


Reply = Callable[..., Awaitable[None]]  # reply(content, quiet=False)


class Prompt(commands.Converter[Request]):
    """The free text of a command as a `Request`. In the prefix form discord.py hands over the
    rest of the message: it is bounded, its whitespace squeezed, and a trailing count ("k=7",
    "50") taken off it (see `parse.parse_prompt`). A slash command's options come parsed."""

    def __init__(self, key: str, *, bare: bool) -> None:
        self.key, self.bare = key, bare

    async def convert(self, ctx: commands.Context, argument: str) -> Request:
        if ctx.interaction is not None:
            return Request(squeeze(bound(argument)).strip())
        return parse_prompt(argument, self.key, bare=self.bare, alone=ctx.message.reference is not None)


# The commands' parameters, described for `!help` (and, through app_commands.describe, for the
# slash commands, whose option descriptions discord.py does not take from these).
NEXT_TEXT = commands.parameter(
    converter=Prompt("k", bare=False),
    default=Request(""),
    displayed_default="nothing",
    description="the text so far (nothing: a message's first word)",
)
NEXT_K = commands.parameter(default=DEFAULT_K, description=f"how many words, at most {MAX_K} (!next ... k=7)")
CONTINUE_TEXT = commands.parameter(
    converter=Prompt("words", bare=True),
    default=Request(""),
    displayed_default="nothing",
    description="the text to continue",
)
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
        max_k: int = MAX_K,
        max_words: int = MAX_WORDS,
        max_input_chars: int = BOT_MAX_INPUT_CHARS,
        server_models: ServerModels | None = None,
    ) -> None:
        self.bot = bot
        self.predictor = predictor
        self.server_models = server_models  # `wordbot discord --server-models DIR`
        self.cooldown_rate, self.cooldown_per = cooldown_rate, cooldown_per
        # A bot's own limits (`wordbot discord --config`), within wordbot.limits' bounds.
        self.max_k, self.max_words, self.max_input_chars = max_k, max_words, max_input_chars
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
        self, ctx: commands.Context, *, text: Request = NEXT_TEXT, k: commands.Range[int, 1, MAX_K] = NEXT_K
    ) -> None:
        """The likeliest next words, with their probabilities (add k=10 for more)."""
        await self.answer_command(ctx, text, k, self.next_words, DEFAULT_K, self.max_k)

    @commands.hybrid_command(name="continue")
    @app_commands.describe(text=CONTINUE_TEXT.description, words=CONTINUE_WORDS.description)
    async def continue_(
        self,
        ctx: commands.Context,
        *,
        text: Request = CONTINUE_TEXT,
        words: commands.Range[int, 1, MAX_WORDS] = CONTINUE_WORDS,
    ) -> None:
        """Continues your text with words sampled from the model (a number up to 100 at the end sets how many)."""
        await self.answer_command(ctx, text, words, self.continuation, DEFAULT_WORDS, self.max_words)

    @commands.hybrid_group(name="wordbot", fallback="about", invoke_without_command=True, case_insensitive=True)
    async def about(self, ctx: commands.Context) -> None:
        """What this bot does, its commands, and the model it runs."""
        await self.respond(ctx, self.about_text("/" if ctx.interaction else ctx.clean_prefix))

    # What the bot learns and forgets: the bodies are in subcommands.py.
    listen = about.command(name="listen")(Subcommands.listen)
    unlisten = about.command(name="unlisten")(Subcommands.unlisten)
    channels = about.command(name="channels")(Subcommands.channels)
    forget = about.command(name="forget")(Subcommands.forget)
    ignore = about.command(name="ignore")(Subcommands.ignore)
    unignore = about.command(name="unignore")(Subcommands.unignore)
    stats = about.command(name="stats")(Subcommands.stats)
    learn = about.command(name="learn")(Subcommands.learn)
    keep = about.command(name="keep")(Subcommands.keep)
    cap = about.command(name="cap")(Subcommands.cap)

    def about_text(self, prefix: str) -> str:
        lines = [
            "**wordbot** predicts the next word with a small recurrent language model.",
            f"`{prefix}next <text>` — the likeliest next words and their probabilities"
            f" (`k={self.max_k}` for up to {self.max_k}).",
            f"`{prefix}continue <text> [words]` — continues your text"
            f" ({min(DEFAULT_WORDS, self.max_words)} words unless you say, at most {self.max_words}).",
            "Reply to a message with just a command to use that message's text;"
            " mention me with some text (and a number of words, if you like) and I'll continue it.",
            f"Limits: {self.max_input_chars:,} characters of text; {self.cooldown_rate} commands"
            f" per {self.cooldown_per:g} seconds for each user.",
            f"`{prefix}wordbot listen #channel` — an admin lets me learn from a channel (`keep`, `cap`:"
            f" for how long, how much); `{prefix}wordbot forget me`, `ignore me`, `stats`, `channels`.",
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
        mentions = (f"<@{me.id}>", f"<@!{me.id}>") + ((f"<@&{role.id}>",) if role is not None else ())
        # Only a mention written in the text counts: a reply to the bot pings it silently,
        # and that alone should not make it talk.
        content, mentioned = without_mentions(bound(message.content), mentions)
        if not mentioned or (await self.bot.get_context(message)).valid:
            return  # not for us, or a command that happens to mention the bot: the command answers
        try:
            retry_after = self.cooldown.update_rate_limit(message)
            if retry_after:
                if self.first_warning(message.author.id, retry_after):
                    await self.send_reply(message, slow_down(retry_after))
                return
            # As with !continue, a number at the end says how many words.
            request = parse_prompt(content, "words", bare=True, alone=message.reference is not None)
            if blank(request.text) and message.reference is None and request.count is None:
                # Just "@wordbot": someone wondering what this bot is.
                prefix = self.bot.command_prefix if isinstance(self.bot.command_prefix, str) else "!"
                await self.send_reply(message, self.about_text(prefix))
                return

            async def reply(content: str, *, quiet: bool = False) -> None:
                await self.send_reply(message, content)

            await self.answer(message, request, DEFAULT_WORDS, self.max_words, self.continuation, reply)
        except NoText as exc:
            await self.send_reply(message, str(exc))
        except Exception:
            log.exception("the mention form failed for message %s", message.id)
            await self.apologise(message)

    # -- answering -----------------------------------------------------------------------

    async def answer_command(
        self,
        ctx: commands.Context,
        request: Request,
        count: int,
        job: Callable[[str, int, Predictor], Awaitable[str]],
        default: int,
        largest: int,
    ) -> None:
        """Answer `!next` or `!continue` (`job` writes the answer), in either form. In the prefix
        form the free text takes the rest of the message and discord.py fills in no `count`: a
        count comes only from the text ("k=7"), else `default`."""

        async def reply(content: str, *, quiet: bool = False) -> None:
            await self.respond(ctx, content, quiet=quiet)

        if ctx.interaction is None:
            count = default
        await self.answer(ctx.message, request, count, largest, job, reply, before=ctx.defer)

    async def answer(
        self,
        message: discord.Message,
        request: Request,
        count: int,
        largest: int,
        job: Callable[[str, int, Predictor], Awaitable[str]],
        reply: Reply,
        before: Callable[[], Awaitable[Any]] | None = None,
    ) -> None:
        """The one way every form answers: the text as users see it (or the replied message's),
        its length checked, the count the user said (within 1..`largest`) or `count`, then
        `job`'s answer as a reply. `before` runs once the request is accepted (a deferral)."""
        if request.count is not None:
            count = request.count
        count = min(max(count, 1), largest)
        text = await self.text_or_replied(message, self.user_text(request.text, message))
        if len(text) > self.max_input_chars:
            await reply(too_long(self.max_input_chars), quiet=True)
            return
        if before is not None:
            await before()
        await reply(await job(text, count, await self.predictor_for(message.guild)))

    async def predictor_for(self, guild: discord.Guild | None) -> Predictor:
        """A server's own predictor (its memory) where the bot learns, on the server's own model
        when `--server-models` has one it may serve; in DMs, the model alone."""
        learning = self.bot.get_cog("learning")
        view = None if guild is None or learning is None else learning.view(guild.id)
        if guild is None or self.server_models is None:
            return self.predictor if view is None else view
        ready = learning is None or learning.communities.rebuilt.is_set()
        # Off the event loop: the first request of a server may load its model.
        return await asyncio.to_thread(self.server_models.choose, guild.id, view, self.predictor, ready)

    async def next_words(self, text: str, k: int, predictor: Predictor) -> str:
        return format_next(text, await asyncio.to_thread(predictor.next_words, text, k))

    async def continuation(self, text: str, words: int, predictor: Predictor) -> str:
        return format_continuation(text, await asyncio.to_thread(predictor.continue_text, text, words))

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
        elif isinstance(error, commands.RangeError):
            await self.respond(ctx, f"Say a number from {error.minimum:,} to {error.maximum:,}.", quiet=True)
        elif isinstance(error, commands.UserInputError):
            usage = f"{ctx.clean_prefix}{ctx.command.qualified_name} {ctx.command.signature}".strip()
            await self.respond(ctx, f"I couldn't read that. Usage: `{usage}`", quiet=True)
        elif isinstance(error, commands.CheckFailure):
            await self.respond(ctx, "That command isn't available here.", quiet=True)
        elif isinstance(getattr(error, "original", None), StoreUnavailable):  # said once in the log already
            await self.respond(ctx, DATABASE_DOWN, quiet=True)
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
        content = squeeze(replied.content[-RAW_LIMIT:])  # its end is what a prediction needs
        if self.bot.user is not None and replied.author.id == self.bot.user.id:
            content = plain(content)
        content = self.user_text(content, replied)
        if not content:
            raise NoText("The message you replied to has no text for me to work with.")
        return tail(content, self.max_input_chars)

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
