"""The REPL's session: the `Repl` object (settings, the model in use, committed lines),
the prompt it builds from the pieces in this package, its three modes (a full terminal,
a dumb terminal, pipes) and `run()`, which picks one."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import TYPE_CHECKING, TextIO

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import DynamicAutoSuggest, ThreadedAutoSuggest
from prompt_toolkit.completion import DynamicCompleter, ThreadedCompleter
from prompt_toolkit.formatted_text import FormattedText
from prompt_toolkit.history import History
from prompt_toolkit.utils import is_dumb_terminal

from wordbot.errors import WordbotError
from wordbot.limits import DEFAULT_K
from wordbot.repl import commands
from wordbot.repl.display import (
    BANNER_WIDTH,
    STYLE,
    fill,
    format_prob,
    keys_help,
    shorten,
    stream_width,
    stream_writer,
    terminal_writer,
    text_width,
    visible,
)
from wordbot.repl.history import history_path, open_history
from wordbot.repl.keys import Recall, key_bindings, menu_after_a_dropped_request
from wordbot.repl.learning import OWN_TEXT_SHARE, Learner, say_once
from wordbot.repl.suggest import GHOST_WORDS, GhostText, Settings, SuggestionCompleter
from wordbot.text import join_text
from wordbot.threads import one_blas_thread

if TYPE_CHECKING:
    from prompt_toolkit.input import Input
    from prompt_toolkit.output import Output

    from wordbot.predictor import Predictor


class Repl:
    """The session state and the line handling shared by the interactive and pipe modes."""

    def __init__(
        self,
        predictor: Predictor,
        *,
        state_dir: str | os.PathLike | None = None,
        write: Callable[[str, str], None] | None = None,
        k: int = DEFAULT_K,
        temperature: float = 0.0,
        backend: str | None = None,
        learn: bool = False,
    ):
        self.backend = backend  # what --backend asked for; `:model` loads with it too
        self.settings = Settings(k=k, temperature=temperature)
        self.state_dir = state_dir
        # Learning from the user (wordbot/repl/learning.py): the predictor becomes a view with its own memory.
        self.learner = Learner(history_path(state_dir)) if learn else None
        self.not_learning = "--no-learn"  # why nothing is learned, when it is not, as :learned says
        self.predictor = predictor
        self.transcript: list[str] = []  # committed lines, in order
        self.errors = 0
        self._write = write or (lambda text, style: print(visible(text)))
        self.width: Callable[[], int | None] = lambda: None  # columns to wrap text to; None: unknown
        self.ask: Callable[[str], str | None] = lambda question: None  # a yes/no answer; None: no answer
        self.kept_history: History | None = None

    @property
    def predictor(self) -> Predictor:
        return self._predictor

    @predictor.setter
    def predictor(self, predictor: Predictor) -> None:
        """A new model brings its own menu and ghost text; the prompt's Dynamic* wrappers
        pick them up at the next keystroke."""
        if self.learner is not None:
            predictor = self.learner.attach(predictor)
        self._predictor = predictor
        self.completer = SuggestionCompleter(predictor, self.settings)
        self.ghost = GhostText(predictor, self.settings)

    def say(self, text: str, style: str = "") -> None:
        self._write(text, style)

    def error(self, text: str) -> None:
        self.errors += 1
        self._write(text, "error")

    # ---- building the prompt ----

    def history(self) -> History:
        self.kept_history = open_history(history_path(self.state_dir), self.error)
        return self.kept_history

    def toolbar(self) -> FormattedText:
        last = self.settings.last_ms
        timing = "-" if last is None else f"{last:.1f} ms"
        name = str(getattr(self.predictor, "name", "model"))[:16]
        own = "from your text | " if (self.settings.own_share or 0) >= OWN_TEXT_SHARE else ""
        status = f" {name} | {timing} | {own}"
        return FormattedText(
            [
                ("class:bottom-toolbar.text", status),
                ("class:bottom-toolbar.text", _key_hints(None if (w := self.width()) is None else w - len(status))),
            ]
        )

    def session(self, input: Input | None = None, output: Output | None = None) -> PromptSession:
        recall = Recall()
        session: PromptSession = PromptSession(
            message="> ",
            completer=ThreadedCompleter(DynamicCompleter(lambda: self.completer)),
            complete_while_typing=True,
            auto_suggest=ThreadedAutoSuggest(DynamicAutoSuggest(lambda: self.ghost)),
            history=self.history(),
            key_bindings=key_bindings(recall),
            bottom_toolbar=self.toolbar,
            style=STYLE,
            include_default_pygments_style=False,
            reserve_space_for_menu=6,
            input=input,
            output=output,
        )
        session.default_buffer.on_text_changed += recall.text_changed
        session.default_buffer.on_text_changed += lambda buffer: menu_after_a_dropped_request(
            buffer, lambda: self.completer
        )
        return session

    # ---- the three modes ----

    def banner(self, width: int | None = None) -> None:
        """The start screen; its model line wrapped between words to `width` columns (None:
        unknown, so 79) rather than mid-word by a narrower terminal."""
        self.say("wordbot: next-word suggestions as you type.", "banner")
        self.say(fill(f"Model: {self.predictor.describe()}", width, indent="  "), "note")
        self.say(keys_help(BANNER_WIDTH if width is None else max(width, 10)))
        self.say("Type :help for commands. Ctrl-D or :quit exits.", "note")

    def interact(self, session: PromptSession) -> int:
        """The interactive loop: one committed line per prompt, until Ctrl-D or :quit.

        Ctrl-C clears the line wherever it lands. While the prompt runs it is a key. After
        Enter the terminal is back in its own mode, so Ctrl-C is a signal: while the line is
        handled (a large paste takes a while) it drops that line's report, and anywhere else
        between prompts it is ignored; it never ends the session."""
        self.width = lambda: text_width(session.output)  # read again for :help: the window may change
        self.ask = lambda question: _ask(session, question)
        self.banner(self.width())
        self.start_learning()
        interrupts = _Interrupts()
        with interrupts.installed():
            while True:
                try:
                    line = session.prompt()
                except KeyboardInterrupt:
                    continue
                except EOFError:
                    return 0
                try:
                    with interrupts.armed():
                        if not self.commit(line):
                            return 0
                except KeyboardInterrupt:
                    continue

    def pipe(self, lines: Iterable[str], *, echo: bool = True) -> int:
        """Non-interactive: the suggestions for each line read (commands work too; the
        line after `:forget` answers its question)."""
        lines = iter(lines)
        self.ask = lambda question: next(lines, None)
        for raw in lines:
            if not self.commit(raw.rstrip("\r\n"), echo=echo):
                break
        return 1 if self.errors else 0

    def line_mode(self, input: TextIO, output: TextIO) -> int:
        """A terminal that cannot show menus (TERM=dumb): the terminal edits and echoes the
        line, and each line entered gets its next words. Ctrl-C drops the line being typed
        (or its report) and prompts again, as in the full terminal."""
        term = os.environ.get("TERM", "")
        self.width = lambda: stream_width(output)
        intro = (
            f"wordbot: this terminal (TERM={term}) shows no live suggestions; each line you "
            "enter gets its next words and a continuation. :help for commands; Ctrl-D exits."
        )
        self.say(fill(intro, self.width()))
        self.ask = lambda question: _ask_line(input, output, question)
        self.start_learning()
        interrupts = _Interrupts()
        with interrupts.installed():
            while True:
                output.write("> ")
                output.flush()
                try:
                    with interrupts.armed():
                        line = input.readline()
                        if not line:
                            output.write("\n")  # after Ctrl-D, the shell's prompt on a line of its own
                            return 0
                        if not self.commit(line.rstrip("\r\n")):
                            return 0
                except KeyboardInterrupt:
                    output.write("\n")

    # ---- one committed line ----

    def commit(self, line: str, *, echo: bool = False) -> bool:
        """Handle one committed line; False means: exit."""
        if commands.is_command(line):
            return self.command(line.strip())
        self.transcript.append(line)
        if not line.strip():
            return True  # a blank line asks nothing, as in a shell
        if self.learner is not None:
            self.learner.learn(line)
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
            lines.append(f"  continued: {join_text(shorten(text), continuation)}")
        width = self.width()  # a terminal would cut a long continuation mid-word; a pipe keeps one line each
        return "\n".join(lines if width is None else (fill(line, width, indent="    ") for line in lines))

    def start_learning(self) -> None:
        """Say once that the REPL learns, and learn the history file in the background."""
        if self.learner is not None:
            say_once(self.learner.history.parent, lambda text, style: self.say(fill(text, self.width()), style))
            self.learner.start()

    def command(self, line: str) -> bool:
        """Do a `:command` line; False means: exit."""
        return commands.run_command(self, line)

    def help_text(self, width: int | None = None) -> str:
        """:help's text, wrapped between words to `width` columns (None: unknown, not wrapped)."""
        return commands.help_text(self, width)


