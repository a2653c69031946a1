"""Served distributions computed ahead, for text known in advance (`wordbot eval` scores
whole messages): the distributions after the prefixes of the coming messages are
computed together and handed to the predictor's distribution cache, which
`probs_after` and `suggest_after` read, so the suggestion policy and its figures are
unchanged.

What batching buys: the networks' output layer as one (positions x width) @ (width x
vocab) product over a few hundred positions of several messages, instead of one product
per position, each of which reads the whole 15 MB output matrix from memory. The
recurrence is the one pass a fresh context takes; the n-gram and the mix are the served
ones, position by position.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence

import numpy as np

from wordbot.mix import OrderWeighted
from wordbot.text import BOS_ID

NETWORK_BATCH = 256  # positions per output product: 41 MB of float64 rows for two networks
CHUNK = 32  # distributions handed to the predictor's cache (of 64) at a time


class _Rows:
    """A network whose state is a row number of logits computed beforehand: it answers
    what the mix asks of a network (`scaled_probs`, `probs`) as the network would,
    each row a softmax and, for an ensemble, the mean over its networks. `exponentiate`
    readies a range of rows, just before they are read (so they are still in cache).

    The exponentials are float32 of the float64 `logits - max` (2.5x faster than
    float64's here): relatively within ~(|z| + 1) 6e-8 for a value e^z, so every
    probability stays within 1e-7 of the float64 softmax; sums are float64."""

    def __init__(self, logits: np.ndarray):
        self._logits = logits  # (M, T, V) float64, the network's own (changed in place)
        self._exp = np.empty(logits.shape, dtype=np.float32)
        self._weights = np.zeros(logits.shape[:2])  # (M, T): 1 / (M * each row's sum), once exponentiated
        self._done = np.zeros(logits.shape[1], dtype=bool)

    def exponentiate(self, lo: int, hi: int) -> None:
        """Rows lo .. hi - 1 as exp(logits - their max), and their weights (each row
        once: a range asked for again, its distributions evicted before their use,
        is left as it is)."""
        todo = lo + np.flatnonzero(~self._done[lo:hi])
        if not len(todo):
            return
        whole = len(todo) == hi - lo
        z = self._logits[:, lo:hi] if whole else self._logits[:, todo]  # a view, else a copy
        z -= z.max(axis=2, keepdims=True)
        e = np.exp(z.astype(np.float32))
        self._exp[:, todo] = e
        self._weights[:, todo] = 1.0 / (len(e) * e.sum(axis=2, dtype=np.float64))
        self._done[todo] = True

    def scaled_probs(self, row: int, scale: float, out: np.ndarray) -> np.ndarray:
        """`scale` times the distribution of `row`, written into `out` (V,) float64."""
        weights, e = scale * self._weights[:, row], self._exp[:, row]
        np.multiply(e[0], weights[0], out=out)
        for m in range(1, len(e)):
            out += e[m] * weights[m]
        return out

    def probs(self, row: int) -> np.ndarray:
        return self.scaled_probs(row, 1.0, np.empty(self._exp.shape[2]))


def batched(lm) -> bool:
    """Whether `lm` can be batched: a network (one or an ensemble), or the served mix
    of one with an n-gram."""
    return hasattr(lm.models[0] if isinstance(lm, OrderWeighted) else lm, "logits_many")


def _network_rows(lm, states: Sequence) -> _Rows:
    """The network part of `lm` (batchable) after each of `states`, as rows."""
    if isinstance(lm, OrderWeighted):
        return _Rows(lm.models[0].logits_many([state[0] for state in states]))
    return _Rows(lm.logits_many(states))


def _served(lm, rows: _Rows, picked: Sequence[tuple[int, object]]) -> list[np.ndarray]:
    """`lm.probs(state)` for each (row, state) of `picked` (rows in a range not yet
    exponentiated), its network part read from `rows`."""
    rows.exponentiate(picked[0][0], picked[-1][0] + 1)
    if not isinstance(lm, OrderWeighted):
        return [rows.probs(row) for row, _ in picked]
    mixed = copy.copy(lm)  # the served mix itself, its network's part read from the rows
    mixed.models = [rows, lm.models[1]]
    return [mixed.probs((row, state[1])) for row, state in picked]


def distributions(lm, states: Sequence) -> list[np.ndarray]:
    """`lm.probs(state)` for each of `states` (for a batchable `lm`), the network's
    output layer as one product over all of them."""
    return _served(lm, _network_rows(lm, states), list(enumerate(states)))


class Lookahead:
    """The contexts `wordbot eval` will ask a predictor about, in order, and their
    distributions computed ahead: `ready(m, j)` before the position after
    `contexts[m][:j]` makes sure its distribution is in the predictor's cache.

    A block of up to NETWORK_BATCH positions (whole messages where they fit) shares one
    pass of the networks' output layer; the served distributions are then made CHUNK
    at a time. A context of `MAX_CONTEXT` tokens or more (keyed by its recent part) is
    left to the predictor. Each position is charged its share of the work done for it
    (`ready` returns it), so timings stay honest."""

    def __init__(self, predictor, contexts: Sequence[Sequence[str]]):
        from wordbot.predictor import MAX_CONTEXT

        self.predictor = predictor
        self.enabled = batched(predictor.lm)
        # Per message, the ids of its longest context; its keys are made when needed (all
        # of them at once would take memory quadratic in a message's length).
        self._ids = [predictor.tokenizer.encode_tokens(tokens[: MAX_CONTEXT - 1]) for tokens in contexts]
        self._block: dict[tuple[int, int], int] = {}  # (m, j) -> its row
        self._rows: _Rows | None = None
        self._states: list = []
        self._charged: dict[tuple[int, int], float] = {}  # (m, j) -> seconds of batched work done for it

    def ready(self, m: int, j: int) -> float:
        """Make the distribution after context j of message m ready; the seconds of
        batched work that position is charged (0 when it is not batched)."""
        if not self.enabled or j > len(self._ids[m]):
            return 0.0
        if (m, j) not in self._block:
            self._compute_block(m, j)
        if self._key(m, j) not in self.predictor._probs:
            self._fill_chunk(m, j)
        return self._charged.pop((m, j), 0.0)

    def _key(self, m: int, j: int) -> tuple[int, ...]:
        """The cache key of context j of message m, as `Predictor._context` makes it."""
        return (BOS_ID, *self._ids[m][:j])

    def _charge(self, positions: list[tuple[int, int]], started: float) -> None:
        """Share the seconds since `started` evenly among `positions`."""
        share = (time.perf_counter() - started) / len(positions)
        for where in positions:
            self._charged[where] = self._charged.get(where, 0.0) + share

    def _compute_block(self, m: int, j: int) -> None:
        """The network rows of the positions from (m, j) on, up to NETWORK_BATCH."""
        started = time.perf_counter()
        predictor, picked = self.predictor, []
        with predictor._lock:
            for n in range(m, len(self._ids)):
                first = j if n == m else 0
                last = min(len(self._ids[n]), first + NETWORK_BATCH - len(picked) - 1)
                if picked and len(picked) + len(self._ids[n]) + 1 - first > NETWORK_BATCH:
                    break
                predictor._state(self._key(n, last))  # one pass; every prefix's state is kept on the way
                picked += [((n, i), predictor._state(self._key(n, i))) for i in range(first, last + 1)]
        self._states = [state for _, state in picked]
        self._rows = _network_rows(predictor.lm, self._states)
        self._block = {where: row for row, (where, _) in enumerate(picked)}
        self._charge(list(self._block), started)

    def _fill_chunk(self, m: int, j: int) -> None:
        """The served distributions of message m's positions j, j + 1, ... (up to CHUNK,
        within the block) into the predictor's cache."""
        from wordbot.predictor import PROBS_CACHE_SIZE

        started = time.perf_counter()
        predictor = self.predictor
        wanted = [(m, i) for i in range(j, min(j + CHUNK, len(self._ids[m]) + 1)) if (m, i) in self._block]
        picked = [(self._block[w], self._states[self._block[w]]) for w in wanted]
        with predictor._lock:
            for (_, i), probs in zip(wanted, _served(predictor.lm, self._rows, picked), strict=True):
                predictor._remember(predictor._probs, self._key(m, i), probs, PROBS_CACHE_SIZE)
        self._charge(wanted, started)
