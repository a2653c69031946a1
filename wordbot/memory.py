"""What was learned from one user or one community: counts of their messages over
orders 1..N, added one message at a time and removed exactly, and the way they are
mixed into the served distribution (the scheme of `wordbot/adaptation.py`).

    memory = Memory(tokenizer.vocab)          # the served vocabulary, ids 0..B-1
    memory.add(key, "ping Knghtbrd on GitHub")  # one message; `key` names it for remove
    memory.add_many([(key, text), ...])       # the same adds, in order, several times faster
    p = memory.adapt(base_probs, tokenize("ping"))   # (B + len(memory.words),), sums to 1
    memory.written("knghtbrd")                # "Knghtbrd": as the community writes it
    memory.share(base_probs, context, i, p)   # how much of p[i] came from the memory (toolbar)
    memory.copies_too_much(recent, "word")    # would "word" make 9 copied words in a row?
    memory.remove(key)                        # every count exactly as before the add; clear()
    memory.words, .messages, .tokens, .version, .count(token)   # what was learned
    memory.learned_id("knghtbrd")             # B + j for a learned word outside the vocabulary

How the counts are mixed into the served distribution is `wordbot/adaptation.py`
(`Scheme`, chosen on validation text): the memory's weight is learned from the history
itself (`Prequential`; the predictor hands over its n-gram with `score_with`), and is
exactly nothing when nothing is learned (`adapt` returns `p_base` itself then). A
message keeps 2 bytes a token of what it added to the weight's evidence, so `remove`
takes out exactly that; the later messages keep theirs, scored while it was there
(their counts of it are gone; only a few numbers about how useful the memory was
remain). Words outside the served vocabulary get ids after it
(`B + j`, j their index in `words`); learning a new word never moves an id, but the
ids of later words shift when a word is forgotten, so key caches on `version`.

Cost: a context's (ids, counts) arrays are built when it is first served, then kept
up to date in place by every add and remove (the learned words' sorted index by
insertion): serving just after a change costs about what it did before it.

`copies_too_much` keeps a continuation from replaying a member's message (`wordbot/copies.py`).

Thread-safe: every method that reads more than one attribute takes one lock. Bounded: a message is cut to
MAX_MESSAGE_CHARS characters and MAX_MESSAGE_TOKENS tokens before it is counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Hashable, Iterable, Sequence
from functools import cached_property
from itertools import islice

import numpy as np

from wordbot.adaptation import Followers, Prequential, Scheme, mix, position_codes, score_messages
from wordbot.copies import COPY_RUN, Runs  # noqa: F401 (re-exported)
from wordbot.lexicon import MAX_MESSAGE_CHARS, MAX_MESSAGE_TOKENS, Lexicon, WordIndex, read_message  # noqa: F401
from wordbot.text import BOS, EOS

BATCH = 256  # add_many: messages scored in one pass
HOLD_S = 0.002  # add_many: how long the lock is held at a time (s): an answer waits little more
_UNKNOWN = object()  # not in the cache of written forms


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
        self._scorer = None  # p_base of a message's tokens, for the learned weight (`score_with`)
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
            self._runs = Runs()  # the learned 9-word runs, counted
            self._epoch = 0  # bumped when word ids move
            self._lexicon: Lexicon | None = Lexicon(self._base_size, ())
            self._index = WordIndex()  # the offered learned words by spelling
            self._written: dict[str, str | None] = {}  # token -> `written` (a token leaves when its forms change)
            self._version = getattr(self, "_version", -1) + 1  # never reused: caches key on it
            self._weights = Prequential(self.scheme) if self.scheme.kind == "learned" else None

    def add(self, key: Hashable, text: str) -> None:
        """Learn one message; `key` (a message id) names it for `remove`. A key already
        learned is replaced (an edited message)."""
        tokens, forms = read_message(text)
        with self._lock:
            self._weigh(self._put(key, text, tokens, forms), +1)
            self._version += 1

    def add_many(self, items: Iterable[tuple[Hashable, str]], stop=None) -> int:
        """`add` of each (key, text) in order, exactly, faster: p_base of BATCH messages in one
        pass (it depends on no count), codes and counts one by one, the evidence once per hold
        of the lock (about HOLD_S: serving waits little). `stop()`, asked under the lock at each
        hold, ends it (a `clear` after it turned true leaves nothing of it). How many."""
        added, items = 0, iter(items)
        while batch := list(islice(items, BATCH)):
            read = [(key, text, *read_message(text)) for key, text in batch]
            scorer, done = self._scorer, 0
            scored = self._scored(scorer, [tokens for _, _, tokens, _ in read])
            while done < len(read):
                with self._lock:
                    if stop is not None and stop():
                        return added + done
                    if scorer is not self._scorer:  # `score_with` meanwhile: scored again, with its scorer
                        scorer = self._scorer
                        scored = self._scored(scorer, [tokens for _, _, tokens, _ in read])
                    done = self._put_some(read, done, scored)
                time.sleep(0)  # a thread waiting for the lock (an answer) takes it now
            added += len(read)
        return added

    def _scored(self, scorer, messages: list) -> tuple | None:
        """(p_base, served orders, where each message starts in them), or None: not weighed."""
        if scorer is None or self._weights is None:
            return None
        probs, orders = score_messages(scorer, messages, self._weights.splits > 1)
        return probs, orders, np.cumsum([0, *(len(m) + 1 for m in messages)])

    def _put_some(self, read: list, start: int, scored) -> int:
        """`_put` `read` from `start` on for about HOLD_S, then their evidence at once; where it stopped."""
        deadline, weighed, i = time.perf_counter() + HOLD_S, [], start
        while i < len(read) and (i == start or time.perf_counter() < deadline):
            message = self._put(*read[i])
            if message[3] and scored is not None:
                weighed.append((i, message[3]))
            i += 1
        self._version += i - start
        if weighed:
            probs, orders, ends = scored
            parts = [slice(ends[j], ends[j + 1]) for j, _ in weighed]
            served = np.concatenate([orders[s] for s in parts]) if self._weights.splits > 1 else None
            codes = b"".join(codes for _, codes in weighed)
            self._weights.update(codes, np.concatenate([probs[s] for s in parts]), served, sign=+1)
        return i

    def _put(self, key: Hashable, text: str, tokens: list[str], forms: list[tuple[str, str]]) -> tuple:
        """Count one read message under `key` (replacing it): the message; its evidence is the caller's."""
        if key in self._messages:
            self._forget(self._messages.pop(key))
        canonical = self._canonical
        if canonical is None:
            canonical = self._canonical = {w: w for w in self._base_id}
        tokens = tuple(canonical.get(t, t) for t in tokens)
        form_tokens = tuple(canonical.get(t, t) for t, _ in forms)
        written = tuple(canonical.get(t, t) if f == t else f for t, f in forms)
        message = (tokens, form_tokens, written, self._codes(tokens))
        self._messages[key] = message
        self._count(message, +1)
        self._added(key, text)
        return message

    def _added(self, key: Hashable, text: str) -> None:
        """Each message `add` or `add_many` counted, under the lock (a subclass keeps its text)."""

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
        self._weigh(message, -1)
        self._count(message, -1)
        for token in {*message[0], EOS}:
            i = self._word_id.get(token)
            if i is not None and self._unigram[i] == 0:
                self._drop_word(token)

    def score_with(self, scorer) -> None:
        """Hand the learned weight p_base: `scorer(tokens)`, the base probability of each
        token of a message and of its end (`adaptation.ngram_scorer`; None: "linear"'s
        weights serve). Messages learned with a scorer are scored again with this one."""
        with self._lock:
            if scorer is not self._scorer:
                for message in self._messages.values():
                    self._weigh(message, -1)
                self._scorer = scorer
                for message in self._messages.values():
                    self._weigh(message, +1)
                self._version += 1

    def _codes(self, tokens: tuple) -> bytes:
        """The memory's bucket and p_mem for each token of a message, before it is counted."""
        if self._weights is None or self._scorer is None or self._total == 0:
            return b""
        unigram, ids = self._unigram, (self._base_id, self._word_id)
        count = lambda t: unigram[i] if (i := ids[0].get(t, ids[1].get(t))) is not None else 0  # noqa: E731
        return position_codes(self.scheme, (BOS, *tokens, EOS), count, self._total, self._contexts)

    def _weigh(self, message: tuple, sign: int) -> None:
        if message[3] and self._scorer is not None:
            if self._weights.splits > 1:  # split by the served context: its orders too
                self._weights.update(message[3], *self._scorer.scored(message[0]), sign=sign)
            else:
                self._weights.update(message[3], self._scorer(message[0]), sign=sign)

    def _count(self, message: tuple, sign: int) -> None:
        tokens, form_tokens, forms, _ = message
        sequence = (BOS, *tokens, EOS)
        tables, followers, order = self._contexts, self._followers, self.order
        for j in range(1, len(sequence)):
            token = sequence[j]
            self._unigram_add(token, sign)
            for k in range(2, min(order, j + 1) + 1):  # inline, the hot loop: a call only if it empties or is served
                context = sequence[j - k + 1 : j]
                table = tables[k - 1]
                follow = table.get(context)
                if follow is None:
                    follow = table[context] = {None: 0}
                follow[None] += sign
                n = follow.get(token, 0) + sign
                if n > 0:
                    follow[token] = n
                else:
                    follow.pop(token, None)
                if follow[None] <= 0 or (followers and (k, context) in followers):
                    self._context_changed(k, context, token, n)
        written = self._written
        for token, form in zip(form_tokens, forms, strict=True):
            written.pop(token, None)
            seen = self._forms.setdefault(token, {})
            seen[form] = seen.get(form, 0) + sign
            if seen[form] <= 0:
                del seen[form]
                if not seen:
                    del self._forms[token]
        self._runs.count(tokens, sign)

    def _unigram_add(self, token: str, sign: int) -> None:
        i = self._base_id.get(token)
        if i is None:
            i = self._word_id.get(token)
            if i is None:
                i = self._base_size + len(self._words)
                self._words.append(token)
                self._word_id[token] = i
                self._canonical[token] = token
                self._index.add(token, i)
                self._lexicon = None
                if i >= len(self._unigram):
                    self._unigram = np.concatenate([self._unigram, np.zeros(len(self._unigram))])
        self._unigram[i] += sign
        self._total += sign

    def _context_changed(self, k: int, context: tuple[str, ...], token: str, n: int) -> None:
        """A context no message holds leaves; a served one's arrays follow (rebuilt if ids moved)."""
        table = self._contexts[k - 1]
        served = self._followers.get((k, context))
        if table[context][None] <= 0:
            del table[context]
            self._followers.pop((k, context), None)
        elif served is not None:
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
        self._index.remove(token, i)
        self._lexicon = None
        last = self._words.pop()
        if last != token:
            self._index.remove(last, self._base_size + len(self._words))
            self._words[i - self._base_size] = last
            self._word_id[last] = i
            self._index.add(last, i)
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
                self._lexicon = self._index.lexicon(self._base_size, tuple(self._words))
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
            seen = self._seen(context)
            weights = None if self._scorer is None else self._weights  # no scorer: linear's weights
            weight = None
            if weights is not None:
                served = self._scorer.context_order(context) if weights.splits > 1 else 1
                weight = weights.weight(len(seen) + 1, seen[-1][0] if seen else self._total, served)
            return mix(self.scheme, base_probs, unigram, self._total, seen, weight)

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
        with self._lock:
            return self._runs.would_copy(recent_tokens, candidate)
