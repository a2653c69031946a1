"""The terminal REPL: live next-word suggestions, word completion and ghost text as you type.

A thin prompt_toolkit face over a `Predictor`: a `Completer` for the menu, an `AutoSuggest`
for the dimmed continuation, key bindings, a bottom toolbar and the session loop. When
standard input or output is not a terminal it reads lines and prints suggestions instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import sys
import textwrap
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from prompt_toolkit import PromptSession, print_formatted_text, search
from prompt_toolkit.application.current import get_app_or_none
from prompt_toolkit.auto_suggest import AutoSuggest, Suggestion, ThreadedAutoSuggest
from prompt_toolkit.buffer import CompletionState
from prompt_toolkit.completion import CompleteEvent, Completer, Completion, ThreadedCompleter
from prompt_toolkit.document import Document
from prompt_toolkit.filters import Condition, has_completions, has_selection, is_searching
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from prompt_toolkit.key_binding.bindings.basic import if_no_repeat
from prompt_toolkit.key_binding.bindings.named_commands import get_by_name
from prompt_toolkit.keys import Keys
from prompt_toolkit.styles import Style
from prompt_toolkit.utils import is_dumb_terminal

from wordbot.text import join_text, normalize, partial_word

if TYPE_CHECKING:
    from prompt_toolkit.buffer import Buffer
    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output

    from wordbot.predictor import Prediction, Predictor

__all__ = ["Ghost", "GhostText", "Repl", "WordCompleter", "history_path", "run"]

MAX_K = 20  # the menu scrolls past this; more is noise
GHOST_WORDS = 4  # ghost text long enough to save keystrokes, short enough to stay right
STATE_DIR_ENV = "WORDBOT_STATE_DIR"

# After these a new word follows without a space; after other punctuation it takes one.
_NO_SPACE_AFTER = set("([{$#@/-\"'\u201c\u2018")
_FIRST_WORD_RE = re.compile(r"\s*\S+")
_COMMAND_RE = re.compile(r":([A-Za-z]+)(?:\s+(.*))?$", re.DOTALL)
COMMANDS = {  # name: (argument, what it does), as :help shows them
    "help": ("", "this text"),
    "k": ("N", "how many suggestions to show (1-20)"),
    "temp": ("T", "ghost-text temperature (0 = greedy: the likeliest words)"),
    "model": ("PATH", "load another model directory (`default`: the bundled one)"),
    "quit": ("", "exit (Ctrl-D does too)"),
}
_ALIASES = {"q": "quit", "exit": "quit", "h": "help", "?": "help"}

# A paste is one line of text: its line breaks (with the indentation around them) and tabs
# become spaces, and other control characters, which would show as ^A or move the cursor, go.
_PASTED_BREAK_RE = re.compile(r"[ \t]*(?:\r\n|[\r\n\x0b\x0c\x85\u2028\u2029])\s*")
_CONTROL_RE = re.compile(r"[\x00-\x08\x0e-\x1f\x7f-\x9f]")
# Control characters in text printed line by line, but for the line break and the tab; and
# the invisible bidi embeddings, overrides and isolates, which reorder what the terminal shows.
_SHOWN_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
BANNER_WIDTH = 79  # the model line's width when the terminal's is unknown

# Keys that change the text without inserting any: prompt_toolkit suggests again only
# after an insert, so these would leave the menu and the ghost text gone until the next letter.
_EDITING_KEYS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("backspace",), "backward-delete-char"),
    (("c-h",), "backward-delete-char"),
    (("delete",), "delete-char"),
    (("c-w",), "unix-word-rubout"),
    (("escape", "backspace"), "backward-kill-word"),
    (("escape", "d"), "kill-word"),
    (("c-u",), "unix-line-discard"),
    (("c-k",), "kill-line"),
    (("c-y",), "yank"),
    (("c-_",), "undo"),
)

STYLE = Style.from_dict(
    {
        # `dim` keeps the ghost text apart from typed text under NO_COLOR too.
        "auto-suggestion": "#808080 dim",
        "note": "#808080",
        "error": "#ff5f5f bold",
        "banner": "bold",
    }
)


def history_path(state_dir: str | os.PathLike | None = None) -> Path:
    """Where committed lines are kept: `state_dir`, else $WORDBOT_STATE_DIR, else the
    user's state directory (e.g. ~/.local/state/wordbot/history)."""
    if state_dir is None:
        state_dir = os.environ.get(STATE_DIR_ENV) or None
    if state_dir is None:
        import platformdirs

        state_dir = platformdirs.user_state_dir("wordbot")
    return Path(state_dir) / "history"


