"""The NumPy engine's fast paths (a fresh context in one pass, an ensemble stepped
together, its output products into one array) against the step-by-step engine wordbot
served before them, kept here as the reference: same probabilities within 1e-6."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from wordbot.artifacts import expected_shapes
from wordbot.engine import Ensemble, RNNLanguageModel, network
from wordbot.predictor import Predictor
from wordbot.text import BOS_ID, SPECIALS, UNK_ID, Tokenizer

from .conftest import make_model_dir

TOKENIZER = Tokenizer([*SPECIALS, *(f"w{i}" for i in range(60))])


# -- the reference: today's engine before the fast paths, one token at a time ----------


def _sigmoid(x):
    return 0.5 * (np.tanh(0.5 * x) + 1.0)


def reference_step(net: RNNLanguageModel, i: int, x: np.ndarray, state):
    kernel, recurrent, bias = net.kernels[i], net.recurrent[i], net.biases[i]
    u = net.units
    if net.cell == "simple_rnn":
        return np.tanh(x @ kernel + state @ recurrent + bias)
    if net.cell == "gru":
        xz = x @ kernel + bias[0]
        hz = state @ recurrent + bias[1]
        z = _sigmoid(xz[:u] + hz[:u])
        r = _sigmoid(xz[u : 2 * u] + hz[u : 2 * u])
        candidate = np.tanh(xz[2 * u :] + r * hz[2 * u :])
        return (z * state + (1.0 - z) * candidate).astype(np.float32)
    h, c = state
    gates = x @ kernel + h @ recurrent + bias
    c = (_sigmoid(gates[u : 2 * u]) * c + _sigmoid(gates[:u]) * np.tanh(gates[2 * u : 3 * u])).astype(np.float32)
    return ((_sigmoid(gates[3 * u :]) * np.tanh(c)).astype(np.float32), c)


def reference_probs(net: RNNLanguageModel, ids) -> np.ndarray:
    """The next-token distribution after `ids`, stepping every layer one token at a time."""
    zero = np.zeros(net.units, dtype=np.float32)
    state = [(zero, zero) if net.cell == "lstm" else zero for _ in range(net.layers)]
    for token_id in ids:
        x = net.embedding[token_id]
        for i in range(net.layers):
            state[i] = reference_step(net, i, x, state[i])
            x = state[i][0] if net.cell == "lstm" else state[i]
    top = x
    if net.projection is not None:
        top = top @ net.projection[0] + net.projection[1]
    logits = (net.output @ top + net.output_bias).astype(np.float64)
    e = np.exp(logits - logits.max())
    return e / e.sum()


def random_network(cell: str, layers: int, tied: bool, members: int = 1, seed: int = 0):
    architecture = {"cell": cell, "layers": layers, "units": 24, "embedding_dim": 16, "members": members}
    architecture |= {"projection": 16, "tied": True} if tied else {"projection": None, "tied": False}
    rng = np.random.default_rng(seed)  # weights at conftest's scale, as small as trained ones
    shapes = expected_shapes(architecture, len(TOKENIZER))
    weights = {name: rng.normal(0, 0.3, shape).astype(np.float32) for name, shape in shapes.items()}
    return network({"architecture": architecture}, TOKENIZER, weights)


CONTEXT = [BOS_ID, *np.random.default_rng(1).integers(4, len(TOKENIZER), size=40).tolist()]


@pytest.mark.parametrize("cell", ["simple_rnn", "gru", "lstm"])
@pytest.mark.parametrize(("layers", "tied"), [(1, True), (2, False)])
def test_one_pass_over_a_context_gives_the_step_by_step_probabilities(cell, layers, tied):
    net = random_network(cell, layers, tied)
    states = net.advance_many(net.initial_state(), CONTEXT)
    assert len(states) == len(CONTEXT)
    for n in (1, 2, 17, len(CONTEXT)):  # every prefix's state is the one stepping gives
        assert np.abs(net.probs(states[n - 1]) - reference_probs(net, CONTEXT[:n])).max() < 1e-6
    one_more = net.advance(states[-1], 7)  # typing on from a one-pass state
    assert np.abs(net.probs(one_more) - reference_probs(net, [*CONTEXT, 7])).max() < 1e-6


@pytest.mark.parametrize("cell", ["simple_rnn", "gru", "lstm"])
def test_an_ensemble_stepped_together_predicts_the_mean_of_its_networks(cell):
    ensemble = random_network(cell, 2, True, members=3)
    assert isinstance(ensemble, Ensemble)
    expected = np.mean([reference_probs(n, CONTEXT) for n in ensemble.networks], axis=0)
    fresh = ensemble.advance_many(ensemble.initial_state(), CONTEXT)[-1]
    stepped = ensemble.initial_state()
    for token_id in CONTEXT:
        stepped = ensemble.advance(stepped, token_id)
    for state in (fresh, stepped):
        p = ensemble.probs(state)
        assert np.abs(p - expected).max() < 1e-6 and np.isclose(p.sum(), 1.0)


@pytest.mark.parametrize(("cell", "members"), [("simple_rnn", 2), ("gru", 2), ("lstm", 1), ("simple_rnn", 1)])
def test_a_fresh_context_through_the_served_mix_matches_the_reference(tmp_path, cell, members):
    """The whole served path (Predictor, one network or an ensemble, the n-gram, the
    order-weighted mix) on a fresh 40-word context, against the networks and the n-gram
    stepped one token at a time and mixed as the formula says."""
    from wordbot import mix
    from wordbot.ngram import KneserNey
    from wordbot.testing.reference import dense_ngram_probs

    directory = make_model_dir(tmp_path / "served", cell=cell, members=members)
    predictor = Predictor.load(directory, backend="mix")
    ensemble, ngram = predictor.lm.models
    weights = {1: 0.4, 2: 0.3, 3: 0.35, 4: 0.45}
    predictor = Predictor(mix.OrderWeighted(ensemble, ngram, weights), backend="mix")
    text = "the dog sat on the mat and then it said that it would never go back to the old house " * 2
    ids = predictor._context(text.split())
    assert len(ids) > 40

    inside = len(ensemble.tokenizer)
    networks = ensemble.networks if members > 1 else [ensemble]

    def expected_after(ids):
        ngram_state = ngram.initial_state()
        for token_id in ids:
            ngram_state = KneserNey.advance(ngram, ngram_state, token_id)
        p_ngram, order = dense_ngram_probs(ngram, ngram_state)
        # The network reads <unk> for the words only the n-gram knows (the open vocabulary)...
        read = [i if i < inside else UNK_ID for i in ids]
        p_network = np.mean([reference_probs(n, read) for n in networks], axis=0)
        # ...and its <unk> probability is shared out over them in proportion to the n-gram's.
        w = weights[order]
        p_ngram = p_ngram / (1.0 - p_ngram[UNK_ID])
        expected = w * p_ngram
        expected[:inside] += (1 - w) * p_network
        outside = p_ngram[inside:]
        expected[inside:] += (1 - w) * p_network[UNK_ID] * outside / outside.sum()
        expected[UNK_ID] = 0.0
        return expected

    assert len(predictor.tokenizer) > inside  # the case this test is about
    assert np.abs(predictor.probs_after(text.split()) - expected_after(ids)).max() < 1e-6
    typed = [*text.split(), "house"]  # typing on from the one-pass state: one step
    assert np.abs(predictor.probs_after(typed) - expected_after(predictor._context(typed))).max() < 1e-6


def test_the_bundled_ensemble_serves_the_step_by_step_float64_probabilities():
    """Trained weights give peaked distributions (small random ones are nearly flat), so
    the float32 softmax is checked on the bundled ensemble too: a fresh context in one
    pass, then one typed token, scaled as the mix reads it, against each network stepped
    a token at a time with its softmax in float64: within 1e-6, and the same top 10."""
    from wordbot.artifacts import load_model

    ensemble = network(*load_model(None))
    tokenizer = ensemble.tokenizer
    for text in ("the answer to the question is", "I have never seen such a thing in my life, and", "42"):
        ids = [BOS_ID, *tokenizer.encode(text)]
        states = ensemble.advance_many(ensemble.initial_state(), ids[:-1])
        for state, context in ((states[-1], ids[:-1]), (ensemble.advance(states[-1], ids[-1]), ids)):
            got = np.empty(len(tokenizer))
            ensemble.scaled_probs(state, 0.6, got)
            expected = 0.6 * np.mean([reference_probs(n, context) for n in ensemble.networks], axis=0)
            assert np.abs(got - expected).max() < 1e-6
            assert list(np.argsort(-got, kind="stable")[:10]) == list(np.argsort(-expected, kind="stable")[:10])


@pytest.mark.parametrize("members", [1, 3])
@pytest.mark.parametrize("cell", ["simple_rnn", "gru", "lstm"])
def test_the_scaled_distribution_is_the_distribution_times_its_weight(cell, members):
    """What the mix reads from the networks (`scaled_probs`, written into its own array)
    is `probs` times the weight, for one network and for an ensemble."""
    net = random_network(cell, 2, True, members=members)
    state = net.advance_many(net.initial_state(), CONTEXT)[-1]
    out = np.full(len(TOKENIZER), np.nan)
    net.scaled_probs(state, 0.35, out)
    expected = 0.35 * np.mean([reference_probs(n, CONTEXT) for n in getattr(net, "networks", [net])], axis=0)
    assert np.abs(out - expected).max() < 1e-6


def test_a_fresh_context_builds_one_distribution_the_last(tmp_path):
    """A fresh 40-word context through the served mix: the network and the n-gram advance
    without a distribution at any step; the one distribution built is the answer's."""
    predictor = Predictor.load(make_model_dir(tmp_path / "mix", members=2), backend="mix")
    built = []
    network, ngram = predictor.lm.models
    for model in (predictor.lm, network, ngram):
        for name in ("probs", "scaled_probs", "interpolation", "probs_and_order"):
            if hasattr(model, name):
                inner = getattr(model, name)
                setattr(model, name, lambda *a, _f=inner, _n=name, _m=model: built.append((_m, _n)) or _f(*a))
    text = "the dog sat on the mat and then it said that it would never go back to the old house " * 2
    predictor.next_words(text)
    assert len(predictor._context(text.split())) > 40
    assert [name for _, name in built] == ["probs", "interpolation", "scaled_probs"]  # the mix's, once


