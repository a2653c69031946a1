"""Learning many messages at once (`Memory.add_many`, `Predictor.learn_many`: a history
learned again at start) gives exactly what the same `add` calls one by one give, and the
n-gram scores a whole batch of messages as it scores each alone."""

from __future__ import annotations

import threading

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wordbot.adaptation import Scheme, ngram_scorer
from wordbot.memory import Memory
from wordbot.ngram import SMALL_BATCH, KneserNey
from wordbot.predictor import Predictor
from wordbot.text import EOS_ID, SPECIALS, UNK_ID, Tokenizer, tokenize

BASE_TEXT = [
    "the cat sat on the mat .",
    "the dog sat on a mat .",
    "a cat and a dog sat there .",
    "hello there , the cat is on the mat !",
    "the dog is there , on the mat with the cat .",
] * 4
VOCAB = [*SPECIALS, *sorted({t for line in BASE_TEXT for t in tokenize(line)})]
TOKENIZER = Tokenizer(VOCAB)
NGRAM = KneserNey.from_texts(BASE_TEXT, TOKENIZER, 4)
WORDS = ["the", "cat", "sat", "on", "mat", "grep", "glorp", "Frobnicator", ".", ",", "!", "zap", "dog"]
CONTEXTS = [[], ["the"], ["grep", "the"], ["the", "cat", "sat"], ["frobnicator"], ["zap", "zap", "zap"]]
HOSTILE = [
    "",  # nothing to learn
    "zorblax " * 12_500,  # 100 kB: cut to the bounds
    "\x00\x07\x1b[31mred\x1b[0m \u202e gnirts \ufeff \r\n\t glorp",  # control characters
    "?! ... ,;: !!! ---",  # only punctuation
    "   \n\n  ",
]


def base(context: list[str]) -> np.ndarray:
    state = NGRAM.initial_state()
    for token in context:
        state = NGRAM.advance(state, TOKENIZER.index.get(token, UNK_ID))
    return NGRAM.probs(state)


def memory(scheme: Scheme) -> Memory:
    found = Memory(VOCAB, scheme)
    found.score_with(ngram_scorer(NGRAM, TOKENIZER))
    return found


def assert_same(one: Memory, other: Memory, base=base) -> None:
    """Every count, every number of the learned weight, every served distribution (over
    `base(context)`): ==."""
    if one._weights is not None:
        assert np.array_equal(one._weights.totals, other._weights.totals)
        assert np.array_equal(one._weights.tokens, other._weights.tokens)
    assert one._messages == other._messages and list(one._messages) == list(other._messages)
    assert one._contexts == other._contexts and one._forms == other._forms and one._runs.counts == other._runs.counts
    assert one.words == other.words and one.tokens == other.tokens and one.version == other.version
    assert np.array_equal(one._unigram, other._unigram)
    assert one.lexicon().offered.tolist() == other.lexicon().offered.tolist()
    for context in CONTEXTS:
        assert np.array_equal(one.adapt(base(context), context), other.adapt(base(context), context))
        assert [one.written(t) for t in ("frobnicator", "glorp")] == [
            other.written(t) for t in ("frobnicator", "glorp")
        ]


SCHEMES = {
    "default": Scheme(),
    "served novel": Scheme(served="novel"),
    "served order": Scheme(served="order", shrink=10.0),
    "linear": Scheme("linear"),
}

texts = st.lists(st.sampled_from(WORDS), max_size=14).map(" ".join) | st.sampled_from(HOSTILE)
# Keys drawn from a few: a key learned again is an edited message (it replaces the earlier one).
histories = st.lists(st.tuples(st.integers(0, 12), texts), max_size=40)


@settings(max_examples=40, deadline=None)
@given(histories, histories, st.sampled_from(sorted(SCHEMES)))
def test_add_many_is_exactly_the_same_adds_one_by_one(before, batch, scheme):
    """Whatever was learned before (or nothing), edited messages, empty and hostile ones."""
    one, other = memory(SCHEMES[scheme]), memory(SCHEMES[scheme])
    for key, text in before:
        one.add(key, text)
        other.add(key, text)
    for key, text in batch:
        one.add(key, text)
    assert other.add_many(batch) == len(batch)
    assert_same(one, other)
    for key, _ in batch[::2]:  # and each forgets the same way afterwards
        assert one.remove(key) == other.remove(key)
    assert_same(one, other)


