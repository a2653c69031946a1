"""Training end to end with TensorFlow: tiny models on a slice of the fortunes corpus."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from wordbot.cli import main
from wordbot.predictor import Predictor

from .conftest import ROOT, TRAIN_FILE

pytestmark = pytest.mark.slow
pytest.importorskip("tensorflow")

TINY = ["--units", "24", "--embedding-dim", "16", "--vocab-size", "300", "--seq-len", "12", "--batch-size", "32"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("corpus") / "small.txt"
    path.write_text("\n".join(TRAIN_FILE.read_text(encoding="utf-8").splitlines()[:600]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    """cell -> model directory, each trained through the CLI."""
    out = {}
    for cell in ("simple_rnn", "gru", "lstm"):
        directory = tmp_path_factory.mktemp("models") / cell
        args = ["train", str(corpus), "--out", str(directory), "--cell", cell, "--epochs", "2", "--quiet", *TINY]
        if cell == "lstm":
            args += ["--layers", "2", "--untied"]
        assert main(args) == 0
        out[cell] = directory
    return out


def test_trained_model_loads_and_predicts(trained, corpus):
    predictor = Predictor.load(trained["simple_rnn"])
    assert len(predictor.next_words("the", k=5)) == 5
    manifest = predictor.manifest
    assert manifest["config"]["cell"] == "simple_rnn"
    assert manifest["corpus"]["files"][0]["sha256"] and manifest["metrics"]["validation_perplexity"] > 1
    # The interpolation with the n-gram was tuned on validation text and recorded.
    assert 0 <= manifest["mix"]["ngram_weight"] <= 0.95 and manifest["serving"]["backend"] in ("rnn", "mix")
    by_order = manifest["mix"]["ngram_weight_by_order"]
    assert sorted(by_order, key=int) == ["1", "2", "3", "4"] and all(0 <= w <= 0.95 for w in by_order.values())
    assert manifest["mix"]["mix_perplexity"] <= manifest["mix"]["single_weight_perplexity"]
    assert type(Predictor.load(trained["simple_rnn"], backend="mix").lm).__name__ == "OrderWeighted"
    assert predictor.backend == manifest["serving"]["backend"]
    assert not (trained["simple_rnn"].parent / "simple_rnn.partial").exists()


@pytest.mark.parametrize("cell", ["simple_rnn", "gru", "lstm"])
def test_numpy_engine_matches_keras(trained, cell):
    import keras

    from wordbot.training import keras_model_from_dir

    predictor = Predictor.load(trained[cell], backend="rnn")  # the network alone, not the served mix
    model = keras_model_from_dir(trained[cell])
    rng = np.random.default_rng(0)
    for _ in range(3):
        ids = [2, *rng.integers(3, len(predictor.tokenizer), size=25).tolist()]
        expected = keras.ops.convert_to_numpy(keras.ops.softmax(model(np.array([ids])), axis=-1))[0]
        got = np.stack([predictor.token_probs(ids[: i + 1]) for i in range(len(ids))])
        assert np.abs(got - expected).max() < 1e-5
        fresh = Predictor.load(trained[cell], backend="rnn").token_probs(ids)  # the one-pass path
        assert np.abs(fresh - expected[-1]).max() < 1e-5


def test_a_trained_model_keeps_its_ngram_when_the_corpus_moves(corpus, tmp_path, monkeypatch):
    """Training leaves the counted n-gram in the cache, so the mix still serves on this
    machine after the corpus file is moved (and the first start counts nothing)."""
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "cache"))  # empty: only training can fill it
    text = tmp_path / "mine.txt"
    text.write_text(corpus.read_text())
    out = tmp_path / "model"
    assert main(["train", str(text), "--out", str(out), "--epochs", "2", "--quiet", "--mix-order", "3", *TINY]) == 0
    assert json.loads((out / "manifest.json").read_text())["serving"]["backend"] == "mix"
    assert len(list((tmp_path / "cache").glob("ngram-*"))) == 1
    text.rename(tmp_path / "moved.txt")
    predictor = Predictor.load(out)
    assert predictor.backend == "mix" and type(predictor.lm).__name__ == "OrderWeighted"
    assert predictor.next_words("the")


def test_a_model_directory_carries_its_training_text_and_works_anywhere(corpus, tmp_path, monkeypatch, caplog):
    """Copied to another machine (no corpus, empty cache), a model still serves its mix:
    its directory holds the text the n-gram is counted from. A tampered copy is noticed."""
    import shutil

    text = tmp_path / "mine.txt"
    text.write_text(corpus.read_text())
    out = tmp_path / "model"
    assert main(["train", str(text), "--out", str(out), "--epochs", "1", "--quiet", "--mix-order", "3", *TINY]) == 0
    text.unlink()
    elsewhere = tmp_path / "elsewhere" / "model"
    shutil.copytree(out, elsewhere)
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "fresh-cache"))
    predictor = Predictor.load(elsewhere)
    assert predictor.backend == "mix" and type(predictor.lm).__name__ == "OrderWeighted"
    from wordbot.corpus import training_messages

    manifest = json.loads((elsewhere / "manifest.json").read_text())
    messages = training_messages(manifest, elsewhere)
    assert len(messages) == manifest["corpus"]["training_text"]["messages"] == manifest["corpus"]["train_messages"]

    (elsewhere / "training-text.json.gz").write_bytes(b"not the text")
    monkeypatch.setenv("WORDBOT_CACHE_DIR", str(tmp_path / "another-cache"))  # nothing counted yet
    with caplog.at_level("WARNING"):
        fallback = Predictor.load(elsewhere)
    assert fallback.backend == "rnn" and "has changed since the model was trained" in caplog.text


def test_config_file_reproduces_and_options_override(corpus, tmp_path):
    config = tmp_path / "train.toml"
    config.write_text(
        f'corpus = ["{corpus}"]\nout = "{tmp_path / "m"}"\nunits = 16\nembedding_dim = 16\n'
        "vocab_size = 200\nseq_len = 8\nepochs = 1\n"
    )
    assert main(["train", "--config", str(config), "--units", "20", "--quiet"]) == 0
    manifest = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert manifest["architecture"]["units"] == 20 and manifest["vocab_size"] == 200


def test_unknown_config_key_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text('corpus = ["x.txt"]\nunitz = 3\n')
    assert main(["train", "--config", str(config)]) == 2
    assert "unknown setting(s) unitz" in capsys.readouterr().err


def test_a_setting_of_the_wrong_type_is_a_clear_error(tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text('corpus = ["x.txt"]\nunits = "big"\ndropout = true\n')
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert "units must be int, not 'big'" in err and "dropout must be float, not True" in err


@pytest.mark.parametrize("kind", ["the corpus itself", "a folder of notes", "the current directory"])
def test_train_refuses_an_output_path_that_is_not_a_model_before_training(corpus, tmp_path, kind, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("keep me")
    out = {"the corpus itself": str(corpus), "a folder of notes": str(notes), "the current directory": "."}[kind]
    started = time.monotonic()
    assert main(["train", str(corpus), "--out", out, "--epochs", "1", "--quiet", *TINY]) == 2
    assert "choose another --out" in capsys.readouterr().err
    assert time.monotonic() - started < 5  # refused up front, not after training
    assert (notes / "todo.txt").read_text() == "keep me" and corpus.read_text().strip()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes"]  # no .partial, nothing moved aside


def test_empty_corpus_gives_a_clear_error(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("\n")
    assert main(["train", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "m")]) == 2
    assert "holds no text" in capsys.readouterr().err
    assert not (tmp_path / "m").exists()


def test_ctrl_c_keeps_progress_and_the_same_command_resumes(corpus, tmp_path):
    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "wordbot", "train", str(corpus), "--out", str(out), "--epochs", "30", "--quiet", *TINY]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "m.partial" / "best.json").exists():
        time.sleep(0.2)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    output = proc.communicate(timeout=60)[0]
    assert proc.returncode == 130, output
    assert "run the same command again to resume" in output
    assert not out.exists() and (tmp_path / "m.partial").exists()

    resumed = subprocess.run([*cmd, "--units", "30"], capture_output=True, text=True, env=env)
    assert resumed.returncode != 0 and "other settings (units: 24 then, 30 now)" in resumed.stderr  # refused
    resumed = subprocess.run([*cmd, "--epochs", "40"], capture_output=True, text=True, env=env, timeout=300)
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    assert "resuming the interrupted run" in resumed.stdout
    # No finished epoch is trained again: the resumed run starts after the last one done.
    before = [int(line.split("epoch ")[1].split(" ")[0]) for line in output.splitlines() if "epoch " in line]
    after = [int(line.split("epoch ")[1].split(" ")[0]) for line in resumed.stdout.splitlines() if "epoch " in line]
    assert before and after and after[0] == before[-1] + 1, (before, after)
    assert Predictor.load(out).next_words("the")
    # The model's figures cover the whole training, the interrupted run's epochs included.
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["epochs_run"] == after[-1] and metrics["best_epoch"] <= metrics["epochs_run"]


def test_an_ensemble_trains_each_network_once_even_across_an_interruption(corpus, tmp_path):
    import keras

    from wordbot.training import TrainConfig, keras_model_from_dir, train

    config = TrainConfig(
        corpus=(str(corpus),), out=str(tmp_path / "m"), units=16, embedding_dim=16, vocab_size=300,
        seq_len=12, batch_size=32, epochs=2, ensemble=2, weights_dtype="float16", mix_order=0,
    )  # fmt: skip
    lines = []

    def interrupt_in_the_second_network(line):
        lines.append(line)
        if line.startswith("network 2/2 · epoch 1"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, log=interrupt_in_the_second_network, progress=False)
    assert any(line.startswith("network 1/2 · epoch 2") for line in lines)
    assert not (tmp_path / "m").exists()

    lines.clear()
    out = train(config, log=lines.append, progress=False)
    assert "network 1/2 · already trained; kept from the interrupted run" in lines
    assert not any(line.startswith("network 1/2 · epoch") for line in lines)
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["architecture"]["members"] == 2 and manifest["weights_dtype"] == "float16"
    assert [n["seed"] for n in manifest["metrics"]["networks"]] == [0, 1]

    # Each network of the ensemble is the Keras model it was trained as, and the
    # ensemble predicts the mean of their distributions.
    predictor = Predictor.load(out, backend="rnn")
    ids = [2, *np.random.default_rng(0).integers(3, len(predictor.tokenizer), size=20).tolist()]
    per_network = [
        keras.ops.convert_to_numpy(keras.ops.softmax(keras_model_from_dir(out, member=i)(np.array([ids])), axis=-1))[0]
        for i in range(2)
    ]
    assert np.abs(per_network[0] - per_network[1]).max() > 1e-3
    got = np.stack([predictor.token_probs(ids[: i + 1]) for i in range(len(ids))])
    assert np.abs(got - np.mean(per_network, axis=0)).max() < 1e-5


def test_a_resumed_run_remembers_how_long_validation_has_stalled(tmp_path):
    """After Ctrl-C, early stopping and the learning-rate schedule count from the best
    epoch of the interrupted run, not from zero."""
    import keras

    from wordbot.training import TrainConfig, build_model, masked_loss
    from wordbot.training.callbacks import make_callbacks as _callbacks

    config = TrainConfig(corpus=("x",), units=8, embedding_dim=8, patience=2, learning_rate=0.01)
    model = build_model(config, 20)
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=masked_loss)
    # The interrupted run: best validation loss 1.0 at epoch 4, then epoch 5 was worse.
    (tmp_path / "progress.json").write_text(json.dumps({"epochs_done": 5, "best": 1.0, "best_epoch": 4}))
    callbacks = _callbacks(keras, config, tmp_path, True, lambda line: None, steps_per_epoch=10)
    plateau, stopping = (
        c for c in callbacks if isinstance(c, keras.callbacks.ReduceLROnPlateau | keras.callbacks.EarlyStopping)
    )
    for c in (plateau, stopping):
        c.set_model(model)
        c.on_train_begin()
    # Epoch 6 (index 5) is worse than 1.0 again, though better than anything since the resume.
    logs = {"val_loss": 1.5, "loss": 1.0, "learning_rate": 0.01}
    plateau.on_epoch_end(5, dict(logs))
    stopping.on_epoch_end(5, dict(logs))
    assert float(keras.ops.convert_to_numpy(model.optimizer.learning_rate)) == pytest.approx(0.005)
    assert model.stop_training  # two stalled epochs: patience 2 is used up

    # A fresh run (no progress.json) starts counting at zero.
    (tmp_path / "progress.json").unlink()
    fresh = build_model(config, 20)
    fresh.compile(optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate), loss=masked_loss)
    stopping = next(
        c for c in _callbacks(keras, config, tmp_path, True, print, 10) if isinstance(c, keras.callbacks.EarlyStopping)
    )
    stopping.set_model(fresh)
    stopping.on_train_begin()
    stopping.on_epoch_end(0, dict(logs))
    assert not fresh.stop_training


def test_cosine_schedule_decays_the_rate_to_zero_over_the_epochs(corpus, tmp_path, capsys):
    out = tmp_path / "m"
    args = ["train", str(corpus), "--out", str(out), "--epochs", "3", "--patience", "5", "--quiet", *TINY]
    assert main([*args, "--lr-schedule", "cosine", "--learning-rate", "0.004"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if "learning rate " in line]
    rates = [float(line.split("learning rate ")[1].split(" ")[0]) for line in lines]
    # Half a cosine from 0.004 to 0 over three epochs, read after each epoch.
    assert rates == pytest.approx([0.003, 0.001, 0.0], abs=1e-6)
    assert json.loads((out / "manifest.json").read_text())["config"]["lr_schedule"] == "cosine"


@pytest.mark.parametrize("tied", [True, False])
def test_a_bfloat16_output_layer_trains_float32_weights_that_serve_alike(corpus, tmp_path, tied):
    """bfloat16 only speeds up training: the weights, the logits handed to the loss and
    the saved model stay float32, and the NumPy engine matches the Keras model."""
    import keras

    from wordbot.training import TrainConfig, build_model, keras_model_from_dir

    config = TrainConfig(corpus=("x",), units=8, embedding_dim=8, tie_embeddings=tied, output_precision="bfloat16")
    model = build_model(config, 50)
    logits = model(np.array([[2, 5, 7]]))
    assert keras.backend.standardize_dtype(logits.dtype) in ("float32", "bfloat16")
    assert all(keras.backend.standardize_dtype(w.dtype) == "float32" for w in model.weights)

    out = tmp_path / "m"
    args = ["train", str(corpus), "--out", str(out), "--epochs", "2", "--quiet", *TINY]
    assert main([*args, "--output-precision", "bfloat16", *([] if tied else ["--untied"])]) == 0
    predictor = Predictor.load(out, backend="rnn")
    keras_model = keras_model_from_dir(out)
    ids = [2, 10, 11, 12, 40]
    expected = keras.ops.convert_to_numpy(keras.ops.softmax(keras_model(np.array([ids])), axis=-1))[0]
    got = np.stack([predictor.token_probs(ids[: i + 1]) for i in range(len(ids))])
    assert np.abs(got - expected).max() < 1e-5  # the served model is an ordinary float32 one


def test_bad_schedule_or_precision_is_a_clear_error(corpus, tmp_path, capsys):
    config = tmp_path / "train.toml"
    config.write_text(f'corpus = ["{corpus}"]\nlr_schedule = "linear"\noutput_precision = "int8"\n')
    assert main(["train", "--config", str(config), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "lr_schedule must be one of plateau, cosine" in err and "output_precision must be one of" in err
    assert not (tmp_path / "m").exists() and not (tmp_path / "m.partial").exists()


def test_resuming_names_what_changed_even_when_only_the_corpus_text_did(corpus, tmp_path):
    from wordbot.errors import ConfigError
    from wordbot.training import TrainConfig, train

    mine = tmp_path / "mine.txt"
    mine.write_bytes(corpus.read_bytes())
    config = TrainConfig(
        corpus=(str(mine),), out=str(tmp_path / "m"), units=16, embedding_dim=16, vocab_size=300,
        seq_len=12, batch_size=32, epochs=3, mix_order=0,
    )  # fmt: skip

    def interrupt_after_the_first_epoch(line):
        if line.startswith("epoch 1 "):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, log=interrupt_after_the_first_epoch, progress=False)
    assert (tmp_path / "m.partial" / "best.npz").exists()
    with pytest.raises(ConfigError, match=r"other settings \(dropout: 0.3 then, 0.1 now; units: 16 then, 24 now\)"):
        train(dataclasses.replace(config, units=24, dropout=0.1), log=lambda line: None, progress=False)
    mine.write_text(mine.read_text() + "one more message for the corpus\n")  # same name, other text
    with pytest.raises(ConfigError, match=r"\(the corpus text has changed since\)"):
        train(config, log=lambda line: None, progress=False)


def test_a_diverging_run_is_a_clear_error_and_leaves_nothing_to_resume(corpus, tmp_path, capsys):
    out = tmp_path / "m"
    args = ["train", str(corpus), "--out", str(out), "--epochs", "3", "--quiet", *TINY]
    assert main([*args, "--learning-rate", "1e30"]) == 2
    err = capsys.readouterr().err
    assert "training diverged" in err and "lower --learning-rate" in err and err.count("\n") == 1
    assert not out.exists() and not (tmp_path / "m.partial").exists()


def test_the_progress_bar_ends_before_each_epoch_line(corpus, tmp_path, capsys):
    """Keras finishes an epoch's bar after every callback it was given: the epoch line
    must not land in the middle of it."""
    from wordbot.training import TrainConfig, train

    config = TrainConfig(
        corpus=(str(corpus),), out=str(tmp_path / "m"), units=16, embedding_dim=16, vocab_size=300,
        seq_len=12, batch_size=32, epochs=2, mix_order=0,
    )  # fmt: skip
    train(config, progress=True)
    out = capsys.readouterr().out
    for epoch in (1, 2):
        at = out.index(f"epoch {epoch} · train perplexity")
        assert out[at - 1] == "\n" and "val_loss" in out[:at].rsplit("\n", 2)[-2], out[max(0, at - 200) : at]


def test_ctrl_c_while_an_epoch_is_being_saved_waits_until_its_state_is_whole(corpus, tmp_path, monkeypatch):
    """Ctrl-C right after Keras backed up an epoch, before wordbot's own record of it
    (progress.json) and its report line: the resumed run would skip that epoch's report
    and count one epoch fewer. The interrupt now lands once the epoch's state is whole."""
    from wordbot.training import TrainConfig, callbacks, train

    write_backup = callbacks.write_backup

    def save_then_interrupt(model, backup_dir, metadata):
        write_backup(model, backup_dir, metadata)
        if metadata["epoch"] == 2:  # the end-of-epoch backup of the second epoch
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(callbacks, "write_backup", save_then_interrupt)
    config = TrainConfig(
        corpus=(str(corpus),), out=str(tmp_path / "m"), units=16, embedding_dim=16, vocab_size=300,
        seq_len=12, batch_size=512, epochs=4, mix_order=0,
    )  # fmt: skip
    lines = []
    with pytest.raises(KeyboardInterrupt):
        train(config, log=lines.append, progress=False)
    assert [line.split(" · ")[0] for line in lines if line.startswith("epoch ")] == ["epoch 1", "epoch 2"]
    progress = json.loads((tmp_path / "m.partial" / "progress.json").read_text())
    assert progress["epochs_done"] == 2
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works as before