def format_prob(prob: float) -> str:
    """`31%`, `0.4%`, `<0.1%`: short enough for the menu, never a misleading `0%`."""
    if prob >= 0.01:
        return f"{prob:.0%}"
    if prob >= 0.001:
        return f"{prob:.1%}"
    return "<0.1%"


def one_line(text: str) -> str:
    """Pasted text as the single line the prompt edits: "a\n  b\tc\x01" -> "a b c"."""
    text = _PASTED_BREAK_RE.sub(" ", text.strip("\r\n")).replace("\t", " ")
    return _CONTROL_RE.sub("", text)


def visible(text: str) -> str:
    """Text to print as it reads, not as the terminal would act on it: control characters
    shown the way the prompt shows them ("a\x1b[31m" -> "a^[[31m", "\x9b" -> "<9b>"), bidi
    controls by their code point ("\u202e" -> "<U+202E>"); line breaks and tabs stay, and so
    does other text (emoji with their joiners, CJK, accents)."""
    return _SHOWN_CONTROL_RE.sub(_caret, text)


def _caret(match: re.Match[str]) -> str:
    code = ord(match.group())
    if code < 0x20 or code == 0x7F:
        return f"^{chr(code ^ 0x40)}"
    return f"<{code:02x}>" if code <= 0xFF else f"<U+{code:04X}>"


def is_command(line: str) -> bool:
    """`:k 3` is a command; `:)` or `: hello` is text."""
    return _COMMAND_RE.match(line.strip()) is not None


@dataclass
class Settings:
    """What the user can change while the REPL runs, and what the toolbar reports."""

    k: int = 5
    temperature: float = 0.0
    last_ms: float | None = None  # time the last menu suggestion took


@dataclass
class Suggestions:
    """What the model offers at the end of a text, in the form the faces show it."""

    completing: str  # the partial word being completed; '' when offering next words
    space_before: bool  # whether a next word needs a space in front of it
    predictions: list[Prediction] = field(default_factory=list)


def suggest(predictor: Predictor, text: str, k: int) -> Suggestions:
    """Completions of the partial word at the end of `text`, or the next words after it."""
    partial = partial_word(text)
    predictions = predictor.complete(text, k) if text.strip() else predictor.next_words("", k)
    typed = normalize(partial)
    if partial and all(normalize(p.word).startswith(typed) for p in predictions):
        return Suggestions(partial, False, predictions)
    # The model saw a finished token ("3.14", an emoji, punctuation): offer next words.
    if partial:
        predictions = predictor.next_words(text, k)
    space = bool(text) and not text[-1].isspace() and text[-1] not in _NO_SPACE_AFTER
    return Suggestions("", space, predictions)


def completion_text(partial: str, word: str) -> str:
    """The text that replaces `partial`: the model's display form ("I'm", a capital at a
    sentence start) unless the user typed capitals of their own, which we keep."""
    if partial == partial.lower():
        return word
    return partial + word[len(partial) :]


class WordCompleter(Completer):
    """The menu: completions of the partial word, or the likeliest next words, with
    their probabilities. Lines starting with `:` complete to command names."""

    def __init__(self, get_predictor: Callable[[], Predictor], settings: Settings):
        self.get_predictor = get_predictor
        self.settings = settings
        self.answered: Document | None = None  # the last text asked about (see _menu_after_a_dropped_request)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        self.answered = document
        text = document.text_before_cursor
        if text.startswith(":"):
            yield from self._command_completions(text)
            return
        if document.text_after_cursor[:1].isalnum():
            return  # inside a word: a completion would leave its end behind ("ca|t" -> "cant")
        start = time.perf_counter()
        found = suggest(self.get_predictor(), text, self.settings.k)
        self.settings.last_ms = (time.perf_counter() - start) * 1000
        for word, prob in found.predictions:
            if found.completing:
                insert = completion_text(found.completing, word)
                start_position = -len(found.completing)
            else:
                insert = (" " if found.space_before else "") + word
                start_position = 0
            yield Completion(insert, start_position, display=word, display_meta=format_prob(prob))

    @staticmethod
    def _command_completions(text: str) -> Iterable[Completion]:
        if " " in text:
            return
        for name in COMMANDS:
            if name.startswith(text[1:]):
                argument, meta = COMMANDS[name]
                yield Completion(":" + name, -len(text), display=f":{name} {argument}", display_meta=meta)


