"""The REPL learns from the one person typing into it: each committed line, and at start
the last HISTORY_LINES lines of the history file, read in a background thread so the
first prompt never waits. Everything stays on this computer (the predictor's memory
and the history file in the state directory); `--no-learn` turns it off, `:forget`
erases both, `:learned` says how much is learned.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from wordbot.repl.commands import is_command

if TYPE_CHECKING:
    from wordbot.predictor import Predictor

HISTORY_LINES = 10_000  # the most recent history lines learned at start
LEARN_BATCH = 256  # history lines learned at once (`Predictor.learn_many`)
KEPT_LINES = 20_000  # lines kept to learn again when :model swaps the model
TOLD_FILE = "learning-told"  # in the state directory: the first-start line was said
OWN_TEXT_SHARE = 0.5  # the toolbar says "from your text" when the memory gave at least this much

NOTICE = "wordbot learns from what you type here, on this computer only; --no-learn turns it off, :forget erases it."


def history_lines(path: Path, limit: int = HISTORY_LINES) -> list[str]:
    """The last `limit` lines kept in a prompt_toolkit history file (`+` lines; a line
    entered across several `+` lines is one), commands left out; [] if unreadable."""
    entries: deque[str] = deque(maxlen=limit)
    current: list[str] = []
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            for raw in file:
                if raw.startswith("+"):
                    current.append(raw[1:].rstrip("\r\n"))
                    continue
                if current:
                    entries.append("\n".join(current))
                    current = []
    except OSError:
        return []
    if current:
        entries.append("\n".join(current))
    return [line for line in entries if line.strip() and not is_command(line)]


class Learner:
    """What the session learns and from where: the predictor it teaches (a view with its
    own memory), the lines learned so far (to teach a model `:model` loads), and the
    history file. Thread-safe: the start-up thread and the prompt learn side by side."""

    def __init__(self, history: Path):
        self.history = history
        self.predictor: Predictor | None = None
        self.lines: deque[str] = deque(maxlen=KEPT_LINES)
        self._lock = threading.Lock()
        self._generation = 0  # bumped by :forget and by a new model: older threads stop
        self.thread: threading.Thread | None = None

    def attach(self, predictor: Predictor) -> Predictor:
        """A view of `predictor` with its own memory, taught the lines learned so far
        (in the background)."""
        view = predictor.view()
        with self._lock:
            self._generation += 1
            self.predictor = view
            lines = list(self.lines)
            self.lines.clear()
        if lines:
            self._in_background(lambda: lines)
        return view

    def start(self) -> None:
        """Learn the history file in the background."""
        self._in_background(lambda: history_lines(self.history))

    def _in_background(self, lines: Callable[[], list[str]]) -> None:
        generation = self._generation
        self.thread = threading.Thread(target=self._learn_all, args=(lines, generation), daemon=True)
        self.thread.start()

    def _learn_all(self, lines: Callable[[], list[str]], generation: int) -> None:
        found = lines()
        for start in range(0, len(found), LEARN_BATCH):
            batch = found[start : start + LEARN_BATCH]
            with self._lock:  # kept first: a model `:model` loads meanwhile is taught them too
                if generation != self._generation or self.predictor is None:
                    return
                predictor = self.predictor
                self.lines.extend(batch)
            # Not under the lock: a committed line waits for the memory's lock alone (a few ms).
            # :forget and :model stop it: `stop` is asked under the memory's lock, before the
            # `forget_all` that follows the change of generation.
            predictor.learn_many(batch, stop=lambda: generation != self._generation)

    def learn(self, line: str) -> None:
        """Learn one committed line (not a command, not a blank line)."""
        if line.strip() and not is_command(line):
            self._learn(line, self._generation)

    def _learn(self, line: str, generation: int) -> bool:
        with self._lock:
            if generation != self._generation or self.predictor is None:
                return False
            self.predictor.learn(line)
            self.lines.append(line)
            return True

    def forget(self) -> str | None:
        """Empty the memory and the history file; the reason it could not, or None."""
        with self._lock:
            self._generation += 1
            self.lines.clear()
            if self.predictor is not None:
                self.predictor.forget_all()
        try:
            if self.history.exists():
                self.history.write_bytes(b"")
        except OSError as exc:
            return f"cannot empty {self.history}: {exc.strerror or exc}"
        return None

    def summary(self) -> str:
        """:learned's answer: messages, words, and words new to the model."""
        memory = self.predictor.memory if self.predictor is not None else None
        if memory is None or not memory.messages:
            return "nothing learned yet: each line you enter is learned"
        new = len(memory.words)
        return (
            f"learned {memory.messages:,} line{'s' * (memory.messages != 1)}: "
            f"{memory.tokens - memory.messages:,} words and marks, {new:,} new to the model"
        )


def say_once(state_dir: Path, say: Callable[[str, str], None]) -> None:
    """The first start's line about learning (remembered in the state directory)."""
    told = state_dir / TOLD_FILE
    if told.exists():
        return
    say(NOTICE, "note")
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        told.write_text("told\n", encoding="utf-8")
    except OSError:
        pass  # said again next time: better than never
