from __future__ import annotations

import itertools
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from wordbot.artifacts import model_directory
from wordbot.predictor import MAX_CONTEXT, Prediction, Predictor, Suggestions, sample
from wordbot.text import SPECIALS, is_word, tokenize

TEXTS = ["", "deep learning is a", "The dog ", "hello,", "!!!", "😀😀", "zxqv unknownish words", "a\x00b\x1b[31m"]


@pytest.mark.parametrize("text", TEXTS)
def test_next_words_are_at_most_k_sorted_real_probabilities(tiny_predictor, text):
    predictions = tiny_predictor.next_words(text, k=7)
    assert 1 <= len(predictions) <= 7
    probs = [p.prob for p in predictions]
    assert probs == sorted(probs, reverse=True)
    assert all(0 < p <= 1 for p in probs)
    assert sum(probs) <= 1 + 1e-9
    assert all(isinstance(p, Prediction) for p in predictions)


@pytest.mark.parametrize("text", TEXTS)
def test_special_tokens_and_punctuation_are_never_offered(tiny_predictor, text):
    for p in tiny_predictor.next_words(text, k=50):
        assert p.word.lower() not in SPECIALS
        assert tokenize(p.word) == [p.word.lower()]  # one real word
        assert p.word[0].isalnum()


def test_i_is_capitalised_and_sentence_starts_are_capitalised(tiny_predictor):
    words = [p.word for p in tiny_predictor.next_words("", k=800)]
    assert "I" in words and "i" not in words
    assert all(w[0].isupper() for w in words if w[0].isalpha())  # a message starts a sentence
    mid = [p.word for p in tiny_predictor.next_words("so the", k=800)]
    assert "the" in mid and "I" in mid


def test_names_are_offered_and_written_with_their_capitals(tiny_predictor):
    cased = tiny_predictor.tokenizer.cased
    assert cased, "the training text of the tiny model has names"
    mid = {p.word for p in tiny_predictor.next_words("so the", k=len(tiny_predictor.tokenizer))}
    assert all(form in mid and word not in mid for word, form in cased.items())
    word, form = next(iter(cased.items()))
    assert form in [p.word for p in tiny_predictor.complete("so " + word[:-1], k=50)]
    for seed in range(5):
        text = tiny_predictor.continue_text("and", 40, temperature=1.5, top_k=0, top_p=1.0, seed=seed)
        assert not {w for w in text.split() if w.strip(".,;:!?\"'()") in cased}, text


def test_completions_match_the_typed_prefix_and_renormalise(tiny_predictor):
    predictions = tiny_predictor.complete("what is th", k=800)
    assert predictions and all(p.word.lower().startswith("th") for p in predictions)
    assert sum(p.prob for p in predictions) == pytest.approx(1.0)
    assert [p.word for p in tiny_predictor.complete("what is TH", k=5)] == [p.word for p in predictions[:5]]


def test_complete_after_a_space_is_next_words(tiny_predictor):
    assert tiny_predictor.complete("what is ", k=5) == tiny_predictor.next_words("what is", k=5)


def test_complete_of_a_prefix_no_word_has_is_empty(tiny_predictor):
    assert tiny_predictor.complete("qqqqzz", k=5) == []


def test_seeded_continuation_is_reproducible_and_made_of_vocabulary(tiny_predictor):
    a = tiny_predictor.continue_text("the dog", 15, seed=7)
    b = tiny_predictor.continue_text("the dog", 15, seed=7)
    assert a == b and a
    vocab = set(tiny_predictor.tokenizer.vocab)
    tokens = tokenize(a)
    assert all(t in vocab for t in tokens)
    assert "<unk>" not in a
    assert sum(t[0].isalnum() for t in tokens) <= 15


def test_greedy_continuation_ends(tiny_predictor):
    text = tiny_predictor.continue_text("", 10, temperature=0)
    assert isinstance(text, str) and len(tokenize(text)) <= 35


