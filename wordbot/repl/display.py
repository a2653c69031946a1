"""How the REPL's text reaches the screen: probabilities as short percentages, pasted
text as one line, control characters shown rather than obeyed, the keys table wrapped
to the terminal's width, and the writers for a full-screen terminal or a plain stream.
"""

from __future__ import annotations

import os
import re
import sys
import textwrap
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, TextIO

from prompt_toolkit import print_formatted_text
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.styles import Style

from wordbot.printable import visible as visible  # (re-exported: where it was)

if TYPE_CHECKING:
    from prompt_toolkit.output import Output

BANNER_WIDTH = 79  # the model line's width when the terminal's is unknown

# A paste is one line of text: its line breaks (with the indentation around them) and tabs
# become spaces, and other control characters, which would show as ^A or move the cursor, go.
# Runs of whitespace are found once each (linear); a run holding a line break becomes one
# space. (A pattern with a line break between two unbounded runs of spaces backtracks:
# a paste of 10,000 spaces took 0.8 s.)
_WHITESPACE_RUN_RE = re.compile(r"\s+")
_LINE_BREAKS = frozenset("\r\n\x0b\x0c\x85\u2028\u2029")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")

STYLE = Style.from_dict(
    {
        # `dim` keeps the ghost text apart from typed text under NO_COLOR too.
        "auto-suggestion": "#808080 dim",
        "note": "#808080",
        "error": "#ff5f5f bold",
        "banner": "bold",
    }
)


def format_prob(prob: float) -> str:
    """`31%`, `0.4%`, `<0.1%`: short enough for the menu, never a misleading `0%`."""
    if prob >= 0.01:
        return f"{prob:.0%}"
    if prob >= 0.001:
        return f"{prob:.1%}"
    return "<0.1%"


def one_line(text: str) -> str:
    """Pasted text as the single line the prompt edits: "a\n  b\tc\x01" -> "a b c"."""
    text = _WHITESPACE_RUN_RE.sub(_one_space_if_broken, text.strip("\r\n")).replace("\t", " ")
    return _CONTROL_RE.sub("", text)


def _one_space_if_broken(run: re.Match[str]) -> str:
    whitespace = run.group()
    return " " if not _LINE_BREAKS.isdisjoint(whitespace) else whitespace


def shorten(text: str, width: int = 40) -> str:
    """The end of a long line, so a pasted page does not flood the transcript."""
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else "..." + text[-(width - 3) :]


_KEYS = (  # the start screen's and :help's table of keys
    ("Tab / Down", "pick a suggestion; Enter inserts it and a space"),
    ("Esc", "close the menu, back to the text as typed"),
    ("Right", "accept the grey ghost text; Alt-F or Ctrl-Right: one word"),
    ("Enter", "commit the line (kept in history; Up recalls it)"),
    ("Ctrl-C", "clear the line"),
    ("Ctrl-D or :quit", "exit"),
)
KEY_COLUMN = 15  # the keys' column, as wide as :help's commands'
_NARROWEST_DESCRIPTION = 24  # columns; narrower, a key gets a line of its own


def keys_help(width: int | None = None) -> str:
    """The keys table for `width` columns (None: unknown, not wrapped): descriptions wrapped
    between words under their column, or on a narrow terminal under their key."""
    return table(_KEYS, KEY_COLUMN, width)


def table(rows: Iterable[tuple[str, str]], key_column: int, width: int | None) -> str:
    """`  key  description` rows, each description wrapped between words to `width` columns
    (None: not wrapped) with a hanging indent; where that leaves a description under
    _NARROWEST_DESCRIPTION columns, each key on a line of its own, its description below."""
    indent = 2 + key_column + 1
    if width is None:
        return "\n".join(f"  {key:<{key_column}} {text}" for key, text in rows)
    width = max(width, 10)
    lines = []
    for key, text in rows:
        if width - indent >= _NARROWEST_DESCRIPTION:
            first, rest = f"  {key:<{key_column}} ", " " * indent
        else:
            lines.append(f"  {key}".rstrip())
            first = rest = "    "
        lines += textwrap.wrap(
            text, width, initial_indent=first, subsequent_indent=rest, break_long_words=False, break_on_hyphens=False
        )
    return "\n".join(lines)


KEYS_HELP = table(_KEYS, KEY_COLUMN, None)  # as shown where the width is unknown or enough


def fill(text: str, width: int | None, indent: str = "") -> str:
    """`text` wrapped between words to `width` columns (None: unknown, so BANNER_WIDTH)."""
    width = BANNER_WIDTH if width is None else max(width, 10)
    return textwrap.fill(text, width, subsequent_indent=indent, break_long_words=False)


def text_width(output: Output) -> int | None:
    """Columns a line may fill without the terminal wrapping it (one short of its width,
    as 79 of 80); None when the width is unknown."""
    try:
        columns = output.get_size().columns
    except (OSError, ValueError, NotImplementedError):
        return None
    return columns - 1 if columns > 1 else None


def stream_width(stream: TextIO) -> int | None:
    """As `text_width`, for a terminal written to as a stream."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None
    return columns - 1 if columns > 1 else None


def stream_writer(stream: TextIO) -> Callable[[str, str], None]:
    def write(text: str, style: str) -> None:
        # Typed or piped text, and the model's words, may hold escape sequences: show them.
        (sys.stderr if style == "error" else stream).write(visible(text) + "\n")

    return write


def terminal_writer(output: Output | None) -> Callable[[str, str], None]:
    def write(text: str, style: str) -> None:
        fragments: Any = FormattedText([(f"class:{style}" if style else "", visible(text))])
        print_formatted_text(fragments, style=STYLE, output=output, include_default_pygments_style=False)

    return write
