"""What was learned from one user or one community: counts of their messages over
orders 1..N, added one message at a time and removed exactly, and the way they are
mixed into the served distribution (hierarchical Dirichlet adaptation of it).

    memory = Memory(tokenizer.vocab)          # the served vocabulary, ids 0..B-1
    memory.add(key, "ping Knghtbrd on GitHub")  # one message; `key` names it for remove
    p = memory.adapt(base_probs, tokenize("ping"))   # (B + len(memory.words),), sums to 1
    memory.written("knghtbrd")                # "Knghtbrd": as the community writes it
    memory.share(base_probs, context, i, p)   # how much of p[i] came from the memory (toolbar)
    memory.copies_too_much(recent, "word")    # would "word" make 9 copied words in a row?
    memory.remove(key)                        # every count exactly as before the add; clear()
    memory.words, .messages, .tokens, .version, .count(token)   # what was learned

The mix, chosen on validation text (`benchmarks/memory_validation.py`: communities
cut from the training split; +1.0 top-3 and +0.9 keystroke-savings points over the
frozen model, perplexity 140 against 149), is hierarchical Dirichlet adaptation:

    p_1(w)   = (c(w) + b_1 p_base(w|h)) / (C + b_1)          (b_1 = inf: p_1 = p_base)
    p_k(w|h) = (c(h_{k-1} w) + b_k p_{k-1}(w|h)) / (c(h_{k-1}) + b_k)

for k = 2..order over the memory contexts h_{k-1} (the last k-1 tokens, `<s>` first)
that were seen, with b_k = strengths[k-1] times the distinct words seen after the
context (Witten-Bell): a context the community always ends the same way is trusted
after a few sightings, one followed by everything ("the") hardly at all. The result
is `A * p_base + S`, S sparse over the words the memory saw there. The memory's
weight grows with its evidence and is exactly nothing when nothing is learned
(`adapt` returns `p_base` itself then). With the chosen b_1 = inf a learned word gets
probability only after contexts it was seen in. Words outside the served vocabulary
get ids after it (`B + j`, j their index in `words`); the ids of later words shift
when a word is forgotten, so key caches on `version`.

`copies_too_much` keeps a continuation from replaying a member's message: an index
of learned 9-word runs (counted, so `remove` forgets them) says whether one more word
would make 9 consecutive words of one learned message.

Thread-safe: every method takes one lock. Bounded: a message is cut to
MAX_MESSAGE_CHARS characters and MAX_MESSAGE_TOKENS tokens before it is counted.
"""

from __future__ import annotations

import math
import threading
from bisect import bisect_left
from collections import Counter
from collections.abc import Hashable, Sequence
from functools import cached_property

import numpy as np

from wordbot.text import BOS, EOS, is_debris, is_word, normalize, tokenize

MAX_MESSAGE_CHARS = 4000  # Discord's longest message (with Nitro); more is cut before tokenizing
MAX_MESSAGE_TOKENS = 1000  # a message of 4,000 one-character symbols is cut here
COPY_RUN = 9  # a continuation may copy at most COPY_RUN - 1 consecutive words of one message
# Dirichlet prior strengths b_1..b_N (how many learned tokens weigh as much as the
# base distribution at each order; with Witten-Bell, per distinct word seen after the
# context), chosen on validation text: benchmarks/results/memory_validation.txt.
DEFAULT_STRENGTHS = (math.inf, 30.0, 30.0)
DEFAULT_WITTEN_BELL = True
_SENTENCE_END = {".", "...", "!", "?"}
_SEE_THROUGH = {'"', "'", "(", ")"}  # quotes and parens keep a sentence start for the next word


class _Context:
    """The tokens that followed one context in the learned messages."""

    __slots__ = ("cached", "follow", "total")

    def __init__(self) -> None:
        self.total = 0
        self.follow: dict[str, int] = {}
        self.cached: tuple[int, np.ndarray, np.ndarray] | None = None  # (ids epoch, ids, counts)