def test_a_fresh_context_is_one_pass_and_keeps_every_prefix_for_typing(tiny_predictor):
    steps = 0
    advance = tiny_predictor.lm.advance

    def counting(state, token_id):
        nonlocal steps
        steps += 1
        return advance(state, token_id)

    tiny_predictor.lm.advance = counting
    text = "the dog sat on the mat and looked at the door for a while"
    tiny_predictor.next_words(text)
    assert steps == 0  # no token-at-a-time replay
    tiny_predictor.next_words("the dog sat on the mat and looked")  # a prefix: cached, no work
    tiny_predictor.next_words(text + " then")  # one more word: one step
    assert steps == 1


BLAS_THREADS = """
import sys
from argparse import Namespace
from threadpoolctl import threadpool_info
from wordbot import cli
from wordbot.threads import serving

def blas():
    return max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")

import numpy
before = blas()
serving(Namespace(command="train"))
training = blas()
status = cli.main(["next", "--model", sys.argv[1], "the dog"])
print(before, training, blas(), status)
"""


def test_serving_commands_run_with_one_blas_thread_and_training_keeps_every_core(tiny_model_dir):
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", BLAS_THREADS, str(tiny_model_dir)], capture_output=True, text=True, env=env, timeout=120
    )
    before, training, serving, status = map(int, out.stdout.split()[-4:])
    assert status == 0 and serving == 1
    assert training == before
    if (os.cpu_count() or 1) > 1:
        assert before > 1  # NumPy's default: one thread per core


