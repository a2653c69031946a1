"""Discord text in and out: a user's markup read as their client showed it (`readable`), and the
bot's answers formatted, made safe to display and cut to Discord's limit (`fit`). Pure functions
over strings and discord.py's models; nothing here sends or receives."""

from __future__ import annotations

import datetime
import re
import unicodedata
from typing import TYPE_CHECKING

import discord

from wordbot.limits import BOT_MAX_INPUT_CHARS

if TYPE_CHECKING:
    from wordbot.predictor import Prediction

MAX_OUTPUT_CHARS = 2000  # Discord's limit for a message
ECHO_CHARS = 200  # how much of the user's text is quoted back in an answer

# Discord's markup for a mention of a user (<@id>, or <@!id> from older clients), a role (<@&id>)
# or a channel (<#id>), for a custom emoji (<:name:id>, animated <a:name:id>), for a slash
# command (</name:id>, </group sub:id>, </group subgroup sub:id>; names may be in any script) and
# for a timestamp (<t:seconds>, or <t:seconds:style> with one of discord.py's TimestampStyle).
# Every quantifier is bounded, so a match tried at each "<" of a hostile text costs a constant.
_NAME = r"(?u:[-\w]{1,32})"
_MARKUP = re.compile(
    r"<(?P<kind>@[!&]?|#)(?P<id>\d{15,20})>|<a?:(?P<emoji>\w{1,32}):\d{15,20}>"
    rf"|</(?P<command>{_NAME}(?: {_NAME}){{0,2}}):\d{{15,20}}>"
    r"|<t:(?P<time>-?\d{1,17})(?::(?P<style>[tTdDfFsSR]))?>",
    re.ASCII,
)
_WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")

# The bidi embeddings, overrides and isolates: each opens a state that reorders the rest of the
# line until it is closed, so an echoed one would reverse the bot's own words after it. They are
# shown by their code point, as the REPL shows them. The marks (U+200E, U+200F, U+061C) stay: they
# open nothing, and right-to-left writers use them in ordinary text.
_BIDI_CONTROLS = re.compile("[\u202a-\u202e\u2066-\u2069]")


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


def shown(text: str) -> str:
    """`text` safe to display: bidi embeddings, overrides and isolates by their code point
    ("\u202e" -> "<U+202E>"), so that nothing a user wrote can reorder the rest of a message."""
    return _BIDI_CONTROLS.sub(lambda match: f"<U+{ord(match[0]):04X}>", text)


# What markdown is made of, for cutting it: an escaped character, a bold delimiter, anything else.
_MARKDOWN_PIECE = re.compile(r"\\[\s\S]|\*\*|[\s\S]")


def fit(content: str, limit: int = MAX_OUTPUT_CHARS) -> str:
    """`content` as the bot sends it: made safe to display (see `shown`), then cut to Discord's
    message limit, marking the cut with "…". The cut keeps the markdown whole: never inside a
    backslash escape or a `**`, and a bold it falls inside is closed after the "…" (a bold just
    opened is cut off before it), so the rest of the message does not turn bold or show stray
    asterisks. Every message the bot sends goes through here."""
    content = shown(content)
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


def tail(text: str, limit: int = BOT_MAX_INPUT_CHARS) -> str:
    """The last `limit` characters of `text`, from a word boundary: the end is what a
    prediction needs."""
    if len(text) <= limit:
        return text
    cut = text[-limit:]
    if text[-limit - 1].isspace():
        return cut
    start = 0
    while start < len(cut) and not cut[start].isspace():  # the rest of a word cut in two
        start += 1
    return cut[start:].lstrip()


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


def slow_down(retry_after: float) -> str:
    return f"Slow down a little, please — try again in {max(retry_after, 1):.0f} s."


def too_long(limit: int = BOT_MAX_INPUT_CHARS) -> str:
    return f"That's a bit long for me: please keep it under {limit:,} characters."
