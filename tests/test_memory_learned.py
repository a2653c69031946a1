"""The memory's learned weight (Scheme kind "learned"): learned from the history itself,
each message scored before it is counted; an empty memory changes nothing; forgetting
takes out exactly what a message added, the counts and its evidence alike."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wordbot.adaptation import SERVED_SPLITS, Scheme, ngram_scorer
from wordbot.memory import Memory
from wordbot.ngram import KneserNey
from wordbot.predictor import Predictor
from wordbot.text import SPECIALS, Tokenizer, tokenize

# The base: an n-gram over plain English chat; the community: a jargon it never saw.
BASE_TEXT = [
    "the cat sat on the mat .",
    "the dog sat on a mat .",
    "a cat and a dog sat there .",
    "hello there , the cat is on the mat !",
    "the dog is there .",
] * 4
VOCAB = [*SPECIALS, *sorted({t for line in BASE_TEXT for t in tokenize(line)})]
TOKENIZER = Tokenizer(VOCAB)
NGRAM = KneserNey.from_texts(BASE_TEXT, TOKENIZER, 3)
JARGON = ["grep the frobnicator logs", "the frobnicator logs are in glorp", "grep glorp for the frobnicator"]
LEARNED = Scheme("learned", shrink=10.0, prior="zero")


def memory(scheme: Scheme = LEARNED) -> Memory:
    found = Memory(VOCAB, scheme)
    found.score_with(ngram_scorer(NGRAM, TOKENIZER))
    return found


def base(context: list[str]) -> np.ndarray:
    state = NGRAM.initial_state()
    for token in context:
        state = NGRAM.advance(state, TOKENIZER.index.get(token, 1))
    return NGRAM.probs(state)


CONTEXTS = [[], ["the"], ["grep", "the"], ["the", "cat", "sat"], ["frobnicator"]]


def served(found: Memory) -> list[np.ndarray]:
    return [found.adapt(base(c), c) for c in CONTEXTS]


def test_an_empty_memory_serves_the_base_exactly():
    found = memory()
    for context in CONTEXTS:
        assert np.array_equal(found.adapt(base(context), context), base(context))
    found.add("a", "grep the frobnicator logs")  # the first message: nothing to score it against
    found.remove("a")
    for context in CONTEXTS:
        assert np.max(np.abs(found.adapt(base(context), context) - base(context))) <= 1e-12


def test_learn_then_forget_restores_every_distribution_exactly():
    found = memory()
    for i, text in enumerate(JARGON * 3):
        found.add(("history", i), text)
    snapshot = served(found)
    weights = found._weights.totals.copy()
    found.add("B", "grep the glorp logs for the frobnicator , the cat sat")
    assert found._weights.totals.tolist() != weights.tolist()  # B was scored: it moved the totals
    assert found.remove("B")
    assert np.array_equal(found._weights.totals, weights)
    for before, after in zip(snapshot, served(found), strict=True):
        assert np.array_equal(before, after)  # ==, not close: the totals are integers


def test_forgetting_an_earlier_message_removes_its_own_contribution():
    found = memory()
    found.add("A", JARGON[0])
    after_a = found._weights.totals.copy()
    found.add("B", JARGON[1])
    after_b = found._weights.totals.copy()
    found.add("C", JARGON[2])
    after_c = found._weights.totals.copy()
    found.remove("B")
    # C keeps what it added, scored while B was there; B's own part is gone.
    assert np.array_equal(found._weights.totals, after_a + (after_c - after_b))
    found.clear()
    assert not found._weights.totals.any() and not found._weights.tokens.any()


def written_like_the_base(n: int, seed: int = 0) -> list[str]:
    """Messages drawn from the base n-gram itself (no <unk>): nothing a memory could add."""
    rng, out = np.random.default_rng(seed), []
    for _ in range(n):
        state, words = NGRAM.initial_state(), []
        for _ in range(30):
            p = NGRAM.probs(state).copy()
            p[TOKENIZER.index["<unk>"]] = 0.0
            token_id = int(rng.choice(len(p), p=p / p.sum()))
            if token_id == TOKENIZER.index["</s>"]:
                break
            words.append(VOCAB[token_id])
            state = NGRAM.advance(state, token_id)
        out.append(" ".join(words))
    return out


def test_the_weight_is_learned_from_how_much_the_memory_helped():
    """A community that writes a jargon the base does not know gets a large memory weight;
    one that writes just what the base predicts gets (almost) none."""
    jargon, plain = memory(Scheme("learned", shrink=0.0)), memory(Scheme("learned", shrink=0.0))
    for i, text in enumerate(written_like_the_base(200)):
        jargon.add(i, JARGON[i % 3])
        plain.add(i, text)
    for found, low, high in ((jargon, 0.7, 0.9), (plain, 0.0, 0.2)):
        busy = np.flatnonzero(found._weights.tokens >= 100)
        assert len(busy) >= 3
        chosen = found._weights.grid[np.argmax(found._weights.totals[busy], axis=1)]
        assert np.all((low <= chosen) & (chosen <= high)), chosen
    context = ["grep", "the"]
    p = jargon.adapt(base(context), context)
    assert p[jargon.learned_id("frobnicator")] > 0.5  # where the memory fits, it dominates


def test_shrinkage_draws_a_bucket_with_little_evidence_to_its_prior():
    """One message of evidence: no shrinkage follows it, strong shrinkage keeps today's weight."""
    followed, kept = memory(Scheme("learned", shrink=0.0)), memory(Scheme("learned", shrink=1e6, prior="today"))
    for found in (followed, kept):
        found.add(0, JARGON[0])
        found.add(1, JARGON[0])
    today = Scheme("linear")
    prior = today.weights[2] * 6 / (6 + today.evidence)  # order 3, a count in 4..7
    assert kept._weights.weight(3, 5) == min(kept._weights.grid, key=lambda g: abs(g - prior))
    assert followed._weights.weight(3, 5) == 0.0  # no evidence in that bucket: the grid's first


