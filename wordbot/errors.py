"""The errors wordbot raises on purpose: each carries a one-line message that the
CLI, the bot and the REPL can show a user as it is."""

from __future__ import annotations


class WordbotError(Exception):
    """Base class: a problem the user can fix, with a message that says how."""


class ModelError(WordbotError, ValueError):
    """A model directory is missing, corrupt, or does not match itself."""


class CorpusError(WordbotError, ValueError):
    """A training corpus cannot be read or holds no usable text."""


class ConfigError(WordbotError, ValueError):
    """A training configuration has an unknown key or a value out of range."""