@pytest.mark.parametrize(
    ("setting", "key"),
    [
        ("corpus = 5", "corpus"),
        ("out = 5", "out"),
        ('corpus = [["a.txt", "b.txt"]]', "corpus"),
        ("units = [[1, 2], [3]]", "units"),
        ('dropout = "0.3"', "dropout"),
        ("seed = 1.5", "seed"),
        ("cell = 3", "cell"),
        ("train = 5", "[train]"),
    ],
)
def test_a_config_of_the_wrong_shape_is_one_line_naming_the_key(tmp_path, capsys, setting, key):
    config = tmp_path / "train.toml"
    config.write_text(("" if setting.startswith(("corpus", "train")) else 'corpus = ["x.txt"]\n') + setting + "\n")
    assert main(["train", "--config", str(config)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("wordbot: error: ") and err.count("\n") == 1 and key in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["train.toml"]


def test_a_read_only_out_is_refused_before_tensorflow_loads(corpus, tmp_path):
    from .unprivileged import run_unprivileged, skip_reason

    if skip_reason():
        pytest.skip(skip_reason())
    locked = tmp_path / "locked"
    locked.mkdir()
    os.chmod(locked, 0o555)
    code = (
        "import sys; from wordbot.cli import main; rc = main(sys.argv[1:]); "
        "print('tensorflow imported' if 'tensorflow' in sys.modules else 'no tensorflow'); sys.exit(rc)"
    )
    try:
        for out in (locked / "m", locked / "deeper" / "m"):
            args = [sys.executable, "-c", code, "train", str(corpus), "--out", str(out), "--quiet", *TINY]
            proc = run_unprivileged(args, env={**os.environ, "PYTHONPATH": str(ROOT)})
            assert proc.returncode == 2, proc.stderr
            assert proc.stderr.startswith("wordbot: error: cannot write in ") and proc.stderr.count("\n") == 1
            assert "choose another --out" in proc.stderr and proc.stdout.strip() == "no tensorflow"
        assert list(locked.iterdir()) == []
    finally:
        os.chmod(locked, 0o755)


@pytest.mark.parametrize("kind", ["/dev/zero", "a FIFO", "a file over the bound"])
def test_a_corpus_that_is_not_a_bounded_regular_file_is_refused(tmp_path, capsys, monkeypatch, kind):
    if kind == "a FIFO":
        path = tmp_path / "fifo"
        os.mkfifo(path)  # no writer: reading would wait forever
    elif kind == "a file over the bound":
        monkeypatch.setattr("wordbot.corpus.MAX_CORPUS_BYTES", 1000)
        path = tmp_path / "big.txt"
        path.write_text("some words\n" * 200)
    else:
        path = "/dev/zero"
    started = time.monotonic()
    assert main(["train", str(path), "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    expected = "at most 1,000 are read" if kind == "a file over the bound" else "is not a regular file"
    assert expected in err and err.count("\n") == 1 and time.monotonic() - started < 5
    assert not (tmp_path / "m.partial").exists()


def test_two_runs_of_the_same_command_do_not_share_the_work_directory(corpus, tmp_path, capsys):
    out = tmp_path / "m"
    args = ["train", str(corpus), "--out", str(out), "--epochs", "1000", "--patience", "1000", "--quiet", *TINY]
    first = subprocess.Popen(
        [sys.executable, "-m", "wordbot", *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )

    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (tmp_path / "m.partial" / "config.json").exists():
            time.sleep(0.2)
        assert main(args) == 2
        err = capsys.readouterr().err
        assert f"m.partial is in use by another wordbot train (process {first.pid})" in err and err.count("\n") == 1
    finally:
        first.kill()
        first.wait()
    assert not out.exists()


def test_a_full_disk_while_training_is_one_line_and_the_rerun_trains(corpus, tmp_path):
    """A file-size limit stands in for a full disk: writes fail with EFBIG as they
    would with ENOSPC. h5py crashed the process there (rc 139, a screen of noise)."""
    import resource

    out = tmp_path / "m"
    cmd = [sys.executable, "-m", "wordbot", "train", str(corpus), "--out", str(out), "--epochs", "2", "--quiet", *TINY]

    def small_files():
        resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))  # the backup needs more

    full = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=small_files, timeout=300)
    assert full.returncode in (1, 2), full.stderr[-2000:]
    assert full.stderr.startswith("wordbot: error: ") and full.stderr.count("\n") == 1, full.stderr[-2000:]
    assert "File too large" in full.stderr and not out.exists()
    rerun = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert Predictor.load(out).next_words("the")


def test_a_damaged_backup_is_refused_not_resumed_from(corpus, tmp_path, capsys):
    from wordbot.training import TrainConfig, train

    config = TrainConfig(
        corpus=(str(corpus),), out=str(tmp_path / "m"), units=16, embedding_dim=16, vocab_size=300,
        seq_len=12, batch_size=32, epochs=3, mix_order=0,
    )  # fmt: skip

    def interrupt_after_the_first_epoch(line):
        if line.startswith("epoch 1 "):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, log=interrupt_after_the_first_epoch, progress=False)
    state = tmp_path / "m.partial" / "backup" / "state.npz"
    state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])  # as a full disk once left it
    args = ["train", str(corpus), "--out", str(tmp_path / "m"), "--epochs", "3", "--mix-order", "0", "--quiet"]
    args += ["--units", "16", "--embedding-dim", "16", "--vocab-size", "300", "--seq-len", "12", "--batch-size", "32"]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "training backup" in err and "is damaged" in err and "to start the training afresh" in err
    assert err.count("\n") == 1 and not (tmp_path / "m").exists()


