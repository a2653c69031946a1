"""How a memory's counts are mixed into the served distribution: the schemes that
`wordbot/memory.py` serves, as pure functions of the base distribution and the counts
the memory found for a context. Chosen on validation text
(`benchmarks/memory_validation.py`); `Scheme()` is the chosen one.

- "chain": hierarchical adaptation down to the base (Dirichlet / Pitman-Yor style):

      p_0 = p_base
      p_1(w)   = (max(c(w) - D, 0) + (b_1 + D n_1) p_0(w)) / (C + b_1)          (b_1 = inf: p_1 = p_0)
      p_k(w|h) = (max(c(h w) - D, 0) + (b_k' + D n(h)) p_{k-1}(w|h)) / (c(h) + b_k')

  over the memory contexts h (the last k-1 tokens) that were seen, n(h) the distinct
  words seen after h, b_k' = b_k n(h) with Witten-Bell, else b_k. D = 0 is Dirichlet
  (MAP) adaptation; D > 0 discounts each seen word as Kneser-Ney does, which trusts a
  context seen a few times with a few words far more.
- "linear": (1 - l) p_base + l p_mem, p_mem the memory's own interpolated
  absolute-discount n-gram, l = weights[k-1] c(h)/(c(h) + evidence) for the longest
  memory context h seen (order k; C for k = 1), as the served mix weights its n-gram.
- "learned": the same mix, its weight l learned from the history itself
  (prequential, `Prequential`): each message, before its counts are added, scores
  each of its tokens in its bucket (k and a log2 bucket of c(h)) as
  log((1 - l_g) p_base + l_g p_mem) for every weight l_g of `grid`; a bucket serves the
  l_g with the best total less `shrink` (l_g - l_0)^2 nats, l_0 the prior's weight
  there ("linear"'s at the bucket's count, 0, or "lower": the weight just chosen for the
  count bucket below it in the same order, 0 for the lowest). p_base at learn time is a cheap
  proxy: the served Kneser-Ney n-gram's probability of the token (`ngram_scorer`; the
  network would cost milliseconds a message). The chosen one (round 6): shrink 100
  toward the count bucket below, so a context whose count grows into a bucket nothing
  was scored in yet keeps its weight (round 4's shrink 1000 toward 0 dropped a word
  offered first at 4, 8 and 16 repeats, and offered a word typed again and again in one
  sentence late or never); a history the model already predicts (in domain) keeps
  weights near 0, a jargon gets 0.2-0.5. Without a scorer (a network-only predictor)
  it serves "linear"'s weights. `served` splits each bucket further by what the served
  n-gram knows of the context (round 5: no gain over the rule's 0.1 point, so not the
  default).

Either way the memory's weight is 0 with nothing learned; the result
sums to 1 and is `scale * p_base` plus a part only where the memory saw words
(`scale`: how much of the base is left, for `Memory.share`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from wordbot.text import EOS_ID, UNK_ID

SERVED_SPLITS = ("none", "novel", "order")


@dataclass(frozen=True)
class Scheme:
    """A way to mix; the defaults are the one chosen on validation text (round 6 of
    benchmarks/memory_validation.py: benchmarks/results/memory_validation.txt): "learned",
    shrink 100 toward the count bucket below ("linear"'s weights serve a memory that has
    no scorer)."""

    kind: str = "learned"  # "chain", "linear" or "learned" (above)
    order: int = 4  # memory contexts of up to order - 1 tokens
    strengths: tuple[float, ...] = (math.inf, 30.0)  # chain: b_1..b_N (inf: no level)
    witten_bell: bool = False  # chain: b_k times the distinct words seen after the context
    discount: float = 0.75  # D: subtracted from every count (chain and p_mem of linear)
    # linear: the memory's top weight where its longest seen context has order 1..N
    # (0 at order 1: where the memory saw none of the context, the base answers alone)
    weights: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7)
    evidence: float = 5.0  # linear: the count of that context at which it gets half its top weight
    # learned: the weights tried in each bucket, the prior ("today": linear's weight at the
    # bucket's count; "zero"; "lower": the weight chosen for the next lower count of the
    # same order, 0 for the lowest) and how strongly a bucket is drawn to it (nats per unit^2)
    grid: tuple[float, ...] = (0.0, 0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
    prior: str = "lower"
    shrink: float = 100.0
    # learned: what the buckets also tell apart about the served n-gram's own context there
    # ("none"; "novel": whether the memory saw a longer context than the training text did;
    # "order": the order of the longest context the training text saw, 1..order)
    served: str = "none"

    def __post_init__(self) -> None:
        if self.order < 1:
            raise ValueError("order must be at least 1")
        if self.kind not in ("chain", "linear", "learned"):
            raise ValueError(f"unknown scheme {self.kind!r}")
        strengths = (*self.strengths, *(self.strengths[-1:] * self.order))[: self.order]
        if any(not b > 0 for b in strengths):
            raise ValueError(f"prior strengths must be positive, got {strengths}")
        if not 0 <= self.discount < 1:
            raise ValueError("the discount must be in [0, 1)")
        object.__setattr__(self, "strengths", strengths)
        weights = (*self.weights, *(self.weights[-1:] * self.order))[: self.order] if self.weights else ()
        if self.kind != "chain" and (not weights or any(not 0 <= w <= 1 for w in weights)):
            raise ValueError("a linear scheme needs weights in [0, 1]")
        object.__setattr__(self, "weights", weights)
        if not self.grid or any(not 0 <= w < 1 for w in self.grid) or self.prior not in ("today", "zero", "lower"):
            raise ValueError("a learned scheme needs weights in [0, 1) and a prior 'today', 'zero' or 'lower'")
        if self.shrink < 0:
            raise ValueError("shrink must be at least 0")
        if self.served not in SERVED_SPLITS:
            raise ValueError(f"served must be one of {', '.join(SERVED_SPLITS)}")

    @property
    def splits(self) -> int:
        """How many parts each (order, count) bucket has by the served context (`served`)."""
        return {"none": 1, "novel": 2, "order": self.order}[self.served]

    def name(self) -> str:
        if self.kind == "learned":
            today = f" ({','.join(map('{:g}'.format, self.weights))} e={self.evidence:g})"
            return (
                f"learned order={self.order} shrink={self.shrink:g} to {self.prior}"
                + (today if self.prior == "today" else "")
                + (f" served={self.served}" if self.served != "none" else "")
                + (f" grid..{self.grid[-1]:g}" if self.grid[-1] != 0.9 else "")
            )
        if self.kind == "linear":
            return f"linear order={self.order} l={','.join(f'{w:g}' for w in self.weights)} e={self.evidence:g}" + (
                f" D={self.discount:g}" if self.discount else ""
            )
        b = ",".join(f"{x:g}" for x in self.strengths)
        return f"chain order={self.order} b={b}{' wb' if self.witten_bell else ''}" + (
            f" D={self.discount:g}" if self.discount else ""
        )


def mix(
    scheme: Scheme, base: np.ndarray, unigram: np.ndarray, total: int, seen: list, weight: float | None = None
) -> tuple[np.ndarray, float]:
    """(the adapted distribution over base + learned ids, the share of p_base left in it).
    `unigram`: counts by id (base + learned, len >= the result); `total`: their sum;
    `seen`: (c(h), ids, counts) for the memory contexts of orders 2.. that were seen;
    `weight`: the learned scheme's weight here (`Prequential.weight`)."""
    size = len(unigram)
    if scheme.kind != "chain":
        return _linear(scheme, base, unigram, total, seen, weight)
    d = scheme.discount
    b = scheme.strengths[0]
    p = np.zeros(size)
    if math.isinf(b):  # no context-free level: the chain starts at p_base itself
        p[: len(base)] = base
        scale = 1.0
    else:
        kept = np.count_nonzero(unigram)
        p[: len(base)] = base
        p *= (b + d * kept) / (total + b)
        p += np.maximum(unigram - d, 0.0) / (total + b)
        scale = (b + d * kept) / (total + b)
    for k, (count, ids, counts) in enumerate(seen, start=2):
        b = scheme.strengths[k - 1] * (len(ids) if scheme.witten_bell else 1)
        left = (b + d * len(ids)) / (count + b)
        p *= left
        p[ids] += (counts - d) / (count + b)
        scale *= left
    return p, scale