@given(st.floats(0.1, 3.0), st.integers(0, 50), st.floats(0.05, 1.0), st.integers(0, 2**32 - 1))
@settings(max_examples=60, deadline=None)
def test_sample_only_draws_allowed_indices(temperature, top_k, top_p, seed):
    probs = np.array([0.0, 0.5, 0.3, 0.2, 0.0])
    i = sample(probs, np.random.default_rng(seed), temperature, top_k, top_p)
    assert probs[i] > 0
    if top_k == 1 or top_p <= 0.3:  # the likeliest of three keeps at least a third of the mass
        assert i == 1


def test_greedy_sample_is_argmax():
    assert sample(np.array([0.1, 0.2, 0.7]), np.random.default_rng(0), temperature=0) == 2


@pytest.mark.parametrize("temperature", [1e-310, 5e-324, 1e-200, 1e-12])
def test_a_tiny_temperature_samples_the_likeliest_not_nan(temperature, recwarn):
    """1e-310 used to make every log-probability -inf after the division: NaN, then a crash."""
    probs = np.array([0.0, 0.2, 0.5, 0.3])
    for seed in range(20):
        assert sample(probs, np.random.default_rng(seed), temperature, top_k=0, top_p=0.95) == 2
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_a_continuation_at_a_tiny_temperature_is_words_and_greedy(tiny_predictor):
    tiny = tiny_predictor.continue_text("what is", 8, temperature=1e-310, seed=1)
    assert [t for t in tokenize(tiny) if is_word(t)]  # the random tiny model's greedy text is mostly punctuation
    assert tiny == tiny_predictor.continue_text("what is", 8, temperature=0)


def test_suggest_says_whether_it_completes_a_word_or_offers_next_words(tiny_predictor):
    typing = tiny_predictor.suggest("what is th", k=5)
    assert typing == Suggestions("th", tiny_predictor.complete("what is th", k=5))
    assert typing.predictions and all(p.word.lower().startswith("th") for p in typing.predictions)
    assert tiny_predictor.suggest("what is TH", k=5).partial == "TH"  # as typed
    for text in ["what is ", "what is", "", "   ", "so 😀", "hello,"]:
        if text.endswith(("s", "o")):
            continue
        found = tiny_predictor.suggest(text, k=5)
        assert found == Suggestions("", tiny_predictor.next_words(text, k=5)) and found.predictions, text
    assert tiny_predictor.suggest("the qqqqzz", k=5) == Suggestions("qqqqzz", [])


def test_suggest_on_tokens_is_the_same_policy_as_on_text(tiny_predictor):
    for text in ["what is th", "so the", "The dog sat on the m", "", 'he said, "wh']:
        from wordbot.text import partial_word

        partial = partial_word(text)
        tokens = tokenize(text[: len(text) - len(partial)])
        assert tiny_predictor.suggest_after(tokens, partial, k=4) == tiny_predictor.suggest(text, k=4), text


def test_a_typed_start_no_display_form_keeps_counts_as_a_finished_token():
    """At a message start "ßig" is shown as "SSig", which no longer starts with the typed
    "ß": the REPL always took such a token as finished and offered next words."""
    from wordbot.text import SPECIALS, Tokenizer

    tokenizer = Tokenizer([*SPECIALS, "ßig", "tag"])

    class Flat:
        def __init__(self):
            self.tokenizer = tokenizer

        def initial_state(self):
            return ()

        def advance(self, state, token_id):
            return ()

        def probs(self, state):
            p = np.ones(len(tokenizer))
            return p / p.sum()

    predictor = Predictor(Flat())
    assert predictor.suggest("so ß", k=2) == Suggestions("ß", [Prediction("ßig", 1.0)])
    found = predictor.suggest("ß", k=2)
    assert found.partial == "" and {p.word for p in found.predictions} == {"ßig", "tag"}  # after "ß"


def test_no_path_means_the_bundled_model_and_a_manifest_names_its_backend():
    from wordbot.artifacts import DEFAULT_MODEL_DIR, model_directory, served_backend

    assert model_directory(None) == DEFAULT_MODEL_DIR
    assert model_directory("elsewhere") == Path("elsewhere")
    assert served_backend({}) == "rnn" and served_backend({"serving": None}) == "rnn"
    assert served_backend({"serving": {"backend": "mix"}}) == "mix"


