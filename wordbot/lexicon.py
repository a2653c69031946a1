"""The learned words as a predictor ranks and completes them (`Lexicon`, snapshots of a
`WordIndex`), and how one learned message is read (`read_message`: its tokens, cut to the bounds, and the written
forms of its words). Split out of `wordbot/memory.py`, which re-exports both."""

from __future__ import annotations

from bisect import bisect_left

import numpy as np

from wordbot.text import is_debris, is_word, normalize, tokenize

MAX_MESSAGE_CHARS = 4000  # Discord's longest message (with Nitro); more is cut before tokenizing
MAX_MESSAGE_TOKENS = 1000  # a message of 4,000 one-character symbols is cut here
_SENTENCE_END = {".", "...", "!", "?"}
_SEE_THROUGH = {'"', "'", "(", ")"}  # quotes and parens keep a sentence start for the next word


class Lexicon:
    """The learned words at one moment (ids `base_size + j` for `words[j]`), as a
    predictor ranks and completes them: taken with the adapted distribution under one
    lock, so ids and words always agree even while another thread learns or forgets."""

    def __init__(self, base_size: int, words: tuple[str, ...], sorted_words=(), sorted_ids=(), offered=()):
        self.base_size = base_size
        self.words = words
        self._sorted_words = sorted_words  # the offered learned words by spelling, and their ids
        self._sorted_ids = np.asarray(sorted_ids, dtype=np.int64)
        self.offered = np.asarray(offered, dtype=np.int64)  # their ids in order
        self._last: tuple[str, int, int] = ("", 0, len(sorted_words))  # the last prefix looked up, its slice

    def starting_with(self, prefix: str) -> np.ndarray:
        """The ids of the learned words a user may be offered that start with `prefix`.
        Typing one more letter looks only among the words that started with the last
        prefix (none: nothing to look at)."""
        words = self._sorted_words
        last, lo, hi = self._last  # one read: another thread may replace it
        if not prefix.startswith(last):
            lo, hi = 0, len(words)
        if lo < hi:
            lo = bisect_left(words, prefix, lo, hi)
            hi = bisect_left(words, prefix + "\U0010ffff", lo, hi)
        self._last = (prefix, lo, hi)
        return self._sorted_ids[lo:hi]

    def token(self, i: int) -> str:
        return self.words[i - self.base_size]


class WordIndex:
    """The learned words a user may be offered (words, not debris), sorted by spelling,
    with their ids: kept by insertion as words come and go, so a new word costs a bisect
    and two array copies, never a sort. Its arrays are replaced, never changed: a
    `Lexicon` taken from it stays as it was."""

    def __init__(self) -> None:
        self.words: list[str] = []
        self.ids = np.zeros(0, np.int64)  # the id of each of `words`
        self.offered = np.zeros(0, np.int64)  # the same ids in order

    def add(self, token: str, i: int) -> None:
        """`token` (id `i`) joins the index, if it is a word a user may be offered."""
        if is_word(token) and not is_debris(token):
            at = bisect_left(self.words, token)
            self.words.insert(at, token)
            self.ids = np.insert(self.ids, at, i)
            self.offered = np.insert(self.offered, np.searchsorted(self.offered, i), i)

    def remove(self, token: str, i: int) -> None:
        at = bisect_left(self.words, token)
        if at < len(self.words) and self.words[at] == token:
            del self.words[at]
            self.ids = np.delete(self.ids, at)
            self.offered = np.delete(self.offered, np.searchsorted(self.offered, i))

    def lexicon(self, base_size: int, learned: tuple[str, ...]) -> Lexicon:
        """A snapshot over `learned` (every learned token, by id)."""
        return Lexicon(base_size, learned, tuple(self.words), self.ids, self.offered)


def read_message(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The tokens of a message (as `tokenize` gives them, cut to the bounds) and
    (token, written form) for its words away from a sentence start."""
    text = text[:MAX_MESSAGE_CHARS]
    tokens = tokenize(text)[:MAX_MESSAGE_TOKENS]
    written = normalize(text, lower=False)
    lower = written.lower()
    if len(lower) != len(written):  # lowercasing changed the length (rare scripts): no casing evidence
        return tokens, []
    forms, cursor, sentence_start = [], 0, True
    for token in tokens:
        at = lower.find(token, cursor)
        if at < 0:
            break
        cursor = at + len(token)
        form = written[at:cursor]
        if not sentence_start and form[:1].isalpha():
            forms.append((token, form))
        if token not in _SEE_THROUGH:
            sentence_start = token in _SENTENCE_END
    return tokens, forms
