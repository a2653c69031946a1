"""Interpolated modified Kneser-Ney n-gram model (Chen & Goodman 1998): the baseline
the recurrent model has to beat, and a LanguageModel a Predictor can serve. Its
files and the cache that keeps a model's counted n-gram between runs are
wordbot.ngram_cache; how it is mixed with the network is wordbot.mix.

Counting is vectorised with NumPy (a few seconds for half a million tokens); a full
next-token distribution is a handful of array operations per order.
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Iterable, Sequence

import numpy as np

from wordbot.artifacts import DEFAULT_ORDER, MAX_NGRAM_ORDER
from wordbot.text import BOS_ID, PAD_ID, Tokenizer

# Above this many tokens, `messages_probs` looks them up with numpy's calls, below it with a
# bisect each (cheaper for a message's few words).
SMALL_BATCH = 200

# A discount estimate that falls to zero or below (tiny or odd corpora) would leave no
# mass for the lower orders, and unseen tokens would get probability 0.
MIN_DISCOUNT = 0.05


def modified_kn_discounts(counts: np.ndarray) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from the counts of one order.

    Y = n1 / (n1 + 2 n2),  Dk = k - (k + 1) Y n(k+1) / nk  for k = 1, 2, 3,
    where nk is the number of n-grams seen exactly k times. Estimates that the
    formula cannot give (some nk is zero) or that fall outside (0, k] are clamped.
    """
    n = [int(np.count_nonzero(counts == k)) for k in (1, 2, 3, 4)]
    y = n[0] / (n[0] + 2 * n[1]) if n[0] > 0 and n[1] > 0 else 0.5
    out = []
    for k in (1, 2, 3):
        d = k - (k + 1) * y * n[k] / n[k - 1] if n[k - 1] > 0 else k * y
        out.append(float(min(max(d, MIN_DISCOUNT), k)))
    return out[0], out[1], out[2]


class _Order:
    """One order's interpolation table: for each context row, the words seen after it
    with their discounted probability mass, and the mass left for the lower order."""

    def __init__(self, words, values, starts, gamma, row_of_context):
        self.words = words  # (types,) int32, grouped by context row
        self.values = values  # (types,) float64: max(c - D(c), 0) / total(context)
        self.starts = starts  # (rows + 1,) int64: row r is words[starts[r]:starts[r+1]]
        self.gamma = gamma  # (rows,) float64: (D1 N1 + D2 N2 + D3 N3+) / total(context)
        self.row_of_context = row_of_context  # (context ids,) int64, -1 if never a context
        self._word_view = None

    def word_view(self):
        """`words` for a bisect: a memoryview reads an item 3x faster than the array."""
        if self._word_view is None:
            words = self.words
            self._word_view = memoryview(words) if words.flags.c_contiguous else words
        return self._word_view