def test_importing_the_training_package_loads_no_tensorflow():
    """Only fitting and exporting import TensorFlow: `wordbot train --help`, the config
    checks and the refusals above stay fast."""
    code = (
        "import sys, wordbot.training, wordbot.training.config, wordbot.training.run; "
        "print('tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.split() == ["False", "False"], proc.stderr


# --- fine-tuning (`wordbot train --from`), the training log and its curves -----------------


@pytest.fixture(scope="module")
def new_text(tmp_path_factory):
    """Text the tiny model was not trained on, with words it has never seen."""
    lines = TRAIN_FILE.read_text(encoding="utf-8").splitlines()[600:900]
    path = tmp_path_factory.mktemp("new") / "new.txt"
    path.write_text("\n".join([*lines, "the zorblax frobnicator hums at the quuxish moon"]) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def fine_tuned(trained, new_text, tmp_path_factory):
    out = tmp_path_factory.mktemp("tuned") / "tuned"
    args = ["train", str(new_text), "--from", str(trained["simple_rnn"]), "--out", str(out), "--epochs", "2"]
    assert main([*args, "--patience", "5", "--quiet"]) == 0
    return out


def _log_rows(directory) -> list[dict]:
    import csv

    with open(directory / "training-log.csv", newline="") as f:
        return list(csv.DictReader(f))


def _numpy_validation_loss(model_dir, config) -> float:
    """The masked cross-entropy of `model_dir`'s network on `config`'s validation windows,
    computed by the NumPy engine and averaged over batches as Keras does (by batch size)."""
    from wordbot.artifacts import load_model
    from wordbot.engine import RNNLanguageModel
    from wordbot.text import BOS_ID
    from wordbot.training.data import prepare

    manifest, tokenizer, weights = load_model(model_dir)
    x, y = prepare(config, tokenizer).val
    lm = RNNLanguageModel(manifest, tokenizer, weights)
    batch_losses, sizes = [], []
    for start in range(0, len(x), config.batch_size):
        losses = []
        batch = slice(start, start + config.batch_size)
        for window, targets in zip(x[batch], y[batch], strict=True):
            probs = lm.sequence_probs(window.tolist())
            losses += [-np.log(probs[t, target]) for t, target in enumerate(targets) if target != BOS_ID]
        batch_losses.append(np.mean(losses))
        sizes.append(len(x[batch]))
    return float(np.average(batch_losses, weights=sizes))


def test_fine_tuning_keeps_the_vocabulary_and_starts_from_the_model(trained, new_text, fine_tuned):
    from wordbot.artifacts import weights_sha256
    from wordbot.training import TrainConfig

    base = trained["simple_rnn"]
    assert (fine_tuned / "tokenizer.json").read_text() == (base / "tokenizer.json").read_text()
    manifest = json.loads((fine_tuned / "manifest.json").read_text())
    assert manifest["from"]["sha256"] == weights_sha256(base)
    assert manifest["config"]["base"] == str(base) and manifest["config"]["learning_rate"] == 5e-4
    assert manifest["architecture"] == json.loads((base / "manifest.json").read_text())["architecture"]
    # Before the first update, the fine-tuning network's validation loss on the new text
    # (row 0 of its log, measured by Keras) is the base model's, measured here by NumPy.
    config = TrainConfig(corpus=(str(new_text),), seq_len=12, batch_size=32)
    expected = np.exp(_numpy_validation_loss(base, config))
    start = _log_rows(fine_tuned)[0]
    assert start["epoch"] == "0" and abs(float(start["validation_perplexity"]) - expected) < 1e-3 * expected
    # ...and the new words reach the user through the open vocabulary, not the network's.
    assert "zorblax" not in Predictor.load(fine_tuned, backend="rnn").tokenizer.index
    assert "zorblax" in Predictor.load(fine_tuned, backend="mix").tokenizer.index
    info = subprocess.run(
        [sys.executable, "-m", "wordbot", "info", str(fine_tuned)], capture_output=True, text=True, check=True
    ).stdout
    assert f"from:      {base} (sha256 {manifest['from']['sha256'][:12]}" in info


def test_each_epoch_has_a_row_in_the_training_log(fine_tuned):
    rows = _log_rows(fine_tuned)
    assert [r["epoch"] for r in rows] == ["0", "1", "2"]
    for row in rows[1:]:
        assert float(row["loss"]) > 0 and float(row["validation_perplexity"]) > 1
        assert float(row["learning_rate"]) == 5e-4 and int(row["tokens_per_second"]) > 0 and float(row["seconds"]) > 0


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (["--units", "30"], "--units 30 contradicts the model it starts from"),
        (["--cell", "gru"], "--cell gru contradicts the model it starts from"),
        (["--untied"], "--untied contradicts the model it starts from"),
    ],
)
def test_fine_tuning_refuses_options_that_contradict_the_model(trained, new_text, tmp_path, option, message):
    cmd = [sys.executable, "-m", "wordbot", "train", str(new_text), "--from", str(trained["simple_rnn"])]
    result = subprocess.run([*cmd, "--out", str(tmp_path / "m"), *option], capture_output=True, text=True)
    assert result.returncode == 2 and message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and not (tmp_path / "m").exists()