def test_a_count_bucket_nothing_was_scored_in_keeps_the_weight_of_the_one_below():
    """Prior "lower": a context whose count grows into a bucket with no evidence yet keeps
    the weight it had (a word offered first does not drop out at 4, 8, 16 repeats); "zero"
    falls back to 0 there."""
    found = {p: memory(Scheme("learned", shrink=100.0, prior=p)) for p in ("lower", "zero")}
    for m in found.values():
        for i in range(3):  # "grep the" seen 1, 2, 3 times: evidence in count buckets 1 and 2-3 only
            m.add(i, JARGON[0])
    lower, zero = found["lower"]._weights, found["zero"]._weights
    assert lower.weight(3, 3) > 0.0 and zero.weight(3, 3) > 0.0
    assert [lower.weight(3, c) for c in (4, 8, 16, 100)] == [lower.weight(3, 3)] * 4
    assert [zero.weight(3, c) for c in (4, 8, 16, 100)] == [0.0] * 4


def test_without_a_scorer_the_learned_scheme_serves_the_linear_weights():
    bare, linear = Memory(VOCAB, LEARNED), Memory(VOCAB, Scheme("linear"))
    for i, text in enumerate(JARGON):
        bare.add(i, text)
        linear.add(i, text)
    for context in CONTEXTS:
        assert np.array_equal(bare.adapt(base(context), context), linear.adapt(base(context), context))


def test_a_new_scorer_scores_the_messages_again():
    """A memory handed another scorer holds what it would have had with that one from the start."""
    first, other = ngram_scorer(NGRAM, TOKENIZER), ngram_scorer(KneserNey.from_texts(JARGON, TOKENIZER, 2), TOKENIZER)
    switched, direct = memory(), Memory(VOCAB, LEARNED)
    direct.score_with(other)
    switched.score_with(first)
    for i, text in enumerate(JARGON * 2):
        switched.add(i, text)
        direct.add(i, text)
    switched.score_with(other)
    assert np.array_equal(switched._weights.totals, direct._weights.totals)
    switched.score_with(None)
    assert not switched._weights.totals.any()


def test_a_message_keeps_two_bytes_a_token_of_evidence():
    found = memory()
    found.add(0, JARGON[0])
    found.add(1, "grep the frobnicator logs in glorp")
    assert len(found._messages[1][3]) == 2 * (len(tokenize("grep the frobnicator logs in glorp")) + 1)


def test_a_predictor_hands_its_ngram_to_the_memory():
    """Through `Predictor.learn` (the REPL's, the bot's and eval --learn-from's path)."""
    predictor = Predictor(NGRAM, backend="ngram")
    view = predictor.view(Memory(VOCAB, Scheme("learned", shrink=0.0)))
    for i in range(30):
        view.learn(JARGON[i % 3])
    assert view.memory._weights.tokens.sum() > 0
    assert [p.word for p in view.next_words("grep the", 1)] == ["frobnicator"]
    assert [p.word for p in predictor.next_words("grep the", 1)] != ["frobnicator"]


messages = st.lists(st.sampled_from(["the", "cat", "grep", "glorp", "frobnicator", ".", "sat", "zap"]), max_size=10)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(messages.map(" ".join), max_size=8),
    messages.map(" ".join),
    st.sampled_from(CONTEXTS),
    st.sampled_from(SERVED_SPLITS),
)
def test_any_message_added_then_removed_leaves_everything_as_it_was(history, message, context, served):
    found = memory(Scheme("learned", order=int(len(history) % 3) + 2, served=served))
    for i, text in enumerate(history):
        found.add(i, text)
    before, totals = found.adapt(base(context), context), found._weights.totals.copy()
    found.add("new", message)
    found.adapt(base(context), context)
    found.remove("new")
    assert np.array_equal(found._weights.totals, totals)
    assert np.array_equal(found.adapt(base(context), context), before)