FRESH_START = """
import os, subprocess, sys
from wordbot import cli

assert "numpy" not in sys.modules
status = cli.main(["next", "--model", sys.argv[1], "the dog"])  # NumPy not yet loaded: its BLAS told at load
from threadpoolctl import threadpool_info

child = "from threadpoolctl import threadpool_info as t; import numpy; print(max(i['num_threads'] for i in t()))"
started = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True).stdout
told = [name for name in os.environ if name.endswith("_NUM_THREADS")]
print(status, max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"), int(started), told)
"""


def test_a_serving_command_started_fresh_has_one_blas_thread_and_what_it_starts_keeps_every_core(tiny_model_dir):
    """`wordbot next` as a user runs it: NumPy is loaded by the limit itself (its BLAS
    read the thread count from the environment), and the environment is given back."""
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    out = subprocess.run(
        [sys.executable, "-c", FRESH_START, str(tiny_model_dir)], capture_output=True, text=True, env=env, timeout=120
    )
    status, serving, child, told = out.stdout.splitlines()[-1].split(maxsplit=3)  # after the answer
    assert (int(status), int(serving), told.strip()) == (0, 1, "[]"), out.stderr[-2000:]
    if (os.cpu_count() or 1) > 1:
        assert int(child) > 1


# -- reading the weights without copies ------------------------------------------------


def test_float32_weights_are_memory_mapped_not_copied(tmp_path):
    from wordbot.artifacts import load_model

    directory = make_model_dir(tmp_path / "f32", units=64, embedding_dim=64, members=2)
    weights = load_model(directory)[2]
    embedding = weights["embedding"]
    assert embedding.nbytes >= 1 << 16  # large enough to be mapped
    assert not embedding.flags.owndata and not embedding.flags.writeable  # a view of the file, read-only
    predictor = Predictor.load(directory, backend="rnn")
    assert len(predictor.next_words("the dog", k=3)) == 3


def test_a_damaged_byte_in_a_memory_mapped_array_is_still_refused(tmp_path):
    """Mapping skips the copy, not the archive's checksum (format version 1's weights.npz)."""
    import zipfile

    from wordbot.artifacts import load_model
    from wordbot.errors import ModelError

    directory = make_model_dir(tmp_path / "f32", units=64, embedding_dim=64, format_version=1)
    path = directory / "weights.npz"
    with zipfile.ZipFile(path) as archive:
        info = archive.getinfo("embedding.npy")
    data = bytearray(path.read_bytes())
    data[info.header_offset + info.compress_size // 2] ^= 0x40  # inside the array's bytes
    path.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="embedding"):
        load_model(directory)
