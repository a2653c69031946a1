"""Predictor: the one object the bot, the REPL, the CLI and the evaluation use.

It wraps any language model with `initial_state / advance / probs` (the NumPy RNN
engine, the Kneser-Ney n-gram) and adds what users see: the next words, completions
of a half-typed word, sampled continuations, and the forms a user would type
("I", a capital at a sentence start). States are cached by token prefix, so typing
one more letter costs a lookup and one more word costs one recurrent step.
"""

from __future__ import annotations

import logging
import os
import threading
from bisect import bisect_left
from collections import OrderedDict
from collections.abc import Sequence
from functools import cached_property
from typing import NamedTuple, Protocol

import numpy as np

from wordbot.artifacts import BACKENDS, load_model, model_directory, served_backend
from wordbot.describe import describe_model, mix_weights_text  # noqa: F401  (training.py imports them from here)
from wordbot.engine import advance_all
from wordbot.errors import CorpusError, ModelError
from wordbot.learning import Learning
from wordbot.limits import DEFAULT_K
from wordbot.memory import Lexicon, Memory
from wordbot.text import (
    BOS_ID,
    EOS_ID,
    PAD_ID,
    UNK_ID,
    Tokenizer,
    Tokens,
    at_sentence_start,
    detokenize,
    display_form,
    is_word,
    normalize,
    partial_word,
    tokenize,
)

log = logging.getLogger(__name__)

MAX_CONTEXT = 256  # tokens of context the model sees; older text is dropped in chunks
STATE_CACHE_SIZE = 4096
PROBS_CACHE_SIZE = 64
SORTED_WHOLE = 256  # candidates up to this many are ranked by sorting them all


class Prediction(NamedTuple):
    word: str
    prob: float


class Suggestions(NamedTuple):
    """What to offer at the end of a text: completions of a word being typed, or next words."""

    partial: str  # the typed start of a word that the predictions complete; "" when they are next words
    predictions: list[Prediction]


class LanguageModel(Protocol):
    tokenizer: Tokenizer

    def initial_state(self) -> object: ...
    def advance(self, state: object, token_id: int) -> object: ...
    def probs(self, state: object) -> np.ndarray: ...


def sample(
    probs: np.ndarray,
    rng: np.random.Generator,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
) -> int:
    """Draw one index from `probs` reshaped by temperature, top-k and nucleus (top-p).

    Temperature 0 means greedy. Zero-probability entries are never drawn. Any positive
    temperature is safe, however small: the likeliest entry is at 0 in log space before
    the division, so a tiny one tends to greedy instead of dividing -inf by -inf.
    """
    if temperature <= 0:
        return int(np.argmax(probs))
    candidates = np.flatnonzero(probs > 0)
    p = probs[candidates].astype(np.float64)
    if top_k and top_k < len(p):
        keep = np.argpartition(-p, top_k - 1)[:top_k]
        candidates, p = candidates[keep], p[keep]
    # Temperature in log space, then renormalise before the nucleus cut.
    logp = np.log(p)
    with np.errstate(over="ignore"):  # (a negative number) / 1e-310 is -inf: weight 0
        p = np.exp((logp - logp.max()) / temperature)
    p /= p.sum()
    if top_p < 1.0:
        order = np.argsort(-p, kind="stable")
        cumulative = np.cumsum(p[order])
        cut = int(np.searchsorted(cumulative, top_p)) + 1
        order = order[:cut]
        candidates, p = candidates[order], p[order] / p[order].sum()
    return int(candidates[rng.choice(len(p), p=p)])


def top_positions(p: np.ndarray, ids: np.ndarray, k: int) -> np.ndarray:
    """Where the k largest of `p` (the probabilities of `ids`) are, by probability, ties
    by id: what sorting all of them gives, sorting only those that reach the k-th value
    (found with k passes of argmax for a small k, else one partition). A few candidates
    (a typed prefix's words) are sorted whole: fewer NumPy calls."""
    if len(p) <= SORTED_WHOLE:
        return np.lexsort((ids, -p))[:k]
    if k < len(p):
        if k <= 8:
            rest = p.copy()
            for _ in range(k - 1):
                rest[rest.argmax()] = -np.inf
            kth = rest.max()
        else:
            kth = np.partition(p, len(p) - k)[len(p) - k]
        top = np.flatnonzero(p >= kth)  # ties at the k-th value all compete, by id
    else:
        top = np.arange(len(p))
    return top[np.lexsort((ids[top], -p[top]))][:k]