class Ghost(Suggestion):
    """Ghost text that may also rewrite the end of the typed text when accepted: after "wha",
    ghost "t is" with `fix=("wha", "Wha")` accepts as "What is", the word the menu shows."""

    def __init__(self, text: str, fix: tuple[str, str] | None = None):
        super().__init__(text)
        self.fix = fix  # (typed, replacement) for the end of the text before the cursor


def accept_ghost(buffer: Buffer, text: str) -> None:
    """Insert `text` (all or the start of the buffer's ghost text), applying its fix first."""
    fix = getattr(buffer.suggestion, "fix", None)
    if fix and fix[0] != fix[1] and buffer.document.text_before_cursor.endswith(fix[0]):
        buffer.delete_before_cursor(len(fix[0]))
        text = fix[1] + text
    buffer.insert_text(text)


class GhostText(AutoSuggest):
    """The dimmed continuation after the cursor: the rest of the word being typed, then
    the next few words (greedy at temperature 0, else sampled with a seed from the text,
    so the same text always shows the same ghost)."""

    def __init__(self, get_predictor: Callable[[], Predictor], settings: Settings, n_words: int = GHOST_WORDS):
        self.get_predictor = get_predictor
        self.settings = settings
        self.n_words = n_words

    def get_suggestion(self, buffer: Buffer | None, document: Document) -> Suggestion | None:
        text = document.text
        if not document.is_cursor_at_the_end or not text.strip() or is_command(text):
            return None
        predictor = self.get_predictor()
        found = suggest(predictor, text, 1)
        if not found.predictions:
            return None
        ghost = ""
        fix = None
        words = self.n_words
        if found.completing:
            # The word as Tab would write it ("What" for "wha"): accepting rewrites the typed part.
            word = completion_text(found.completing, found.predictions[0].word)
            ghost = word[len(found.completing) :]
            fix = (found.completing, word[: len(found.completing)])
            words -= 1
        if words > 0:
            rest = self._continue(predictor, text + ghost, words)
            if (text + ghost)[-1:].isspace():
                if rest[:1].strip() and not rest[:1].isalnum():
                    # Punctuation that hugs the word before (", everybody") would follow the
                    # space typed after it: begin with the menu's first word instead.
                    ghost = found.predictions[0].word
                    rest = self._continue(predictor, text + ghost, words - 1) if words > 1 else ""
                else:
                    rest = rest.lstrip()
            ghost += rest
        return Ghost(ghost, fix) if ghost.strip() else None

    def _continue(self, predictor: Predictor, text: str, words: int) -> str:
        seed = zlib.crc32(text.encode("utf-8", "surrogatepass"))
        return predictor.continue_text(text, words, temperature=self.settings.temperature, seed=seed)


async def _refresh_menu(buffer: Buffer) -> None:
    """Open the menu for the buffer's text as it stands, as typing it would have.

    Not `Buffer.start_completion`: prompt_toolkit drops that request while a completion
    for earlier text is still running, and retries only when the text grew, so after a
    quick Up, Up (or a held Backspace) the menu stayed shut."""
    document = buffer.document
    if buffer.completer is None or not buffer.complete_while_typing():
        return
    event = CompleteEvent(completion_requested=True)
    completions = [c async for c in buffer.completer.get_completions_async(document, event)]
    state = buffer.complete_state
    if buffer.document != document or (state is not None and state.complete_index is not None):
        return  # the text moved on (its own request follows), or the user picked from a menu
    if _show_menu(buffer, completions):
        buffer.on_completions_changed.fire()  # a redraw: no key press follows to cause one


def _show_menu(buffer: Buffer, completions: list[Completion]) -> bool:
    """Open the menu on `completions` for the buffer's text as it stands (none: no menu)."""
    if not completions:
        return False
    buffer.complete_state = CompletionState(original_document=buffer.document, completions=completions)
    return True


MENU_CHECK_SECONDS = 0.05