def _linear(scheme: Scheme, base: np.ndarray, unigram: np.ndarray, total: int, seen: list,
            weight: float | None) -> tuple[np.ndarray, float]:  # fmt: skip
    d = scheme.discount
    p = unigram / total
    for count, ids, counts in seen:
        p *= d * len(ids) / count
        p[ids] += (counts - d) / count
    if weight is None:
        matched = seen[-1][0] if seen else total
        weight = scheme.weights[len(seen)] * matched / (matched + scheme.evidence)
    p *= weight
    p[: len(base)] += (1.0 - weight) * base
    return p, 1.0 - weight


class Followers:
    """The words seen after one memory context as arrays (ids, counts), built the first
    time the context is served and then updated in place by every add and remove."""

    __slots__ = ("_counts", "_ids", "epoch", "order", "slot")

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        n = len(self.order)
        return self._ids[:n], self._counts[:n]

    def __init__(self, follow: dict, token_id, epoch: int) -> None:
        """`follow`: token -> count (the key None holds the total); `epoch`: the memory's
        id epoch, whose `token_id` gives the ids."""
        self.order = [t for t in follow if t is not None]  # the tokens by place
        self.slot = {t: j for j, t in enumerate(self.order)}
        self._ids = np.fromiter((token_id(t) for t in self.order), np.int64, len(self.order))
        self._counts = np.fromiter((follow[t] for t in self.order), np.float64, len(self.order))
        self.epoch = epoch

    def update(self, token: str, n: int, token_id) -> None:
        """Keep the arrays in step with `follow[token] = n` (0: gone)."""
        j = self.slot.get(token)
        if j is None:  # a new follower, appended; the arrays grow by doubling
            j = len(self.order)
            if j == len(self._ids):
                self._ids = np.concatenate([self._ids, np.zeros(max(4, j), np.int64)])
                self._counts = np.concatenate([self._counts, np.zeros(max(4, j))])
            self.order.append(token)
            self.slot[token] = j
            self._ids[j], self._counts[j] = token_id(token), n
        elif n > 0:
            self._counts[j] = n
        else:  # gone: the last follower takes its place
            last = len(self.order) - 1
            moved = self.order[last]
            self.order[j], self.slot[moved] = moved, j
            self._ids[j], self._counts[j] = self._ids[last], self._counts[last]
            self.order.pop()
            del self.slot[token]