def test_a_large_history_is_learned_in_many_lock_holds_with_the_same_result():
    """Past one batch of scoring and many holds of the lock, with a word of its own every few
    messages (learned words get ids as they come) and edits of earlier ones."""
    history = [
        (i % 700, f"{BASE_TEXT[i % len(BASE_TEXT)]} grep glorp{i // 7} {HOSTILE[i % 5][:200]}") for i in range(900)
    ]
    for scheme in ("default", "served novel"):
        one, other = memory(SCHEMES[scheme]), memory(SCHEMES[scheme])
        for key, text in history:
            one.add(key, text)
        other.add_many(iter(history))
        assert_same(one, other)
        assert len(other.words) > 100 and other.messages == 700


def test_serving_goes_on_while_a_history_is_learned():
    """The lock is taken a little at a time: another thread is served between holds and sees
    the memory part way (each view consistent: the counts of whole messages)."""
    found = memory(Scheme())
    history = [(i, f"{BASE_TEXT[i % len(BASE_TEXT)]} glorp{i}") for i in range(3000)]
    learner = threading.Thread(target=found.add_many, args=(history,))
    seen = set()
    learner.start()
    while learner.is_alive():
        adapted, lexicon = found.serve(base(["the"]), ["the"])
        assert abs(adapted.sum() - 1.0) < 1e-9 and len(adapted) == len(VOCAB) + len(lexicon.words)
        seen.add(found.messages)
    learner.join()
    assert found.messages == 3000
    assert len([n for n in seen if 0 < n < 3000]) >= 2  # served at least twice part way


def test_learn_many_equals_learn_one_by_one_and_draws_the_same_keys():
    predictor = Predictor(NGRAM, backend="ngram")
    one, other = predictor.view(), predictor.view()
    lines = ["grep the Frobnicator logs", "", "the frobnicator logs are in glorp", *HOSTILE]
    for line in lines:
        one.learn(line)
    assert other.learn_many(iter(lines)) == len(lines)
    assert_same(one.memory, other.memory)
    one.learn("zap the glorp")
    other.learn("zap the glorp")  # the next key is the one `learn` would have drawn
    assert_same(one.memory, other.memory)
    assert other.learn_many(["glorp", "zap"], keys=["a", "b"]) == 2 and "a" in other.memory
    assert [p.word for p in other.complete("the frob")] == ["Frobnicator"]


def test_without_a_scorer_add_many_is_the_same_adds():
    one, other = Memory(VOCAB), Memory(VOCAB)  # no n-gram: "linear"'s weights serve
    history = [(i % 5, text) for i, text in enumerate(["grep the glorp", "the Frobnicator", *HOSTILE] * 3)]
    for key, text in history:
        one.add(key, text)
    other.add_many(history)
    assert_same(one, other)


# -- the n-gram scores a batch as each message alone ------------------------------------


def unaligned(ngram: KneserNey) -> KneserNey:
    """The same n-gram with its context keys in unaligned arrays (as a table mapped from a
    file at an odd offset would be)."""
    keys = []
    for table in ngram._context_keys:
        if table is None:
            keys.append(None)
            continue
        raw = np.zeros(table.nbytes + 1, np.uint8)
        moved = raw[1:].view(np.int64)
        moved[:] = table
        assert not moved.flags.aligned
        keys.append(moved)
    return KneserNey(ngram.tokenizer, ngram.order, ngram._orders, keys, ngram.discounts)


ids = st.lists(st.sampled_from([UNK_ID, EOS_ID, *range(4, len(VOCAB))]), max_size=30)


