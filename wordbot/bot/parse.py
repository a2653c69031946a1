"""The bot's reading of raw message text: bound it, squeeze its whitespace, take a trailing count
off it, see through invisible characters around a command's name. Every function here is one
scan over text that was cut to `RAW_LIMIT` first, so a hostile message costs the same as any
other of its length (no regex with unbounded quantifiers runs on user text)."""

from __future__ import annotations

from typing import NamedTuple

from wordbot.bot.render import invisible
from wordbot.limits import BOT_MAX_INPUT_CHARS, BOT_WORDS

# The most raw text read from one message: Discord's own limit for a message (with Nitro). A
# message from Discord is never longer; anything past it is dropped before any other work.
RAW_LIMIT = 4 * BOT_MAX_INPUT_CHARS

# The names a trailing count may go by, per parameter: "k=7", "-k 7"; "words=50", "n=50", "-n 50".
COUNT_NAMES = {"k": frozenset({"k"}), "words": frozenset({"words", "n"})}


class Request(NamedTuple):
    """What a user asked for: the text, and how many words if they said (None: the default)."""

    text: str
    count: int | None = None


def bound(raw: str) -> str:
    """`raw` cut to RAW_LIMIT characters, the first step on any text from Discord."""
    return raw[:RAW_LIMIT]


def squeeze(text: str) -> str:
    """`text` with each run of whitespace cut to its first character: "a" + 1,990 spaces + "x"
    reads "a x". The model sees words, not spacing; a break stays a break and text that ends in
    whitespace still does."""
    kept: list[str] = []
    previous_space = False
    for char in text:
        space = char.isspace()
        if not (space and previous_space):
            kept.append(char)
        previous_space = space
    return "".join(kept)


def split_count(
    text: str, key: str, *, bare: bool, bare_max: int = BOT_WORDS[1], alone: bool = False
) -> tuple[str, int | None]:
    """Take a trailing count option off prefix-command text: `("deep learning k=3", "k")` ->
    `("deep learning", 3)`; also "-k 3", "--k=3", and for "words" "n=3", "-n 3". A bare trailing
    number counts only when `bare` is true and it is at most `bare_max` ("born in 1984" keeps its
    year), and a number that is the whole text only when `alone` is true (a reply: "!continue 30"
    on another message). One scan from the end, at most over the trailing option and the
    whitespace before it."""
    found = _trailing_count(text)
    if found is None:
        return text, None
    start, name, count = found
    if name and name.lower() not in COUNT_NAMES.get(key, frozenset({key})):
        return text, None
    if not name and (not bare or (start == 0 and not alone) or count > bare_max):
        return text, None  # "!continue 1984", "!continue born in 1984": the number is the text
    return text[:start], count


def _trailing_count(text: str) -> tuple[int, str | None, int] | None:
    """Where a trailing `[name=|-name |--name=]digits` option starts (at the whitespace before
    it, or 0), its name, and its count; None when the text does not end in one. 1 to 4 ASCII
    or other decimal digits, as `\\d{1,4}` reads them."""
    end = len(text)
    while end and text[end - 1].isspace():
        end -= 1
    digits = end
    while digits and end - digits <= 4 and text[digits - 1].isdecimal():
        digits -= 1
    if digits == end or end - digits > 4:
        return None
    count = int(text[digits:end])
    named = _option_name(text, digits)
    if named is not None:
        return named[0], named[1], count
    if digits == 0:
        return 0, None, count
    if not text[digits - 1].isspace():
        return None
    return _space_run_start(text, digits), None, count


def _option_name(text: str, digits: int) -> tuple[int, str] | None:
    """For a count at `digits`: where a "name=" / "-name=" / "-name " / "--name..." before it
    starts (the whitespace run before it, or 0) and the name; None when there is none."""
    letters_end = digits
    if digits and text[digits - 1] == "=":
        letters_end = digits - 1
        dash_required = False
    elif digits and text[digits - 1].isspace():
        letters_end = _space_run_start(text, digits)
        dash_required = True  # "-k 7": a name before whitespace must be a flag
    else:
        return None
    letters = letters_end
    while letters and text[letters - 1].isascii() and text[letters - 1].isalpha():
        letters -= 1
    if letters == letters_end:
        return None
    name, start = text[letters:letters_end], letters
    dashes = 0
    while start and dashes < 2 and text[start - 1] == "-":
        start, dashes = start - 1, dashes + 1
    if dash_required and not dashes:
        return None
    if start == 0:
        return 0, name
    if not text[start - 1].isspace():
        return None  # "x-k 7", "a=k=7", "---k 7": not an option
    return _space_run_start(text, start), name


def _space_run_start(text: str, end: int) -> int:
    """Where the run of whitespace that ends at `end` starts."""
    while end and text[end - 1].isspace():
        end -= 1
    return end


def parse_prompt(raw: str, key: str, *, bare: bool, alone: bool = False) -> Request:
    """The free text of a prefix command or a mention as a Request: bounded, whitespace
    squeezed, a trailing count taken off (see `split_count`)."""
    text, count = split_count(squeeze(bound(raw)).strip(), key, bare=bare, alone=alone)
    return Request(text, count)


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


def without_mentions(content: str, mentions: tuple[str, ...]) -> tuple[str, bool]:
    """`content` with each of `mentions` (the literal markup of the bot's user and role) replaced
    by a space, and whether there was one. A scan per mention; no pattern."""
    found = False
    for mention in mentions:
        if mention in content:
            found = True
            content = content.replace(mention, " ")
    return content, found