@pytest.mark.parametrize("text", ["grep the frobnicator logs", "the cat sat on the glorp mat .", ""])
def test_a_token_is_weighed_where_it_will_be_served_by_the_served_context(text):
    """The served n-gram's context order a token is scored under at learn time (the bucket's
    split) is the one `adapt` looks up for the same context as the message goes on."""
    scorer = ngram_scorer(NGRAM, TOKENIZER)
    tokens = tokenize(text)
    probs, orders = scorer.scored(tokens)
    assert len(orders) == len(probs) == len(tokens) + 1
    assert [scorer.context_order(tokens[:j]) for j in range(len(tokens) + 1)] == orders.tolist()
    assert np.array_equal(probs, scorer(tokens))


def test_a_split_weight_trusts_the_memory_only_where_the_base_never_saw_the_context():
    """A community that writes what the base predicts after the contexts the base knows, and
    a jargon after words the base never saw: split by the served context ("novel"), the
    memory gets a large weight after the jargon and little after the known contexts."""
    plain = written_like_the_base(300, seed=1)
    jargon = ["zork glorp frobnicator", "zork glorp frobnicator logs", "zork glorp frobnicator ."]
    split = memory(Scheme("learned", shrink=0.0, served="novel"))
    for i in range(300):
        split.add(i, f"{plain[i]} {jargon[i % 3]}")
    novel = split._weights.weight(3, 200, served_order=1)  # after "zork glorp": the base knows neither
    known = split._weights.weight(3, 200, served_order=3)  # a 3-gram context the base saw
    assert novel >= 0.7 and known <= 0.3, (novel, known)
    context = ["the", "cat", "zork", "glorp"]
    assert split.adapt(base(context), context)[split.learned_id("frobnicator")] > 0.6


def test_a_learned_scheme_is_checked():
    with pytest.raises(ValueError):
        Scheme("learned", grid=(0.0, 1.0))
    with pytest.raises(ValueError):
        Scheme("learned", prior="elsewhere")
    with pytest.raises(ValueError):
        Scheme("learned", shrink=-1.0)
    with pytest.raises(ValueError):
        Scheme("learned", served="everywhere")
    assert Scheme("learned", prior="lower").prior == "lower"


def test_the_memorys_probability_at_learn_time_is_the_one_it_serves():
    """What a message is scored with before it is counted (bucket, p_mem) is what `adapt`
    would mix in at that position (p_mem to the 1/64-nat step it is kept at)."""
    from wordbot.adaptation import COUNT_BUCKETS, mix, position_codes
    from wordbot.text import BOS, EOS

    found = memory()
    for i, text in enumerate(JARGON * 2 + BASE_TEXT[:3]):
        found.add(i, text)
    tokens = tokenize("grep the frobnicator logs in the glorp , cat")
    sequence = (BOS, *tokens, EOS)
    unigram = found._unigram[: found.base_size + len(found.words)]
    count = lambda t: unigram[found._id(t)] if t in VOCAB or found.learned_id(t) is not None else 0  # noqa: E731
    codes = np.frombuffer(position_codes(found.scheme, sequence, count, found._total, found._contexts), np.uint16)
    assert len(codes) == len(tokens) + 1
    for j, code in enumerate(codes.tolist(), start=1):
        context = list(sequence[1:j])
        seen = found._seen(context)
        p_mem, _ = mix(found.scheme, np.zeros(len(VOCAB)), unigram, found._total, seen, weight=1.0)
        token = sequence[j]
        expected = p_mem[found._id(token)] if count(token) else 0.0
        k, c = len(seen) + 1, (seen[-1][0] if seen else found._total)
        assert code >> 11 == (k - 1) * COUNT_BUCKETS + min(int(c).bit_length() - 1, COUNT_BUCKETS - 1)
        q = code & 2047
        assert (q == 2047) == (expected == 0.0)
        if expected:
            assert abs(-np.log(expected) * 64 - q) <= 0.5 + 1e-9


def test_a_memory_attached_again_to_the_same_model_is_not_scored_again():
    """Views of one served model hand a memory the same scorer: re-attaching it keeps its
    evidence as it is (rescoring every message is for another model's n-gram)."""
    from wordbot.adaptation import served_ngram_scorer
    from wordbot.mix import OrderWeighted

    lm = OrderWeighted.__new__(OrderWeighted)
    lm.models = (object(), NGRAM)
    assert served_ngram_scorer(lm) is served_ngram_scorer(lm) is served_ngram_scorer(NGRAM)