def test_state_cache_makes_one_more_word_one_step(tiny_predictor):
    calls = 0
    advance = tiny_predictor.lm.advance

    def counting(state, token_id):
        nonlocal calls
        calls += 1
        return advance(state, token_id)

    tiny_predictor.lm.advance = counting
    tiny_predictor.next_words("the dog sat on the")
    calls = 0
    tiny_predictor.next_words("the dog sat on the mat")
    assert calls == 1
    calls = 0
    tiny_predictor.complete("the dog sat on the mat and th")  # letters inside a word: one step for "and"
    tiny_predictor.complete("the dog sat on the mat and the")
    assert calls == 1


def test_cached_and_fresh_predictions_agree(tiny_model_dir):
    warm = Predictor.load(tiny_model_dir)
    warm.next_words("the dog sat")
    stepped, fresh = warm.next_words("the dog sat on"), Predictor.load(tiny_model_dir).next_words("the dog sat on")
    # One step from a cached state and one pass over the whole context round float32 apart.
    assert [w.word for w in stepped] == [w.word for w in fresh]
    assert np.allclose([w.prob for w in stepped], [w.prob for w in fresh], rtol=0, atol=1e-6)


def test_huge_text_is_answered_from_its_end(tiny_predictor):
    text = "the dog sat on the mat. " * 5000  # about 120 kB
    predictions = tiny_predictor.next_words(text)
    assert predictions
    assert len(tiny_predictor._context(tokenize(text))) <= MAX_CONTEXT


def test_bad_k_is_refused(tiny_predictor):
    with pytest.raises(ValueError):
        tiny_predictor.next_words("x", k=0)


