"""Text printed to a terminal as it reads, not as the terminal would act on it."""

from __future__ import annotations

import re

# Control characters in text printed line by line, but for the line break and the tab; and
# the invisible bidi embeddings, overrides and isolates, which reorder what the terminal shows.
_SHOWN_CONTROL_RE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


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