class KneserNey:
    """Interpolated modified Kneser-Ney over a Tokenizer's vocabulary.

    Every message is padded on the left with `order - 1` start tokens, so every
    position has a full context (as NLTK and many textbooks do). The highest order
    uses raw counts; lower orders use continuation counts N1+(. h w), the number of
    distinct words seen before `h w`. Each order has its own three discounts. The
    unigram level is interpolated with a uniform distribution over every token except
    `<pad>` and `<s>`, so nothing else ever gets probability 0 and those two never
    get any.

    State: the tuple of the last `order - 1` token ids.
    """

    def __init__(self, tokenizer: Tokenizer, order: int, orders: list[_Order], context_keys: list,
                 discounts: np.ndarray):  # fmt: skip
        self.tokenizer = tokenizer
        self.order = order
        self.vocab_size = len(tokenizer)
        self._orders = orders  # orders[k - 1] is the k-gram table, k = 1..order
        # context_keys[m] (m = 1..order-2): sorted keys first_word * size(m-1 ids) + id of the
        # remaining (m-1)-gram; the position of a key is the id of that m-gram context.
        self._context_keys = context_keys
        self.discounts = discounts  # (order, 3): D1, D2, D3+ for orders 1..order
        # Number of ids of contexts of length 1, 2, ...: the vocabulary, then each key table.
        self._context_sizes = [self.vocab_size] + [len(k) for k in context_keys[2:]]
        allowed = np.ones(self.vocab_size)
        allowed[[PAD_ID, BOS_ID]] = 0.0
        self._uniform = allowed / allowed.sum()
        self._unigram = self._interpolate(self._orders[0], 0, self._uniform)
        self._unigram.setflags(write=False)

    # -- the LanguageModel protocol --------------------------------------------------

    def initial_state(self) -> tuple[int, ...]:
        return (BOS_ID,) * (self.order - 1)

    def advance(self, state: tuple[int, ...], token_id: int) -> tuple[int, ...]:
        if self.order == 1:
            return ()
        return (*state[1:], int(token_id))

    def probs(self, state: Sequence[int]) -> np.ndarray:
        """Next-token distribution (V,) after the context `state` (any length)."""
        return self.probs_and_order(state)[0]

    def prob(self, state: Sequence[int], token_id: int) -> float:
        """`probs(state)[token_id]` alone (a memory scoring what it learns): a lookup per
        seen order, no distribution built; equal to it up to rounding."""
        p = float(self._unigram[token_id])
        for _, table, row in self._seen_contexts(state):  # the lowest order first
            lo, hi = int(table.starts[row]), int(table.starts[row + 1])
            j = lo + int(table.words[lo:hi].searchsorted(token_id))
            value = float(table.values[j]) if j < hi and table.words[j] == token_id else 0.0
            p = float(table.gamma[row]) * p + value
        return p

    def sequence_probs(self, ids: Sequence[int], orders: bool = False):
        """`prob` of each of `ids` after the ones before it, the first after the start
        state (a message scored from its start), vectorised per order; with `orders`,
        (those, the `context_order` of each position)."""
        return self.messages_probs([ids], orders=orders)

    def messages_probs(self, messages: Sequence[Sequence[int]], orders: bool = False):
        """`sequence_probs` of many messages in one pass, concatenated in order: each
        message scored from its own start, exactly (==) as it is alone."""
        lengths = np.fromiter(map(len, messages), np.int64, len(messages))
        ids = np.concatenate([np.zeros(0, np.int64), *(np.asarray(m, dtype=np.int64) for m in messages)])
        n, pad = len(ids), self.order - 1
        # Every message after its own `pad` start tokens; `at`: where its tokens are.
        at = np.arange(n) + pad * np.repeat(np.arange(1, len(messages) + 1), lengths)
        stream = np.full(n + pad * len(messages), BOS_ID, dtype=np.int64)
        stream[at] = ids
        batched = n > SMALL_BATCH
        p = self._unigram[ids].astype(np.float64)
        order = np.ones(n, dtype=np.int64)
        context = np.full(n, -1, dtype=np.int64)
        for k in range(2, self.order + 1):
            m = k - 1
            word = stream[at - m]  # the token m places before each one
            if m == 1:
                context = word.copy()
            else:
                key = np.where(context >= 0, word * self._context_sizes[m - 2] + context, -1)
                context = self._context_ids(m, key, context >= 0, batched)
            table = self._orders[k - 1]
            known = (context >= 0) & (context < len(table.row_of_context))
            row = np.full(n, -1, dtype=np.int64)
            row[known] = table.row_of_context[context[known]]
            seen = np.flatnonzero(row >= 0)
            if len(seen):
                r = row[seen]
                lo, end = table.starts[r].astype(np.int64), table.starts[r + 1].astype(np.int64)
                value = (_row_values_batched if batched else _row_values)(table, lo, end, ids[seen])
                p[seen] = table.gamma[r] * p[seen] + value
                order[seen] = k
        return (p, order) if orders else p

    def _context_ids(self, m: int, key: np.ndarray, valid: np.ndarray, batched: bool) -> np.ndarray:
        """The id of each context `key` of length m (-1: never seen, or not `valid`)."""
        keys = self._context_keys[m]
        if not keys.flags.aligned and batched:
            keys = self._aligned_keys(m)
        # bisect: searchsorted copies an unaligned array (mapped from a file) at every call
        at = keys.searchsorted(key) if keys.flags.aligned else np.array([bisect_left(keys, x) for x in key], np.int64)
        found = (at < len(keys)) & valid
        found[found] = keys[at[found]] == key[found]
        return np.where(found, at, -1)

    def _aligned_keys(self, m: int) -> np.ndarray:
        """An aligned copy of the context keys of length m, made once, at the first batch
        that needs it (8 bytes a key): only a key table mapped unaligned from a file has none."""
        copies = self.__dict__.setdefault("_aligned_copies", {})
        found = copies.get(m)
        if found is None:
            found = copies[m] = np.array(self._context_keys[m], dtype=np.int64)
        return found

    def context_order(self, state: Sequence[int]) -> int:
        """The highest order whose context (the last order - 1 tokens of `state`) was
        seen in training: 1 when even the last token never preceded anything."""
        seen = self._seen_contexts(state)
        return seen[-1][0] if seen else 1

    def probs_and_order(self, state: Sequence[int]) -> tuple[np.ndarray, int]:
        """`probs` and `context_order`: the lowest order scaled once, then the seen rows."""
        base, scale, rows, order = self.interpolation(state)
        p = base * scale
        for words, values in rows:
            p[words] += values  # a row names each word once: no repeated index
        return p, order

    def interpolation(self, state: Sequence[int]) -> tuple[np.ndarray, float, list, int]:
        """The distribution after `state` as (base, scale, rows, order): p(w) = scale *
        base[w] + the rows' values at w. Each seen order nests p_k = gamma_k p_(k-1) + row_k;
        unrolled, `base` is the dense lowest order (read-only) weighted by every gamma."""
        seen = self._seen_contexts(state)
        rows, scale = [], 1.0
        for _, table, row in reversed(seen):  # the highest order first: its row is not scaled
            lo, hi = table.starts[row], table.starts[row + 1]
            rows.append((table.words[lo:hi], table.values[lo:hi] * scale))
            scale *= float(table.gamma[row])
        return self._unigram, scale, rows, (seen[-1][0] if seen else 1)

    def _seen_contexts(self, state: Sequence[int]) -> list[tuple[int, _Order, int]]:
        """(order, table, row) for the orders 2, 3, ... whose context was seen in training."""
        out = []
        context_id = -1
        for k in range(2, self.order + 1):
            m = k - 1  # context length at order k
            if m > len(state):
                break
            word = int(state[-m])
            if m == 1:
                context_id = word if 0 <= word < self.vocab_size else -1
            else:
                keys = self._context_keys[m]
                key = word * self._context_sizes[m - 2] + context_id
                # bisect: searchsorted copies an unaligned array (mapped from an .npz) to probe 19 keys
                i = int(keys.searchsorted(key)) if keys.flags.aligned else bisect_left(keys, key)
                context_id = i if i < len(keys) and keys[i] == key else -1
            if context_id < 0:
                break  # a longer context containing an unseen one is unseen too
            table = self._orders[k - 1]
            row = int(table.row_of_context[context_id]) if context_id < len(table.row_of_context) else -1
            if row >= 0:
                out.append((k, table, row))
        return out

    @staticmethod
    def _interpolate(table: _Order, row: int, lower: np.ndarray) -> np.ndarray:
        lo, hi = table.starts[row], table.starts[row + 1]
        p = lower * table.gamma[row]
        p[table.words[lo:hi]] += table.values[lo:hi]
        return p

    # -- training --------------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: Iterable[str], tokenizer: Tokenizer, order: int = DEFAULT_ORDER) -> KneserNey:
        """Train on messages (one per string), each framed by `<s>` and `</s>`."""
        return cls.train((tokenizer.encode(t, bos=True, eos=True) for t in texts), tokenizer, order)

    @classmethod
    def train(cls, sequences: Iterable[Sequence[int]], tokenizer: Tokenizer, order: int = DEFAULT_ORDER) -> KneserNey:
        """Count n-grams in id sequences (one message each, `[BOS_ID, ..., EOS_ID]`)."""
        if not 1 <= order <= MAX_NGRAM_ORDER:
            raise ValueError(f"order must be 1..{MAX_NGRAM_ORDER}, got {order}")
        vocab_size = len(tokenizer)
        pad = order - 1
        stream, target_pos = _padded_stream(sequences, pad)
        if stream.min() < 0 or stream.max() >= vocab_size:
            raise ValueError("token id outside the tokenizer's vocabulary")
        words = stream[target_pos]

        # Context ids at every target position, built right to left: the id of the
        # m-gram context (x1..xm) is the rank of x1 * size + id(x2..xm) among all keys.
        context_ids = [np.zeros(len(target_pos), dtype=np.int64), stream[target_pos - 1] if pad else None]
        context_keys: list = [None, None]  # contexts of length 1 are the token ids themselves
        size = vocab_size
        for m in range(2, order):
            key = stream[target_pos - m] * size + context_ids[m - 1]
            keys, inverse = np.unique(key, return_inverse=True)
            context_keys.append(keys)
            context_ids.append(inverse.reshape(-1))
            size = len(keys)

        # The k-gram at each target position, as (context id, word) and its type id.
        gram_keys = [None] + [context_ids[k - 1] * vocab_size + words for k in range(1, order + 1)]
        uniques, inverses, raw_counts = [None], [None], [None]
        for k in range(1, order + 1):
            u, inv, c = np.unique(gram_keys[k], return_inverse=True, return_counts=True)
            uniques.append(u)
            inverses.append(inv.reshape(-1))
            raw_counts.append(c)

        tables, discounts = [], []
        for k in range(1, order + 1):
            if k == order:
                counts = raw_counts[k]
            else:
                # Continuation count of each k-gram: distinct (k+1)-grams ending in it.
                suffix = np.empty(len(uniques[k + 1]), dtype=np.int64)
                suffix[inverses[k + 1]] = inverses[k]
                counts = np.bincount(suffix, minlength=len(uniques[k]))
            d = modified_kn_discounts(counts)
            discounts.append(d)
            n_contexts = 1 if k == 1 else (vocab_size if k == 2 else len(context_keys[k - 1]))
            tables.append(_build_order(uniques[k], counts, d, vocab_size, n_contexts))
        return cls(tokenizer, order, tables, context_keys, np.array(discounts))

    # -- persistence (the formats and the cache: wordbot.ngram_cache) ----------------------

    def save(self, path) -> None:
        """Write the tables and vocabulary to one .npz (format 1, what a model directory
        may ship as ngram.npz; no pickles): a path or a binary file."""
        from wordbot.ngram_cache import save_npz

        save_npz(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, tokenizer: Tokenizer | None = None) -> KneserNey:
        """An n-gram that `save` (an .npz) or `ngram_cache.save_directory` (a directory
        of .npy files, memory-mapped) wrote, checked against itself and the vocabulary:
        a damaged file is a ModelError that names it, never an IndexError later."""
        from wordbot.ngram_cache import load

        return load(path, tokenizer)