# The toolbar's key hints, in the order shown; on a narrow terminal the first ones go first,
# so that how to get help and how to quit stay in sight rather than being cut off the edge.
_KEY_HINTS = ("Alt-F word", "Right accept", "Tab pick", ":help", "Ctrl-D quit")
_HINT_ORDER = ("Tab pick", "Right accept", "Alt-F word", ":help", "Ctrl-D quit")


def _key_hints(room: int | None) -> str:
    """The key hints that fit in `room` columns (None: unknown, so all of them)."""
    kept = list(_HINT_ORDER)
    for dropped in _KEY_HINTS:
        if room is None or len("  ".join(kept)) <= room:
            break
        kept.remove(dropped)
    return "  ".join(kept)


def _ask(session: PromptSession, question: str) -> str | None:
    """A one-line answer typed at a prompt of its own (kept out of the history)."""
    try:
        return PromptSession(input=session.input, output=session.output).prompt(question)
    except (EOFError, KeyboardInterrupt):
        return None


def _ask_line(input: TextIO, output: TextIO, question: str) -> str | None:
    output.write(question)
    output.flush()
    line = input.readline()
    return line.rstrip("\r\n") if line else None


class _Interrupts:
    """SIGINT between two prompts (prompt_toolkit handles it during one): a
    KeyboardInterrupt while armed, nothing otherwise."""

    def __init__(self) -> None:
        self._armed = False

    def __call__(self, signum: int, frame: object) -> None:
        if self._armed:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Handle SIGINT while in the block (only the main thread can; elsewhere, as before)."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        previous = signal.signal(signal.SIGINT, self)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, previous)

    @contextlib.contextmanager
    def armed(self) -> Iterator[None]:
        self._armed = True
        try:
            yield
        finally:
            self._armed = False


