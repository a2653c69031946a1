"""The Kneser-Ney n-gram model against a slow reference written straight from
Chen & Goodman's formulas, plus the properties a Predictor relies on."""

from __future__ import annotations

import random
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wordbot.mix import Interpolated
from wordbot.ngram import KneserNey, modified_kn_discounts
from wordbot.text import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Tokenizer

WORDS = [f"w{i}" for i in range(100)] + ["never"]  # "never" is never seen in training
TOKENIZER = Tokenizer([*SPECIALS, *WORDS])
V = len(TOKENIZER)


def toy_corpus(n_messages: int = 400, seed: int = 0) -> list[list[int]]:
    """Messages mixing a Zipfian unigram with a sparse Markov chain, `<unk>` included.

    Zipf gives the rare words whose counts make every order's n1..n4 non-zero, so the
    discount formulas need no clamping; the chain gives repeated long n-grams.
    """
    rng = random.Random(seed)
    seen = [UNK_ID] + [TOKENIZER.index[w] for w in WORDS[:-1]]
    zipf = [1 / (rank + 1) for rank in range(len(seen))]
    successors = {t: rng.sample(seen, 2) for t in [BOS_ID, *seen]}
    out = []
    for _ in range(n_messages):
        seq, t = [BOS_ID], BOS_ID
        for _ in range(rng.randint(1, 9)):
            t = rng.choice(successors[t]) if rng.random() < 0.7 else rng.choices(seen, zipf)[0]
            seq.append(t)
        out.append([*seq, EOS_ID])
    return out


class Reference:
    """Interpolated modified Kneser-Ney, one probability at a time, from dictionaries."""

    def __init__(self, sequences: list[list[int]], order: int):
        self.order = order
        grams: dict[int, Counter] = {k: Counter() for k in range(1, order + 1)}
        for seq in sequences:
            padded = [BOS_ID] * (order - 1) + seq[1:]
            for i in range(order - 1, len(padded)):
                for k in range(1, order + 1):
                    grams[k][tuple(padded[i - k + 1 : i + 1])] += 1
        # Raw counts at the highest order, continuation counts N1+(. g) below it.
        self.counts = {order: grams[order]}
        for k in range(1, order):
            self.counts[k] = Counter(g[1:] for g in grams[k + 1])
        self.following: dict[tuple[int, ...], dict[int, int]] = {}  # context -> {word: count}
        for counts in self.counts.values():
            for gram, count in counts.items():
                self.following.setdefault(gram[:-1], {})[gram[-1]] = count
        self.discounts = {}
        for k, counts in self.counts.items():
            n1, n2, n3, n4 = (sum(1 for c in counts.values() if c == j) for j in (1, 2, 3, 4))
            y = n1 / (n1 + 2 * n2)
            self.discounts[k] = (1 - 2 * y * n2 / n1, 2 - 3 * y * n3 / n2, 3 - 4 * y * n4 / n3)

    def prob(self, word: int, context: tuple[int, ...]) -> float:
        k = len(context) + 1
        if k == 1:
            lower = 0.0 if word in (PAD_ID, BOS_ID) else 1 / (V - 2)
        else:
            lower = self.prob(word, context[1:])
        following = self.following.get(context, {})
        total = sum(following.values())
        if total == 0:
            return lower
        d1, d2, d3 = self.discounts[k]
        n1 = sum(1 for c in following.values() if c == 1)
        n2 = sum(1 for c in following.values() if c == 2)
        n3 = sum(1 for c in following.values() if c >= 3)
        gamma = (d1 * n1 + d2 * n2 + d3 * n3) / total
        count = following.get(word, 0)
        discount = (0.0, d1, d2, d3)[min(count, 3)]
        return max(count - discount, 0.0) / total + gamma * lower


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_matches_reference_implementation(order):
    corpus = toy_corpus()
    model = KneserNey.train(corpus, TOKENIZER, order=order)
    reference = Reference(corpus, order)
    for k, (d1, d2, d3) in reference.discounts.items():
        # The toy corpus must not need the clamping of degenerate estimates.
        assert 0 < d1 <= 1 and 0 < d2 <= 2 and 0 < d3 <= 3, (k, reference.discounts[k])
        np.testing.assert_allclose(model.discounts[k - 1], (d1, d2, d3), rtol=1e-12)

    contexts = {model.initial_state()}
    for seq in corpus[:60]:
        state = model.advance(model.initial_state(), BOS_ID)
        for token in seq[1:]:
            state = model.advance(state, token)
            contexts.add(state)
    rng = random.Random(1)
    for _ in range(10):  # unseen contexts, including the never-seen word
        contexts.add(tuple(rng.randrange(1, V) for _ in range(order - 1)))
    for context in sorted(contexts):
        expected = np.array([reference.prob(w, context) for w in range(V)])
        got = model.probs(context)
        assert got.shape == (V,)
        np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15, err_msg=str(context))


