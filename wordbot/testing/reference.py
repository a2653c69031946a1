"""The served distribution as wordbot computed it before the fast paths, kept as the
reference that the parity tests and `benchmarks/bench_engine.py` hold the fast paths
to: the n-gram's distribution built densely, one full-vocabulary vector per seen
order, the networks' softmax in float64 from their logits, and the mix built from
them."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from wordbot.mix import OrderWeighted
from wordbot.text import UNK_ID


def dense_ngram_probs(ngram, state: Sequence[int]) -> tuple[np.ndarray, int]:
    """`KneserNey.probs_and_order` as it was: the unigram level, then every seen order
    interpolated over the one below it as a dense vector."""
    p = ngram._unigram
    seen = ngram._seen_contexts(state)
    for _, table, row in seen:
        lo, hi = table.starts[row], table.starts[row + 1]
        lower = p * table.gamma[row]
        lower[table.words[lo:hi]] += table.values[lo:hi]
        p = lower
    return p.copy(), (seen[-1][0] if seen else 1)


def dense_network_probs(network, state) -> np.ndarray:
    """The network's (or the ensemble's mean) next-token distribution as it was
    computed before the fast paths: the softmax of its logits in float64 (an engine
    without `logits`, such as the one bench_engine reads from before them, computed
    its own `probs` that way)."""
    if not hasattr(network, "logits"):
        return network.probs(state)
    logits = np.atleast_2d(network.logits(state)).astype(np.float64)
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (e / e.sum(axis=1, keepdims=True)).mean(axis=0)


class DenseMix(OrderWeighted):
    """`OrderWeighted` with `probs` as it was: the n-gram's dense distribution, the
    network's distribution in float64 (`dense_network_probs`), scaled and added part
    by part."""

    def probs(self, state: tuple) -> np.ndarray:
        network, ngram = self.models
        p, order = dense_ngram_probs(ngram, state[1])
        w = self.weights[order]
        p_network = dense_network_probs(network, state[0])
        n = self.network_size
        if n == len(p):
            p *= w
            p += (1.0 - w) * p_network
            return p
        outside_total = float(p[n:].sum())
        ngram_scale = w / (1.0 - float(p[UNK_ID]))
        share = (1.0 - w) * float(p_network[UNK_ID]) / outside_total if outside_total > 0 else 0.0
        p[n:] *= ngram_scale + share
        p[:n] *= ngram_scale
        p[:n] += (1.0 - w) * p_network
        p[UNK_ID] = 0.0
        return p


def sorted_top(probs: np.ndarray, ids: np.ndarray, k: int) -> list[int]:
    """The k likeliest of `ids` by sorting all of them: by probability, ties by id."""
    order = np.lexsort((ids, -probs[ids]))
    return [int(i) for i in ids[order[:k]]]