class Lexicon:
    """The learned words at one moment (ids `base_size + j` for `words[j]`), as a
    predictor ranks and completes them: taken with the adapted distribution under one
    lock, so ids and words always agree even while another thread learns or forgets."""

    def __init__(self, base_size: int, words: tuple[str, ...]):
        self.base_size = base_size
        self.words = words

    @cached_property
    def _sorted(self) -> tuple[list[str], np.ndarray]:
        offered = [j for j, w in enumerate(self.words) if is_word(w) and not is_debris(w)]
        order = sorted(offered, key=self.words.__getitem__)
        return [self.words[j] for j in order], np.array(order, dtype=np.int64) + self.base_size

    @cached_property
    def offered(self) -> np.ndarray:
        """The ids of the learned words a user may be offered (words, not punctuation)."""
        return np.sort(self._sorted[1])

    def starting_with(self, prefix: str) -> np.ndarray:
        """The ids of the learned words a user may be offered that start with `prefix`."""
        words, ids = self._sorted
        lo = bisect_left(words, prefix)
        return ids[lo : bisect_left(words, prefix + "\U0010ffff", lo)]

    def token(self, i: int) -> str:
        return self.words[i - self.base_size]


class _Message:
    """One learned message, kept compactly (a tuple of shared strings per field) so
    that `remove` can take back exactly what `add` counted."""

    __slots__ = ("form_tokens", "forms", "tokens")

    def __init__(self, tokens: tuple[str, ...], form_tokens: tuple[str, ...], forms: tuple[str, ...]):
        self.tokens, self.form_tokens, self.forms = tokens, form_tokens, forms


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


