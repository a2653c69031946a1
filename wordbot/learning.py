"""What a predictor learned, served: `Learning`, the part of `Predictor` that holds its
memory (`wordbot/memory.py`) and mixes it into the answers.

`Predictor` calls these at a few marked places ("memory hook"): `_served` for the
distribution after a context (the model's own while the memory is empty, so a loaded
predictor answers exactly as the model alone), `_token` and `_cased` to name and write
ids past the vocabulary (learned words), `_with_learned` for ranking them,
`_learned_completions` for completing a typed word with them, `_draw` for
continuations that never replay a message.
A `view` shares the model and its memory-free caches (states, base distributions)
and has its own memory and its own cache of adapted distributions, keyed by the
memory's version, so one community's words never reach another's answers.
Per keystroke the memory costs lookups, not passes: the keystrokes of one word are
served from the last adapted distribution (`Adapted`, while the version and context
stay), and the learned words that start with the typed letters are found among those
of the last prefix (`Lexicon.starting_with`).
"""

from __future__ import annotations

import copy
import itertools
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from wordbot.adaptation import served_ngram_scorer
from wordbot.memory import Lexicon, Memory
from wordbot.text import display_form, normalize, partial_word, tokenize

if TYPE_CHECKING:
    from typing import Self

    from wordbot.predictor import Prediction

ADAPTED_CACHE_SIZE = 64


class Adapted:
    """One adapted distribution as the suggestions are served from it: `pair` (the
    distribution, the lexicon its learned ids refer to) for context `key`, memory
    `version` and memory context `tail`."""

    __slots__ = ("key", "pair", "tail", "version")

    def __init__(self, key: tuple[int, ...], version: int, tail: tuple[str, ...],
                 pair: tuple[np.ndarray, Lexicon]) -> None:  # fmt: skip
        self.key, self.version, self.tail, self.pair = key, version, tail, pair


