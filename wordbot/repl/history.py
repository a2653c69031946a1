"""The REPL's history of committed lines: where it lives, and a file history that never
ends the session. A history file that cannot be read or written (read-only, a directory
in its place, a state directory without permission, a disk that fills) is said once in
one line, and the session goes on with its lines kept in memory. What the user typed is
theirs alone: a state directory or history file made here is private to them."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from prompt_toolkit.history import FileHistory, History, InMemoryHistory

from wordbot.limits import PRIVATE_DIRECTORY, PRIVATE_FILE, file_reason
from wordbot.limits import state_dir as default_state_dir


def history_path(state_dir: str | os.PathLike | None = None) -> Path:
    """Where committed lines are kept: `state_dir`, else $WORDBOT_STATE_DIR, else the
    user's state directory (e.g. ~/.local/state/wordbot/history)."""
    return (Path(state_dir) if state_dir is not None else default_state_dir()) / "history"


class _NoBlankLines:
    """History that keeps no blank or all-space lines: Up should recall something."""

    def append_string(self, string: str) -> None:
        if string.strip():
            super().append_string(string)  # type: ignore[misc]


class MemoryHistory(_NoBlankLines, InMemoryHistory):
    pass


class KeptHistory(_NoBlankLines, FileHistory):
    """prompt_toolkit's `FileHistory`, but a failure to read or write the file calls
    `lost(reason)` once and the file is left alone from then on (the lines typed stay in
    memory, so Up still recalls them)."""

    def __init__(self, filename: str | os.PathLike, lost: Callable[[str], None]):
        super().__init__(filename)
        self._lost = lost
        self.broken = False

    def load_history_strings(self) -> Iterable[str]:
        try:
            return list(super().load_history_strings())
        except (OSError, UnicodeError) as exc:
            self._give_up(exc)
            return []

    def store_string(self, string: str) -> None:
        if self.broken:
            return
        try:
            super().store_string(string)
        except OSError as exc:
            self._give_up(exc)

    def _give_up(self, exc: Exception) -> None:
        if not self.broken:
            self.broken = True
            self._lost(_reason(exc))


def _reason(exc: Exception) -> str:
    if isinstance(exc, OSError):
        return file_reason(exc)
    return f"it is not text ({type(exc).__name__})"


def open_history(path: Path, warn: Callable[[str], None]) -> History:
    """The history kept in `path`, or (when it cannot be kept there) one in memory, with
    `warn` told once why in a line."""

    def lost(reason: str) -> None:
        warn(f"history will not be kept: cannot use {path} ({reason})")

    try:
        path.parent.mkdir(PRIVATE_DIRECTORY, parents=True, exist_ok=True)
        # Can be written, and is created where missing: readable by its owner only, as a
        # shell's history is (an existing file keeps the mode its owner gave it).
        os.close(os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, PRIVATE_FILE))
        with open(path, "rb"):  # can be read
            pass
    except OSError as exc:
        lost(_reason(exc))
        return MemoryHistory()
    return KeptHistory(path, lost)
