"""What the REPL offers as you type: the menu (a prompt_toolkit `Completer`) and the
ghost text (an `AutoSuggest`), both over one `suggest()` call, the one place where the
REPL asks the model. `:model` swaps them whole (see `Repl.predictor`); prompt_toolkit's
`DynamicCompleter` and `DynamicAutoSuggest` follow the swap and run them in a thread.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from prompt_toolkit.auto_suggest import AutoSuggest, Suggestion
from prompt_toolkit.completion import CompleteEvent, Completer, Completion
from prompt_toolkit.document import Document

from wordbot.limits import DEFAULT_K
from wordbot.repl.commands import COMMANDS, is_command
from wordbot.repl.display import format_prob

if TYPE_CHECKING:
    from prompt_toolkit.buffer import Buffer

    from wordbot.predictor import Prediction, Predictor

GHOST_WORDS = 4  # ghost text long enough to save keystrokes, short enough to stay right

# After these a new word follows without a space; after other punctuation it takes one.
_NO_SPACE_AFTER = set("([{$#@/-\"'\u201c\u2018")


@dataclass
class Settings:
    """What the user can change while the REPL runs, and what the toolbar reports."""

    k: int = DEFAULT_K
    temperature: float = 0.0
    last_ms: float | None = None  # time the last menu suggestion took
    own_share: float | None = None  # how much of the last menu's first word came from what was learned


@dataclass
class Suggestions:
    """What the model offers at the end of a text, in the form the faces show it."""

    completing: str  # the partial word being completed; '' when offering next words
    space_before: bool  # whether a next word needs a space in front of it
    predictions: list[Prediction] = field(default_factory=list)


def suggest(predictor: Predictor, text: str, k: int) -> Suggestions:
    """Completions of the partial word at the end of `text`, or the next words after it:
    the core's one policy (`Predictor.suggest`), plus what only a terminal needs to
    know, whether a picked next word needs a space before it."""
    found = predictor.suggest(text, k)
    if found.partial:
        return Suggestions(found.partial, False, found.predictions)
    space = bool(text) and not text[-1].isspace() and text[-1] not in _NO_SPACE_AFTER
    return Suggestions("", space, found.predictions)


def completion_text(partial: str, word: str) -> str:
    """The text that replaces `partial`: the model's display form ("I'm", a capital at a
    sentence start) unless the user typed capitals of their own, which we keep."""
    if partial == partial.lower():
        return word
    return partial + word[len(partial) :]


class SuggestionCompleter(Completer):
    """The menu: completions of the partial word, or the likeliest next words, with
    their probabilities. Lines starting with `:` complete to command names."""

    def __init__(self, predictor: Predictor, settings: Settings):
        self.predictor = predictor
        self.settings = settings
        self.answered: Document | None = None  # the last text asked about (see keys.menu_after_a_dropped_request)

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        self.answered = document
        text = document.text_before_cursor
        if text.startswith(":"):
            yield from self._command_completions(text)
            return
        if document.text_after_cursor[:1].isalnum():
            return  # inside a word: a completion would leave its end behind ("ca|t" -> "cant")
        start = time.perf_counter()
        found = suggest(self.predictor, text, self.settings.k)
        self.settings.last_ms = (time.perf_counter() - start) * 1000
        first = found.predictions[0].word if found.predictions else None
        self.settings.own_share = None if first is None else self.predictor.learned_share(text, first)
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

    def __init__(self, predictor: Predictor, settings: Settings, n_words: int = GHOST_WORDS):
        self.predictor = predictor
        self.settings = settings
        self.n_words = n_words

    def get_suggestion(self, buffer: Buffer | None, document: Document) -> Suggestion | None:
        text = document.text
        if not document.is_cursor_at_the_end or not text.strip() or is_command(text):
            return None
        found = suggest(self.predictor, text, 1)
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
            ghost += self._next_words(text + ghost, found.predictions[0].word, words)
        return Ghost(ghost, fix) if ghost.strip() else None

    def _next_words(self, text: str, first_word: str, words: int) -> str:
        """`words` words to follow `text`, as the ghost shows them."""
        rest = self._continue(text, words)
        if not text[-1:].isspace():
            return rest
        if rest[:1].strip() and not rest[:1].isalnum():
            # Punctuation that hugs the word before (", everybody") would follow the
            # space typed after it: begin with the menu's first word instead.
            return first_word + (self._continue(text + first_word, words - 1) if words > 1 else "")
        return rest.lstrip()

    def _continue(self, text: str, words: int) -> str:
        seed = zlib.crc32(text.encode("utf-8", "surrogatepass"))
        return self.predictor.continue_text(text, words, temperature=self.settings.temperature, seed=seed)
