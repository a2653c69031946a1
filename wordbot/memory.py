"""What was learned from one user or one community: counts of their messages over
orders 1..N, added one message at a time and removed exactly, and the way they are
mixed into the served distribution (the scheme of `wordbot/adaptation.py`).

    memory = Memory(tokenizer.vocab)          # the served vocabulary, ids 0..B-1
    memory.add(key, "ping Knghtbrd on GitHub")  # one message; `key` names it for remove
    p = memory.adapt(base_probs, tokenize("ping"))   # (B + len(memory.words),), sums to 1
    memory.written("knghtbrd")                # "Knghtbrd": as the community writes it
    memory.share(base_probs, context, i, p)   # how much of p[i] came from the memory (toolbar)
    memory.copies_too_much(recent, "word")    # would "word" make 9 copied words in a row?
    memory.remove(key)                        # every count exactly as before the add; clear()
    memory.words, .messages, .tokens, .version, .count(token)   # what was learned
    memory.learned_id("knghtbrd")             # B + j for a learned word outside the vocabulary

How the counts are mixed into the served distribution is `wordbot/adaptation.py`
(`Scheme`, chosen on validation text). Whatever the scheme, the memory's weight grows
with its evidence and is exactly nothing when nothing is learned (`adapt` returns
`p_base` itself then). Words outside the served vocabulary get ids after it
(`B + j`, j their index in `words`); learning a new word never moves an id, but the
ids of later words shift when a word is forgotten, so key caches on `version`.

Cost: a context's (ids, counts) arrays are built the first time it is served and
then kept up to date in place by every add and remove, and the sorted index of the
learned words by insertion, so serving just after a change costs about what it did
before it.

`copies_too_much` keeps a continuation from replaying a member's message: an index
of learned 9-word runs (counted, so `remove` forgets them) says whether one more word
would make 9 consecutive words of one learned message.

Thread-safe: every method that reads more than one attribute takes one lock. Bounded: a message is cut to
MAX_MESSAGE_CHARS characters and MAX_MESSAGE_TOKENS tokens before it is counted.
"""

from __future__ import annotations

import threading
from bisect import bisect_left
from collections.abc import Hashable, Iterable, Sequence
from functools import cached_property

import numpy as np

from wordbot.adaptation import Followers, Scheme, mix
from wordbot.text import BOS, EOS, is_debris, is_word, normalize, tokenize

