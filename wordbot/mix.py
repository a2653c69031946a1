"""How the network and the n-gram are combined into the distribution a Predictor
serves: a fixed linear mixture (`Interpolated`), a mixture whose weight follows what
the n-gram has seen (`OrderWeighted`), and `backend_for`, which builds the one a
model directory asks for ("rnn", "ngram" or "mix"); and how the weights are chosen
on validation text when a model is made (`best_order_weights`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wordbot.artifacts import DEFAULT_ORDER
from wordbot.bounded import shown
from wordbot.debris import DEBRIS_RULE
from wordbot.engine import Combined, advance_all
from wordbot.errors import ModelError
from wordbot.ngram import NGRAM_REMEDY, KneserNey
from wordbot.ngram_cache import cached_path, counted_for_model, write_cached
from wordbot.text import BOS_ID, SPECIALS, UNK_ID, WORD_RULE, Tokenizer

log = logging.getLogger(__name__)

# Weight of the n-gram in the "mix" backend when the manifest names none.
DEFAULT_MIX_WEIGHT = 0.3


class Interpolated(Combined):
    """A linear mixture of language models over one tokenizer: sum_i w_i p_i(next)."""

    def __init__(self, models: Sequence, weights: Sequence[float]):
        if len(models) != len(weights) or not models:
            raise ValueError("one weight per model")
        if any(w < 0 for w in weights) or not np.isclose(sum(weights), 1.0):
            raise ValueError(f"mixture weights must be non-negative and sum to 1, got {list(weights)}")
        super().__init__(models)
        self.weights = [float(w) for w in weights]

    def probs(self, state: tuple) -> np.ndarray:
        p = np.zeros(len(self.tokenizer))
        for m, s, w in zip(self.models, state, self.weights, strict=True):
            p += w * m.probs(s)
        return p


class OrderWeighted(Combined):
    """The network and the n-gram mixed with a weight that depends on how much the
    n-gram knows here: the longest context it has seen (its `context_order`). Where
    it has seen the last four words, its counts are worth more than where it has
    seen only the last one. `weights[k]` is the n-gram's weight at order k.

    The n-gram may know more words than the network (the open vocabulary: its
    vocabulary is the network's, ids unchanged, then every other word of the training
    text). The network's `<unk>` probability is then shared out over those words in
    proportion to the n-gram's probabilities of them, and `<unk>` itself gets none:

        p(w) = (1 - λ) p_net(w) + λ p_ng(w)                                   w in the network
        p(w) = (1 - λ) p_net(<unk>) p_ng(w) / Σ_{v outside} p_ng(v) + λ p_ng(w)   w outside

    with p_ng renormalised without `<unk>`, so the result still sums to 1. The
    network reads `<unk>` for a word outside its vocabulary."""

    def __init__(self, network, ngram: KneserNey, weights: dict[int, float]):
        missing = [k for k in range(1, ngram.order + 1) if k not in weights]
        if missing or any(not 0 <= w <= 1 for w in weights.values()):
            raise ValueError(f"need a weight in [0, 1] for every order 1..{ngram.order}, got {weights}")
        inner, outer = network.tokenizer.vocab, ngram.tokenizer.vocab
        if len(outer) < len(inner) or outer[: len(inner)] != inner:
            raise ValueError("the n-gram's vocabulary must be the network's, or extend it")
        self.models = [network, ngram]
        self.tokenizer = ngram.tokenizer
        self.network_size = len(inner)  # ids at and above it are words only the n-gram knows
        self.weights = {int(k): float(w) for k, w in weights.items()}

    def advance(self, state: tuple, token_id: int) -> tuple:
        network, ngram = self.models
        seen_by_network = token_id if token_id < self.network_size else UNK_ID
        return network.advance(state[0], seen_by_network), ngram.advance(state[1], token_id)

    def advance_many(self, state: tuple, ids) -> list[tuple]:
        """`advance` over a whole context: the network in one pass over what it can read."""
        network, ngram = self.models
        seen_by_network = [i if i < self.network_size else UNK_ID for i in ids]
        networks = advance_all(network, state[0], seen_by_network)
        return list(zip(networks, advance_all(ngram, state[1], ids), strict=True))

    def probs(self, state: tuple) -> np.ndarray:
        """The mixed distribution in a few passes over the served vocabulary: the
        network's probabilities written scaled into the result, the n-gram's dense
        lowest order added scaled once, then only the rows of the orders it has seen
        (the n-gram's `interpolation`); never a dense vector per order."""
        network, ngram = self.models
        base, base_scale, rows, order = _interpolation(ngram, state[1])
        w = self.weights[order]
        n = self.network_size
        p = np.empty(len(base))
        _network_probs(network, state[0], 1.0 - w, p[:n])  # (1 - w) p_net
        if n == len(p):
            scale, share = w, 0.0
        else:
            # The n-gram's <unk> and the total over the words outside the network, sparsely.
            unk, outside = base_scale * float(base[UNK_ID]), base_scale * self._outside_base(base)
            for words, values in rows:
                unk += float(values[words == UNK_ID].sum())
                outside += float(values[words >= n].sum())
            scale = w / (1.0 - unk)  # the n-gram renormalised without <unk>
            share = float(p[UNK_ID]) / outside if outside > 0 else 0.0  # (1 - w) p_net(<unk>) shared out
            np.multiply(base[n:], (scale + share) * base_scale, out=p[n:])
        p[:n] += base[:n] * (scale * base_scale)
        for words, values in rows:
            p[words] += values * np.where(words < n, scale, scale + share) if share else values * scale
        if n < len(p):
            p[UNK_ID] = 0.0
        return p

    def _outside_base(self, base: np.ndarray) -> float:
        """The sum of the n-gram's dense lowest order over the words outside the network
        (summed once per array: it never changes)."""
        cached = getattr(self, "_outside", None)
        if cached is None or cached[0] is not base:
            cached = self._outside = (base, float(base[self.network_size :].sum()))
        return cached[1]


def _interpolation(ngram, state) -> tuple[np.ndarray, float, list, int]:
    """The n-gram's sparse form (`KneserNey.interpolation`), or for a model without
    one its dense distribution as the base with no rows."""
    sparse = getattr(ngram, "interpolation", None)
    if sparse is not None:
        return sparse(state)
    p, order = ngram.probs_and_order(state)
    return p, 1.0, [], order


def _network_probs(network, state, scale: float, out: np.ndarray) -> None:
    """Write `scale` times the network's next-token distribution into `out`."""
    scaled = getattr(network, "scaled_probs", None)
    if scaled is not None:
        scaled(state, scale, out)
    else:
        np.multiply(network.probs(state), scale, out=out)


def backend_for(backend: str, lm, manifest: dict, directory: str | os.PathLike):
    """The language model behind `Predictor.load(..., backend=...)`, over the served
    vocabulary (`served_tokenizer`: the network's words, then every other word of its
    training text): "ngram" is a Kneser-Ney model on the RNN's training text
    ("ngram.npz" in the model directory if present, else counted once and then read
    from the cache directory); "mix" combines it with the RNN using the manifest's
    `mix.ngram_weight_by_order` (a weight per longest context the n-gram has seen) or
    else its single `mix.ngram_weight` (`OrderWeighted`)."""
    settings = manifest.get("mix") or {}
    order = int(settings.get("order", DEFAULT_ORDER))
    shipped = Path(directory) / "ngram.npz"
    if shipped.exists():
        ngram = KneserNey.load(shipped)  # over the network's vocabulary, or one that extends it
        vocab, network = ngram.tokenizer.vocab, lm.tokenizer.vocab
        if vocab == network:
            ngram.tokenizer = lm.tokenizer  # keep the cased forms
        elif vocab[: len(network)] != network:
            raise ModelError(f"{shown(shipped)}: vocabulary differs from the tokenizer's; {NGRAM_REMEDY}")
    else:
        ngram = counted_for_model(manifest, directory, served_tokenizer(manifest, directory, lm.tokenizer), order)
    if backend == "ngram":
        return ngram
    if backend == "mix":
        by_order = settings.get("ngram_weight_by_order")
        if not by_order:
            weight = float(settings.get("ngram_weight", DEFAULT_MIX_WEIGHT))
            by_order = {k: weight for k in range(1, ngram.order + 1)}
        try:
            return OrderWeighted(lm, ngram, {int(k): float(w) for k, w in by_order.items()})
        except (TypeError, ValueError, AttributeError) as e:
            where = Path(directory) / "manifest.json"
            raise ModelError(f"{where}: mix is unusable ({e})") from None
    raise ValueError(f"unknown backend {backend!r}")


# -- the open vocabulary -----------------------------------------------------------


def open_tokenizer(network: Tokenizer, messages: Sequence[str]) -> Tokenizer:
    """The served vocabulary: the network's tokens (ids unchanged), then every other
    token of `messages` by count, ties by spelling; the written forms (`cased`) are the
    network's, extended to the new words as training computes them."""
    everything = Tokenizer.build(messages, max_size=sys.maxsize, min_count=1)
    known = network.index
    extra = [t for t in everything.vocab[len(SPECIALS) :] if t not in known]
    cased = dict(network.cased)
    cased |= {t: everything.cased[t] for t in extra if t in everything.cased}
    return Tokenizer([*network.vocab, *extra], cased)


def served_tokenizer(manifest: dict, directory: str | os.PathLike, network: Tokenizer) -> Tokenizer:
    """`open_tokenizer` over a model's training text, kept in the cache directory
    beside its n-gram (building it reads every message: 1.4 s for the bundled model;
    reading it back a few ms). Raises CorpusError when the training text is gone."""
    path = cached_path(manifest, network, "vocab", ".json")
    if path is not None and os.path.isfile(path):
        try:
            cached = _cached_tokenizer(path, network)
            if cached is not None:
                tokenizer, complete = cached
                if not complete:  # an older layout: rewritten once with what start-up derives
                    _write_vocabulary(path, tokenizer, network)
                else:
                    with contextlib.suppress(OSError):
                        os.utime(path)  # recently used: kept by the cache's pruning
                return tokenizer
        except (OSError, ValueError, TypeError, UnicodeDecodeError) as e:  # damaged: built again and replaced
            log.debug("wordbot: ignoring the unreadable vocabulary cache %s (%s)", path, e)
    from wordbot.corpus import training_messages  # (imports hashlib, gzip: not needed when cached)

    tokenizer = open_tokenizer(network, training_messages(manifest, directory))
    if path is not None:
        _write_vocabulary(path, tokenizer, network)
    return tokenizer


def _write_vocabulary(path: Path, tokenizer: Tokenizer, network: Tokenizer) -> None:
    """Cache what `tokenizer` adds to `network`, and what start-up would otherwise
    derive by matching every token (version 3): the network's word ids and the debris
    ids, each with the rule that made it. Readers of version 2 read the same file."""
    n = len(network)
    data = {
        "format_version": 3,
        "extra": tokenizer.vocab[n:],
        "cased": {t: form for t, form in tokenizer.cased.items() if t not in network.index},
        "extra_word_ids": [i for i in tokenizer.word_ids if i >= n],
        "network_word_ids": [i for i in tokenizer.word_ids if i < n],
        "word_rule": WORD_RULE,
        "debris_ids": tokenizer.debris_ids,
        "debris_rule": DEBRIS_RULE,
    }
    write_cached(path, lambda f: f.write(json.dumps(data, ensure_ascii=False).encode("utf-8")))


def _cached_tokenizer(path: Path, network: Tokenizer) -> tuple[Tokenizer, bool] | None:
    """The served tokenizer a cache file holds, and whether the file has all that
    version 3 adds: only what it adds to `network` (the cache is named after the
    network's vocabulary), so the network's words and casing are the same objects as
    in its tokenizer, and no token is matched again. Ids are taken as written once they
    are integers in range and in order (a wrong word id would only be offered, a wrong
    debris id only hide a word; never a crash), and only while the rule that made them
    is this wordbot's. None: a file of the oldest layout that does not extend `network`."""
    with open(path, "rb") as f:
        data = json.loads(f.read())
    if "extra" not in data:  # the whole vocabulary, as written before
        vocab = data.get("vocab")
        if not (isinstance(vocab, list) and vocab[: len(network)] == network.vocab):
            return None
        return Tokenizer.from_json(data), False
    extra, cased = data["extra"], data.get("cased")
    if (
        not isinstance(extra, list)
        or not set(map(type, extra)) <= {str}
        or not isinstance(cased, dict)
        or not all(isinstance(t, str) and isinstance(form, str) and form.lower() == t for t, form in cased.items())
    ):
        raise ValueError("extra words or their casing malformed")
    n = len(network)
    size = n + len(extra)
    extra_ids = _checked_ids(data.get("extra_word_ids"), n, size)
    same_rule = data.get("word_rule") == WORD_RULE and "network_word_ids" in data
    network_ids = _checked_ids(data["network_word_ids"], len(SPECIALS), n) if same_rule else network.word_ids
    debris = _checked_ids(data["debris_ids"], 0, size) if data.get("debris_rule") == DEBRIS_RULE else None
    tokenizer = Tokenizer(
        [*network.vocab, *extra], {**network.cased, **cased}, word_ids=[*network_ids, *extra_ids], debris_ids=debris
    )
    return tokenizer, same_rule and debris is not None


def _checked_ids(ids, low: int, high: int) -> list[int]:
    """`ids` as a cache file holds them: a list of integers from `low` to below `high`,
    increasing."""
    array = np.asarray(ids)
    if (
        not isinstance(ids, list)
        or array.ndim != 1
        or (len(array) and (array.dtype.kind != "i" or array[0] < low or array[-1] >= high))
        or (np.diff(array) <= 0).any()
    ):
        raise ValueError("ids malformed")
    return ids


# -- choosing the weights on validation text --------------------------------------


def language_model(obj):
    """The LanguageModel inside `obj`: itself, or a Predictor's `.lm`."""
    if all(hasattr(obj, name) for name in ("initial_state", "advance", "probs")):
        return obj
    if hasattr(obj, "lm"):
        return obj.lm
    raise TypeError(f"{type(obj).__name__} is not a language model (initial_state/advance/probs)")


def _scored_states(lm, messages: Sequence[str]):
    """(state, target) at every scored position: every token and `</s>`, `<unk>` skipped."""
    for message in messages:
        targets = lm.tokenizer.encode(message, eos=True)
        state = lm.advance(lm.initial_state(), BOS_ID)
        for target in targets:
            if target != UNK_ID:
                yield state, target
            state = lm.advance(state, target)


def target_probs(model, messages: Sequence[str]) -> np.ndarray:
    """p(target) at every scored position (every token and `</s>`, `<unk>` skipped)."""
    lm = language_model(model)
    return np.array([float(lm.probs(state)[target]) for state, target in _scored_states(lm, messages)])


def best_mix_weight(model, ngram, messages: Sequence[str], weights: Sequence[float] | None = None):
    """The n-gram weight w minimising the perplexity of (1 - w) p_model + w p_ngram on
    `messages` (use validation text, never the test file). Returns (w, {w: perplexity})."""
    weights = np.linspace(0.0, 0.6, 13) if weights is None else weights
    p_model, p_ngram = target_probs(model, messages), target_probs(ngram, messages)
    table = {float(w): _mix_perplexity(p_model, p_ngram, w) for w in weights}
    return min(table, key=table.get), table


def _mix_perplexity(p_model: np.ndarray, p_ngram: np.ndarray, w) -> float:
    return float(np.exp(-np.mean(np.log(np.maximum((1 - w) * p_model + w * p_ngram, 1e-300)))))


def context_orders(ngram, messages: Sequence[str]) -> np.ndarray:
    """The n-gram's `context_order` at every position `target_probs` scores."""
    return np.array([ngram.context_order(state) for state, _ in _scored_states(ngram, messages)], dtype=np.int64)


def best_order_weights(
    model, ngram, messages: Sequence[str], weights: Sequence[float] | None = None, min_positions: int = 200
) -> dict:
    """Weights for mixing `model` with a Kneser-Ney `ngram`, chosen on `messages` by
    perplexity (validation text, never the test file): one weight for all positions,
    and one per longest context the n-gram has seen (`OrderWeighted`); an order seen
    at fewer than `min_positions` positions gets the single weight."""
    weights = np.linspace(0.0, 0.95, 20) if weights is None else np.asarray(weights)
    p_model, p_ngram = target_probs(model, messages), target_probs(ngram, messages)
    orders = context_orders(ngram, messages)
    table = {float(w): _mix_perplexity(p_model, p_ngram, w) for w in weights}
    single = min(table, key=table.get)
    by_order = {}
    for k in range(1, ngram.order + 1):
        here = orders == k
        if here.sum() < min_positions:
            by_order[k] = single
            continue
        scores = [_mix_perplexity(p_model[here], p_ngram[here], w) for w in weights]
        by_order[k] = float(weights[int(np.argmin(scores))])
    w = np.array([by_order[k] for k in orders])
    return {
        "single": single,
        "by_order": by_order,
        "positions_by_order": {k: int((orders == k).sum()) for k in range(1, ngram.order + 1)},
        "model_perplexity": _mix_perplexity(p_model, p_ngram, 0.0),
        "single_perplexity": table[single],
        "by_order_perplexity": _mix_perplexity(p_model, p_ngram, w),
    }