NGRAM_REMEDY = "the file is damaged: delete it (the n-gram is then counted again) or use --backend rnn"


def _padded_stream(sequences: Iterable[Sequence[int]], pad: int) -> tuple[np.ndarray, np.ndarray]:
    """Every message in one id stream, each after `pad` start tokens, and the positions
    of the messages' own tokens in it (the targets that get counted)."""
    chunks, targets = [], []
    offset = 0
    for seq in sequences:
        ids = np.asarray(seq, dtype=np.int64)
        if len(ids) and ids[0] == BOS_ID:
            ids = ids[1:]
        if len(ids) == 0:
            continue
        chunks.append(np.full(pad, BOS_ID, dtype=np.int64))
        chunks.append(ids)
        targets.append(np.arange(offset + pad, offset + pad + len(ids)))
        offset += pad + len(ids)
    if not chunks:
        raise ValueError("no training text")
    return np.concatenate(chunks), np.concatenate(targets)


def _build_order(gram_keys: np.ndarray, counts: np.ndarray, discounts, vocab_size: int, n_contexts: int) -> _Order:
    """Turn sorted (context * V + word) keys and their counts into an interpolation table."""
    contexts = gram_keys // vocab_size
    words = (gram_keys % vocab_size).astype(np.int32)
    counts = counts.astype(np.float64)
    d = np.asarray(discounts)[np.minimum(counts, 3).astype(np.int64) - 1]
    rows_context, starts = np.unique(contexts, return_index=True)
    row = np.repeat(np.arange(len(rows_context)), np.diff(np.append(starts, len(contexts))))
    total = np.bincount(row, weights=counts)
    left = np.bincount(row, weights=d)  # D1 N1 + D2 N2 + D3 N3+ per context
    values = np.maximum(counts - d, 0.0) / total[row]
    row_of_context = np.full(n_contexts, -1, dtype=np.int64)
    row_of_context[rows_context] = np.arange(len(rows_context))
    return _Order(words, values, np.append(starts, len(contexts)).astype(np.int64), left / total, row_of_context)