class Memory:
    """Counts of learned messages, and the served distribution adapted to them."""

    def __init__(
        self,
        base_vocab: Sequence[str],
        *,
        order: int = 3,
        strengths: Sequence[float] | None = None,
        witten_bell: bool = DEFAULT_WITTEN_BELL,
    ):
        if order < 1:
            raise ValueError("order must be at least 1")
        strengths = tuple(DEFAULT_STRENGTHS if strengths is None else strengths)
        strengths = (strengths + (strengths[-1],) * order)[:order]
        if any(not b > 0 for b in strengths):
            raise ValueError(f"prior strengths must be positive, got {strengths}")
        self.order = order
        self.strengths = strengths
        # b_k for a context = strengths[k-1] * the distinct words seen after it: a context
        # after which the community always writes the same word ("ping" -> a name) is
        # trusted after few sightings; one followed by everything ("the") is not.
        self.witten_bell = witten_bell
        self._base_size = len(base_vocab)
        self._base_id = {w: i for i, w in enumerate(base_vocab)}
        self._lock = threading.RLock()
        self.clear()

    # -- learning and forgetting --------------------------------------------------

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._messages: dict[Hashable, _Message] = {}
            self._words: list[str] = []  # learned tokens outside the base vocabulary
            self._word_id: dict[str, int] = {}
            # One string object per distinct token, so a million learned tokens share their text.
            self._canonical = {w: w for w in self._base_id}
            self._unigram = np.zeros(self._base_size + 64)  # token counts by id
            self._total = 0
            self._contexts: list[dict[tuple[str, ...], _Context]] = [{} for _ in range(self.order)]
            self._forms: dict[str, Counter[str]] = {}
            self._runs: dict[int, int] = {}  # hash of a 9-word run -> messages holding it
            self._epoch = 0  # bumped when word ids move
            self._lexicon = Lexicon(self._base_size, ())
            self._lexicon_epoch = 0
            self._written: tuple[int, dict[str, str | None]] = (-1, {})  # (version, token -> form)
            self._version = getattr(self, "_version", -1) + 1  # never reused: caches key on it

    def add(self, key: Hashable, text: str) -> None:
        """Learn one message; `key` (a message id) names it for `remove`. A key already
        learned is replaced (an edited message)."""
        tokens, forms = read_message(text)
        with self._lock:
            if key in self._messages:
                self._forget(self._messages.pop(key))
            canonical = self._canonical
            tokens = tuple(canonical.get(t, t) for t in tokens)
            form_tokens = tuple(canonical.get(t, t) for t, _ in forms)
            written = tuple(canonical.get(t, t) if f == t else f for t, f in forms)
            message = _Message(tokens, form_tokens, written)
            self._messages[key] = message
            self._count(message, +1)
            self._version += 1

    def remove(self, key: Hashable) -> bool:
        """Forget one message exactly; False if `key` was never learned (or is forgotten)."""
        with self._lock:
            message = self._messages.pop(key, None)
            if message is None:
                return False
            self._forget(message)
            self._version += 1
            return True

    def _forget(self, message: _Message) -> None:
        self._count(message, -1)
        for token in {*message.tokens, EOS}:
            i = self._word_id.get(token)
            if i is not None and self._unigram[i] == 0:
                self._drop_word(token)

    def _count(self, message: _Message, sign: int) -> None:
        sequence = (BOS, *message.tokens, EOS)
        for j in range(1, len(sequence)):
            token = sequence[j]
            self._unigram_add(token, sign)
            for k in range(2, min(self.order, j + 1) + 1):
                self._context_add(k, sequence[j - k + 1 : j], token, sign)
        for token, form in zip(message.form_tokens, message.forms, strict=True):
            seen = self._forms.setdefault(token, Counter())
            seen[form] += sign
            if seen[form] <= 0:
                del seen[form]
                if not seen:
                    del self._forms[token]
        for run in _word_runs(message.tokens):  # recounted, not stored: hash() is stable in a process
            run = hash(run)
            n = self._runs.get(run, 0) + sign
            if n > 0:
                self._runs[run] = n
            else:
                self._runs.pop(run, None)

    def _unigram_add(self, token: str, sign: int) -> None:
        i = self._base_id.get(token)
        if i is None:
            i = self._word_id.get(token)
            if i is None:
                i = self._base_size + len(self._words)
                self._words.append(token)
                self._word_id[token] = i
                self._canonical[token] = token
                self._epoch += 1
                if i >= len(self._unigram):
                    self._unigram = np.concatenate([self._unigram, np.zeros(len(self._unigram))])
        self._unigram[i] += sign
        self._total += sign

    def _context_add(self, k: int, context: tuple[str, ...], token: str, sign: int) -> None:
        table = self._contexts[k - 1]
        entry = table.get(context)
        if entry is None:
            entry = table[context] = _Context()
        entry.total += sign
        n = entry.follow.get(token, 0) + sign
        if n > 0:
            entry.follow[token] = n
        else:
            entry.follow.pop(token, None)
        entry.cached = None
        if entry.total <= 0:
            del table[context]

    def _drop_word(self, token: str) -> None:
        """A learned word no message holds any more leaves `words`; the last word takes its id."""
        i = self._word_id.pop(token)
        self._canonical.pop(token, None)
        last = self._words.pop()
        if last != token:
            self._words[i - self._base_size] = last
            self._word_id[last] = i
            self._unigram[i] = self._unigram[self._base_size + len(self._words)]
        self._unigram[self._base_size + len(self._words)] = 0.0
        self._epoch += 1

    # -- what was learned ---------------------------------------------------------

    @property
    def words(self) -> list[str]:
        """Learned tokens outside the base vocabulary; `words[j]` has id `len(base) + j`."""
        with self._lock:
            return list(self._words)

    @property
    def base_size(self) -> int:
        """The size of the vocabulary the memory was made for."""
        return self._base_size

    @property
    def messages(self) -> int:
        with self._lock:
            return len(self._messages)

    @property
    def tokens(self) -> int:
        """Tokens learned, each message's end counted as one."""
        with self._lock:
            return int(self._total)

    @property
    def version(self) -> int:
        """Changes whenever what was learned changes: a key for caches of `adapt`."""
        with self._lock:
            return self._version

    def __len__(self) -> int:
        return self.messages

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._messages

    def count(self, token: str) -> int:
        """How often the memory saw `token` (lowercase, as `tokenize` gives it)."""
        with self._lock:
            i = self._base_id.get(token, self._word_id.get(token))
            return 0 if i is None else int(self._unigram[i])

    def learned_id(self, token: str) -> int | None:
        """The id of a learned token outside the base vocabulary (`base_size + j`), or None."""
        with self._lock:
            return self._word_id.get(token)

    def written(self, token: str) -> str | None:
        """How the community writes `token` away from sentence starts: its most frequent
        form (ties: the first in sort order), or None without evidence."""
        with self._lock:
            if self._written[0] != self._version:
                self._written = (self._version, {})
            cache = self._written[1]
            if token not in cache:
                seen = self._forms.get(token)
                cache[token] = min(seen.items(), key=lambda item: (-item[1], item[0]))[0] if seen else None
            return cache[token]

    # -- serving ------------------------------------------------------------------

    def lexicon(self) -> Lexicon:
        """The learned words now, as one consistent snapshot (rebuilt when ids move)."""
        with self._lock:
            if len(self._lexicon.words) != len(self._words) or self._lexicon_epoch != self._epoch:
                self._lexicon = Lexicon(self._base_size, tuple(self._words))
                self._lexicon_epoch = self._epoch
            return self._lexicon

    def serve(self, base_probs: np.ndarray, context: Sequence[str]) -> tuple[np.ndarray, Lexicon]:
        """`adapt` and the `lexicon` its ids refer to, taken together."""
        with self._lock:
            return self.adapt(base_probs, context), self.lexicon()

    def adapt(self, base_probs: np.ndarray, context: Sequence[str]) -> np.ndarray:
        """The distribution over base + learned words after `context` (the tokens of
        the message so far): `base_probs` itself (a copy) when nothing is learned."""
        base_probs = np.asarray(base_probs, dtype=np.float64)
        if len(base_probs) != self._base_size:
            raise ValueError(f"base_probs has {len(base_probs)} entries, the base vocabulary {self._base_size}")
        with self._lock:
            if self._total == 0:
                return base_probs.copy()
            size = self._base_size + len(self._words)
            p = np.zeros(size)
            b = self.strengths[0]
            if math.isinf(b):  # no context-free level: the chain starts at p_base itself
                p[: self._base_size] = base_probs
            else:
                p += self._unigram[:size]
                p[: self._base_size] += b * base_probs
                p /= self._total + b
            for b, total, ids, counts in self._seen(context):
                p *= b / (total + b)
                p[ids] += counts / (total + b)
            return p

    def share(self, base_probs: np.ndarray, context: Sequence[str], index: int,
              adapted: np.ndarray | None = None) -> float:  # fmt: skip
        """How much of the adapted probability of token `index` after `context` came
        from the memory rather than the base distribution (0 with nothing learned, 1
        for a word only the memory knows). `adapted`: `adapt`'s answer, if at hand."""
        if adapted is None:
            adapted = self.adapt(base_probs, context)
        p = float(adapted[index])
        with self._lock:
            if self._total == 0 or p <= 0.0:
                return 0.0
            b = self.strengths[0]
            scale = 1.0 if math.isinf(b) else b / (self._total + b)
            for b, total, _, _ in self._seen(context):
                scale *= b / (total + b)
        base = float(base_probs[index]) if index < len(base_probs) else 0.0
        return min(1.0, max(0.0, 1.0 - scale * base / p))

    def _seen(self, context: Sequence[str]) -> list[tuple[float, int, np.ndarray, np.ndarray]]:
        """(b_k, c(h), ids, counts) for the orders 2.. whose memory context was seen."""
        with self._lock:
            history = (BOS, *context[-(self.order - 1) :]) if self.order > 1 else ()
            out = []
            for k in range(2, self.order + 1):
                if k - 1 > len(history):
                    break
                entry = self._contexts[k - 1].get(tuple(history[len(history) - k + 1 :]))
                if entry is None:
                    break  # a longer context holding an unseen one is unseen too
                if entry.cached is None or entry.cached[0] != self._epoch:
                    ids = np.fromiter((self._id(t) for t in entry.follow), np.int64, len(entry.follow))
                    counts = np.fromiter(entry.follow.values(), np.float64, len(entry.follow))
                    entry.cached = (self._epoch, ids, counts)
                b = self.strengths[k - 1] * (len(entry.follow) if self.witten_bell else 1)
                out.append((b, entry.total, entry.cached[1], entry.cached[2]))
            return out

    def _id(self, token: str) -> int:
        i = self._base_id.get(token)
        return self._word_id[token] if i is None else i

    def copies_too_much(self, recent_tokens: Sequence[str], candidate: str) -> bool:
        """Whether `candidate` after `recent_tokens` would make COPY_RUN consecutive
        words of one learned message (punctuation between them does not count)."""
        if not is_word(candidate):
            return False
        run = [t for t in recent_tokens[-4 * COPY_RUN :] if is_word(t)][-(COPY_RUN - 1) :]
        if len(run) < COPY_RUN - 1:
            return False
        with self._lock:
            return hash((*run, candidate)) in self._runs


def _word_runs(tokens: Sequence[str]) -> set[tuple[str, ...]]:
    """The distinct COPY_RUN-word runs of a message, punctuation left out."""
    words = [t for t in tokens if is_word(t)]
    return {tuple(words[i : i + COPY_RUN]) for i in range(len(words) - COPY_RUN + 1)}
