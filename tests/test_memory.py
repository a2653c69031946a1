"""The learning memory: what it learns shows in the adapted distribution, forgetting
is exact, an empty memory changes nothing, and hostile input stays bounded."""

from __future__ import annotations

import itertools
import threading
import time

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wordbot.adaptation import Scheme
from wordbot.memory import COPY_RUN, MAX_MESSAGE_TOKENS, Memory
from wordbot.text import SPECIALS, tokenize

BASE_VOCAB = [*SPECIALS, "the", "cat", "sat", "on", "mat", "a", "dog", ".", ",", "!", "hello", "there", "github"]
BASE = np.random.default_rng(0).dirichlet(np.ones(len(BASE_VOCAB)))
B = len(BASE_VOCAB)

words = st.sampled_from(["the", "cat", "sat", "zorblax", "Knghtbrd", "GitHub", "mat", ".", "!", "frobnicate", "a"])
messages = st.lists(words, min_size=0, max_size=12).map(" ".join)


def index(memory: Memory, token: str) -> int:
    return BASE_VOCAB.index(token) if token in BASE_VOCAB else B + memory.words.index(token)


def test_a_learned_word_gets_probability_after_its_context_and_keeps_its_written_case():
    memory = Memory(BASE_VOCAB)
    before = memory.adapt(BASE, tokenize("ping"))
    assert len(before) == B  # nothing learned: the base vocabulary only
    memory.add(1, "please ping Knghtbrd about the GitHub thing")
    memory.add(2, "ask Knghtbrd, he knows")
    p = memory.adapt(BASE, tokenize("please ping"))
    assert len(p) == B + len(memory.words)
    knghtbrd = index(memory, "knghtbrd")
    assert p[knghtbrd] > 0
    assert p[knghtbrd] == max(p[B:])  # the likeliest learned word after "ping"
    assert p[knghtbrd] > memory.adapt(BASE, tokenize("please"))[knghtbrd]  # more so there than elsewhere
    assert memory.written("knghtbrd") == "Knghtbrd"
    assert memory.written("github") == "GitHub"  # a base word keeps the community's case too
    assert memory.written("please") is None  # only seen at a sentence start: no evidence
    assert memory.count("knghtbrd") == 2


def test_an_empty_memory_returns_the_base_distribution_unchanged():
    memory = Memory(BASE_VOCAB)
    for context in ([], ["the"], ["hello", "there", "cat"]):
        p = memory.adapt(BASE, context)
        assert p.shape == BASE.shape
        assert np.max(np.abs(p - BASE)) <= 1e-12
    memory.add("m", "the cat sat on the zorblax")
    assert np.max(np.abs(memory.adapt(BASE, ["the"])[:B] - BASE)) > 1e-3  # learning did change it
    memory.remove("m")
    assert np.max(np.abs(memory.adapt(BASE, ["the"]) - BASE)) <= 1e-12
    assert memory.words == [] and memory.messages == 0 and memory.tokens == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(messages, max_size=8), messages, st.lists(words, max_size=5), st.booleans())
def test_add_then_remove_restores_every_number(history, message, context, witten_bell):
    memory = Memory(BASE_VOCAB, kind="chain", witten_bell=witten_bell)
    for i, text in enumerate(history):
        memory.add(i, text)
    context = tokenize(" ".join(context))
    before = memory.adapt(BASE, context)
    words_before, tokens_before = memory.words, memory.tokens
    forms_before = {w: memory.written(w) for w in ("knghtbrd", "github", "zorblax")}
    memory.add("new", message)
    assert memory.remove("new")
    after = memory.adapt(BASE, context)
    assert memory.words == words_before and memory.tokens == tokens_before
    assert {w: memory.written(w) for w in forms_before} == forms_before
    assert after.shape == before.shape
    assert np.max(np.abs(after - before)) <= 1e-12
    assert not memory.remove("new")  # already forgotten


SCHEMES = st.builds(
    Scheme,
    kind=st.sampled_from(["chain", "linear"]),
    order=st.integers(1, 5),
    strengths=st.sampled_from([(float("inf"), 1.0), (3.0, 0.5), (1e5, 1000.0), (100.0, 0.01)]),
    witten_bell=st.booleans(),
    discount=st.sampled_from([0.0, 0.5, 0.9]),
    weights=st.sampled_from([(0.2, 0.5, 0.9), (1.0,), (0.0, 0.3)]),
    evidence=st.sampled_from([0.5, 10.0]),
)


@settings(max_examples=100, deadline=None)
@given(st.lists(messages, max_size=10), st.lists(words, max_size=6), SCHEMES)
def test_the_adapted_distribution_sums_to_one(history, context, scheme):
    memory = Memory(BASE_VOCAB, scheme)
    for i, text in enumerate(history):
        memory.add(i, text)
    p = memory.adapt(BASE, tokenize(" ".join(context)))
    assert abs(p.sum() - 1.0) <= 1e-9
    assert np.all(p >= 0)
    assert len(p) == B + len(memory.words)