MAX_MESSAGE_CHARS = 4000  # Discord's longest message (with Nitro); more is cut before tokenizing
MAX_MESSAGE_TOKENS = 1000  # a message of 4,000 one-character symbols is cut here
COPY_RUN = 9  # a continuation may copy at most COPY_RUN - 1 consecutive words of one message
_SENTENCE_END = {".", "...", "!", "?"}
_SEE_THROUGH = {'"', "'", "(", ")"}  # quotes and parens keep a sentence start for the next word
_UNKNOWN = object()  # not in the cache of written forms


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

    def __init__(self, base_vocab: Sequence[str], scheme: Scheme | None = None, **options):
        """`scheme`: how the counts are mixed in (default: the chosen one); `options`
        (order, strengths, witten_bell, discount, ...): the default with those changed."""
        self.scheme = scheme = Scheme(**options) if scheme is None else scheme
        self.order = scheme.order
        self._base_size = len(base_vocab)
        self._base_vocab = base_vocab  # indexed at the first use: an unused memory costs nothing
        self._lock = threading.RLock()
        self.clear()

    @cached_property
    def _base_id(self) -> dict[str, int]:
        return {w: i for i, w in enumerate(self._base_vocab)}

    # -- learning and forgetting --------------------------------------------------

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            # Plain dicts and tuples of strings and ints, which the garbage collector does not
            # track: a million learned tokens add no pause to the process's collections.
            self._messages: dict[Hashable, tuple] = {}  # key -> (tokens, form tokens, their forms)
            self._words: list[str] = []  # learned tokens outside the base vocabulary
            self._word_id: dict[str, int] = {}
            # One string object per distinct token, so a million learned tokens share their text.
            self._canonical: dict[str, str] | None = None  # made at the first add
            self._unigram = np.zeros(self._base_size + 64)  # token counts by id
            self._total = 0
            # Per order k: context -> {token: count after it, None: the context's total}.
            self._contexts: list[dict[tuple[str, ...], dict]] = [{} for _ in range(self.order)]
            self._followers: dict[tuple, Followers] = {}  # (k, context) -> arrays, once served
            self._forms: dict[str, dict[str, int]] = {}
            self._runs: dict[int, int] = {}  # hash of a 9-word run -> messages holding it
            self._epoch = 0  # bumped when word ids move
            self._lexicon: Lexicon | None = Lexicon(self._base_size, ())
            self._sorted_words: list[str] = []  # the offered learned words by spelling
            self._sorted_ids = np.zeros(0, np.int64)  # their ids (arrays replaced, never changed)
            self._offered = np.zeros(0, np.int64)  # the same ids in order
            self._written: dict[str, str | None] = {}  # token -> `written` (a token leaves when its forms change)
            self._version = getattr(self, "_version", -1) + 1  # never reused: caches key on it

    def add(self, key: Hashable, text: str) -> None:
        """Learn one message; `key` (a message id) names it for `remove`. A key already
        learned is replaced (an edited message)."""
        tokens, forms = read_message(text)
        with self._lock:
            if key in self._messages:
                self._forget(self._messages.pop(key))
            canonical = self._canonical
            if canonical is None:
                canonical = self._canonical = {w: w for w in self._base_id}
            tokens = tuple(canonical.get(t, t) for t in tokens)
            form_tokens = tuple(canonical.get(t, t) for t, _ in forms)
            written = tuple(canonical.get(t, t) if f == t else f for t, f in forms)
            message = (tokens, form_tokens, written)
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

    def _forget(self, message: tuple) -> None:
        self._count(message, -1)
        for token in {*message[0], EOS}:
            i = self._word_id.get(token)
            if i is not None and self._unigram[i] == 0:
                self._drop_word(token)

    def _count(self, message: tuple, sign: int) -> None:
        tokens, form_tokens, forms = message
        sequence = (BOS, *tokens, EOS)
        for j in range(1, len(sequence)):
            token = sequence[j]
            self._unigram_add(token, sign)
            for k in range(2, min(self.order, j + 1) + 1):
                self._context_add(k, sequence[j - k + 1 : j], token, sign)
        written = self._written
        for token, form in zip(form_tokens, forms, strict=True):
            written.pop(token, None)
            seen = self._forms.setdefault(token, {})
            seen[form] = seen.get(form, 0) + sign
            if seen[form] <= 0:
                del seen[form]
                if not seen:
                    del self._forms[token]
        for run in _word_runs(tokens):  # recounted, not stored: hash() is stable in a process
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
                self._index_word(token, i)
                if i >= len(self._unigram):
                    self._unigram = np.concatenate([self._unigram, np.zeros(len(self._unigram))])
        self._unigram[i] += sign
        self._total += sign

    def _context_add(self, k: int, context: tuple[str, ...], token: str, sign: int) -> None:
        table = self._contexts[k - 1]
        follow = table.get(context)
        if follow is None:
            follow = table[context] = {None: 0}
        follow[None] += sign
        n = follow.get(token, 0) + sign
        if n > 0:
            follow[token] = n
        else:
            follow.pop(token, None)
        served = self._followers.get((k, context)) if self._followers else None
        if follow[None] <= 0:
            del table[context]
            self._followers.pop((k, context), None)
        elif served is not None:  # its arrays follow in place (or are built again when ids moved)
            if served.epoch == self._epoch:
                served.update(token, n, self._id)
            else:
                del self._followers[(k, context)]

    def _drop_word(self, token: str) -> None:
        """A learned word no message holds any more leaves `words`; the last word takes its id
        (served contexts rebuild their arrays once, at their next use)."""
        i = self._word_id.pop(token)
        if self._canonical is not None:
            self._canonical.pop(token, None)
        self._unindex_word(token, i)
        last = self._words.pop()
        if last != token:
            self._unindex_word(last, self._base_size + len(self._words))
            self._words[i - self._base_size] = last
            self._word_id[last] = i
            self._index_word(last, i)
            self._unigram[i] = self._unigram[self._base_size + len(self._words)]
        self._unigram[self._base_size + len(self._words)] = 0.0
        self._epoch += 1

    def _index_word(self, token: str, i: int) -> None:
        """`token` (id `i`) joins the index of offered words, if it is one (a word, not debris)."""
        if is_word(token) and not is_debris(token):
            at = bisect_left(self._sorted_words, token)
            self._sorted_words.insert(at, token)
            self._sorted_ids = np.insert(self._sorted_ids, at, i)
            self._offered = np.insert(self._offered, np.searchsorted(self._offered, i), i)
        self._lexicon = None

    def _unindex_word(self, token: str, i: int) -> None:
        at = bisect_left(self._sorted_words, token)
        if at < len(self._sorted_words) and self._sorted_words[at] == token:
            del self._sorted_words[at]
            self._sorted_ids = np.delete(self._sorted_ids, at)
            self._offered = np.delete(self._offered, np.searchsorted(self._offered, i))
        self._lexicon = None

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

    # `messages`, `version` and a cached `written` are read on every keystroke: one
    # attribute read each (atomic), without taking the lock.
    @property
    def messages(self) -> int:
        return len(self._messages)

    @property
    def tokens(self) -> int:
        """Tokens learned, each message's end counted as one."""
        with self._lock:
            return int(self._total)

    @property
    def version(self) -> int:
        """Changes whenever what was learned changes: a key for caches of `adapt`."""
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
        form = self._written.get(token, _UNKNOWN)  # one read, without the lock
        if form is not _UNKNOWN:
            return form
        with self._lock:
            seen = self._forms.get(token)
            if not seen:
                form = None
            elif len(seen) == 1:  # most words: one form
                form = next(iter(seen))
            else:
                form = min(seen.items(), key=lambda item: (-item[1], item[0]))[0]
            self._written[token] = form
            return form

    def capitals(self, tokens: Iterable[str]) -> dict[str, str]:
        """`written` for each of `tokens` where it differs from the token (its capitals),
        by token: what a suggestion of them writes differently from the model."""
        found = {}
        cache = self._written
        for token in tokens:
            form = cache.get(token, _UNKNOWN)
            if form is _UNKNOWN:
                form = self.written(token)
            if form and form != token:
                found[token] = form
        return found

    # -- serving ------------------------------------------------------------------

    def lexicon(self) -> Lexicon:
        """The learned words now, as one consistent snapshot (copied when words changed)."""
        with self._lock:
            if self._lexicon is None:
                words, ids = tuple(self._sorted_words), self._sorted_ids
                self._lexicon = Lexicon(self._base_size, tuple(self._words), words, ids, self._offered)
            return self._lexicon

    def serve(self, base_probs: np.ndarray, context: Sequence[str]) -> tuple[np.ndarray, Lexicon]:
        """`adapt` and the `lexicon` its ids refer to, taken together."""
        with self._lock:
            return self.adapt(base_probs, context), self.lexicon()

    def adapt(self, base_probs: np.ndarray, context: Sequence[str]) -> np.ndarray:
        """The distribution over base + learned words after `context` (the tokens of
        the message so far): `base_probs` itself (a copy) when nothing is learned."""
        return self._mixed(base_probs, context)[0]

    def _mixed(self, base_probs: np.ndarray, context: Sequence[str]) -> tuple[np.ndarray, float]:
        base_probs = np.asarray(base_probs, dtype=np.float64)
        if len(base_probs) != self._base_size:
            raise ValueError(f"base_probs has {len(base_probs)} entries, the base vocabulary {self._base_size}")
        with self._lock:
            if self._total == 0:
                return base_probs.copy(), 1.0
            unigram = self._unigram[: self._base_size + len(self._words)]
            return mix(self.scheme, base_probs, unigram, self._total, self._seen(context))

    def share(self, base_probs: np.ndarray, context: Sequence[str], index: int,
              adapted: np.ndarray | None = None) -> float:  # fmt: skip
        """How much of the adapted probability of token `index` after `context` came
        from the memory rather than the base distribution (0 with nothing learned, 1
        for a word only the memory knows). `adapted`: `adapt`'s answer, if at hand."""
        found, scale = self._mixed(base_probs, context)
        p = float(found[index] if adapted is None else adapted[index])
        if self._total == 0 or p <= 0.0:
            return 0.0
        base = float(base_probs[index]) if index < len(base_probs) else 0.0
        return min(1.0, max(0.0, 1.0 - scale * base / p))

    def _seen(self, context: Sequence[str]) -> list[tuple[int, np.ndarray, np.ndarray]]:
        """(c(h), ids, counts) for the orders 2.. whose memory context h was seen."""
        with self._lock:
            history = (BOS, *context[-(self.order - 1) :]) if self.order > 1 else ()
            out = []
            for k in range(2, self.order + 1):
                if k - 1 > len(history):
                    break
                context = tuple(history[len(history) - k + 1 :])
                follow = self._contexts[k - 1].get(context)
                if follow is None:
                    break  # a longer context holding an unseen one is unseen too
                served = self._followers.get((k, context))
                if served is None or served.epoch != self._epoch:
                    served = self._followers[(k, context)] = Followers(follow, self._id, self._epoch)
                out.append((follow[None], *served.arrays()))
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