@settings(max_examples=40, deadline=None)
@given(st.lists(ids, max_size=40), st.sampled_from(["aligned", "unaligned"]))
def test_a_batch_of_messages_is_scored_as_each_message_alone(messages, keys):
    ngram = NGRAM if keys == "aligned" else unaligned(NGRAM)
    messages = messages + [[4, 5, 6, 7] * 10] * (SMALL_BATCH // 40 + 1)  # past SMALL_BATCH: numpy's lookups
    probs, orders = ngram.messages_probs(messages, orders=True)
    alone = [NGRAM.sequence_probs(m, orders=True) for m in messages]  # a bisect each
    for m in messages[:3]:  # the unaligned keys alone: a bisect in them
        assert np.array_equal(ngram.sequence_probs(m), NGRAM.sequence_probs(m))
    assert np.array_equal(probs, np.concatenate([p for p, _ in alone]))
    assert np.array_equal(orders, np.concatenate([o for _, o in alone]))
    assert np.array_equal(ngram.messages_probs(messages), probs)
    assert len(ngram.messages_probs([])) == 0


def test_the_scorer_scores_many_messages_as_each_alone():
    scorer = ngram_scorer(NGRAM, TOKENIZER)
    messages = [tokenize(text) for text in ["grep the cat", "", "the mat .", *HOSTILE[2:]]]
    probs, orders = scorer.scored_many(messages)
    assert np.array_equal(probs, np.concatenate([scorer(m) for m in messages]))
    assert np.array_equal(orders, np.concatenate([scorer.scored(m)[1] for m in messages]))


class OneAtATime:
    """A scorer without `scored_many` (the protocol `Memory.score_with` documents)."""

    def __init__(self) -> None:
        self.inner = ngram_scorer(NGRAM, TOKENIZER)

    def __call__(self, tokens):
        return self.inner(tokens)

    def scored(self, tokens):
        return self.inner.scored(tokens)

    def context_order(self, context):
        return self.inner.context_order(context)


@pytest.mark.parametrize("scheme", ["default", "served novel"])
def test_a_scorer_of_one_message_at_a_time_gives_the_same_memory(scheme):
    one, other = memory(SCHEMES[scheme]), Memory(VOCAB, SCHEMES[scheme])
    other.score_with(OneAtATime())
    history = [(i % 9, text) for i, text in enumerate(["grep the glorp", "the Frobnicator sat", *HOSTILE] * 4)]
    one.add_many(history)
    other.add_many(history)
    assert_same(one, other)


# -- the bot's rebuild learns its stored messages in batches -------------------------------


def test_a_rebuild_in_batches_learns_every_stored_message_as_one_by_one(tmp_path, tiny_predictor):
    """Several batches (REBUILD_BATCH), two servers, messages edited and deleted through the
    journal (what an outage left) spread over the batches: each server's memory is the one
    its messages, as they are now, give learned one by one in order."""
    from wordbot.bot.communities import REBUILD_BATCH, Communities
    from wordbot.bot.journal import Journal
    from wordbot.bot.store import Message, SQLiteStore

    store = SQLiteStore(tmp_path / "s.sqlite3", flush_interval=None)
    count = 2 * REBUILD_BATCH + 37
    texts = {i: f"message {i} on the Zorblax cluster{i % 13}" for i in range(1, count + 1)}
    for i, text in texts.items():
        store.add_message(Message(i, 100 + i % 2, 7, 1000 + i % 5, float(i), text))
    store.flush()
    journal = Journal(tmp_path / "journal.jsonl")
    journal.append("delete", ids=[3, REBUILD_BATCH + 1, count])
    journal.append("edit", id=REBUILD_BATCH * 2, text="edited: quuxwise")
    communities = Communities(tiny_predictor, store, journal)
    assert communities.rebuild() == count
    texts.update({REBUILD_BATCH * 2: "edited: quuxwise"})
    for gone in (3, REBUILD_BATCH + 1, count):
        del texts[gone]
    for guild in (100, 101):
        expected = tiny_predictor.view()
        for i, text in texts.items():
            if 100 + i % 2 == guild:
                expected.learn(text, key=(guild, i))
        served = lambda context: tiny_predictor._distribution(tiny_predictor._context(context))  # noqa: E731
        assert_same(communities.view(guild).memory, expected.memory, served)
    store.close()


def test_messages_deleted_and_edited_while_the_rebuild_runs_stay_so(tmp_path, tiny_predictor):
    """Deletes and edits that come while the stored messages are learned again (in another
    thread, batch after batch) are never undone by the rebuild, whenever they come."""
    from wordbot.bot.communities import Communities
    from wordbot.bot.journal import Journal
    from wordbot.bot.store import Message, SQLiteStore

    store = SQLiteStore(tmp_path / "s.sqlite3", flush_interval=None)
    for i in range(1, 3001):
        store.add_message(Message(i, 100, 7, 1000, float(i), f"stored message {i} about the cluster"))
    store.flush()
    communities = Communities(tiny_predictor, store, Journal(tmp_path / "journal.jsonl"))
    rebuild = threading.Thread(target=communities.rebuild)
    rebuild.start()
    deleted, edited = [], []
    for i in range(1, 3001, 150):  # one every 150 messages, as the rebuild goes along
        if i % 300 == 1:
            assert communities.delete([i]) == 1
            deleted.append(i)
        else:
            communities.edit(i, f"edited {i}: glorpwise")
            edited.append(i)
    rebuild.join(120)
    assert communities.rebuilt.is_set()
    memory = communities.view(100).memory
    assert memory.messages == 3000 - len(deleted)
    assert not any((100, i) in memory for i in deleted)
    assert memory.count("glorpwise") == len(edited) and memory.count("edited") == len(edited)
    store.close()


def test_add_many_stops_when_asked_with_what_it_learned_until_then():
    found, calls = memory(Scheme()), []
    history = [(i, f"{BASE_TEXT[i % len(BASE_TEXT)]} glorp{i}") for i in range(3000)]
    learned = found.add_many(history, stop=lambda: calls.append(1) or len(calls) > 1)  # after one hold
    assert 0 < learned < 3000 and found.messages == learned
    expected = memory(Scheme())
    for key, text in history[:learned]:
        expected.add(key, text)
    assert_same(found, expected)


def test_forget_while_the_history_is_being_learned_leaves_nothing_learned(tiny_predictor, tmp_path):
    """The REPL learns its history in batches outside its own lock: `:forget` meanwhile
    still empties the memory for good (the batch under way stops)."""
    from wordbot.repl.learning import Learner

    history = tmp_path / "history"
    history.write_text("".join(f"\n# 2026-12-01\n+line {i} about the Zorblax cluster\n" for i in range(10_000)))
    learner = Learner(history)
    view = learner.attach(tiny_predictor)
    learner.start()
    while view.memory.messages < 100:
        pass
    assert learner.thread.is_alive()
    assert learner.forget() is None
    learner.thread.join(60)
    assert view.memory.messages == 0 and view.memory.count("zorblax") == 0 and not learner.lines
    learner.learn("a line after the forget")  # learning goes on from there
    assert view.memory.messages == 1


def test_a_server_memory_keeps_its_texts_edits_and_followers_through_add_many():
    """The bot's server memory (`MirroredMemory`, with server models on) keeps each message's
    text, counts edits and repeats every add into the memories that follow it: add_many too."""
    from wordbot.bot.server_models import MirroredMemory

    one, other = MirroredMemory(VOCAB), MirroredMemory(VOCAB)
    one_follower, other_follower = Memory(VOCAB), Memory(VOCAB)
    one.follow(one_follower)
    other.follow(other_follower)
    history = [(i % 7, f"grep the glorp{i}" if i % 3 else "the Frobnicator sat") for i in range(20)]
    for key, text in history:
        one.add(key, text)
    other.add_many(history)
    assert other.texts == one.texts == dict(history)
    assert [key for _, key in other._removals] == [key for _, key in one._removals] != []  # the edits
    assert_same(one, other)
    assert_same(one_follower, other_follower)
    assert other_follower.messages == 7