@pytest.mark.parametrize("order", [1, 2, 3, 4, 5])
def test_every_distribution_sums_to_one_and_never_offers_pad_or_bos(order):
    corpus = toy_corpus(100, seed=2)
    model = KneserNey.train(corpus, TOKENIZER, order=order)
    state = model.advance(model.initial_state(), BOS_ID)
    for token in [*corpus[0][1:], *corpus[1]]:
        p = model.probs(state)
        assert abs(p.sum() - 1) < 1e-12
        assert p[PAD_ID] == 0 and p[BOS_ID] == 0
        assert (np.delete(p, [PAD_ID, BOS_ID]) > 0).all()
        state = model.advance(state, token)


def test_advance_keeps_the_last_order_minus_one_ids_and_does_not_mutate():
    model = KneserNey.train(toy_corpus(50), TOKENIZER, order=3)
    start = model.initial_state()
    assert start == (BOS_ID, BOS_ID)
    assert model.advance(start, BOS_ID) == start  # the padding absorbs the message's <s>
    one = model.advance(start, 5)
    two = model.advance(one, 6)
    assert one == (BOS_ID, 5) and two == (5, 6) and model.advance(two, 7) == (6, 7)


def test_probs_returns_a_fresh_array():
    model = KneserNey.train(toy_corpus(50), TOKENIZER, order=2)
    p = model.probs((UNK_ID,) * 0)
    p[:] = 0
    assert abs(model.probs(()).sum() - 1) < 1e-12


def test_seen_continuation_is_likelier_than_unseen_word():
    tokenizer = Tokenizer([*SPECIALS, "the", "cat", "sat", "dog", "ran"])
    lines = ["the cat sat", "the cat sat", "the dog ran", "the cat ran"]
    model = KneserNey.from_texts(lines, tokenizer, order=3)
    state = model.initial_state()
    for token in tokenizer.encode("the cat", bos=True):
        state = model.advance(state, token)
    p = model.probs(state)
    assert p[tokenizer.index["sat"]] > p[tokenizer.index["ran"]] > p[tokenizer.index["dog"]]


def test_save_and_load_round_trip(tmp_path):
    corpus = toy_corpus(120)
    model = KneserNey.train(corpus, TOKENIZER, order=4)
    model.save(tmp_path / "kn.npz")
    loaded = KneserNey.load(tmp_path / "kn.npz", TOKENIZER)
    for context in [(BOS_ID, BOS_ID, BOS_ID), (4, 5, 6), (5, 5, 5), (11, 4, 4)]:
        np.testing.assert_array_equal(loaded.probs(context), model.probs(context))
    with pytest.raises(ValueError, match="vocabulary"):
        KneserNey.load(tmp_path / "kn.npz", Tokenizer([*SPECIALS, "x"]))


def test_discounts_stay_usable_on_degenerate_counts():
    for counts in ([1, 1, 1], [2, 2], [5], [1, 2, 3, 3, 3, 3, 3, 3, 3, 3, 4]):
        d = modified_kn_discounts(np.array(counts))
        assert all(0 < dk <= k for k, dk in zip((1, 2, 3), d, strict=True))


@settings(max_examples=25, deadline=None)
@given(
    messages=st.lists(st.lists(st.integers(UNK_ID, V - 1).filter(lambda t: t != BOS_ID), max_size=6), min_size=1),
    order=st.integers(1, 5),
    context=st.lists(st.integers(0, V - 1), max_size=4),
)
def test_any_corpus_gives_proper_distributions(messages, order, context):
    model = KneserNey.train([[BOS_ID, *m, EOS_ID] for m in messages], TOKENIZER, order=order)
    p = model.probs(tuple(context[-(order - 1) :]) if order > 1 else ())
    assert abs(p.sum() - 1) < 1e-12 and p[PAD_ID] == 0 and p[BOS_ID] == 0
    assert (np.delete(p, [PAD_ID, BOS_ID]) > 0).all()


def test_mixture_is_a_proper_distribution_between_its_parts():
    corpus = toy_corpus(100)
    bigram = KneserNey.train(corpus, TOKENIZER, order=2)
    fourgram = KneserNey.train(corpus, TOKENIZER, order=4)
    mix = Interpolated([bigram, fourgram], [0.25, 0.75])
    state = mix.advance(mix.advance(mix.initial_state(), BOS_ID), 5)
    expected = 0.25 * bigram.probs(state[0]) + 0.75 * fourgram.probs(state[1])
    np.testing.assert_allclose(mix.probs(state), expected)
    with pytest.raises(ValueError, match="sum to 1"):
        Interpolated([bigram, fourgram], [0.5, 0.6])