class Learning:
    """Mixed into `Predictor` (which provides `tokenizer`, `_lock`, `_context`,
    `_distribution` and `_remember`)."""

    def _attach(self, memory: Memory) -> None:
        if memory.base_size != len(self.tokenizer.vocab):
            raise ValueError("the memory was made for another vocabulary")
        self.memory = memory
        memory.score_with(served_ngram_scorer(self.lm))  # p_base for a learned memory weight
        self._keys = itertools.count()
        # Adapted distributions, keyed by (memory version, context): this view's own.
        self._adapted: OrderedDict[tuple, Adapted] = OrderedDict()
        self._last_adapted: Adapted | None = None

    def view(self, memory: Memory | None = None) -> Self:
        """A predictor with its own memory (`memory`, else a new empty one) that shares
        this one's model and its memory-free caches: one per community, cheap to make."""
        other = copy.copy(self)
        other._attach(Memory(self.tokenizer.vocab) if memory is None else memory)
        return other

    def learn(self, text: str, key: object = None) -> None:
        """Learn one message (a committed line, a channel message): the next answers
        reflect it. `key` names it for `forget` (default: a new one)."""
        self.memory.add(("learned", next(self._keys)) if key is None else key, text)

    def learn_many(self, texts: Iterable[str], keys: Iterable[object] | None = None, stop=None) -> int:
        """`learn` of each of `texts` in order (under `keys`, else new ones), with exactly
        the same result, faster (`Memory.add_many`): a history learned again at start.
        Answers are served meanwhile; `stop()` true ends it early. How many."""
        if keys is None:  # drawn as the texts come: the next `learn` gets the key it would have
            keys = (("learned", next(self._keys)) for _ in itertools.repeat(None))
        return self.memory.add_many(((key, text) for text, key in zip(texts, keys, strict=False)), stop)

    def forget(self, key: object) -> bool:
        """Forget the message learned under `key` exactly; False if there is none."""
        return self.memory.remove(key)

    def forget_all(self) -> None:
        self.memory.clear()

    def _served(self, key: tuple[int, ...], tokens: Sequence[str]) -> tuple[np.ndarray, Lexicon | None]:
        """The distribution after context `key` (the ids of `tokens`), adapted to the
        memory when it holds anything, and the learned words its ids past the base mean."""
        if not self.memory.messages:
            return self._distribution(key), None
        return self._adapted_for(key, tokens).pair

    def _adapted_for(self, key: tuple[int, ...], tokens: Sequence[str]) -> Adapted:
        """The adapted distribution after `key`/`tokens` for the memory as it is now: the
        last one served while the memory and context stay the same (every keystroke of a
        word), else from the cache keyed by (context, memory version, memory context)."""
        memory = self.memory
        version = memory.version
        tail = tuple(tokens[-(memory.order - 1) :]) if memory.order > 1 else ()
        last = self._last_adapted  # one read: another thread may replace it
        if last is not None and last.version == version and last.key == key and last.tail == tail:
            return last
        cache_key = (key, version, tail)
        with self._lock:
            found = self._adapted.get(cache_key)
        if found is None:
            found = Adapted(key, version, tail, memory.serve(self._distribution(key), tokens))
            with self._lock:
                self._remember(self._adapted, cache_key, found, ADAPTED_CACHE_SIZE)
        self._last_adapted = found
        return found

    def learned_share(self, text: str, word: str) -> float:
        """How much of `word`'s probability, suggested at the end of `text`, came from
        the memory rather than the model: 0 with nothing learned, 1 for a word only the
        memory knows (the REPL's toolbar says when a suggestion is mostly your own text)."""
        if not self.memory.messages:
            return 0.0
        partial = partial_word(text)
        tokens = tokenize(text[: len(text) - len(partial)])
        key = self._context(tokens)
        adapted, lexicon = self._served(key, tokens)
        token = normalize(word)
        i = self.tokenizer.index.get(token)
        if i is None and lexicon is not None and token in lexicon.words:
            i = lexicon.base_size + lexicon.words.index(token)
        return 0.0 if i is None or i >= len(adapted) else self.memory.share(self._distribution(key), tokens, i, adapted)

    def _token(self, i: int, lexicon: Lexicon | None) -> str:
        return self.tokenizer.vocab[i] if lexicon is None or i < lexicon.base_size else lexicon.token(i)

    def _cased(self, tokens) -> dict[str, str]:
        """How to write `tokens`: the community's capitals (`memory.capitals`) over the
        model's (a small map of `tokens` alone when they differ)."""
        cased = self.tokenizer.cased
        if not self.memory.messages:
            return cased
        learned = self.memory.capitals(tokens)  # only capitals: lowercase "i" stays "I"
        if not learned:
            return cased
        mapped = {t: cased[t] for t in tokens if t in cased}
        mapped.update(learned)
        return mapped

    def _learned_start(self, prefix: str) -> bool:
        """Whether a learned word a user may be offered starts with `prefix`."""
        return bool(self.memory.messages) and len(self.memory.lexicon().starting_with(prefix)) > 0

    @staticmethod
    def _with_learned(ids: np.ndarray, lexicon: Lexicon) -> np.ndarray:
        """`ids` and the learned words that a user may be offered."""
        learned = lexicon.offered
        return np.concatenate([ids, learned]) if len(learned) else ids

    def _learned_completions(self, adapted: Adapted, ids: np.ndarray, prefix: str, k: int,
                             sentence_start: bool) -> list[Prediction]:  # fmt: skip
        """The completions of `prefix` with a memory: the vocabulary's words that start
        with it (`ids`) and the learned ones, ranked by the adapted distribution
        (renormalised over all of them); those it gives no probability come last."""
        probs, lexicon = adapted.pair
        learned = lexicon.starting_with(prefix)
        every = np.concatenate([ids, learned]) if len(learned) else ids
        if not len(every):
            return []
        total = float(probs[every].sum())
        completions = self._ranked(probs, every, k, sentence_start, total, lexicon) if total > 0 else []
        if completions and completions[-1].prob <= 0:  # ranked last: leave out those without probability
            completions = [c for c in completions if c.prob > 0]
        if len(completions) < k and len(completions) < len(every):  # then some have none: learned words
            zero = every[probs[every] <= 0]
            completions += self._unlikely_learned(zero, k - len(completions), sentence_start, lexicon)
        return completions

    def _unlikely_learned(self, zero: np.ndarray, k: int, sentence_start: bool, lexicon: Lexicon) -> list[Prediction]:
        """Learned words that start with the typed prefix but have no probability in this
        context (`zero`; the memory's mix has no context-free level): after the others, the
        most often written first, with probability 0, so a learned word is always completable."""
        from wordbot.predictor import Prediction

        memory = self.memory
        counted = sorted(((memory.count(t), t) for t in (self._token(int(i), lexicon) for i in zero)),
                         key=lambda c: (-c[0], c[1]))  # fmt: skip
        chosen = [t for c, t in counted if c > 0][:k]
        cased = self._cased(chosen)
        return [Prediction(display_form(t, sentence_start, cased), 0.0) for t in chosen]

    def _draw(self, probs: np.ndarray, rng, shape: tuple, recent: list[str], lexicon: Lexicon | None) -> int | None:
        """One token sampled from `probs` (changed in place), never one that would copy
        too many words of one learned message in a row; None: nothing left."""
        from wordbot.predictor import sample

        for _ in range(8):
            total = probs.sum()
            if total <= 0:
                return None
            token_id = sample(probs / total, rng, *shape)
            if lexicon is None or not self.memory.copies_too_much(recent, self._token(token_id, lexicon)):
                return token_id
            probs[token_id] = 0.0
        # Eight copies in a row: leave every word of a copied run out at once.
        for i in np.flatnonzero(probs > 0):
            if self.memory.copies_too_much(recent, self._token(int(i), lexicon)):
                probs[i] = 0.0
        total = probs.sum()
        return None if total <= 0 else sample(probs / total, rng, *shape)