@settings(max_examples=60, deadline=None)
@given(st.lists(messages, max_size=8), messages, st.lists(words, max_size=5), SCHEMES)
def test_every_scheme_is_the_base_when_empty_and_forgets_exactly(history, message, context, scheme):
    memory = Memory(BASE_VOCAB, scheme)
    context = tokenize(" ".join(context))
    assert np.max(np.abs(memory.adapt(BASE, context) - BASE)) <= 1e-12
    for i, text in enumerate(history):
        memory.add(i, text)
    before = memory.adapt(BASE, context)
    memory.add("new", message)
    memory.adapt(BASE, context)  # served between: the in-place arrays must follow the remove
    memory.remove("new")
    after = memory.adapt(BASE, context)
    assert after.shape == before.shape and np.max(np.abs(after - before)) <= 1e-12
    for i in range(len(history)):
        memory.remove(i)
    assert np.max(np.abs(memory.adapt(BASE, context) - BASE)) <= 1e-12


def test_weight_grows_with_evidence():
    memory = Memory(BASE_VOCAB)
    context = tokenize("the cat sat on")
    seen = []
    for n in range(6):
        seen.append(memory.adapt(BASE, context)[BASE_VOCAB.index("mat")])
        memory.add(n, "the cat sat on mat")
    assert all(a < b for a, b in itertools.pairwise(seen)), seen
    for n in range(6, 5000):
        memory.add(n, "the cat sat on mat")
    assert memory.adapt(BASE, context)[BASE_VOCAB.index("mat")] > 0.5  # much evidence: it dominates


def test_forgetting_restores_the_written_case():
    memory = Memory(BASE_VOCAB)
    memory.add("a", "we use GitHub daily")
    assert memory.written("github") == "GitHub"
    memory.add("b", "so github it is, github")
    assert memory.written("github") == "github"
    memory.remove("b")
    assert memory.written("github") == "GitHub"


def test_adding_a_known_key_replaces_the_message():
    memory = Memory(BASE_VOCAB)
    memory.add(7, "hello zorblax")
    memory.add(7, "hello there")  # an edited message
    assert memory.messages == 1
    assert "zorblax" not in memory.words
    assert memory.count("there") == 1


def test_a_forgotten_word_leaves_words_and_the_rest_is_as_if_never_learned():
    memory = Memory(BASE_VOCAB)
    memory.add(1, "zorblax")
    memory.add(2, "frobnicate quux")
    memory.remove(1)
    fresh = Memory(BASE_VOCAB)
    fresh.add(2, "frobnicate quux")
    assert sorted(memory.words) == sorted(fresh.words) == ["frobnicate", "quux"]
    for context in ([], ["frobnicate"]):
        p, q = memory.adapt(BASE, context), fresh.adapt(BASE, context)
        assert len(p) == len(q)
        for word in [*BASE_VOCAB, "frobnicate", "quux"]:
            assert abs(p[index(memory, word)] - q[index(fresh, word)]) <= 1e-12


def test_share_says_how_much_of_a_suggestion_came_from_the_memory():
    memory = Memory(
        BASE_VOCAB, kind="chain", order=3, strengths=(float("inf"), 1.0, 1.0), witten_bell=False, discount=0.0
    )
    cat = BASE_VOCAB.index("cat")
    assert memory.share(BASE, ["the"], cat) == 0.0
    for n in range(3):
        memory.add(n, "the cat sat on the zorblax")
    assert memory.share(BASE, ["the"], index(memory, "zorblax")) == 1.0  # only the memory knows it
    mostly = memory.share(BASE, ["the"], cat)
    assert 0.5 < mostly < 1.0
    assert memory.share(BASE, ["dog"], BASE_VOCAB.index("dog")) < mostly  # never seen by the memory


def test_copies_too_much_stops_the_ninth_consecutive_word_and_forgets_with_remove():
    memory = Memory(BASE_VOCAB)
    text = "one two three four five six seven eight nine ten eleven"
    memory.add("m", text)
    learned = text.split()
    assert COPY_RUN == 9
    assert not memory.copies_too_much(learned[:7], learned[7])  # 8 copied words are allowed
    assert memory.copies_too_much(learned[:8], learned[8])  # the 9th is not
    assert memory.copies_too_much(["start", *learned[1:9]], learned[9])  # anywhere in the message
    assert not memory.copies_too_much(learned[:8], "other")
    # punctuation between the words does not break the run
    assert memory.copies_too_much(["one", ",", "two", "three", "four", "five", "six", "seven", "eight"], "nine")
    memory.add("again", text)
    memory.remove("m")
    assert memory.copies_too_much(learned[:8], learned[8])  # another message still holds it
    memory.remove("again")
    assert not memory.copies_too_much(learned[:8], learned[8])