class Predictor(Learning):
    """Next words, completions and continuations from a language model."""

    def __init__(self, lm: LanguageModel, *, name: str = "model", manifest: dict | None = None, backend: str = "rnn"):
        self.lm = lm
        self.tokenizer: Tokenizer = lm.tokenizer
        self.name = name
        self.manifest: dict = manifest or {}
        self.backend = backend  # what `lm` is: "rnn", "ngram" or "mix"
        self._lock = threading.RLock()
        self._states: OrderedDict[tuple[int, ...], object] = OrderedDict()
        self._probs: OrderedDict[tuple[int, ...], np.ndarray] = OrderedDict()
        self._last_tokens: tuple[str, Tokens] | None = None  # the last text `suggest` tokenized
        self._last_context: tuple[tuple[str, ...], tuple[int, ...]] | None = None
        vocab = self.tokenizer.vocab
        # Chat-log debris (IRC nick brackets, message-ID fragments) is never offered or written.
        debris = self.tokenizer.debris_ids  # (from the served vocabulary's cache, or matched now)
        hidden = {UNK_ID, *debris}
        word_ids = np.array([i for i in self.tokenizer.word_ids if i not in hidden], dtype=np.int64)
        self._word_ids = word_ids
        # With an open vocabulary the words after the network's (`network_size`) are
        # rare: the next words are ranked among the network's words, and the others
        # only join when the likeliest of them could enter the top k.
        self._inner_size = int(getattr(lm, "network_size", len(vocab)))
        self._inner_word_ids = word_ids[word_ids < self._inner_size]
        # Tokens a continuation may never produce.
        self._banned = np.array([PAD_ID, UNK_ID, BOS_ID, *debris], dtype=np.int64)
        self._attach(Memory(vocab))

    @cached_property
    def _by_spelling(self) -> tuple[list[str], np.ndarray]:
        """The offered words sorted by spelling, and their ids, so the words starting with
        a prefix are one slice: sorted at the first completion (`wordbot next` never asks)."""
        vocab = self.tokenizer.vocab
        order = sorted(self._word_ids.tolist(), key=vocab.__getitem__)
        return [vocab[i] for i in order], np.array(order, dtype=np.int64)

    @classmethod
    def load(cls, path: str | os.PathLike | None = None, *, backend: str | None = None) -> Predictor:
        """Load a model directory (None: the bundled default).

        `backend`: "rnn" (the recurrent model alone), "ngram" (Kneser-Ney on its training
        text) or "mix" (their interpolation); None takes the one the manifest recommends
        (`serving.backend`, measured on validation text when the model was made), else "rnn".
        """
        from wordbot.engine import network

        directory = model_directory(path)
        manifest, tokenizer, weights = load_model(directory)
        implicit = backend is None
        if implicit:
            backend = served_backend(manifest)
        if backend not in BACKENDS:
            raise ModelError(f"unknown backend {backend!r}; choose one of {', '.join(BACKENDS)}")
        name = directory.resolve().name
        lm: LanguageModel = network(manifest, tokenizer, weights)
        if backend != "rnn":
            from wordbot import mix

            try:
                lm = mix.backend_for(backend, lm, manifest, directory)
            except CorpusError as e:
                if not implicit:
                    raise
                # The n-gram half is counted from the training text; without it, serve the network.
                log.warning("wordbot: %s; serving the recurrent network alone (--backend rnn)", e)
                backend = "rnn"
        return cls(lm, name=name, manifest=manifest, backend=backend)

    def describe(self) -> str:
        """One line for help screens: what the model is, what it learned from, how good it is."""
        return describe_model(self.name, self.manifest, self.backend, len(self.tokenizer), type(self.lm).__name__)

    # -- states -------------------------------------------------------------------

    def _context(self, tokens: Sequence[str]) -> tuple[int, ...]:
        """Token ids the model conditions on: <s> and the text, or its recent part."""
        tokens = tuple(tokens)
        last = self._last_context  # every keystroke of a word asks for the same context
        if last is not None and last[0] == tokens:
            return last[1]
        ids = self.tokenizer.encode_tokens(tokens)
        if len(ids) < MAX_CONTEXT:
            key = (BOS_ID, *ids)
        else:
            # Drop old text in whole chunks so the key stays stable (and cached) while typing.
            chunk = MAX_CONTEXT // 2
            start = ((len(ids) - MAX_CONTEXT) // chunk + 1) * chunk
            key = tuple(ids[start:])
        self._last_context = (tokens, key)
        return key

    def _state(self, key: tuple[int, ...]) -> object:
        with self._lock:
            cached = self._states.get(key)
            if cached is not None:
                self._states.move_to_end(key)
                return cached
            # Longest cached prefix, then the rest: one step for one more token (typing),
            # one pass for more (a fresh context); every prefix is kept for the next keystroke.
            n = len(key) - 1
            while n > 0 and key[:n] not in self._states:
                n -= 1
            state = self._states[key[:n]] if n > 0 else self.lm.initial_state()
            states = [self.lm.advance(state, key[n])] if len(key) - n == 1 else advance_all(self.lm, state, key[n:])
            for i, state in enumerate(states, start=n + 1):
                self._remember(self._states, key[:i], state, STATE_CACHE_SIZE)
            return state

    @staticmethod
    def _remember(cache: OrderedDict, key, value, size: int) -> None:
        cache[key] = value
        cache.move_to_end(key)
        while len(cache) > size:
            cache.popitem(last=False)

    def _distribution(self, key: tuple[int, ...]) -> np.ndarray:
        with self._lock:
            probs = self._probs.get(key)
            if probs is None:
                probs = self.lm.probs(self._state(key)) if key else self.lm.probs(self.lm.initial_state())
                self._remember(self._probs, key, probs, PROBS_CACHE_SIZE)
            else:
                self._probs.move_to_end(key)
            return probs

    def token_probs(self, ids: Sequence[int]) -> np.ndarray:
        """The next-token distribution after `ids` (which normally start with <s>)."""
        return self._distribution(tuple(int(i) for i in ids))

    def probs_after(self, tokens: Sequence[str]) -> np.ndarray:
        """The next-token distribution the suggestions after `tokens` are ranked from
        (the cached array itself: read it, do not change it). With a memory that holds
        anything it is adapted to it, and ids past the vocabulary are learned words."""
        return self._served(self._context(tokens), tokens)[0]  # memory hook

    # -- what users see -------------------------------------------------------------

    def _ranked(self, probs, ids, k: int, sentence_start: bool, total: float = 1.0, lexicon: Lexicon | None = None):
        p = probs[ids]
        top = top_positions(p, ids, k)
        tokens = [self._token(int(ids[j]), lexicon) for j in top]  # memory hook: learned ids
        cased = self._cased(tokens)
        return [
            Prediction(display_form(t, sentence_start, cased), float(p[j] / total))
            for t, j in zip(tokens, top, strict=True)
        ]

    def _next_words(self, probs: np.ndarray, k: int, sentence_start: bool) -> list[Prediction]:
        """`_ranked` over every word, ranking the words outside the network's
        vocabulary only when the likeliest token among them beats the k-th best
        inside (so a suggestion costs about what it did with a closed vocabulary)."""
        inner = self._inner_word_ids
        if self._inner_size < len(probs) and len(inner) >= k:
            best = self._ranked(probs, inner, k, sentence_start)
            if best[-1].prob >= probs[self._inner_size :].max():  # a tie goes to the lower id
                return best
        return self._ranked(probs, self._word_ids, k, sentence_start)

    def next_words(self, text: str, k: int = DEFAULT_K) -> list[Prediction]:
        """The likeliest words to follow `text`; an empty text means the start of a message."""
        return self.suggest_after(tokenize(text), "", k).predictions

    def complete(self, text: str, k: int = DEFAULT_K) -> list[Prediction]:
        """Completions of the word being typed at the end of `text`, else the next words
        (`suggest`, without saying which of the two it is)."""
        return self.suggest(text, k).predictions

    def suggest(self, text: str, k: int = DEFAULT_K) -> Suggestions:
        """The one suggestion policy, for every face and for `wordbot eval`: completions
        of the word being typed at the end of `text` (probabilities renormalised over the
        vocabulary words that start with it; none when no word does), else the words
        likeliest to follow. A token the typing has finished, which no completion
        spells on from, gets the next words after it."""
        partial = partial_word(text)
        found = self.suggest_after(self._tokens(text[: len(text) - len(partial)]), partial, k)
        if partial and not found.partial:  # finished: the next words after the text as the tokenizer reads it
            return self.suggest_after(tokenize(text), "", k)
        return found

    def _tokens(self, text: str) -> list[str]:
        """tokenize(text), remembered for the last text: every keystroke of a word reads
        the same text before it, and tokenizing it again cost a third of the keystroke."""
        last = self._last_tokens
        if last is not None and last[0] == text:
            return Tokens(last[1], last[1].source)  # a copy: the caller may change it
        tokens = tokenize(text)
        self._last_tokens = (text, Tokens(tokens, tokens.source))
        return tokens

    def suggest_after(self, tokens: Sequence[str], partial: str, k: int = DEFAULT_K) -> Suggestions:
        """`suggest` on a text already split: `tokens` (as `tokenize` gives them) and
        `partial`, the start of a word typed after them ("" for next words). The
        evaluation scores every suggestion through here."""
        if k < 1:
            raise ValueError("k must be at least 1")
        sentence_start = at_sentence_start(tokens)
        if not partial:
            probs, lexicon = self._served(self._context(tokens), tokens)  # memory hook
            if lexicon is None:
                return Suggestions("", self._next_words(probs, k, sentence_start))
            ids = self._with_learned(self._word_ids, lexicon)
            return Suggestions("", self._ranked(probs, ids, k, sentence_start, 1.0, lexicon))
        prefix = normalize(partial)
        sorted_words, sorted_ids = self._by_spelling
        lo = bisect_left(sorted_words, prefix)
        hi = bisect_left(sorted_words, prefix + "\U0010ffff", lo)
        ids = sorted_ids[lo:hi]
        if lo == hi and not self._learned_start(prefix):
            return Suggestions(partial, [])
        key = self._context(tokens)
        if self.memory.messages:  # memory hook: the learned words that start with the prefix too
            completions = self._learned_completions(self._adapted_for(key, tokens), ids, prefix, k, sentence_start)
        elif len(ids):
            probs = self._distribution(key)
            total = float(probs[ids].sum())
            completions = self._ranked(probs, ids, k, sentence_start, total) if total > 0 else []
        else:
            completions = []
        if not completions:
            return Suggestions(partial, [])
        if all(normalize(p.word).startswith(prefix) for p in completions):
            return Suggestions(partial, completions)
        # A display form that no longer reads as the typed start (a capital that is
        # two letters): the typed token counts as finished, as the REPL always had it.
        return self.suggest_after([*tokens, *tokenize(partial)], "", k)

    def continue_text(
        self,
        text: str,
        n_words: int = 20,
        *,
        temperature: float = 0.8,
        top_k: int = 40,
        top_p: float = 0.95,
        seed: int | None = None,
    ) -> str:
        """Sample a continuation of `text`: at most `n_words` words, ending early at the
        end of a message. Returns only the continuation, with a leading space when it
        should be separated from `text` by one. Temperature 0 is greedy."""
        if n_words < 0:
            raise ValueError("n_words must not be negative")
        rng = np.random.default_rng(seed)
        context_tokens = tokenize(text)
        key = self._context(context_tokens)
        out: list[str] = []
        words = 0
        # Punctuation does not count as a word, so cap tokens too: greedy decoding can loop on ".".
        max_tokens = 3 * n_words + 5
        while words < n_words and len(out) < max_tokens:
            probs, lexicon = self._served(key, [*context_tokens, *out])  # memory hook
            probs = probs.copy()
            probs[self._banned] = 0.0
            if not out:
                probs[EOS_ID] = 0.0  # say at least something
            # Punctuation never follows itself ("-- --", ", ,", '" "'): greedy decoding
            # would otherwise loop on it until the token cap.
            previous = out[-1] if out else (context_tokens[-1] if context_tokens else None)
            if previous is not None and not is_word(previous) and previous in self.tokenizer.index:
                probs[self.tokenizer.index[previous]] = 0.0
            token_id = self._draw(probs, rng, (temperature, top_k, top_p), [*context_tokens, *out], lexicon)
            if token_id is None or token_id == EOS_ID:
                break
            token = self._token(token_id, lexicon)
            out.append(token)
            words += is_word(token)
            key = (*key, token_id if token_id < len(self.tokenizer.vocab) else UNK_ID)
            if len(key) > MAX_CONTEXT:
                key = self._context([*context_tokens, *out])
        return detokenize(out, capitalize=True, after=context_tokens or ["<s>"], cased=self._cased(out))