def run(
    model: str | os.PathLike | None = None,
    *,
    input: TextIO | None = None,
    output: TextIO | None = None,
    state_dir: str | os.PathLike | None = None,
    backend: str | None = None,
    learn: bool = True,
) -> int:
    """Open the REPL on `model` (None: the bundled default) and return the exit status.

    An interactive REPL learns from what its user types unless `learn` is False; lines
    read from a pipe are never learned.

    Interactive when standard input and output are terminals and no streams are given;
    otherwise reads lines from `input` (default stdin) and writes suggestions to `output`.
    A model that cannot be loaded is one line, `wordbot: error: ...`, and status 2, as
    the CLI reports any `WordbotError`.
    """
    one_blas_thread()  # serving: one BLAS thread for the process
    try:
        predictor = commands.load_predictor(model, backend)
    except WordbotError as exc:
        print(f"wordbot: error: {exc}", file=sys.stderr)
        return 2
    interactive = input is None and output is None and sys.stdin.isatty() and sys.stdout.isatty()
    options = {"state_dir": state_dir, "backend": backend, "learn": learn and interactive}
    if interactive and is_dumb_terminal():
        return Repl(predictor, write=stream_writer(sys.stdout), **options).line_mode(sys.stdin, sys.stdout)
    if not interactive:
        piped = Repl(predictor, write=stream_writer(output or sys.stdout), **options)
        if learn:
            piped.not_learning = "lines read from a pipe are never learned"
        return piped.pipe(input or sys.stdin)
    repl = Repl(predictor, write=terminal_writer(None), **options)
    return repl.interact(repl.session())