def test_hostile_input_is_bounded_and_harmless():
    memory = Memory(BASE_VOCAB)
    t0 = time.perf_counter()
    memory.add("huge", "spam " * 20_000)  # 100 kB
    memory.add("control", "\x00\x1b[2J\x07hello\x08\u202e there\r\n\t")
    memory.add("punctuation", "!!! ... ?? ,,, --- ((( )))")
    memory.add("empty", "")
    assert time.perf_counter() - t0 < 2.0
    assert memory.tokens <= MAX_MESSAGE_TOKENS + 3 + 30  # each message's tokens and its end
    assert not any(c < " " for w in memory.words for c in w)
    p = memory.adapt(BASE, tokenize("spam spam"))
    assert abs(p.sum() - 1) < 1e-9
    for key in ("huge", "control", "punctuation", "empty"):
        assert memory.remove(key)
    assert np.max(np.abs(memory.adapt(BASE, ["spam"]) - BASE)) <= 1e-12


def test_adding_while_another_thread_adapts_is_safe():
    memory = Memory(BASE_VOCAB)
    stop = threading.Event()
    errors: list[BaseException] = []

    def learn():
        try:
            n = 0
            while not stop.is_set():
                memory.add(n, f"the cat sat on word{n % 50} and word{(n + 1) % 50}")
                if n % 3 == 0:
                    memory.remove(n - 2)
                n += 1
        except BaseException as e:  # reported below
            errors.append(e)

    thread = threading.Thread(target=learn)
    thread.start()
    try:
        deadline = time.monotonic() + 1.0
        checked = 0
        while time.monotonic() < deadline:
            p = memory.adapt(BASE, ["the", "cat", "sat", "on"])
            assert abs(p.sum() - 1) < 1e-9
            checked += 1
    finally:
        stop.set()
        thread.join()
    assert not errors
    assert checked > 10 and memory.messages > 10


def test_adapt_refuses_a_distribution_of_the_wrong_size():
    with pytest.raises(ValueError, match="base vocabulary"):
        Memory(BASE_VOCAB).adapt(BASE[:-1], [])


def test_the_lexicon_names_learned_ids_and_offers_only_words():
    memory = Memory(BASE_VOCAB)
    memory.add(1, "zorblax zebra ;-) frobnicate zorblax")
    lexicon = memory.lexicon()
    assert lexicon is memory.lexicon()  # one snapshot while nothing moves
    assert [lexicon.token(i) for i in range(B, B + len(lexicon.words))] == memory.words
    assert sorted(lexicon.token(int(i)) for i in lexicon.starting_with("z")) == ["zebra", "zorblax"]
    assert all(lexicon.token(int(i)).isalpha() for i in lexicon.offered)
    p, served = memory.serve(BASE, tokenize("zorblax"))
    assert len(p) == B + len(served.words)
    memory.remove(1)
    assert memory.lexicon().words == () and lexicon.words  # an old snapshot stays as it was


@settings(max_examples=60, deadline=None)
@given(st.lists(st.text("zoreb", max_size=4), min_size=1, max_size=12))
def test_the_lexicon_finds_the_same_words_whatever_was_typed_before(prefixes):
    """Typing narrows the next lookup to the last prefix's words: typing on, backspacing,
    or starting another word must find what a fresh lookup finds."""
    memory = Memory(BASE_VOCAB)
    memory.add(1, "zorblax zebra zoo zoom zo orb ore zzz frobnicate")
    lexicon = memory.lexicon()
    spelled = sorted(lexicon.token(int(i)) for i in lexicon.offered)
    for prefix in prefixes:
        found = sorted(lexicon.token(int(i)) for i in lexicon.starting_with(prefix))
        assert found == [w for w in spelled if w.startswith(prefix)], prefix


def test_the_version_never_repeats_after_clear():
    memory = Memory(BASE_VOCAB)
    memory.add(1, "the cat")
    seen = {memory.version}
    memory.clear()
    assert memory.version not in seen
    seen.add(memory.version)
    memory.add(1, "the dog")
    assert memory.version not in seen


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["add", "remove", "serve"]), st.integers(0, 5), messages), max_size=25),
    st.lists(words, max_size=4),
)
def test_served_arrays_kept_in_place_match_a_memory_learned_from_scratch(steps, context):
    """Serving between adds and removes (the arrays updated in place, ids moved by
    forgotten words) gives what a fresh memory that learned only the messages kept gives."""
    memory = Memory(BASE_VOCAB, order=4)
    kept: dict[int, str] = {}
    context = tokenize(" ".join(context))
    for action, key, text in steps:
        if action == "add":
            memory.add(key, text)
            kept.pop(key, None)
            kept[key] = text
        elif action == "remove":
            memory.remove(key)
            kept.pop(key, None)
        for k in range(len(context) + 1):
            memory.adapt(BASE, context[:k])
    fresh = Memory(BASE_VOCAB, order=4)
    for key, text in kept.items():
        fresh.add(key, text)
    for k in range(len(context) + 1):
        got, want = memory.adapt(BASE, context[:k]), fresh.adapt(BASE, context[:k])
        names = [*BASE_VOCAB, *memory.words]
        assert sorted(memory.words) == sorted(fresh.words)
        by_word = dict(zip([*BASE_VOCAB, *fresh.words], want, strict=True))
        assert max(abs(p - by_word[w]) for w, p in zip(names, got, strict=True)) <= 1e-12
