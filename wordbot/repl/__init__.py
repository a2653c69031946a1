"""The terminal REPL: live next-word suggestions, word completion and ghost text as you type.

A thin prompt_toolkit face over a `Predictor`: `suggest` (the menu and the ghost text),
`keys` (bindings and prompt_toolkit work-arounds), `commands` (`:k`, `:model`, ...),
`history`, `display` (what reaches the screen) and `app` (the session and `run()`).
When standard input or output is not a terminal it reads lines and prints suggestions.
"""

from __future__ import annotations

from wordbot.repl.app import Repl, run
from wordbot.repl.display import KEYS_HELP, format_prob, one_line, visible
from wordbot.repl.history import history_path
from wordbot.repl.suggest import GHOST_WORDS, Ghost, GhostText, Settings, SuggestionCompleter, completion_text

__all__ = [
    "GHOST_WORDS",
    "KEYS_HELP",
    "Ghost",
    "GhostText",
    "Repl",
    "Settings",
    "SuggestionCompleter",
    "completion_text",
    "format_prob",
    "history_path",
    "one_line",
    "run",
    "visible",
]