@pytest.mark.parametrize("backend", ["ngram", "mix"])
def test_predictor_serves_the_ngram_backends(tiny_model_dir, backend):
    from wordbot.predictor import Predictor

    predictor = Predictor.load(tiny_model_dir, backend=backend)
    words = predictor.next_words("what is the", k=3)
    assert len(words) == 3 and all(w.prob > 0 for w in words)
    p = predictor.token_probs([BOS_ID])
    assert abs(float(p.sum()) - 1) < 1e-6


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_context_order_is_the_longest_context_with_counts(order):
    corpus = toy_corpus()
    model = KneserNey.train(corpus, TOKENIZER, order=order)
    reference = Reference(corpus, order)
    rng = random.Random(3)
    contexts = [model.initial_state(), (TOKENIZER.index["never"],) * (order - 1)]
    contexts += [tuple(rng.randrange(3, V) for _ in range(order - 1)) for _ in range(200)]
    seen_contexts = [tuple(seq[i - order + 1 : i]) for seq in corpus[:50] for i in range(order - 1, len(seq))]
    contexts += seen_contexts
    # Seen contexts with their oldest words replaced: shorter and shorter parts still seen.
    contexts += [tuple(rng.randrange(3, V) for _ in range(j)) + c[j:] for c in seen_contexts for j in range(len(c))]
    seen_orders = set()
    for context in contexts:
        expected = max([1] + [len(context) - j + 1 for j in range(len(context)) if context[j:] in reference.following])
        assert model.context_order(context) == expected, context
        seen_orders.add(expected)
    assert seen_orders == set(range(1, order + 1))  # every order occurs, the test means something


def test_order_weighted_mix_uses_the_weight_of_the_context_order():
    from wordbot.mix import OrderWeighted

    corpus = toy_corpus(100)
    bigram = KneserNey.train(corpus, TOKENIZER, order=2)
    trigram = KneserNey.train(corpus, TOKENIZER, order=3)
    weights = {1: 0.1, 2: 0.5, 3: 0.9}
    mix = OrderWeighted(bigram, trigram, weights)
    checked = set()
    for seq in corpus[:30]:
        state = mix.advance(mix.initial_state(), BOS_ID)
        for token in [*seq[1:], TOKENIZER.index["never"], 7, 8]:
            w = weights[trigram.context_order(state[1])]
            checked.add(w)
            expected = (1 - w) * bigram.probs(state[0]) + w * trigram.probs(state[1])
            np.testing.assert_allclose(mix.probs(state), expected)
            assert abs(mix.probs(state).sum() - 1) < 1e-12
            state = mix.advance(state, token)
    assert checked == {0.1, 0.5, 0.9}
    with pytest.raises(ValueError, match="every order"):
        OrderWeighted(bigram, trigram, {1: 0.1, 2: 0.5})


def _model_with_pinned_corpus(tmp_path):
    """A tiny model whose manifest names its training text by sha256, as trained ones do."""
    import json

    from wordbot.corpus import sha256_of

    from .conftest import TRAIN_FILE, make_model_dir

    directory = make_model_dir(tmp_path / "m")
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n".join(TRAIN_FILE.read_text(encoding="utf-8").splitlines()[:2000]) + "\n", encoding="utf-8")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["corpus"]["files"] = [{"path": str(corpus), "sha256": sha256_of(corpus)}]
    manifest["mix"] = {"order": 3, "ngram_weight": 0.4}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory, corpus


def test_the_counted_ngram_is_cached_and_read_back(tmp_path, monkeypatch):
    from wordbot.predictor import Predictor

    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "cache"))
    directory, corpus = _model_with_pinned_corpus(tmp_path)
    first = Predictor.load(directory, backend="mix")
    cached = list((tmp_path / "cache").glob("ngram-*"))
    assert len(cached) == 1 and (cached[0] / "ngram.json").is_file()  # format 2: a directory of .npy files

    # The second start reads the cache instead of counting: it works without the text.
    corpus.unlink()
    monkeypatch.setattr(KneserNey, "from_texts", lambda *a, **k: pytest.fail("counted again"))
    second = Predictor.load(directory, backend="mix")
    assert second.next_words("what is the", k=5) == first.next_words("what is the", k=5)


