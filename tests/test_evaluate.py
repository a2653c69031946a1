"""The metrics on models whose answers we know by hand, and `run` end to end on the
tiny model directory."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wordbot import compare, evaluate, mix
from wordbot.compare import format_table
from wordbot.evaluate import Unigram, evaluate_messages, parse_baseline
from wordbot.text import BOS_ID, EOS_ID, PAD_ID, SPECIALS, UNK_ID, Tokenizer, tokenize

WORDS = ["banana", "bandana", "berry", "apple", "apricot", "cherry", "."]
TOKENIZER = Tokenizer([*SPECIALS, *WORDS])


class Fixed:
    """The same distribution after any context."""

    def __init__(self, p):
        self.tokenizer = TOKENIZER
        self.p = np.asarray(p, dtype=np.float64) / np.sum(p)

    def initial_state(self):
        return ()

    def advance(self, state, token_id):
        return ()

    def probs(self, state):
        return self.p.copy()


class Oracle:
    """Knows the one message it is scored on: puts 0.9 on the true next token."""

    def __init__(self, message: str):
        self.tokenizer = TOKENIZER
        self.targets = [*TOKENIZER.encode(message), EOS_ID]

    def initial_state(self):
        return -1

    def advance(self, state, token_id):
        return state + 1

    def probs(self, state):
        p = np.full(len(TOKENIZER), 0.1 / (len(TOKENIZER) - 1))
        p[self.targets[state]] = 0.9
        return p


def ranked(*words):
    """A fixed model whose ranking of real words is `words`, then the rest."""
    p = np.full(len(TOKENIZER), 1e-3)
    for rank, word in enumerate(words):
        p[TOKENIZER.index[word]] = 1.0 - rank / 10
    return Fixed(p)


def test_uniform_model_has_perplexity_equal_to_its_support():
    p = np.ones(len(TOKENIZER))
    p[[PAD_ID, BOS_ID]] = 0
    result = evaluate_messages(Fixed(p), ["banana apple .", "cherry"], progress=False)
    assert result["perplexity"] == pytest.approx(len(TOKENIZER) - 2)
    assert result["positions"] == 4 + 2  # every token and each </s>
    assert result["words"] == 3


def test_unknown_targets_are_skipped_from_perplexity_and_reported_as_oov():
    model = Fixed(np.arange(1, len(TOKENIZER) + 1))
    known = evaluate_messages(model, ["banana apple"], progress=False)
    with_oov = evaluate_messages(model, ["banana zucchini apple"], progress=False)
    assert with_oov["perplexity"] == pytest.approx(known["perplexity"])
    assert with_oov["oov_rate"] == pytest.approx(1 / 4)
    assert with_oov["words"] == 3  # the unknown word is a word target, and a miss
    assert with_oov["top3"] < known["top3"] or known["top3"] == 0


def test_oracle_gets_every_known_word_at_one_keystroke():
    message = "cherry banana zucchini apricot ."
    result = evaluate_messages(Oracle(message), [message], progress=False)
    assert result["top1"] == pytest.approx(3 / 4)  # zucchini is out of vocabulary: a miss
    assert result["mrr3"] == pytest.approx(3 / 4)
    letters_and_spaces = sum(len(w) + 1 for w in ["cherry", "banana", "zucchini", "apricot"])
    used = 1 + 1 + len("zucchini") + 1 + 1
    assert result["ksr"] == pytest.approx(1 - used / letters_and_spaces)
    # cherry, banana, apricot, "." and </s> each at 0.9; zucchini is skipped.
    assert result["perplexity"] == pytest.approx(1 / 0.9)


def test_keystroke_savings_follow_the_prefix_completions():
    # Next words: banana, bandana, berry. After "a": apple, apricot. After "c": cherry.
    model = ranked("banana", "bandana", "berry", "apple", "apricot", "cherry")
    result = evaluate_messages(model, ["cherry apricot bandana"], progress=False)
    assert result["top1"] == 0
    assert result["top3"] == pytest.approx(1 / 3)
    assert result["mrr3"] == pytest.approx((1 / 2) / 3)
    # cherry: "c" then accept (2); apricot: "a" then accept (2); bandana: accept (1).
    assert result["ksr"] == pytest.approx(1 - (2 + 2 + 1) / (7 + 8 + 8))


def test_suggestions_are_real_words_only():
    p = np.full(len(TOKENIZER), 1e-3)
    p[[UNK_ID, EOS_ID, TOKENIZER.index["."]]] = 1.0  # specials and punctuation first
    p[TOKENIZER.index["cherry"]] = 0.5
    result = evaluate_messages(Fixed(p), ["cherry"], progress=False)
    assert result["top1"] == 1.0


def test_words_are_matched_case_insensitively():
    model = ranked("cherry")
    assert evaluate_messages(model, ["Cherry"], progress=False)["top1"] == 1.0


def test_max_positions_scores_a_fixed_sample_of_that_size():
    messages = [f"banana apple cherry {'berry ' * i}." for i in range(30)]
    model = ranked("berry")
    first = evaluate_messages(model, messages, max_positions=50, progress=False)
    second = evaluate_messages(model, messages, max_positions=50, progress=False)
    assert first["positions"] == 50
    assert {k: v for k, v in first.items() if "latency" not in k and k != "seconds"} == {
        k: v for k, v in second.items() if "latency" not in k and k != "seconds"
    }
    assert evaluate.sample_messages(messages, 50) == evaluate.sample_messages(messages, 50)
    assert evaluate.sample_messages(messages, None) == [(tokenize(m), True) for m in messages]


def test_unigram_is_add_one_and_never_predicts_pad_or_bos():
    model = Unigram.from_texts(["banana banana apple"], TOKENIZER)
    p = model.probs(model.initial_state())
    assert p.sum() == pytest.approx(1.0)
    assert p[PAD_ID] == 0 and p[BOS_ID] == 0
    assert p[TOKENIZER.index["banana"]] == pytest.approx(3 * p[TOKENIZER.index["cherry"]])
    assert p[EOS_ID] == pytest.approx(2 * p[TOKENIZER.index["cherry"]])


def test_format_table_puts_models_side_by_side():
    model = ranked("banana")
    results = {name: evaluate_messages(model, ["banana ."], progress=False) for name in ("default", "KN4", "unigram")}
    table = format_table(results)
    header = table.splitlines()[0]
    assert header.split() == ["metric", "default", "KN4", "unigram"]
    assert "perplexity" in table and "keystroke savings" in table and "top-3 next word" in table


def test_parse_baseline():
    assert parse_baseline("kn4") == 4 and parse_baseline("KN5") == 5
    assert parse_baseline("none") is None and parse_baseline(None) is None
    with pytest.raises(ValueError, match="baseline"):
        parse_baseline("markov")


def test_run_reports_the_model_and_baselines_for_each_file(tiny_model_dir, tmp_path):
    test_file = tmp_path / "test.txt"
    test_file.write_text("What is the meaning of life?\nA penny saved is a penny earned.\n")
    table = evaluate.run(tiny_model_dir, [test_file], baseline="kn3")
    assert str(test_file) in table
    assert table.splitlines()[2].split()[1:] == ["tiny/rnn", "KN3", "unigram"]
    assert "tiny/rnn against KN3 (95% paired-bootstrap interval over the 2 messages):" in table
    assert [line.split()[0] for line in table.splitlines()[-4:]] == ["top-1", "top-3", "keystroke", "perplexity"]
    report = json.loads(evaluate.run(tiny_model_dir, [test_file], as_json=True, baseline="kn3"))[str(test_file)]
    assert set(report["tiny/rnn"]["against"]["KN3"]) == {"top1", "top3", "ksr", "perplexity"}
    gap = report["tiny/rnn"]["against"]["KN3"]["top3"]
    assert gap["difference"] == pytest.approx(100 * (report["tiny/rnn"]["top3"] - report["KN3"]["top3"]))
    assert "per_message" not in report["tiny/rnn"]
    report = json.loads(evaluate.run(tiny_model_dir, [test_file], baseline="none", as_json=True, max_positions=5))
    assert list(report[str(test_file)]) == ["tiny/rnn", "unigram"]
    assert report[str(test_file)]["tiny/rnn"]["positions"] == 5


def test_best_mix_weight_picks_the_better_model_and_matches_evaluate():
    message = "cherry banana apricot ."
    oracle, flat = Oracle(message), Fixed(np.ones(len(TOKENIZER)))
    weight, table = mix.best_mix_weight(flat, oracle, [message], weights=[0.0, 0.5, 1.0])
    assert weight == 1.0 and table[1.0] < table[0.5] < table[0.0]
    assert table[1.0] == pytest.approx(evaluate_messages(oracle, [message], progress=False)["perplexity"])


def test_best_order_weights_trusts_the_ngram_where_its_context_was_seen():
    from wordbot.ngram import KneserNey

    train = ["apple banana cherry ."] * 20 + ["berry apricot ."]
    ngram = KneserNey.from_texts(train, TOKENIZER, order=3)
    flat = Fixed(np.ones(len(TOKENIZER)))
    # Seen text: the trigram knows it, the flat model does not; its weight goes up.
    found = mix.best_order_weights(flat, ngram, ["apple banana cherry ."] * 30, min_positions=10)
    assert found["by_order"][3] > 0.8
    assert found["by_order_perplexity"] <= found["single_perplexity"] < found["model_perplexity"]
    # An order seen too rarely falls back to the single weight.
    assert found["positions_by_order"][1] < 10 and found["by_order"][1] == found["single"]


def test_paired_differences_give_an_interval_that_excludes_zero_only_for_a_real_gap():
    messages = ["banana cherry apple .", "apple banana .", "cherry cherry banana apple ."] * 10
    good = ranked("banana", "cherry", "apple")  # every word of these messages in its top 3
    poor = ranked("berry", "apricot", "bandana", "banana")  # only banana in its top 4, none in its top 3
    a, b = (evaluate_messages(m, messages, progress=False, per_message=True) for m in (good, poor))
    found = compare.paired_differences(a, b)
    assert found["top3"]["difference"] == pytest.approx(100 * (a["top3"] - b["top3"]))
    assert found["top3"]["low"] > 0 and found["ksr"]["low"] > 0
    assert found["perplexity"]["difference"] == pytest.approx(100 * (a["perplexity"] / b["perplexity"] - 1))
    assert found["perplexity"]["high"] < 0  # lower perplexity is better
    same = compare.paired_differences(a, a)
    assert all(d["difference"] == d["low"] == d["high"] == 0 for d in same.values())
    # A gap made of a single message is not trusted as if it were everywhere.
    lucky = evaluate_messages(good, ["banana ."] + ["berry ."] * 29, progress=False, per_message=True)
    unlucky = evaluate_messages(poor, ["banana ."] + ["berry ."] * 29, progress=False, per_message=True)
    spread = compare.paired_differences(unlucky, lucky)["top3"]
    assert spread["low"] < spread["difference"] < spread["high"]
    with pytest.raises(ValueError, match="same"):
        compare.paired_differences(a, evaluate_messages(good, messages[:5], progress=False, per_message=True))


def test_a_text_without_words_reports_no_word_figures_rather_than_zero(tiny_model_dir, tmp_path):
    """A file of punctuation has no words to suggest: top-k and keystroke savings are
    undefined, shown as "-" and null, not as a 0% that reads as a measurement."""
    found = evaluate_messages(ranked("banana"), [". . ."], progress=False)
    assert found["words"] == 0 and found["top1"] is None and found["ksr"] is None and found["perplexity"] > 0
    rows = {line[:30].strip(): line[30:].split() for line in format_table({"m": found}).splitlines()}
    assert rows["top-1 next word"] == ["-"] and rows["keystroke savings"] == ["-"]

    test_file = tmp_path / "dots.txt"
    test_file.write_text("... !!! ???\n")
    table = evaluate.run(tiny_model_dir, [test_file], baseline="kn3")
    assert "(one message: no interval):" in table and "top-3" not in table.split("against")[-1]

    def no_nan(constant):
        raise AssertionError(f"{constant} is not JSON")

    report = json.loads(evaluate.run(tiny_model_dir, [test_file], as_json=True), parse_constant=no_nan)
    served = report[str(test_file)]["tiny/rnn"]
    assert served["top3"] is None and served["mrr3"] is None and set(served["against"]["KN4"]) == {"perplexity"}
    assert served["against"]["KN4"]["perplexity"]["low"] is None  # a bootstrap of one message is no interval


def test_the_baseline_knows_every_training_word_and_perplexity_is_compared_where_both_score(tiny_model_dir, tmp_path):
    """The tiny network knows 800 words; KN3 and the unigram know every word of the
    training text, as an n-gram a user built would. Perplexity is over the tokens both
    the served model and KN3 can score, and the report says how many are left out."""
    from tests.conftest import TRAIN_FILE
    from wordbot.corpus import read_messages

    test_file = tmp_path / "test.txt"
    test_file.write_text("\n".join(read_messages(TRAIN_FILE)[2000:2040]) + "\n", encoding="utf-8")
    report = json.loads(evaluate.run(tiny_model_dir, [test_file], as_json=True, baseline="kn3"))[str(test_file)]
    served, kn3 = report["tiny/rnn"], report["KN3"]
    assert kn3["oov_rate"] < served["oov_rate"] / 3  # it knows most words the network does not
    assert served["left_out"] == kn3["left_out"] == round(served["oov_rate"] * served["positions"]) > 0
    table = evaluate.run(tiny_model_dir, [test_file], baseline="kn3")
    scored = served["positions"] - served["left_out"]
    assert f"perplexity over the tokens tiny/rnn and KN3 can both score: {scored:,} of" in table


def test_the_figures_come_from_the_shipped_ranking(tiny_model_dir, tmp_path, monkeypatch):
    """`wordbot eval` scores the Predictor the faces call, for every row: a ranking that
    leaves out its best word changes the keystroke savings and top-k of all of them."""
    from tests.conftest import TRAIN_FILE
    from wordbot.corpus import read_messages
    from wordbot.predictor import Predictor

    test_file = tmp_path / "test.txt"
    test_file.write_text("\n".join(read_messages(TRAIN_FILE)[:40]) + "\n", encoding="utf-8")

    def figures():
        report = json.loads(evaluate.run(tiny_model_dir, [test_file], as_json=True, baseline="kn3"))
        return report[str(test_file)]

    before = figures()
    shipped = Predictor._ranked

    def without_the_best(self, probs, ids, k, *rest):
        return shipped(self, probs, ids, k + 1, *rest)[1:]

    monkeypatch.setattr(Predictor, "_ranked", without_the_best)
    after = figures()
    assert list(after) == ["tiny/rnn", "KN3", "unigram"]
    for row in after:
        assert after[row]["ksr"] < before[row]["ksr"], row
        assert after[row]["top3"] < before[row]["top3"], row
        assert after[row]["perplexity"] == before[row]["perplexity"]  # the model is the same


def test_keystroke_savings_follow_the_predictors_suggestions_word_by_word():
    """The same counts by hand, through `Predictor.suggest` on the text typed so far."""
    from wordbot.predictor import Predictor

    model = ranked("banana", "bandana", "berry", "apple", "apricot", "cherry")
    predictor = Predictor(model)
    text, used, plain = "", 0, 0
    for word in ["cherry", "apricot", "bandana", "berry"]:
        plain += len(word) + 1
        for typed in range(len(word) + 1):
            offered = [p.word.lower() for p in predictor.suggest(text + word[:typed], k=3).predictions]
            if word in offered or typed == len(word):
                used += typed + 1  # the letters, then accept (or the space)
                break
        text += word + " "
    result = evaluate_messages(predictor, ["cherry apricot bandana berry"], progress=False)
    assert result["ksr"] == pytest.approx(1 - used / plain)


COMMUNITY = [
    "the zorblax fleet lands on quenthor at dawn",
    "ping Varnix about the zorblax fleet",
    "quenthor traders sell glimmerdust to the zorblax fleet",
    "ask Varnix whether the glimmerdust reached quenthor",
]


def _learn_from(tiny_model_dir, tmp_path, history: list[str], **options) -> dict:
    from wordbot import evaluate_learned

    history_file, test_file = tmp_path / "history.txt", tmp_path / "test.txt"
    history_file.write_text("\n".join(history) + "\n", encoding="utf-8")
    test_file.write_text("\n".join(COMMUNITY) + "\n", encoding="utf-8")
    return json.loads(evaluate_learned.run(tiny_model_dir, history_file, [test_file], as_json=True, **options))[
        str(test_file)
    ]


def test_eval_learn_from_prints_frozen_learned_and_refitted_side_by_side(tiny_model_dir, tmp_path, capsys):
    from wordbot.cli import main

    (tmp_path / "history.txt").write_text("\n".join(COMMUNITY * 5) + "\n", encoding="utf-8")
    (tmp_path / "test.txt").write_text("\n".join(COMMUNITY) + "\n", encoding="utf-8")
    argv = ["eval", "--learn-from", str(tmp_path / "history.txt"), str(tmp_path / "test.txt")]
    assert main([*argv, "--model", str(tiny_model_dir)]) == 0
    table = capsys.readouterr().out
    assert "learned from" in table and "20 messages" in table
    header = next(line for line in table.splitlines() if line.startswith("metric"))
    assert header.split()[1:] == ["tiny/rnn", "frozen", "tiny/rnn", "learned", "KN4+history"]
    rows = {line.split("  ")[0] for line in table.splitlines()}
    assert {"top-3 next word", "keystroke savings", "perplexity (lower is better)", "ms per word, median"} <= rows
    assert "perplexity over the tokens tiny/rnn frozen, tiny/rnn learned and KN4+history can all score" in table
    assert "tiny/rnn learned against KN4+history (95% paired-bootstrap interval over the 4 messages):" in table
    assert "tiny/rnn learned against tiny/rnn frozen" in table


def test_learning_the_communitys_phrases_lifts_the_learned_row_above_frozen(tiny_model_dir, tmp_path):
    report = _learn_from(tiny_model_dir, tmp_path, COMMUNITY * 5)
    frozen, learned = report["tiny/rnn frozen"], report["tiny/rnn learned"]
    assert learned["top3"] > frozen["top3"] + 0.3
    assert learned["ksr"] > frozen["ksr"] + 0.2
    assert learned["perplexity"] < frozen["perplexity"] / 2
    # Words only the history holds (zorblax, Varnix) count as known to the learned
    # model: typed with its suggestions, not as misses.
    assert learned["oov_rate"] < frozen["oov_rate"]
    assert learned["against"]["tiny/rnn frozen"]["top3"]["difference"] > 30


def test_the_refitted_ngram_really_counts_the_history(tiny_model_dir, tmp_path):
    unrelated = ["a penny saved is a penny earned", "what is the meaning of life"] * 10
    with_phrases = _learn_from(tiny_model_dir, tmp_path, COMMUNITY * 5, baseline="kn3")["KN3+history"]
    without = _learn_from(tiny_model_dir, tmp_path, unrelated, baseline="kn3")["KN3+history"]
    assert with_phrases["top3"] > without["top3"] + 0.3
    assert with_phrases["oov_rate"] < without["oov_rate"]  # it knows the history's words


@pytest.mark.parametrize(
    ("history", "message"),
    [(None, "history file {} does not exist"), ("\n\n", "history file {} holds no text"), ("dir", "is not a file")],
)
def test_a_bad_history_file_is_one_line(tiny_model_dir, tmp_path, capsys, history, message):
    from wordbot.cli import main

    path = tmp_path / "history.txt"
    if history == "dir":
        path.mkdir()
    elif history is not None:
        path.write_text(history)
    (tmp_path / "test.txt").write_text("hello there\n")
    assert main(["eval", "--learn-from", str(path), str(tmp_path / "test.txt"), "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert message.format(path) in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