def _menu_after_a_dropped_request(buffer: Buffer, completer: WordCompleter) -> None:
    """After any change of the text, make sure its menu comes.

    prompt_toolkit runs one completion at a time and drops a request made meanwhile; it
    asks again afterwards only if the text merely grew. So typing just after Ctrl-C (or
    after a Right that accepted the ghost text) could leave the new text without a menu
    until the next key. A moment later, if the text is unchanged, has no menu and the
    completer was never asked about it, ask (a text it answered with nothing stays so)."""
    app = get_app_or_none()
    if app is None or not buffer.text.strip():
        return
    document = buffer.document

    async def check() -> None:
        await asyncio.sleep(MENU_CHECK_SECONDS)
        if buffer.document == document and buffer.complete_state is None and completer.answered != document:
            await _refresh_menu(buffer)

    app.create_background_task(check())


def _suggest_again(event: KeyPressEvent) -> None:
    """The menu and the ghost text for the current text, after a change that inserted
    nothing (prompt_toolkit suggests again only after an insert)."""
    buffer = event.current_buffer
    event.app.create_background_task(_refresh_menu(buffer))
    refresh_ghost = getattr(buffer, "_async_suggester", None)
    if refresh_ghost is not None and buffer.auto_suggest is not None:
        event.app.create_background_task(refresh_ghost())


@dataclass
class _Recall:
    """The line the last history key brought up, until it is edited.

    A recalled line gets its menu and ghost text as if typed. While it stands unedited
    and no menu entry is picked, Up and Down (Ctrl-P, Ctrl-N) keep moving through history
    rather than in that menu; Tab picks from it. At the oldest or newest line they stop."""

    text: str | None = None

    def text_changed(self, buffer: Buffer) -> None:
        self.text = None  # an edit, or a move through history (which sets it again)

    def browsing(self, buffer: Buffer) -> bool:
        state = buffer.complete_state
        picked = state is not None and state.complete_index is not None
        # Compared too: a new prompt resets the buffer without a text-changed event.
        return self.text is not None and self.text == buffer.text and not picked


