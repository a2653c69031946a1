from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from wordbot.cli import main


def test_next_prints_words_with_probabilities(tiny_model_dir, capsys):
    assert main(["next", "deep", "learning", "is", "a", "-k", "3", "--model", str(tiny_model_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3
    assert all(line.rstrip().endswith("%") for line in lines)


def test_next_json(tiny_model_dir, capsys):
    assert main(["next", "the", "--json", "--model", str(tiny_model_dir)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert len(data) == 5 and {"word", "prob"} == set(data[0])


def test_next_on_empty_text_predicts_a_first_word(tiny_model_dir, capsys):
    assert main(["next", "--json", "--model", str(tiny_model_dir)]) == 0
    assert json.loads(capsys.readouterr().out)


def test_continue_is_reproducible_with_a_seed(tiny_model_dir, capsys):
    args = ["continue", "the", "dog", "-n", "8", "--seed", "3", "--model", str(tiny_model_dir)]
    main(args)
    first = capsys.readouterr().out
    main(args)
    assert capsys.readouterr().out == first and first.startswith("the dog")


@pytest.mark.parametrize(
    "args",
    [["next", "x", "--model", "/nonexistent"], ["next", "x", "-k", "0"], ["info", "/nonexistent"]],
)
def test_errors_are_one_line_without_traceback(args, capsys):
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("wordbot: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_corrupt_model_is_a_clear_error(tiny_model_dir, tmp_path, capsys):
    broken = tmp_path / "broken"
    broken.mkdir()
    for name in ("manifest.json", "tokenizer.json"):
        (broken / name).write_bytes((tiny_model_dir / name).read_bytes())
    (broken / "weights.embedding.npy").write_bytes(b"\x93NUMPY truncated")
    assert main(["next", "x", "--model", str(broken)]) == 2
    assert "weights.embedding.npy: not a weights file" in capsys.readouterr().err


def test_info_describes_the_model(tiny_model_dir, capsys):
    assert main(["info", str(tiny_model_dir)]) == 0
    assert "SimpleRNN 1×24" in capsys.readouterr().out
    assert main(["info", "--model", str(tiny_model_dir)]) == 0  # --model, as every other command takes it
    assert "SimpleRNN 1×24" in capsys.readouterr().out


def _run(args, stdin: bytes = b""):
    return subprocess.run([sys.executable, "-m", "wordbot", *args], input=stdin, capture_output=True, timeout=60)


def test_standard_input_ends_at_its_newline_and_tolerates_bad_bytes(tiny_model_dir):
    model = ["--model", str(tiny_model_dir)]
    by_argument = _run(["next", "what is th", "--complete", "--json", *model])
    by_stdin = _run(["next", "-", "--complete", "--json", *model], b"what is th\n")
    assert by_stdin.returncode == 0 and json.loads(by_stdin.stdout) == json.loads(by_argument.stdout)
    assert all(p["word"].lower().startswith("th") for p in json.loads(by_stdin.stdout))
    bad = _run(["next", "-", *model], b"hello \xff the\n")
    assert bad.returncode == 0 and b"Traceback" not in bad.stderr and bad.stdout


def test_continue_joins_text_that_ends_in_whitespace_cleanly(tiny_model_dir, capsys):
    for text in ("the dog ", "the dog\n"):
        assert main(["continue", text, "-n", "6", "--seed", "1", "--model", str(tiny_model_dir)]) == 0
        out = capsys.readouterr().out.rstrip("\n")
        assert out.startswith("the dog") and "  " not in out and "\n" not in out and "dog ," not in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["continue", "hi", "--seed", "-1"], "--seed >= 0"),
        (["continue", "hi", "--temperature", "nan"], "finite --temperature"),
        (["continue", "hi", "--temperature", "inf"], "finite --temperature"),
    ],
)
def test_bad_sampling_options_are_one_line_errors(tiny_model_dir, args, message, capsys):
    assert main([*args, "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_continue_prints_control_characters_of_its_text_as_they_read(tiny_model_dir, capsys):
    """Escape sequences in the text (read from a file with -) are shown, not acted on by the terminal."""
    text = "the dog \x1b[31mred\x1b]0;title\x07 \u202egnip"
    assert main(["continue", text, "-n", "3", "--seed", "1", "--model", str(tiny_model_dir)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("the dog ^[[31mred^[]0;title^G <U+202E>gnip")
    assert not any(c in out for c in "\x1b\x07\u202e")


@pytest.mark.parametrize("temperature", ["1e-310", "4.9e-324", "1e-30"])
def test_a_tiny_temperature_continues_greedily_instead_of_crashing(tiny_model_dir, temperature, capsys):
    model = ["--model", str(tiny_model_dir)]
    assert main(["continue", "what", "is", "-n", "6", "--temperature", temperature, *model]) == 0
    tiny = capsys.readouterr()
    assert main(["continue", "what", "is", "-n", "6", "--temperature", "0", *model]) == 0
    assert tiny.out == capsys.readouterr().out and tiny.out.startswith("what is") and tiny.err == ""


def test_complete_prints_what_the_suggestion_policy_offers(tiny_model_dir, capsys):
    from wordbot.predictor import Predictor

    predictor = Predictor.load(tiny_model_dir)
    for text in ["what is th", "what is ", "so 😀"]:
        assert main(["next", text, "--complete", "--json", "-k", "4", "--model", str(tiny_model_dir)]) == 0
        printed = [(p["word"], p["prob"]) for p in json.loads(capsys.readouterr().out)]
        assert printed == [tuple(p) for p in predictor.suggest(text, 4).predictions], text


def test_info_is_built_by_describe(tiny_model_dir, capsys):
    from wordbot.describe import info_lines

    assert main(["info", str(tiny_model_dir)]) == 0
    assert capsys.readouterr().out.splitlines() == info_lines(tiny_model_dir)
    assert main(["info", "--json", "--model", str(tiny_model_dir)]) == 0
    assert json.loads(capsys.readouterr().out)["architecture"]["units"] == 24


def test_a_word_nothing_completes_says_so(tiny_model_dir, capsys):
    assert main(["next", "qqqzz", "--complete", "--model", str(tiny_model_dir)]) == 0
    captured = capsys.readouterr()
    assert captured.out == "" and "no word in the vocabulary starts with 'qqqzz'" in captured.err


def test_options_before_any_command_go_to_the_repl(tiny_model_dir):
    done = _run(["--model", str(tiny_model_dir)], b"the dog\n")
    assert done.returncode == 0, done.stderr
    assert b"next words:" in done.stdout and b"invalid choice" not in done.stderr


def test_train_without_corpus_explains(capsys):
    assert main(["train"]) == 2
    assert "give corpus files" in capsys.readouterr().err


def test_train_without_tensorflow_says_what_to_install(tmp_path, monkeypatch, capsys):
    import sys

    from .conftest import TRAIN_FILE

    corpus = tmp_path / "my.txt"
    corpus.write_text("\n".join(TRAIN_FILE.read_text(encoding="utf-8").splitlines()[:300]) + "\n", encoding="utf-8")
    monkeypatch.setitem(sys.modules, "keras", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "tensorflow", None)
    assert main(["train", str(corpus), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "training needs TensorFlow" in err and "[train]" in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["my.txt"]  # no model, no m.partial/


def test_wordbot_next_does_not_import_tensorflow(tiny_model_dir):
    code = (
        "import sys; from wordbot.cli import main; "
        f"main(['next', 'deep learning is a', '--model', {str(tiny_model_dir)!r}]); "
        "raise SystemExit('tensorflow' in sys.modules)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_python_dash_m_runs_the_cli(tiny_model_dir):
    result = subprocess.run(
        [sys.executable, "-m", "wordbot", "next", "hello", "--model", str(tiny_model_dir), "-k", "2"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0 and len(result.stdout.splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["eval", "no-such-file.txt"], "test file no-such-file.txt does not exist"),
        (["eval", "README.md", "--baseline", "kn9"], "unknown baseline 'kn9'"),
        (["eval", "tests"], "test file tests is not a file"),
    ],
)
def test_eval_refuses_bad_arguments_in_one_line(tiny_model_dir, args, message, capsys):
    assert main([*args, "--model", str(tiny_model_dir)]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_eval_of_an_empty_test_file_says_so(tiny_model_dir, tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(["eval", str(tmp_path / "empty.txt"), "--model", str(tiny_model_dir)]) == 2
    assert "holds no text" in capsys.readouterr().err


def test_next_reads_100_kb_from_standard_input(tiny_model_dir, monkeypatch, capsys):
    import io

    monkeypatch.setattr("sys.stdin", io.StringIO("the dog sat on the mat. " * 4200))
    assert main(["next", "-", "-k", "2", "--model", str(tiny_model_dir)]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["next", "the", "-k", "100000"], "-k must be between 1 and 1000, not 100000"),
        (["continue", "the", "-n", "100000"], "-n/--words must be at most 1000, not 100000"),
    ],
)
def test_absurd_counts_are_refused_in_one_line(tiny_model_dir, args, message, capsys):
    assert main([*args, "--model", str(tiny_model_dir)]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == f"wordbot: error: {message}\n"


@pytest.mark.parametrize(
    "args",
    [
        ["next", "the", "-k", "0", "--json"],
        ["next", "the", "--json", "--model", "/nonexistent"],
        ["eval", "no-such-file.txt", "--json"],
        ["info", "/nonexistent", "--json"],
    ],
)
def test_with_json_an_error_is_a_json_object_too(args, capsys):
    """A script reading --json output gets JSON whatever happens; people still read stderr."""
    assert main(args) == 2
    captured = capsys.readouterr()
    error = json.loads(captured.out)["error"]
    assert captured.err == f"wordbot: error: {error}\n"


def test_with_json_a_usage_error_is_a_json_object_too(capsys):
    with pytest.raises(SystemExit) as exited:
        main(["next", "the", "-k", "many", "--json"])
    assert exited.value.code == 2
    captured = capsys.readouterr()
    assert json.loads(captured.out) == {"error": "argument -k: invalid int value: 'many'"}
    assert "invalid int value" in captured.err


@pytest.mark.skipif(not os.path.exists("/dev/full"), reason="needs /dev/full")
@pytest.mark.parametrize("command", [["next", "the"], ["continue", "the", "-n", "5"], ["info"]])
def test_a_failed_write_is_one_line_not_a_traceback(tiny_model_dir, command):
    with open("/dev/full", "w") as full:
        done = subprocess.run(
            [sys.executable, "-m", "wordbot", *command, "--model", str(tiny_model_dir)],
            stdout=full,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    assert done.returncode == 1
    assert done.stderr == "wordbot: error: cannot write: No space left on device\n"


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--learning-rate", "nan"], "learning_rate must be a positive number"),
        (["--learning-rate", "-0.1"], "learning_rate must be a positive number"),
        (["--clipnorm", "inf"], "clipnorm must be a positive number"),
        (["--max-minutes", "-1"], "max_minutes must be 0 (no limit) or a positive number"),
        (["--max-minutes", "nan"], "max_minutes must be 0 (no limit) or a positive number"),
        (["--patience", "-1"], "patience must be 0 or more"),
        (["--mix-order", "9"], "mix_order must be 0 (no n-gram) or 1 to 6"),
        (["--seed", "-1"], "seed must be in [0, 2**32)"),
        (["--seq-len", "0"], "seq_len must be at least 1"),
        (["--dropout", "1.0"], "dropout must be in [0, 1)"),
        (["--epochs", "0"], "epochs must be at least 1"),
    ],
)
def test_training_options_that_make_no_sense_are_one_line_errors(tmp_path, option, message, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("some words to train on\n" * 50)
    assert main(["train", str(corpus), "--out", str(tmp_path / "m"), *option]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wordbot: error: bad training configuration: ") and message in err
    assert err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"hello world, here I am\n", "give more text or a smaller --seq-len"),
        ("caf\u00e9 au lait\n".encode("latin-1"), "iconv -f cp1252 -t utf-8"),
        (bytes(range(256)) * 4, "NUL bytes"),
    ],
)
def test_a_corpus_that_cannot_train_is_refused_before_anything_is_written(tmp_path, content, message, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_bytes(content)
    assert main(["train", str(corpus), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_the_same_corpus_file_twice_is_refused(tmp_path, capsys):
    corpus = tmp_path / "c.txt"
    corpus.write_text("some words to train on\n" * 50)
    assert main(["train", str(corpus), str(corpus), "--out", str(tmp_path / "m")]) == 2
    assert "is given twice" in capsys.readouterr().err


def test_ctrl_c_before_training_starts_says_nothing_was_kept(tmp_path, monkeypatch, capsys):
    """Interrupted while reading the corpus: there is no DIR.partial to resume from."""
    corpus = tmp_path / "c.txt"
    corpus.write_text("some words to train on\n" * 50)

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("wordbot.training.data.read_corpus", interrupted)
    assert main(["train", str(corpus), "--out", str(tmp_path / "m")]) == 130
    err = capsys.readouterr().err
    assert "interrupted before training started; nothing was written" in err and "resume" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.txt"]


def test_one_shot_commands_leave_the_garbage_collector_as_they_found_it(tiny_model_dir, capsys):
    """`next` and `continue` run without the cyclic collector (a faster start); a
    caller of main() gets it back as it was."""
    import gc

    assert gc.isenabled()
    assert main(["next", "--model", str(tiny_model_dir), "the"]) == 0
    assert main(["continue", "--model", str(tiny_model_dir), "the", "-n", "3", "--seed", "1"]) == 0
    assert gc.isenabled()
    gc.disable()
    try:
        assert main(["next", "--model", str(tiny_model_dir), "the"]) == 0
        assert not gc.isenabled()
    finally:
        gc.enable()
