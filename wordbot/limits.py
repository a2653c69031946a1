"""Every bound and default the faces share, in one place: how many words a face
offers, how much text it reads, how many words it writes. Each face imports its
row from here instead of keeping a number of its own that could drift."""

from __future__ import annotations

import os
from pathlib import Path

DEFAULT_K = 5  # next words offered when nobody says how many

# Suggestions per face: (smallest, largest).
CLI_K = (1, 1000)  # `wordbot next -k`: more than anyone reads, but a script may ask
BOT_K = (1, 10)  # `!next ... k=7`: a Discord message stays readable
REPL_K = (1, 20)  # `:k`: the menu scrolls past this; more is noise

# Words a continuation writes: (default, largest).
CLI_WORDS = (20, 1000)  # `wordbot continue -n`: a continuation ends at the end of a message long before
BOT_WORDS = (20, 100)  # `!continue ... words=30`

# Characters of input read before any other work (longer input is refused or cut first).
CLI_MAX_TEXT_CHARS = 100_000
BOT_MAX_INPUT_CHARS = 1000  # longer input gets a polite refusal

STATE_DIR_ENV = "WORDBOT_STATE_DIR"
# What the faces remember is their user's alone: the modes of a state directory and of its
# files (the REPL's history, the bot's store and journal) made here; one the user made keeps its own.
PRIVATE_DIRECTORY, PRIVATE_FILE = 0o700, 0o600


def file_reason(exc: OSError) -> str:
    """Why a file of the state directory could not be made or opened, in words."""
    if isinstance(exc, (FileExistsError, NotADirectoryError)):  # mkdir, or open, met a file on the way
        return "a file stands where a directory should be"
    if isinstance(exc, IsADirectoryError):
        return "it is a directory"
    return exc.strerror[:1].lower() + exc.strerror[1:] if exc.strerror else str(exc)


def state_dir() -> Path:
    """Where the faces keep what they remember (the REPL's history, the bot's store):
    $WORDBOT_STATE_DIR, else the user's state directory (~/.local/state/wordbot on Linux)."""
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    import platformdirs

    return Path(platformdirs.user_state_dir("wordbot"))