def test_the_training_log_continues_across_a_resume(corpus, tmp_path):
    from wordbot.training import TrainConfig, train

    config = TrainConfig(
        corpus=(str(corpus),), out=str(tmp_path / "m"), units=16, embedding_dim=16, vocab_size=300,
        seq_len=12, batch_size=32, epochs=4, patience=10, mix_order=0,
    )  # fmt: skip
    lines = []

    def interrupt_after_the_second_epoch(line):
        lines.append(line)
        if line.startswith("  sample:") and len([x for x in lines if x.startswith("  sample:")]) == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(config, log=interrupt_after_the_second_epoch, progress=False)
    assert [r["epoch"] for r in _log_rows(tmp_path / "m.partial")] == ["1", "2"]
    lines.clear()
    out = train(config, log=lines.append, progress=False)
    assert "resuming the interrupted run" in lines[0]
    assert [r["epoch"] for r in _log_rows(out)] == ["1", "2", "3", "4"]
    # A sample of the same prompt follows each epoch's report.
    samples = [line for line in lines if line.startswith("  sample: ")]
    assert len(samples) == 2 and len({s.split(" ")[3] for s in samples}) == 1


def test_info_plot_draws_the_curves_to_a_png(fine_tuned, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "curves.png"
    assert main(["info", str(fine_tuned), "--plot", str(png)]) == 0
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5_000
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert width >= 400 and height >= 200


def test_info_plot_without_matplotlib_says_how_to_install_it(fine_tuned, tmp_path):
    png = tmp_path / "curves.png"
    code = (
        "import sys; sys.modules['matplotlib'] = None\n"
        "from wordbot.cli import main\n"
        f"sys.exit(main(['info', {str(fine_tuned)!r}, '--plot', {str(png)!r}]))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0 and not png.exists()
    assert result.stderr.strip().splitlines() == [
        "wordbot: error: drawing curves needs matplotlib, which is not installed: pip install 'wordbot[plot]'"
    ]


# --- fine-tuning on a Discord server's stored messages (`train --discord-server`) -----------


def _bot_store(path, ours: list[str]) -> list:
    """The bot's SQLite store with three servers: 7 (`ours`), 8 (300 messages of its own), 9 (five)."""
    from wordbot.bot.store import Message, SQLiteStore

    store = SQLiteStore(path, flush_interval=None)
    messages = {
        7: [Message(1000 + i, 7, 1, 50 + i % 3, 1e9 + i, text) for i, text in enumerate(ours)],
        8: [Message(5000 + i, 8, 2, 60, 1e9 + i, f"the quuxwidget of server eight {i}") for i in range(300)],
        9: [Message(9000 + i, 9, 3, 70, 1e9 + i, "hello there") for i in range(5)],
    }
    for message in [m for server in messages.values() for m in server]:
        store.add_message(message)
    store.close()
    return messages[7]


def test_discord_server_fine_tunes_on_that_servers_stored_messages_only(trained, new_text, tmp_path):
    from wordbot.bot.server_models import digest, read_trained

    lines = new_text.read_text(encoding="utf-8").splitlines()
    ours = _bot_store(tmp_path / "bot.sqlite3", [*lines[:249], lines[-1]])  # the last: the zorblax line
    out = tmp_path / "server7"
    args = ["train", "--from", str(trained["simple_rnn"]), "--discord-server", "7", "--out", str(out)]
    assert main([*args, "--store", f"sqlite:///{tmp_path / 'bot.sqlite3'}", "--epochs", "1", "--quiet"]) == 0
    section = json.loads((out / "manifest.json").read_text())["discord_server"]
    assert section["guild"] == "7" and section["messages"] == 250 and section["last_message_id"] == "1249"
    assert section["fingerprint"].startswith("sha256:")
    # Exactly server 7's messages, each with its text's digest, so the bot can tell an edit.
    assert read_trained(out, 7) == {m.id: digest(m.text) for m in ours}
    served = Predictor.load(out, backend="mix").tokenizer.index
    assert "zorblax" in served and "quuxwidget" not in served  # server 8's words never reach it


def test_discord_server_refuses_too_few_messages_and_a_missing_from(trained, tmp_path, capsys):
    _bot_store(tmp_path / "bot.sqlite3", ["one message"])
    store = ["--store", f"sqlite:///{tmp_path / 'bot.sqlite3'}", "--out", str(tmp_path / "m")]
    assert main(["train", "--from", str(trained["simple_rnn"]), "--discord-server", "9", *store]) == 2
    err = capsys.readouterr().err
    assert "server 9 has 5 stored message(s)" in err and "needs at least 200" in err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "m").exists()
    assert main(["train", "--discord-server", "7", *store]) == 2
    assert "give --from default" in capsys.readouterr().err


def test_discord_server_says_when_there_is_no_store_and_makes_none(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WORDBOT_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.delenv("WORDBOT_STORE", raising=False)
    base = ["train", "--from", str(trained["simple_rnn"]), "--discord-server", "7", "--out", str(tmp_path / "m")]
    assert main(base) == 2
    assert f"no SQLite file at {tmp_path / 'state' / 'wordbot.sqlite3'}" in capsys.readouterr().err
    assert main([*base, "--store", f"sqlite:///{tmp_path / 'elsewhere.sqlite3'}"]) == 2
    assert "no SQLite file at" in capsys.readouterr().err
    assert not (tmp_path / "state").exists() and not (tmp_path / "elsewhere.sqlite3").exists()


def test_max_minutes_stops_in_the_middle_of_an_epoch_and_still_writes_the_model(corpus, tmp_path, capsys):
    out = tmp_path / "m"
    args = ["train", str(corpus), "--out", str(out), "--epochs", "5", "--quiet", *TINY, "--batch-size", "1"]
    assert main([*args, "--max-minutes", "0.01"]) == 0  # 0.6 s: well inside the first of 5 long epochs
    lines = capsys.readouterr().out.splitlines()
    stopped = [line for line in lines if "time budget of 0.01 minutes reached in epoch 1 after batch " in line]
    assert len(stopped) == 1, lines
    batch, steps = (int(n) for n in stopped[0].split("after batch ")[1].split(";")[0].split(" of "))
    assert batch < steps  # mid-epoch, not at its end
    # The cut epoch ended as any epoch does: validated, its weights kept, reported; then the model.
    assert any(line.startswith("epoch 1 · ") and "validation perplexity" in line for line in lines)
    metrics = json.loads((out / "manifest.json").read_text())["metrics"]
    assert metrics["epochs_run"] == 1 and metrics["best_epoch"] == 1 and "validation_perplexity" in metrics
    assert Predictor.load(out).next_words("the") and not (tmp_path / "m.partial").exists()