def test_predictor_module_does_not_import_tensorflow(tiny_model_dir):
    code = (
        "import sys; from wordbot.predictor import Predictor; "
        f"Predictor.load({str(tiny_model_dir)!r}).next_words('hello'); "
        "bad = [m for m in ('tensorflow', 'keras', 'discord', 'prompt_toolkit') if m in sys.modules]; "
        "print(bad); raise SystemExit(bool(bad))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_model_whose_training_text_is_gone_serves_the_network_alone(tmp_path, caplog):
    import json
    import shutil

    from wordbot.errors import CorpusError

    from .conftest import make_model_dir

    directory = make_model_dir(tmp_path / "m")
    corpus = tmp_path / "corpus.txt"
    shutil.copy(Path(__file__).resolve().parent.parent / "data" / "corpus" / "fortunes-train.txt", corpus)
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["corpus"]["files"] = [{"path": str(corpus), "sha256": ""}]
    manifest["serving"] = {"backend": "mix"}
    (directory / "manifest.json").write_text(json.dumps(manifest))
    assert Predictor.load(directory).backend == "mix"

    corpus.unlink()
    predictor = Predictor.load(directory)
    assert predictor.backend == "rnn" and predictor.next_words("the")
    assert "serving the recurrent network alone" in caplog.text
    with pytest.raises(CorpusError, match="is not there"):
        Predictor.load(directory, backend="mix")  # asked for explicitly: say why it cannot


def test_an_ensemble_predicts_the_mean_of_its_networks(tmp_path):
    from wordbot.artifacts import load_model
    from wordbot.engine import Ensemble, RNNLanguageModel
    from wordbot.text import BOS_ID

    from .conftest import make_model_dir

    directory = make_model_dir(tmp_path / "ensemble", members=3)
    predictor = Predictor.load(directory, backend="rnn")
    assert isinstance(predictor.lm, Ensemble) and len(predictor.lm.networks) == 3
    assert "ensemble of 3 SimpleRNN" in predictor.describe()
    manifest, tokenizer, weights = load_model(directory)
    ids = [BOS_ID, *tokenizer.encode("the dog sat on the")]
    singles = [RNNLanguageModel(manifest, tokenizer, weights, member=i).sequence_probs(ids)[-1] for i in range(3)]
    assert not np.allclose(singles[0], singles[1])  # three different networks
    state = predictor.lm.initial_state()
    for token_id in ids:
        state = predictor.lm.advance(state, token_id)
    p = predictor.lm.probs(state)
    assert np.allclose(p, np.mean(singles, axis=0), atol=1e-7) and np.isclose(p.sum(), 1.0)
    words = predictor.next_words("the dog sat on the", k=3)
    assert [w.prob for w in words] == sorted((w.prob for w in words), reverse=True)


@pytest.mark.parametrize("text", ["", "-- ", "what? ", 'he said, "', "and"])
def test_a_continuation_never_repeats_punctuation_back_to_back(tiny_predictor, text):
    """Greedy decoding used to loop on a punctuation token ("-- -- -- --") until the cap."""
    for seed, temperature in [(0, 0.0), *((s, 1.5) for s in range(30))]:
        continuation = tiny_predictor.continue_text(text, 12, temperature=temperature, top_k=0, top_p=1.0, seed=seed)
        tokens = tokenize(text + continuation)
        repeats = [a for a, b in itertools.pairwise(tokens) if a == b and not is_word(a)]
        assert not repeats, (text, continuation)


def test_info_says_which_mix_weights_validation_never_tuned():
    from wordbot.describe import mix_weights_text

    mix = {"ngram_weight": 0.4, "ngram_weight_by_order": {"1": 0.4, "2": 0.3}, "positions_by_order": {"1": 0, "2": 9}}
    assert mix_weights_text(mix).startswith("0.40 / 0.30 (by the order of the longest context it has seen: 1 / 2)")
    assert "order 1 never came up in validation" in mix_weights_text(mix)
    mix["positions_by_order"]["1"] = 3
    assert "never" not in mix_weights_text(mix)


class _FavoursDebris:
    """A language model that puts most of its mass on chat-log debris tokens."""

    def __init__(self):
        from wordbot.text import SPECIALS, Tokenizer

        self.tokenizer = Tokenizer([*SPECIALS, "<", ">", "199705101952", "maa00756", "wall", "larry", "."])
        p = np.full(len(self.tokenizer), 0.01)
        for token in ("<", ">", "199705101952", "maa00756"):
            p[self.tokenizer.index[token]] = 1.0
        self._p = p / p.sum()

    def initial_state(self):
        return ()

    def advance(self, state, token_id):
        return ()

    def probs(self, state):
        return self._p.copy()


def test_chat_log_debris_is_never_offered_completed_or_written():
    from wordbot.text import is_debris

    predictor = Predictor(_FavoursDebris())
    offered = [p.word for p in predictor.next_words("larry wall", k=20)]
    assert offered and not any(is_debris(w.lower()) for w in offered)
    assert predictor.complete("in 1997", k=5) == []  # the message-ID fragment is not a completion
    for seed in range(20):
        text = predictor.continue_text("larry wall", 10, seed=seed)
        assert "<" not in text and ">" not in text and "1997" not in text


# -- the memory: learn, forget, views (issue 14) ---------------------------------------

LEARNED = "we deploy the Zorblax cluster every friday with Knghtbrd"


def _words(predictions) -> list[str]:
    return [p.word for p in predictions]


def test_a_learned_word_is_offered_and_completed_with_its_written_case(tiny_predictor):
    assert "zorblax" not in tiny_predictor.tokenizer.index
    assert "Zorblax" not in _words(tiny_predictor.next_words("we deploy the", k=50))
    assert tiny_predictor.complete("we deploy the zorb") == []
    for _ in range(3):
        tiny_predictor.learn(LEARNED)
    after = tiny_predictor.next_words("we deploy the", k=5)
    assert after[0].word == "Zorblax" and after[0].prob > 0.1
    assert sum(p.prob for p in tiny_predictor.next_words("we deploy the", k=1000)) <= 1 + 1e-9
    assert _words(tiny_predictor.complete("we deploy the zorb")) == ["Zorblax"]
    assert tiny_predictor.complete("we deploy the zorb")[0].prob == pytest.approx(1.0)
    # Where the memory never saw it, it has no probability, yet it is still completable, last.
    elsewhere = tiny_predictor.complete("I like zor")
    assert _words(elsewhere)[-1] == "Zorblax" and elsewhere[-1].prob == 0.0
    assert "Zorblax" in tiny_predictor.continue_text("we deploy the", 3, temperature=0)
    assert tiny_predictor.suggest("we deploy the zorb").partial == "zorb"


def test_forgetting_restores_the_answers_exactly(tiny_predictor, tiny_model_dir):
    fresh = Predictor.load(tiny_model_dir)
    texts = ["we deploy the", "the cat ", "we deploy the zo", "hello wor", ""]
    tiny_predictor.learn(LEARNED, key="m1")
    tiny_predictor.learn("the cat sat on the Zorblax mat")
    assert tiny_predictor.next_words("we deploy the") != fresh.next_words("we deploy the")
    assert tiny_predictor.forget("m1") is True and tiny_predictor.forget("m1") is False
    tiny_predictor.forget_all()
    for text in texts:
        assert tiny_predictor.complete(text, k=20) == fresh.complete(text, k=20)
        assert tiny_predictor.continue_text(text, 10, seed=3) == fresh.continue_text(text, 10, seed=3)


def test_a_loaded_predictor_has_an_empty_memory_that_changes_nothing(tiny_predictor):
    assert tiny_predictor.memory.messages == 0
    for text in ["", "the cat", "we deploy the zorblax"]:
        tokens = tokenize(text)
        frozen = tiny_predictor.lm.probs(tiny_predictor._state(tiny_predictor._context(tokens)))
        served = tiny_predictor.probs_after(tokens)
        assert served.shape == frozen.shape
        assert np.max(np.abs(served - frozen)) <= 1e-9


def test_one_communitys_words_never_reach_another_view(tiny_predictor):
    red, blue = tiny_predictor.view(), tiny_predictor.view()
    assert red.memory is not blue.memory and red._states is tiny_predictor._states  # the model's caches are shared
    for _ in range(3):
        red.learn(LEARNED)
    blue.learn("the blue team writes Quuxly every day")
    assert red.next_words("we deploy the", k=1)[0].word == "Zorblax"
    for other in (blue, tiny_predictor):
        for text in ["we deploy the", "we deploy the ", "the", ""]:  # same contexts: the caches are keyed apart
            assert "Zorblax" not in _words(other.next_words(text, k=2000))
        assert other.complete("we deploy the zorb") == []
        assert "zorblax" not in other.continue_text("we deploy the", 20, temperature=1.5, seed=1).lower()
    # Where red's memory adds nothing that starts with "qu", its completions are the model's
    # (renormalised over the same words: equal up to the last bit of rounding).
    red_qu, model_qu = red.complete("the qu", k=50), tiny_predictor.complete("the qu", k=50)
    assert _words(red_qu) == _words(model_qu)
    assert [p.prob for p in red_qu] == pytest.approx([p.prob for p in model_qu], abs=1e-12)
    assert "Quuxly" not in _words(red.complete("the quu", k=50))


def test_a_view_can_serve_a_memory_kept_by_a_face(tiny_predictor):
    from wordbot.memory import Memory

    kept = Memory(tiny_predictor.tokenizer.vocab)
    kept.add("discord:1", LEARNED)
    view = tiny_predictor.view(kept)
    assert view.memory is kept
    assert "Zorblax" in _words(view.next_words("we deploy the", k=5))
    with pytest.raises(ValueError, match="another vocabulary"):
        tiny_predictor.view(Memory(["<pad>", "<unk>", "<s>", "</s>", "x"]))


def test_learning_while_another_thread_predicts(tiny_predictor):
    errors: list[BaseException] = []
    done = threading.Event()

    def learn() -> None:
        try:
            for i in range(300):
                tiny_predictor.learn(f"message {i} about the word{i % 37} and Zorblax{i % 11}", key=i)
                if i % 3 == 0:
                    tiny_predictor.forget(i - 1)
        except BaseException as e:
            errors.append(e)
        finally:
            done.set()

    thread = threading.Thread(target=learn)
    thread.start()
    seen = 0
    while not done.is_set() or seen < 20:
        for text in ("about the ", "about the zor", "message "):
            predictions = tiny_predictor.complete(text, k=10)
            probs = [p.prob for p in predictions]
            assert all(isinstance(p.word, str) and p.word for p in predictions)
            assert all(0 <= q <= 1 for q in probs)
        tiny_predictor.continue_text("about the", 5, seed=seen)
        seen += 1
    thread.join()
    assert not errors
    assert tiny_predictor.memory.messages == 300 - len(range(3, 300, 3))


def test_hostile_messages_are_bounded_and_harmless(tiny_predictor):
    tiny_predictor.learn("word " * 25_000)  # 125 kB
    tiny_predictor.learn("\x00\x1b[31m\u202e\r\n\t")
    tiny_predictor.learn("!!! ... ??? ,,, ---")
    tiny_predictor.learn("")
    assert tiny_predictor.memory.tokens <= 4 * 1000 + 4
    for text in ["", "word word ", "!!!", "wo"]:
        for p in tiny_predictor.complete(text, k=20):
            assert p.word.lower() not in SPECIALS and p.word[0].isalnum()


def test_learning_a_20_word_message_takes_under_a_millisecond(tiny_predictor):
    message = "so we met at the old station and talked about the Zorblax plans for an hour or two more"
    assert len(message.split()) == 19  # and a number: 20
    times = []
    for i in range(300):
        start = time.perf_counter()
        tiny_predictor.learn(f"{message} {i}")
        times.append(time.perf_counter() - start)
    assert sorted(times)[len(times) // 2] < 1e-3


def test_a_word_learned_between_two_keystrokes_completes_at_the_next(tiny_predictor):
    """The keystrokes of one word reuse what the first one found (the adapted
    distribution, the learned words that start with the prefix): a learn or a forget
    between two keystrokes must show at the next one."""
    catzilla = "we deploy the Catzilla cluster every friday"
    tiny_predictor.learn("the cat sat on the mat")  # a memory that holds something
    typed = [_words(tiny_predictor.complete(f"we deploy the {'catzilla'[:i]}", k=50)) for i in (1, 2, 3)]
    assert all(typed) and not any("Catzilla" in words for words in typed)  # the model's own words
    for _ in range(3):
        tiny_predictor.learn(catzilla, key="catzilla")  # the same key: replaced, still learned
    assert _words(tiny_predictor.complete("we deploy the catz")) == ["Catzilla"]
    assert tiny_predictor.forget("catzilla")
    assert "Catzilla" not in _words(tiny_predictor.complete("we deploy the catz", k=50))
    tiny_predictor.learn(catzilla.replace("Catzilla", "CatZilla"))
    assert "CatZilla" in _words(tiny_predictor.complete("we deploy the catz", k=50))  # its new case


def test_relearning_after_forget_all_is_never_answered_from_an_old_cache(tiny_predictor):
    tiny_predictor.learn(LEARNED)
    first = tiny_predictor.next_words("we deploy the", k=3)
    tiny_predictor.forget_all()
    tiny_predictor.learn("we deploy the Quuxly cluster")
    assert tiny_predictor.next_words("we deploy the", k=1)[0].word == "Quuxly"
    assert first[0].word == "Zorblax"


@pytest.fixture(scope="module")
def bundled():
    return Predictor.load()


def test_every_word_of_the_training_text_can_be_completed_from_its_first_letters(bundled):
    """On a sample of the bundled model's training words, most of them outside the
    network's 10,000: each is among the top 3 completions of some start of it, unless
    typed in full it still has three likelier words that start with it ("us": "use",
    "usually", "used"). Chat-log debris, exactly, is left out."""
    from wordbot.corpus import training_messages
    from wordbot.text import is_debris

    served = bundled.tokenizer
    network_size = len(bundled.lm.models[0].tokenizer)
    seen = {t for m in training_messages(bundled.manifest, model_directory(None)) for t in tokenize(m)}
    assert seen <= set(served.index) and len(served) > 3 * network_size  # every token of the text is served
    words = sorted(t for t in seen if is_word(t) and not is_debris(t))
    sample = np.random.default_rng(0).choice(words, 600, replace=False)
    assert sum(served.index[w] >= network_size for w in sample) > 300
    for word in sample:
        offered = [[p.word.lower() for p in bundled.complete(word[:j], k=3)] for j in range(1, len(word) + 1)]
        if any(word in found for found in offered):
            continue
        longer = offered[-1]
        assert len(longer) == 3 and all(w.startswith(word) for w in longer), word
    debris = sorted(t for t in seen if is_debris(t))
    assert debris and not any(t in [p.word.lower() for p in bundled.complete(t, k=50)] for t in debris)
