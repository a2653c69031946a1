"""The open vocabulary: the served words are the network's and every other word of its
training text; the network's `<unk>` probability is shared out over the words it does
not know by the n-gram, and the result is still a distribution."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from wordbot.corpus import read_messages
from wordbot.mix import OrderWeighted, open_tokenizer
from wordbot.predictor import Predictor
from wordbot.testing.reference import DenseMix, sorted_top
from wordbot.text import BOS_ID, UNK_ID, Tokenizer, tokenize

from .conftest import TRAIN_FILE, served_mix_dir

MESSAGES = read_messages(TRAIN_FILE)[:1500]  # the tiny network's 800 words come from these


@pytest.fixture(scope="module")
def open_model_dir(tmp_path_factory):
    """The tiny model, trained (its manifest says) on the 1,500 messages its vocabulary came from."""
    return served_mix_dir(tmp_path_factory.mktemp("open"))


@pytest.fixture(scope="module")
def served(open_model_dir):
    return Predictor.load(open_model_dir)


def test_the_served_vocabulary_is_the_networks_then_every_other_word_of_the_training_text(served):
    network = served.lm.models[0].tokenizer
    vocab = served.tokenizer.vocab
    assert vocab[: len(network)] == network.vocab  # the network's ids unchanged
    counts = Counter(t for m in MESSAGES for t in tokenize(m))
    assert set(vocab[4:]) == set(counts) and len(vocab) > 4 * len(network)
    extra = vocab[len(network) :]
    assert extra == sorted(extra, key=lambda t: (-counts[t], t))  # by count, then spelling
    again = open_tokenizer(network, list(reversed(MESSAGES)))
    assert again.vocab == vocab and again.cased == served.tokenizer.cased  # the same whatever the order


def test_new_words_are_offered_as_they_are_written():
    network = Tokenizer.build(["the cat sat", "the cat ran"], max_size=10, min_count=2)
    messages = ["the cat sat", "the cat ran", "we met Wilde in Dublin", "ask Wilde", "hello World world"]
    served = open_tokenizer(network, messages)
    assert "wilde" not in network.index and served.cased["wilde"] == "Wilde"
    assert "world" not in served.cased  # written both ways: stays as typed
    predictor = Predictor(OrderWeighted(_Uniform(network), _Uniform(served), {1: 0.5}))
    assert [p.word for p in predictor.complete("it was wil")] == ["Wilde"]


class _Uniform:
    """A language model that knows nothing: every token but <pad> and <s> alike."""

    order = 1

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.p = np.ones(len(tokenizer))
        self.p[[0, BOS_ID]] = 0
        self.p /= self.p.sum()

    def initial_state(self):
        return ()

    def advance(self, state, token_id):
        return ()

    def probs(self, state):
        return self.p.copy()

    def probs_and_order(self, state):
        return self.p.copy(), 1


def test_the_served_distribution_sums_to_one_for_random_contexts(served):
    rng = np.random.default_rng(0)
    size = len(served.tokenizer)
    for _ in range(50):
        ids = [BOS_ID, *rng.integers(4, size, rng.integers(0, 12)).tolist()]
        p = served.token_probs(ids)
        assert p.shape == (size,) and abs(p.sum() - 1.0) < 1e-6
        assert p.min() >= 0 and p[UNK_ID] == 0.0


def test_the_networks_unknown_share_goes_to_its_unknown_words_as_the_ngram_ranks_them(served):
    mix = served.lm
    network, ngram = mix.models
    n = len(network.tokenizer)
    state = mix.initial_state()
    for token in served.tokenizer.encode("the man who"):
        state = mix.advance(state, token)
    p = mix.probs(state)
    p_net = network.probs(state[0])
    p_ngram, order = ngram.probs_and_order(state[1])
    w = mix.weights[order]
    p_ngram[UNK_ID] = 0
    p_ngram /= p_ngram.sum()
    inside = (1 - w) * p_net + w * p_ngram[:n]
    inside[UNK_ID] = 0
    np.testing.assert_allclose(p[:n], inside, rtol=1e-9, atol=1e-15)
    # Outside: the network's <unk> mass and the n-gram's own, in the n-gram's proportions.
    assert p[n:].sum() == pytest.approx((1 - w) * p_net[UNK_ID] + w * p_ngram[n:].sum(), rel=1e-9)
    np.testing.assert_allclose(p[n:] / p[n:].sum(), p_ngram[n:] / p_ngram[n:].sum(), rtol=1e-9)


def test_the_network_reads_unk_for_a_word_it_does_not_know(served):
    mix = served.lm
    network = mix.models[0]
    outside = len(network.tokenizer) + 5
    state = mix.advance(mix.initial_state(), outside)
    expected = network.advance(network.initial_state(), UNK_ID)
    for a, b in zip(state[0], expected, strict=True):
        np.testing.assert_array_equal(a, b)
    assert state[1][-1] == outside  # the n-gram reads the word itself


def test_a_word_only_the_ngram_knows_is_offered_and_completed(served):
    network = served.lm.models[0].tokenizer
    word = next(w for w in served.tokenizer.vocab[len(network) :] if w.isalpha() and len(w) > 6)
    found = [p.word.lower() for p in served.complete(word, k=5)]
    assert word in found
    assert served.complete("zzqxv") == []  # a word the training text never had is never invented


def test_backend_rnn_stays_closed(open_model_dir):
    rnn = Predictor.load(open_model_dir, backend="rnn")
    assert len(rnn.tokenizer) == 800 and rnn.backend == "rnn"
    ngram = Predictor.load(open_model_dir, backend="ngram")
    assert len(ngram.tokenizer) > 800  # the n-gram alone serves the open vocabulary too


def test_a_mix_over_one_vocabulary_is_unchanged(tiny_model_dir):
    from wordbot.ngram import KneserNey

    network = Predictor.load(tiny_model_dir, backend="rnn").lm
    ngram = KneserNey.from_texts(MESSAGES[:300], network.tokenizer, 3)
    mix = OrderWeighted(network, ngram, {1: 0.1, 2: 0.3, 3: 0.5})
    state = mix.initial_state()
    for token in network.tokenizer.encode("the dog"):
        state = mix.advance(state, token)
    p_ngram, order = ngram.probs_and_order(state[1])
    w = mix.weights[order]
    np.testing.assert_allclose(mix.probs(state), (1 - w) * network.probs(state[0]) + w * p_ngram, atol=1e-15)
    with pytest.raises(ValueError, match="extend"):
        OrderWeighted(
            network, KneserNey.from_texts(["a b"], Tokenizer.build(["a b"], min_count=1), 3), {1: 0, 2: 0, 3: 0}
        )


# -- the fast paths against the dense mix wordbot served before them --------------------


def _contexts(served, rng, count: int) -> list[list[int]]:
    """Contexts of every kind: short and long, words only the n-gram knows, <unk>, and
    random ids that no training text put together."""
    size, inside = len(served.tokenizer), len(served.lm.models[0].tokenizer)
    texts = [served.tokenizer.encode(m) for m in MESSAGES[:count]]
    out = [[BOS_ID, *ids[: rng.integers(0, len(ids) + 1)]] for ids in texts]
    out += [[BOS_ID, *rng.integers(4, size, rng.integers(0, 60)).tolist()] for _ in range(count)]
    out += [[BOS_ID, *ids, int(rng.integers(inside, size)), UNK_ID] for ids in texts[:10]]
    # A seen pair after a random word: backing off from the longest context to a middle one.
    out += [[BOS_ID, int(rng.integers(4, size)), *ids[1:3]] for ids in texts[:count] if len(ids) > 2]
    return out


def test_the_fast_mix_serves_the_probabilities_of_the_dense_reference(served):
    """Issue 15's parity: the sparse n-gram, the mix in a few passes and the one-pass
    fresh context give what the dense mix stepped a token at a time gave, within 1e-6,
    for every kind of context, and the suggestions are the ones a full sort ranks."""
    network, ngram = served.lm.models
    fast = Predictor(OrderWeighted(network, ngram, served.lm.weights), backend="mix")
    reference = DenseMix(network, ngram, served.lm.weights)
    rng = np.random.default_rng(5)
    orders = set()
    for ids in _contexts(served, rng, 60):
        state = reference.initial_state()
        for token_id in ids:
            state = reference.advance(state, token_id)
        expected = reference.probs(state)
        got = fast.token_probs(ids)  # a fresh context: one pass, one distribution
        assert np.abs(got - expected).max() < 1e-6
        orders.add(ngram.context_order(state[1]))
        for k in (1, 3, 10):  # the top k, against sorting every word
            words = fast._word_ids
            best = [served.tokenizer.vocab[i] for i in sorted_top(got, words, k)]
            assert [p.word.lower() for p in fast._ranked(got, words, k, False)] == best
    assert orders == {1, 2, 3, 4}


def test_the_top_k_keeps_ties_in_id_order_as_a_full_sort_does():
    from wordbot.predictor import top_positions

    rng = np.random.default_rng(0)
    for _ in range(200):
        p = rng.integers(0, 4, rng.integers(1, 40)).astype(np.float64)  # many ties
        ids = rng.permutation(len(p) * 3)[: len(p)]
        for k in (1, 2, 5, 9, 50):
            got = ids[top_positions(p, ids, k)].tolist()
            assert got == sorted_top(np.bincount(ids, p, minlength=ids.max() + 1), ids, k)


def test_every_keystroke_answers_what_a_fresh_predictor_answers(served):
    """The keystroke path remembers the last text's tokens and context and ranks a
    prefix's few words by sorting them: typing a text letter by letter (with edits
    back and forth) gets at every keystroke the suggestions of a predictor that never
    saw the text before."""
    network, ngram = served.lm.models
    typing = Predictor(OrderWeighted(network, ngram, served.lm.weights), backend="mix")
    fresh = Predictor(OrderWeighted(network, ngram, served.lm.weights), backend="mix")
    texts = []
    for message in MESSAGES[200:204]:
        texts += [message[:i] for i in range(1, len(message) + 1)]
        texts += [message[: len(message) // 2], "the " + message[:7]]  # back, and a new start
    for text in texts:
        fresh._states.clear()  # nothing remembered: as if it never saw a text
        fresh._probs.clear()
        fresh._last_tokens = fresh._last_context = None
        got, expected = typing.suggest(text, k=4), fresh.suggest(text, k=4)
        # (a state stepped a token at a time and one from one pass differ in float32 rounding)
        assert got.partial == expected.partial and [p.word for p in got.predictions] == [
            p.word for p in expected.predictions
        ], text
        assert np.allclose([p.prob for p in got.predictions], [p.prob for p in expected.predictions], atol=1e-6)
    tokens = typing._tokens("the cat")
    tokens.append("sat")  # a caller changing what it was given changes nothing remembered
    assert typing._tokens("the cat") == ["the", "cat"]