# -- the learned weight (kind "learned") ------------------------------------------------

COUNT_BUCKETS = 6  # c(h) = 1, 2-3, 4-7, 8-15, 16-31, 32+
_Q_STEP = 64.0  # p_mem is kept as round(-64 ln p): 1/64 nat steps (1.6 %)
_Q_ZERO = 2047  # 11 bits; the top code is p_mem = 0 (or below e^-32)
_UNIT = 1e6  # the totals count millionths of a nat, as integers: add then subtract is exact
_FLOOR = 1e-12  # p_base below this (the proxy gave a token nothing) counts as this


def bucket(k: int, count: int) -> int:
    """The bucket of a position whose longest memory context seen has order k and count c(h)
    (k = 1: none seen, c = every learned token)."""
    return (k - 1) * COUNT_BUCKETS + min(int(count).bit_length() - 1, COUNT_BUCKETS - 1)


def position_codes(scheme: Scheme, sequence: Sequence[str], unigram, total: int, contexts: list) -> bytes:
    """What the memory (before this message) says about each token of `sequence` (BOS,
    tokens..., EOS) after its start: bucket << 11 | quantized p_mem, 2 bytes a token.
    `unigram(token)`: its count; `contexts[k-1]`: context -> {token: count, None: total}."""
    d, order, log = scheme.discount, scheme.order, math.log
    sequence = tuple(sequence)
    codes = []
    for j in range(1, len(sequence)):
        token = sequence[j]
        p, k, count = float(unigram(token)) / total, 1, total
        for m in range(2, min(order, j + 1) + 1):
            follow = contexts[m - 1].get(sequence[j - m + 1 : j])
            if follow is None:
                break  # a longer context holding an unseen one is unseen too
            count, k = follow[None], m
            seen = follow.get(token, 0)
            p = d * (len(follow) - 1) / count * p + (seen - d if seen else 0.0) / count
        q = min(_Q_ZERO - 1, round(-_Q_STEP * log(p))) if p > 0.0 else _Q_ZERO
        # `bucket(k, count)`, inline: this loop runs for every learned token
        codes.append(((k - 1) * COUNT_BUCKETS + min(int(count).bit_length() - 1, COUNT_BUCKETS - 1)) << 11 | q)
    return np.array(codes, np.uint16).tobytes()


