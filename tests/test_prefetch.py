"""`wordbot eval`'s distributions computed ahead in batches (wordbot/prefetch.py): the
same served probabilities as one position at a time (issue 15's parity rule, 1e-6),
the same figures, and each position charged its share of the batched work."""

from __future__ import annotations

import numpy as np
import pytest

from wordbot.corpus import read_messages
from wordbot.evaluate import evaluate_messages
from wordbot.predictor import MAX_CONTEXT, Predictor
from wordbot.prefetch import NETWORK_BATCH, Lookahead, batched, distributions
from wordbot.testing.reference import DenseMix
from wordbot.text import BOS_ID, tokenize

from .conftest import TRAIN_FILE
from .test_engine import random_network
from .test_mix import served_mix_dir

SCORED = read_messages(TRAIN_FILE)[3000:3060]  # text the tiny models' n-gram never counted


@pytest.fixture(scope="module")
def ensemble_mix(tmp_path_factory):
    return served_mix_dir(tmp_path_factory.mktemp("ensemble"), members=2)


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("cell", ["simple_rnn", "gru", "lstm"])
@pytest.mark.parametrize(("layers", "tied"), [(1, True), (2, False)])
def test_the_logits_of_many_states_are_each_states_own(cell, members, layers, tied):
    """One output product over many states gives every state's logits (float64 from
    the float32 weights: closer to exact than the one-state product, never further
    than its own rounding)."""
    net = random_network(cell, layers, tied, members=members)
    ids = [BOS_ID, *np.random.default_rng(2).integers(4, len(net.tokenizer), size=30).tolist()]
    states = net.advance_many(net.initial_state(), ids)
    many = net.logits_many(states)
    assert many.shape == (members, len(ids), len(net.tokenizer)) and many.dtype == np.float64
    for t, state in enumerate(states):
        one = net.logits(state).reshape(members, -1)
        assert np.abs(many[:, t] - one).max() < 1e-5
    assert all(np.abs(p - net.probs(s)).max() < 1e-6 for p, s in zip(distributions(net, states), states, strict=True))


@pytest.mark.parametrize(("cell", "members"), [("simple_rnn", 1), ("simple_rnn", 2), ("gru", 2), ("lstm", 1)])
def test_the_batched_served_mix_gives_the_per_position_and_the_reference_probabilities(tmp_path, cell, members):
    """Issue 15's parity: every prefix of several messages (words only the n-gram
    knows among them), batched, against the served mix one position at a time and the
    dense reference mix stepped a token at a time, within 1e-6."""
    predictor = Predictor.load(served_mix_dir(tmp_path, cell, members))
    lm = predictor.lm
    network, ngram = lm.models
    reference = DenseMix(network, ngram, lm.weights)
    assert len(predictor.tokenizer) > lm.network_size and batched(lm)
    outside = 0
    for message in SCORED[:12]:
        ids = [BOS_ID, *predictor.tokenizer.encode_tokens(tokenize(message))]
        outside += sum(i >= lm.network_size for i in ids)
        states = lm.advance_many(lm.initial_state(), ids)
        expected = reference.initial_state()
        for state, got, token_id in zip(states, distributions(lm, states), ids, strict=True):
            expected = reference.advance(expected, token_id)
            assert np.abs(got - lm.probs(state)).max() < 1e-6
            assert np.abs(got - reference.probs(expected)).max() < 1e-6
            assert np.isclose(got.sum(), 1.0)
    assert outside > 0  # the open vocabulary's share was exercised


def test_a_lookahead_fills_the_cache_probs_after_reads_with_what_it_would_compute(ensemble_mix):
    """Across messages and batches (a batch ends inside a message), each position's
    distribution is in the cache before it is asked for, equal to a fresh predictor's,
    and charged once, some share of the batched work."""
    predictor, fresh = Predictor.load(ensemble_mix), Predictor.load(ensemble_mix)
    contexts = [tokenize(m) for m in SCORED[:40]]
    assert sum(len(c) + 1 for c in contexts) > NETWORK_BATCH  # more than one batch
    lookahead = Lookahead(predictor, contexts)
    charged = []
    for m, tokens in enumerate(contexts):
        for j in range(len(tokens) + 1):
            charged.append(lookahead.ready(m, j))
            key = predictor._context(tokens[:j])
            cached = predictor._probs.get(key)
            assert cached is not None and predictor.probs_after(tokens[:j]) is cached
            assert np.abs(cached - fresh.probs_after(tokens[:j])).max() < 1e-6
    assert min(charged) > 0 and not lookahead._charged  # each position charged, none left over


def test_eval_figures_are_the_same_with_and_without_the_lookahead(ensemble_mix):
    """The figures of the served mix and of its networks alone: every count the same,
    perplexity to rounding (each probability differs from the one-at-a-time float32
    product's by its rounding: relatively ~1e-7)."""
    predictor = Predictor.load(ensemble_mix)
    for model in (predictor, Predictor(predictor.lm.models[0], backend="rnn")):
        fast = evaluate_messages(model, SCORED, per_message=True)
        slow = evaluate_messages(Predictor(model.lm, backend=model.backend), SCORED, per_message=True, prefetch=False)
        _assert_same_figures(fast, slow)


def _assert_same_figures(fast: dict, slow: dict) -> None:
    for name in ("positions", "words", "top1", "top3", "mrr3", "ksr", "left_out", "oov_rate"):
        assert fast[name] == slow[name], name
    assert fast["perplexity"] == pytest.approx(slow["perplexity"], rel=1e-6)
    for name in ("words", "hits1", "hits3", "keys_used", "keys_plain", "scored"):
        assert (fast["per_message"][name] == slow["per_message"][name]).all(), name


def test_a_learned_view_scores_the_same_with_the_lookahead(ensemble_mix):
    """`eval --learn-from`: the memory mixes on top of the base distributions the
    lookahead computed, as it does on those computed one at a time."""
    predictor = Predictor.load(ensemble_mix)
    learned, again = predictor.view(), Predictor.load(ensemble_mix).view()
    for view in (learned, again):
        for message in SCORED[60:] + SCORED[:20]:
            view.learn(message)
    _assert_same_figures(
        evaluate_messages(learned, SCORED, per_message=True),
        evaluate_messages(again, SCORED, per_message=True, prefetch=False),
    )


def test_a_context_past_the_models_window_is_left_to_the_predictor(ensemble_mix):
    """Past MAX_CONTEXT tokens a context is keyed by its recent part: those positions
    are computed when asked for, and the figures stay the same."""
    predictor = Predictor.load(ensemble_mix)
    long = " ".join(SCORED[:40])
    assert len(tokenize(long)) > MAX_CONTEXT + 10
    lookahead = Lookahead(predictor, [tokenize(long)])
    assert lookahead.ready(0, MAX_CONTEXT + 5) == 0.0 and lookahead.ready(0, 3) > 0
    fast = evaluate_messages(predictor, [long], per_message=True)
    _assert_same_figures(
        fast, evaluate_messages(Predictor.load(ensemble_mix), [long], per_message=True, prefetch=False)
    )


def test_a_model_without_a_network_is_not_batched(ensemble_mix):
    ngram = Predictor.load(ensemble_mix, backend="ngram")
    lookahead = Lookahead(ngram, [tokenize(SCORED[0])])
    assert not batched(ngram.lm) and lookahead.ready(0, 1) == 0.0 and not ngram._probs
