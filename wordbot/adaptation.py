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

Either way the memory's weight grows with its counts and is 0 with none; the result
sums to 1 and is `scale * p_base` plus a part only where the memory saw words
(`scale`: how much of the base is left, for `Memory.share`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Scheme:
    """A way to mix; the defaults are the one chosen on validation text (round 3 of
    benchmarks/memory_validation.py: benchmarks/results/memory_validation.txt)."""

    kind: str = "linear"  # "chain" or "linear" (above)
    order: int = 4  # memory contexts of up to order - 1 tokens
    strengths: tuple[float, ...] = (math.inf, 30.0)  # chain: b_1..b_N (inf: no level)
    witten_bell: bool = False  # chain: b_k times the distinct words seen after the context
    discount: float = 0.75  # D: subtracted from every count (chain and p_mem of linear)
    # linear: the memory's top weight where its longest seen context has order 1..N
    # (0 at order 1: where the memory saw none of the context, the base answers alone)
    weights: tuple[float, ...] = (0.0, 0.3, 0.5, 0.7)
    evidence: float = 5.0  # linear: the count of that context at which it gets half its top weight

    def __post_init__(self) -> None:
        if self.order < 1:
            raise ValueError("order must be at least 1")
        if self.kind not in ("chain", "linear"):
            raise ValueError(f"unknown scheme {self.kind!r}")
        strengths = (*self.strengths, *(self.strengths[-1:] * self.order))[: self.order]
        if any(not b > 0 for b in strengths):
            raise ValueError(f"prior strengths must be positive, got {strengths}")
        if not 0 <= self.discount < 1:
            raise ValueError("the discount must be in [0, 1)")
        object.__setattr__(self, "strengths", strengths)
        weights = (*self.weights, *(self.weights[-1:] * self.order))[: self.order] if self.weights else ()
        if self.kind == "linear" and (not weights or any(not 0 <= w <= 1 for w in weights)):
            raise ValueError("a linear scheme needs weights in [0, 1]")
        object.__setattr__(self, "weights", weights)

    def name(self) -> str:
        if self.kind == "linear":
            return f"linear order={self.order} l={','.join(f'{w:g}' for w in self.weights)} e={self.evidence:g}" + (
                f" D={self.discount:g}" if self.discount else ""
            )
        b = ",".join(f"{x:g}" for x in self.strengths)
        return f"chain order={self.order} b={b}{' wb' if self.witten_bell else ''}" + (
            f" D={self.discount:g}" if self.discount else ""
        )


def mix(scheme: Scheme, base: np.ndarray, unigram: np.ndarray, total: int, seen: list) -> tuple[np.ndarray, float]:
    """(the adapted distribution over base + learned ids, the share of p_base left in it).
    `unigram`: counts by id (base + learned, len >= the result); `total`: their sum;
    `seen`: (c(h), ids, counts) for the memory contexts of orders 2.. that were seen."""
    size = len(unigram)
    if scheme.kind == "linear":
        return _linear(scheme, base, unigram, total, seen)
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


def _linear(scheme: Scheme, base: np.ndarray, unigram: np.ndarray, total: int, seen: list) -> tuple[np.ndarray, float]:
    d = scheme.discount
    p = unigram / total
    for count, ids, counts in seen:
        p *= d * len(ids) / count
        p[ids] += (counts - d) / count
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