def _row_values(table: _Order, lo: np.ndarray, end: np.ndarray, words: np.ndarray) -> np.ndarray:
    """The table's value of each word in its row words[lo:end] (0 where absent; a row's
    words are sorted): a bisect each, cheaper than numpy's calls for a message's few words."""
    row_words, values = table.word_view(), table.values
    out = np.zeros(len(words))
    for j, (w, a, b) in enumerate(zip(words.tolist(), lo.tolist(), end.tolist(), strict=True)):
        at = bisect_left(row_words, w, a, b)
        if at < b and row_words[at] == w:
            out[j] = values[at]
    return out


def _row_values_batched(table: _Order, lo: np.ndarray, end: np.ndarray, words: np.ndarray) -> np.ndarray:
    """`_row_values` for many words at once: one binary search per row, all of them in
    step (about log2 of the longest row numpy passes)."""
    row_words, values = table.words, table.values
    out = np.zeros(len(words))
    left, right, open_ = lo.copy(), end.copy(), np.flatnonzero(lo < end)
    while len(open_):  # the searches still open: [left, right) holds the first word >= theirs
        mid = (left[open_] + right[open_]) >> 1
        below = row_words[mid] < words[open_]
        left[open_[below]] = mid[below] + 1
        right[open_[~below]] = mid[~below]
        open_ = open_[left[open_] < right[open_]]
    hit = np.flatnonzero(left < end)
    hit = hit[row_words[left[hit]] == words[hit]]
    out[hit] = values[left[hit]]
    return out