class Prequential:
    """The learned scheme's weights: per bucket and grid weight l_g, the total of
    log((1 - l_g) p_base + l_g p_mem) over every learned token, each scored before its
    message's counts were added. Integer totals: `update(..., -1)` removes a message's
    contribution exactly (the later messages keep theirs, scored while it was there)."""

    def __init__(self, scheme: Scheme):
        self.grid = np.array(scheme.grid)
        self.served, self.splits, self.order = scheme.served, scheme.splits, scheme.order
        self.totals = np.zeros((scheme.order * COUNT_BUCKETS * self.splits, len(self.grid)), np.int64)
        self.tokens = np.zeros(len(self.totals), np.int64)  # tokens scored per bucket
        prior = np.zeros(len(self.totals))
        if scheme.prior == "today":  # linear's weight at a count inside the bucket (1, 3, 6, 12, 24, 48)
            count = np.array([1, 3, 6, 12, 24, 48][:COUNT_BUCKETS], dtype=np.float64)
            top = np.repeat(scheme.weights, COUNT_BUCKETS)
            prior = np.repeat(top * np.tile(count / (count + scheme.evidence), scheme.order), self.splits)
        self._penalty = scheme.shrink * (self.grid[None, :] - prior[:, None]) ** 2
        self._shrink, self._chained = scheme.shrink, scheme.prior == "lower"
        self._weights: np.ndarray | None = None

    def split(self, k, served_order):
        """The part of bucket (k, ...) for a position whose served n-gram context has order
        `served_order` (arrays or ints)."""
        if self.served == "novel":
            return k > served_order
        if self.served == "order":
            return np.minimum(served_order, self.order) - 1
        return 0

    def update(self, codes: bytes, base: np.ndarray, served_orders=None, *, sign: int) -> None:
        """Add (sign +1) or remove (-1) one message: its `position_codes` and the base
        probability of each of its tokens (and, split by the served context, the order of
        the served n-gram's context at each)."""
        if not codes:
            return
        code = np.frombuffer(codes, np.uint16).astype(np.int64)
        where = code >> 11
        if self.splits > 1:
            where = where * self.splits + self.split(where // COUNT_BUCKETS + 1, np.asarray(served_orders))
        q = code & 2047
        p_mem = np.where(q == _Q_ZERO, 0.0, np.exp(-q / _Q_STEP))[:, None]
        p_base = np.maximum(np.asarray(base, np.float64), _FLOOR)[:, None]
        units = np.rint(np.log((1 - self.grid) * p_base + self.grid * p_mem) * _UNIT).astype(np.int64)
        np.add.at(self.totals, where, units if sign > 0 else -units)
        np.add.at(self.tokens, where, sign)
        self._weights = None

    def weight(self, k: int, count: int, served_order: int = 1) -> float:
        """The memory's weight at a position of bucket (k, count) (whose served n-gram
        context has order `served_order`)."""
        weights = self._weights
        if weights is None:
            weights = self._weights = self._choose()
        return float(weights[bucket(k, count) * self.splits + int(self.split(k, served_order))])

    def _choose(self) -> np.ndarray:
        """Each bucket's weight: the grid's best total less the shrinkage toward its prior.
        "lower" goes up the count buckets of each order (and split) in turn, each drawn
        to the weight just chosen below it: a context whose count enters a bucket no
        message was scored in yet keeps the weight it had, rather than falling to 0."""
        score = self.totals / _UNIT
        if not self._chained:
            return self.grid[np.argmax(score - self._penalty, axis=1)]
        score = score.reshape(self.order, COUNT_BUCKETS, self.splits, len(self.grid))
        chosen = np.empty(score.shape[:3])
        below = np.zeros((self.order, self.splits))
        for c in range(COUNT_BUCKETS):
            penalty = self._shrink * (self.grid - below[..., None]) ** 2
            below = chosen[:, c] = self.grid[np.argmax(score[:, c] - penalty, axis=-1)]
        return chosen.reshape(-1)


class NgramScorer:
    """p_base at learn time, cheaply: the Kneser-Ney n-gram's probability of each token of a
    message after its own start (tokens outside its vocabulary as <unk>), then of its end;
    `scored` adds the order of the n-gram's context at each, `context_order` that of a
    message so far (what a learned scheme split by the served context reads)."""

    def __init__(self, ngram, tokenizer):
        self.ngram, self.index = ngram, tokenizer.index

    def _ids(self, tokens: Sequence[str]) -> list[int]:
        index = self.index
        return [index.get(t, UNK_ID) for t in tokens]

    def __call__(self, tokens: Sequence[str]) -> np.ndarray:
        return self.scored(tokens)[0]

    def scored(self, tokens: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        return self.ngram.sequence_probs([*self._ids(tokens), EOS_ID], orders=True)

    def scored_many(self, messages: Sequence[Sequence[str]]) -> tuple[np.ndarray, np.ndarray]:
        """`scored` of many messages in one pass, concatenated in order (each message's
        len(tokens) + 1 values, equal to its own `scored`)."""
        return self.ngram.messages_probs([[*self._ids(tokens), EOS_ID] for tokens in messages], orders=True)

    def context_order(self, context: Sequence[str]) -> int:
        ngram = self.ngram
        pad = ngram.order - 1
        return ngram.context_order(ngram.initial_state() + tuple(self._ids(context[-pad:] if pad else ())))


def score_messages(scorer, messages: Sequence[Sequence[str]], orders: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """`scorer`'s p_base of every token and end of `messages`, concatenated, and with
    `orders` the served context order at each (else None): in one pass where the scorer
    can (`NgramScorer.scored_many`), else message by message."""
    if hasattr(scorer, "scored_many"):
        probs, found = scorer.scored_many(messages)
        return probs, (found if orders else None)
    scored = [scorer.scored(m) if orders else (scorer(m), None) for m in messages]
    probs = np.concatenate([np.zeros(0), *(p for p, _ in scored)])
    return probs, (np.concatenate([np.zeros(0, np.int64), *(o for _, o in scored)]) if orders else None)


def ngram_scorer(ngram, tokenizer) -> NgramScorer:
    """The `NgramScorer` of `ngram` over `tokenizer`'s ids."""
    return NgramScorer(ngram, tokenizer)


def served_ngram_scorer(lm):
    """`ngram_scorer` of the n-gram a served model holds (itself, or the mix's), or None:
    one scorer per n-gram, so a memory attached again to a view of the same model keeps
    its scores (`Memory.score_with` rescores every message only for another scorer)."""
    from wordbot.ngram import KneserNey

    for model in (lm, *getattr(lm, "models", ())):
        if isinstance(model, KneserNey):
            scorer = model.__dict__.get("_memory_scorer")
            if scorer is None:
                scorer = model._memory_scorer = ngram_scorer(model, model.tokenizer)
            return scorer
    return None