def _key_bindings(settings: Settings, recall: _Recall) -> KeyBindings:
    bindings = KeyBindings()

    @Condition
    def ghost_available() -> bool:
        from prompt_toolkit.application.current import get_app

        buffer = get_app().current_buffer
        return bool(buffer.suggestion and buffer.suggestion.text and buffer.document.is_cursor_at_the_end)

    @Condition
    def completion_selected() -> bool:
        from prompt_toolkit.application.current import get_app

        state = get_app().current_buffer.complete_state
        return bool(state and state.current_completion)

    @bindings.add("tab")
    def _select(event: KeyPressEvent) -> None:
        "Open the menu on its first entry, or move to the next one."
        buffer = event.current_buffer
        if buffer.complete_state and buffer.complete_state.completions:
            buffer.complete_next()
            return
        # Asked for here and now (a millisecond): prompt_toolkit's background completion
        # drops the request while one for older text is still running, and Tab is lost.
        if buffer.completer is None:
            return
        completions = list(buffer.completer.get_completions(buffer.document, CompleteEvent(completion_requested=True)))
        if _show_menu(buffer, completions):
            buffer.go_to_completion(0)

    @bindings.add("enter", filter=completion_selected)
    def _insert(event: KeyPressEvent) -> None:
        "Keep the selected entry (already in the text) and add a space for the next word."
        buffer = event.current_buffer
        buffer.complete_state = None
        if buffer.document.text_after_cursor[:1].isspace():
            buffer.cursor_position += 1  # a word picked mid-line: step over the space already there
            _suggest_again(event)
        else:
            buffer.insert_text(" ")

    @bindings.add("right", filter=ghost_available)
    @bindings.add("c-f", filter=ghost_available)
    @bindings.add("c-e", filter=ghost_available)
    def _accept(event: KeyPressEvent) -> None:
        "Accept the ghost text, with the word being typed as the menu writes it."
        buffer = event.current_buffer
        accept_ghost(buffer, buffer.suggestion.text)

    @bindings.add("escape", "f", filter=ghost_available)
    @bindings.add("c-right", filter=ghost_available)
    def _accept_word(event: KeyPressEvent) -> None:
        "Accept one word of the ghost text; the rest stays as ghost."
        buffer = event.current_buffer
        ghost = buffer.suggestion.text
        word = _FIRST_WORD_RE.match(ghost).group()
        accept_ghost(buffer, word)
        rest = ghost[len(word) :]
        # Set after the insert (which clears it) so the rest shows without a model call.
        buffer.suggestion = Suggestion(rest) if rest.strip() else None

    def edit_and_suggest_again(command: str) -> Callable[[KeyPressEvent], None]:
        def handler(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            before = buffer.text
            get_by_name(command).call(event)
            if buffer.text != before:
                _suggest_again(event)

        handler.__doc__ = f"{command}, then suggest again for the text left."
        return handler

    def through_history(move: Callable[[KeyPressEvent], None]) -> Callable[[KeyPressEvent], None]:
        def handler(event: KeyPressEvent) -> None:
            buffer = event.current_buffer
            index = buffer.working_index
            move(event)
            if buffer.working_index != index:  # another line of history
                recall.text = buffer.text
                if buffer.text.strip():  # as if typed; a blank line, as at a fresh prompt, gets none
                    _suggest_again(event)

        handler.__doc__ = f"{move.__doc__} A recalled line gets its menu and ghost text."
        return handler

    @bindings.add("up", filter=~is_searching)
    @bindings.add("c-p", filter=~is_searching)
    @through_history
    def _up(event: KeyPressEvent) -> None:
        "Up in the menu, else back through history; on a recalled line, back through history."
        buffer = event.current_buffer
        if recall.browsing(buffer):
            buffer.history_backward(count=event.arg)  # not auto_up: that moves in the menu
        else:
            buffer.auto_up(count=event.arg)

    @bindings.add("down", filter=~is_searching)
    @bindings.add("c-n", filter=~is_searching)
    @through_history
    def _down(event: KeyPressEvent) -> None:
        "Down in the menu, else forward through history; on a recalled line, forward through history."
        buffer = event.current_buffer
        if recall.browsing(buffer):
            buffer.history_forward(count=event.arg)
        else:
            buffer.auto_down(count=event.arg)

    def history_command(command: str) -> Callable[[KeyPressEvent], None]:
        def move(event: KeyPressEvent) -> None:
            get_by_name(command).call(event)

        move.__doc__ = f"{command}."
        return through_history(move)

    # prompt_toolkit's other keys through history; they never move in the menu.
    for keys, command in (
        (("pageup",), "previous-history"),
        (("pagedown",), "next-history"),
        (("c-up",), "previous-history"),
        (("c-down",), "next-history"),
        (("escape", "<"), "beginning-of-history"),
        (("escape", ">"), "end-of-history"),
    ):
        bindings.add(*keys, filter=~has_selection)(history_command(command))

    for keys, command in _EDITING_KEYS:
        # Undo saves no state of its own (else it would undo itself); a run of deletions is one step.
        save_before = (lambda event: False) if command == "undo" else if_no_repeat
        bindings.add(*keys, filter=~has_selection, save_before=save_before)(edit_and_suggest_again(command))

    @bindings.add("enter", filter=is_searching)
    @bindings.add("escape", filter=is_searching, eager=True)
    @bindings.add("up", filter=is_searching)
    @bindings.add("down", filter=is_searching)
    @bindings.add("left", filter=is_searching)
    @bindings.add("right", filter=is_searching)
    def _accept_search(event: KeyPressEvent) -> None:
        "End a Ctrl-R (Ctrl-S) search on its match: the line as Up recalls one, with its suggestions."
        target = event.app.layout.search_target_buffer_control
        search.accept_search()
        if target is None:
            return
        buffer = target.buffer
        buffer.cursor_position = len(buffer.text)  # where typing goes on, and the ghost text shows
        recall.text = buffer.text  # Up and Down go on through history from the match
        if buffer.text.strip():
            _suggest_again(event)  # accept_search gave the line back its focus: the event's buffer

    @bindings.add(Keys.BracketedPaste)
    def _paste(event: KeyPressEvent) -> None:
        "Paste as one line: line breaks and tabs become spaces, control characters go."
        event.current_buffer.insert_text(one_line(event.data))

    @bindings.add("escape", filter=has_completions)
    def _close_menu(event: KeyPressEvent) -> None:
        "Close the menu and go back to the text as typed."
        event.current_buffer.cancel_completion()

    @bindings.add("c-c")
    @bindings.add("<sigint>")
    def _clear(event: KeyPressEvent) -> None:
        "Clear the line."
        event.current_buffer.reset()

    @bindings.add("c-d")
    def _exit(event: KeyPressEvent) -> None:
        "Exit, whatever is on the line."
        event.app.exit(exception=EOFError)

    return bindings


_KEYS = (  # the start screen's and :help's table of keys
    ("Tab / Down", "pick a suggestion; Enter inserts it and a space"),
    ("Esc", "close the menu, back to the text as typed"),
    ("Right", "accept the grey ghost text; Alt-F or Ctrl-Right: one word"),
    ("Enter", "commit the line (kept in history; Up recalls it)"),
    ("Ctrl-C", "clear the line"),
    ("Ctrl-D or :quit", "exit"),
)
_KEY_COLUMN = 15  # the keys' column, as wide as :help's commands'
_NARROWEST_DESCRIPTION = 24  # columns; narrower, a key gets a line of its own


def keys_help(width: int | None = None) -> str:
    """The keys table for `width` columns (None: unknown, not wrapped): descriptions wrapped
    between words under their column, or on a narrow terminal under their key."""
    return _table(_KEYS, _KEY_COLUMN, width)


def _table(rows: Iterable[tuple[str, str]], key_column: int, width: int | None) -> str:
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


KEYS_HELP = _table(_KEYS, _KEY_COLUMN, None)  # as shown where the width is unknown or enough


class _NoBlankLines:
    """History that keeps no blank or all-space lines: Up should recall something."""

    def append_string(self, string: str) -> None:
        if string.strip():
            super().append_string(string)  # type: ignore[misc]


class _FileHistory(_NoBlankLines, FileHistory):
    pass


class _MemoryHistory(_NoBlankLines, InMemoryHistory):
    pass


class Repl:
    """The session state and the line handling shared by the interactive and pipe modes."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        state_dir: str | os.PathLike | None = None,
        write: Callable[[str, str], None] | None = None,
        k: int = 5,
        temperature: float = 0.0,
        backend: str | None = None,
    ):
        self.predictor = predictor
        self.backend = backend  # what --backend asked for; `:model` loads with it too
        self.settings = Settings(k=k, temperature=temperature)
        self.state_dir = state_dir
        self.transcript: list[str] = []  # committed lines, in order
        self.errors = 0
        self._write = write or (lambda text, style: print(visible(text)))
        self.width: Callable[[], int | None] = lambda: None  # columns to wrap text to; None: unknown

    def say(self, text: str, style: str = "") -> None:
        self._write(text, style)

    def error(self, text: str) -> None:
        self.errors += 1
        self._write(text, "error")

    # ---- building the prompt ----

    def history(self) -> History:
        path = history_path(self.state_dir)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        except OSError as exc:
            self.error(f"history not kept: cannot write {path} ({exc.strerror})")
            return _MemoryHistory()
        return _FileHistory(str(path))

    def toolbar(self) -> FormattedText:
        last = self.settings.last_ms
        timing = "-" if last is None else f"{last:.1f} ms"
        name = str(getattr(self.predictor, "name", "model"))[:16]
        return FormattedText(
            [
                ("class:bottom-toolbar.text", f" {name} | {timing} | "),
                ("class:bottom-toolbar.text", "Tab pick  Right accept  Alt-F word  :help  Ctrl-D quit"),
            ]
        )

    def session(self, input: Input | None = None, output: Output | None = None) -> PromptSession:
        get_predictor = lambda: self.predictor  # noqa: E731 -- `:model` swaps it under the completer
        recall = _Recall()
        completer = WordCompleter(get_predictor, self.settings)
        session: PromptSession = PromptSession(
            message="> ",
            completer=ThreadedCompleter(completer),
            complete_while_typing=True,
            auto_suggest=ThreadedAutoSuggest(GhostText(get_predictor, self.settings)),
            history=self.history(),
            key_bindings=_key_bindings(self.settings, recall),
            bottom_toolbar=self.toolbar,
            style=STYLE,
            include_default_pygments_style=False,
            reserve_space_for_menu=6,
            input=input,
            output=output,
        )
        session.default_buffer.on_text_changed += recall.text_changed
        session.default_buffer.on_text_changed += lambda buffer: _menu_after_a_dropped_request(buffer, completer)
        return session

    # ---- the two modes ----

    def banner(self, width: int | None = None) -> None:
        """The start screen; its model line wrapped between words to `width` columns (None:
        unknown, so 79) rather than mid-word by a narrower terminal."""
        self.say("wordbot: next-word suggestions as you type.", "banner")
        model = f"Model: {self.predictor.describe()}"
        width = BANNER_WIDTH if width is None else max(width, 10)
        self.say(textwrap.fill(model, width, subsequent_indent="  ", break_long_words=False), "note")
        self.say(keys_help(width))
        self.say("Type :help for commands. Ctrl-D or :quit exits.", "note")

    def interact(self, session: PromptSession) -> int:
        """The interactive loop: one committed line per prompt, until Ctrl-D or :quit."""
        self.width = lambda: _text_width(session.output)  # read again for :help: the window may change
        self.banner(self.width())
        while True:
            try:
                line = session.prompt()
            except KeyboardInterrupt:
                continue
            except EOFError:
                return 0
            if not self.commit(line):
                return 0

    def pipe(self, lines: Iterable[str], *, echo: bool = True) -> int:
        """Non-interactive: the suggestions for each line read (commands work too)."""
        for raw in lines:
            if not self.commit(raw.rstrip("\r\n"), echo=echo):
                break
        return 1 if self.errors else 0

    def line_mode(self, input: TextIO, output: TextIO) -> int:
        """A terminal that cannot show menus (TERM=dumb): the terminal edits and echoes the
        line, and each line entered gets its next words."""
        term = os.environ.get("TERM", "")
        self.width = lambda: _stream_width(output)
        intro = (
            f"wordbot: this terminal (TERM={term}) shows no live suggestions; each line you "
            "enter gets its next words and a continuation. :help for commands; Ctrl-D exits."
        )
        width = self.width()
        self.say(textwrap.fill(intro, BANNER_WIDTH if width is None else max(width, 10), break_long_words=False))
        self.pipe(_prompted(input, output), echo=False)
        return 0

    # ---- one committed line ----

    def commit(self, line: str, *, echo: bool = False) -> bool:
        """Handle one committed line; False means: exit."""
        if is_command(line):
            return self.command(line.strip())
        self.transcript.append(line)
        if not line.strip():
            return True  # a blank line asks nothing, as in a shell
        if echo:
            self.say(line)
        self.say(self.report(line), "note")
        return True

    def report(self, text: str) -> str:
        """What the model expects after a finished line: its next words and a continuation.

        A committed line is finished, so its last word is a word, not a prefix to complete."""
        predictions = self.predictor.next_words(text, self.settings.k)
        words = ", ".join(f"{word} {format_prob(prob)}" for word, prob in predictions) or "(none)"
        lines = [f"  next words: {words}"]
        seed = zlib.crc32(text.encode("utf-8", "surrogatepass"))
        temperature = self.settings.temperature
        continuation = self.predictor.continue_text(text, GHOST_WORDS * 2, temperature=temperature, seed=seed)
        if continuation.strip():
            lines.append(f"  continued: {join_text(_shorten(text), continuation)}")
        return "\n".join(lines)

    def command(self, line: str) -> bool:
        name, argument = _COMMAND_RE.match(line).groups()
        name = _ALIASES.get(name.lower(), name.lower())
        argument = (argument or "").strip()
        if name == "quit":
            return False
        if name == "help":
            self.say(self.help_text(self.width()))
        elif name == "k":
            self._set_k(argument)
        elif name == "temp":
            self._set_temperature(argument)
        elif name == "model":
            self._load_model(argument)
        else:
            self.error(f"unknown command :{name}; :help lists the commands")
        return True

    def help_text(self, width: int | None = None) -> str:
        """:help's text, wrapped between words to `width` columns (None: unknown, not wrapped)."""
        rows = [(f":{name} {arg}", text) for name, (arg, text) in COMMANDS.items()]
        about = (
            "The menu shows the likeliest next words (after a space) or completions of the\n"
            "word being typed, each with its probability; the grey text continues the line."
        )
        now = f"Now: k={self.settings.k}, temp={self.settings.temperature:g}, model: {self.predictor.describe()}"
        if width is not None:
            width = max(width, 10)
            about = textwrap.fill(about, width, break_long_words=False)
            now = textwrap.fill(now, width, subsequent_indent="  ", break_long_words=False)
        return f"{about}\n{keys_help(width)}\nCommands:\n{_table(rows, _KEY_COLUMN, width)}\n{now}"

    def _set_k(self, argument: str) -> None:
        try:
            k = int(argument)
        except ValueError:
            self.error(f":k needs a whole number from 1 to {MAX_K}, got {argument or 'nothing'!r}")
            return
        if not 1 <= k <= MAX_K:
            self.error(f":k needs a whole number from 1 to {MAX_K}, got {k}")
            return
        self.settings.k = k
        self.say(f"showing {k} suggestion{'s' if k > 1 else ''}", "note")

    def _set_temperature(self, argument: str) -> None:
        try:
            temperature = float(argument)
        except ValueError:
            temperature = float("nan")
        if not 0 <= temperature <= 5:  # also false for nan
            self.error(f":temp needs a number from 0 (greedy) to 5, got {argument or 'nothing'!r}")
            return
        self.settings.temperature = temperature
        how = "greedy: the likeliest words" if temperature == 0 else "sampled"
        self.say(f"ghost text temperature {temperature:g} ({how})", "note")

    def _load_model(self, argument: str) -> None:
        if not argument:
            self.say(f"model: {self.predictor.describe()} (:model PATH loads another)", "note")
            return
        from wordbot.predictor import Predictor

        path = None if argument == "default" and not Path(argument).exists() else os.path.expanduser(argument)
        try:
            predictor = Predictor.load(path, backend=self.backend)
        except (OSError, ValueError) as exc:
            self.error(f"cannot load model {argument!r}: {exc}")
            return
        self.predictor = predictor
        self.say(f"model: {predictor.describe()}", "note")


def _shorten(text: str, width: int = 40) -> str:
    """The end of a long line, so a pasted page does not flood the transcript."""
    text = " ".join(text.split()) if "\n" in text else text
    return text if len(text) <= width else "..." + text[-(width - 3) :]


def _prompted(input: TextIO, output: TextIO) -> Iterator[str]:
    """Lines of `input`, each after a `> ` prompt on `output`; a newline after the last."""
    while True:
        output.write("> ")
        output.flush()
        line = input.readline()
        if not line:
            output.write("\n")
            return
        yield line


def _text_width(output: Output) -> int | None:
    """Columns a line may fill without the terminal wrapping it (one short of its width,
    as 79 of 80); None when the width is unknown."""
    try:
        columns = output.get_size().columns
    except (OSError, ValueError, NotImplementedError):
        return None
    return columns - 1 if columns > 1 else None


def _stream_width(stream: TextIO) -> int | None:
    """As `_text_width`, for a terminal written to as a stream."""
    try:
        columns = os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        return None
    return columns - 1 if columns > 1 else None


def _stream_writer(stream: TextIO) -> Callable[[str, str], None]:
    def write(text: str, style: str) -> None:
        # Typed or piped text, and the model's words, may hold escape sequences: show them.
        (sys.stderr if style == "error" else stream).write(visible(text) + "\n")

    return write


def _terminal_writer(output: Output | None) -> Callable[[str, str], None]:
    def write(text: str, style: str) -> None:
        fragments: Any = FormattedText([(f"class:{style}" if style else "", visible(text))])
        print_formatted_text(fragments, style=STYLE, output=output, include_default_pygments_style=False)

    return write


def run(
    model: str | os.PathLike | None = None,
    *,
    input: TextIO | None = None,
    output: TextIO | None = None,
    state_dir: str | os.PathLike | None = None,
    backend: str | None = None,
) -> int:
    """Open the REPL on `model` (None: the bundled default) and return the exit status.

    Interactive when standard input and output are terminals and no streams are given;
    otherwise reads lines from `input` (default stdin) and writes suggestions to `output`.
    """
    from wordbot.predictor import Predictor

    try:
        predictor = Predictor.load(model, backend=backend)
    except (OSError, ValueError) as exc:
        print(f"wordbot: error: {exc}", file=sys.stderr)
        return 2
    interactive = input is None and output is None and sys.stdin.isatty() and sys.stdout.isatty()
    options = {"state_dir": state_dir, "backend": backend}
    if interactive and is_dumb_terminal():
        return Repl(predictor, write=_stream_writer(sys.stdout), **options).line_mode(sys.stdin, sys.stdout)
    if not interactive:
        out = output or sys.stdout
        return Repl(predictor, write=_stream_writer(out), **options).pipe(input or sys.stdin)
    repl = Repl(predictor, write=_terminal_writer(None), **options)
    return repl.interact(repl.session())
