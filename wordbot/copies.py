"""A continuation never replays what one member wrote: the learned messages' runs of
COPY_RUN consecutive words (punctuation between them left out), counted, so that
forgetting a message forgets its runs. Split out of `wordbot/memory.py`, which holds one
`Runs` per memory and takes its lock around it."""

from __future__ import annotations

from collections.abc import Sequence

from wordbot.text import is_word

COPY_RUN = 9  # a continuation may copy at most COPY_RUN - 1 consecutive words of one message


class Runs:
    """The hashes of the learned COPY_RUN-word runs, each with how many messages hold it
    (hash() is stable within a process: recounted at each start, never stored)."""

    def __init__(self) -> None:
        self.counts: dict[int, int] = {}

    def count(self, tokens: Sequence[str], sign: int) -> None:
        """Add (sign +1) or take out (-1) the runs of one message's tokens."""
        counts = self.counts
        for run in _word_runs(tokens):
            run = hash(run)
            n = counts.get(run, 0) + sign
            if n > 0:
                counts[run] = n
            else:
                counts.pop(run, None)

    def would_copy(self, recent_tokens: Sequence[str], candidate: str) -> bool:
        """Whether `candidate` after `recent_tokens` makes COPY_RUN consecutive words of
        one learned message."""
        if not is_word(candidate):
            return False
        run = [t for t in recent_tokens[-4 * COPY_RUN :] if is_word(t)][-(COPY_RUN - 1) :]
        return len(run) == COPY_RUN - 1 and hash((*run, candidate)) in self.counts


def _word_runs(tokens: Sequence[str]) -> set[tuple[str, ...]]:
    """The distinct COPY_RUN-word runs of a message, punctuation left out."""
    words = [t for t in tokens if is_word(t)]
    return {tuple(words[i : i + COPY_RUN]) for i in range(len(words) - COPY_RUN + 1)}