def test_a_broken_or_unwritable_cache_only_costs_a_recount(tmp_path, monkeypatch):
    from wordbot.predictor import Predictor

    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "cache"))
    directory, _ = _model_with_pinned_corpus(tmp_path)
    expected = Predictor.load(directory, backend="mix").next_words("what is the", k=5)
    (cached,) = (tmp_path / "cache").glob("ngram-*")
    (cached / "o3_words.npy").write_bytes(b"not an array")
    assert Predictor.load(directory, backend="mix").next_words("what is the", k=5) == expected
    KneserNey.load(cached, Predictor.load(directory, backend="mix").tokenizer)  # rewritten whole

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(blocker / "cache"))  # cannot be created
    assert Predictor.load(directory, backend="mix").next_words("what is the", k=5) == expected


def test_the_cache_keeps_only_the_most_recently_used_ngrams(tmp_path, monkeypatch):
    import os
    import time

    from wordbot.ngram_cache import CACHE_KEEP
    from wordbot.predictor import Predictor

    cache = tmp_path / "cache"
    cache.mkdir()
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(cache))
    old = time.time() - 7200
    others = [cache / f"ngram-{i:032d}.npz" for i in range(CACHE_KEEP + 1)]
    for i, path in enumerate(others):
        path.write_bytes(b"an older model's n-gram")
        os.utime(path, (old + i, old + i))  # others[-1] is the most recent of them
    leftover = cache / ".ngram-killed.tmp"
    leftover.write_bytes(b"half written")
    os.utime(leftover, (old, old))

    directory, _ = _model_with_pinned_corpus(tmp_path)
    Predictor.load(directory, backend="mix")
    kept = sorted(p.name for p in cache.glob("ngram-*"))
    assert len(kept) == CACHE_KEEP and not leftover.exists()
    assert len(list(cache.glob("vocab-*.json"))) == 1  # the served vocabulary, kept beside it
    assert [p.name for p in others[-(CACHE_KEEP - 1) :]] == [k for k in kept if k in {p.name for p in others}]


@pytest.mark.parametrize("order", [2, 3, 4, 5])
def test_the_sparse_distribution_is_the_dense_one_it_replaces(order):
    """`probs` adds only the seen orders' rows to the lowest order scaled once; the dense
    walk wordbot used before (one full vector per order, kept as the reference) gives
    the same distribution and order for seen, half-seen and unseen contexts."""
    from wordbot.testing.reference import dense_ngram_probs

    corpus = toy_corpus(300, seed=3)
    model = KneserNey.train(corpus, TOKENIZER, order=order)
    rng = random.Random(order)
    contexts = [(), (BOS_ID,), model.initial_state()]
    for seq in corpus[:40]:
        contexts += [tuple(seq[max(0, i - order + 1) : i]) for i in range(1, len(seq))]
    contexts += [tuple(rng.randrange(1, V) for _ in range(rng.randrange(1, order + 2))) for _ in range(40)]
    contexts += [(*c[1:], TOKENIZER.index["never"]) for c in contexts[-10:]]  # a never-seen word last
    orders = set()
    for context in contexts:
        expected, expected_order = dense_ngram_probs(model, context)
        got, got_order = model.probs_and_order(context)
        assert got_order == expected_order and got is not model._unigram
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-16)
        base, _, rows, _ = model.interpolation(context)
        assert not base.flags.writeable  # the shared lowest order is never written
        assert len(rows) == len(model._seen_contexts(context))
        orders.add(got_order)
    assert orders == set(range(1, order + 1))  # every depth of backing off was compared


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from([UNK_ID, *range(4, V)]), min_size=1, max_size=15), st.integers(1, 5))
def test_prob_and_sequence_probs_are_the_distributions_entries(ids, order):
    """What a memory scores a learned message with: each token's probability after the
    ones before it, equal to the full distribution's entry (up to rounding), and the order
    of the context each was scored after."""
    model = KneserNey.train(toy_corpus(300), TOKENIZER, order)
    state, expected, expected_orders = model.initial_state(), [], []
    for token_id in ids:
        full, seen = model.probs_and_order(state)
        expected.append(full[token_id])
        expected_orders.append(seen)
        assert model.prob(state, token_id) == pytest.approx(full[token_id], rel=1e-12, abs=0)
        state = model.advance(state, token_id)
    np.testing.assert_allclose(model.sequence_probs(ids), expected, rtol=1e-12, atol=0)
    probs, orders = model.sequence_probs(ids, orders=True)
    np.testing.assert_allclose(probs, expected, rtol=1e-12, atol=0)
    assert orders.tolist() == expected_orders
