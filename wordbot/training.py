"""Training: the Keras model, the tf.data pipeline, fit with the callbacks that make
a recurrent network train (clipping, dropout, early stopping, a falling learning
rate, backup and restore), and export to the NumPy model directory.

The only module that imports TensorFlow, and only inside functions, so the bot and
the REPL never pay for it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import shutil
import signal
import sys
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wordbot.artifacts import (
    CELLS,
    MAX_NGRAM_ORDER,
    WEIGHT_DTYPES,
    check_output_dir,
    is_model_dir,
    load_model,
    member_prefix,
    member_weights,
    members,
    save_model,
)
from wordbot.corpus import (
    FORMATS,
    TRAINING_TEXT,
    pack_messages,
    read_corpus,
    sha256_of,
    split_messages,
    token_stream,
    windows,
)
from wordbot.errors import ConfigError, CorpusError, WordbotError
from wordbot.predictor import mix_weights_text
from wordbot.text import BOS_ID, UNK_ID, Tokenizer

LR_SCHEDULES = ("plateau", "cosine")
OUTPUT_PRECISIONS = ("float32", "bfloat16")

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


@dataclass(frozen=True)
class TrainConfig:
    corpus: tuple[str, ...] = ()  # training text files; validation is carved out of them
    format: str = "lines"  # "lines": one message per line; "paragraphs": blank-line separated
    out: str = "model"  # the model directory to write
    cell: str = "simple_rnn"  # simple_rnn, gru or lstm
    layers: int = 1  # stacked recurrent layers
    units: int = 512  # hidden units per recurrent layer
    embedding_dim: int = 256  # word vector size (and output projection size when tied)
    tie_embeddings: bool = True  # output layer reuses the input embedding (fewer weights, better on small text)
    vocab_size: int = 10_000  # cap, special tokens included
    min_count: int = 2  # rarer tokens become <unk>
    seq_len: int = 64  # truncated backpropagation through time: steps per window
    batch_size: int = 64
    epochs: int = 20  # upper bound; early stopping usually ends sooner
    dropout: float = 0.3  # after the embedding and after every recurrent layer
    clipnorm: float = 1.0  # gradient clipping by global norm keeps RNN updates sane
    learning_rate: float = 2e-3
    lr_schedule: str = "plateau"  # "plateau": times lr_decay when validation stalls; "cosine": to 0 over `epochs`
    lr_decay: float = 0.5  # multiply the learning rate by this when validation stalls (plateau schedule)
    patience: int = 2  # epochs without validation improvement before stopping
    validation_fraction: float = 0.05  # messages held out for validation, chosen by seed
    seed: int = 0  # weight initialisation and shuffling
    split_seed: int | None = None  # which messages are held out (default: seed); fix it to compare seeds fairly
    max_minutes: float = 0  # stop after this many minutes of training (0: no limit)
    ensemble: int = 1  # networks trained alike from seeds seed, seed+1, ... and averaged when predicting
    weights_dtype: str = "float32"  # how weights.npz stores them: float32, or float16 (half the size)
    output_precision: str = "float32"  # "bfloat16": output layer computed in bfloat16 (fast with AMX/AVX512-BF16)
    mix_order: int = 4  # interpolate with a Kneser-Ney n-gram of this order when validation says it helps (0: never)
    notes: str = field(default="", compare=False)  # free text kept in the manifest

    @property
    def split(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def validate(self) -> TrainConfig:
        problems = self._type_problems()
        if problems:  # the checks below compare numbers
            raise ConfigError("bad training configuration: " + "; ".join(problems))
        if not self.corpus:
            problems.append("no corpus files")
        if self.cell not in CELLS:
            problems.append(f"cell must be one of {', '.join(CELLS)}, not {self.cell!r}")
        if self.format not in FORMATS:
            problems.append(f"format must be one of {', '.join(FORMATS)}")
        for name in ("layers", "units", "embedding_dim", "seq_len", "batch_size", "epochs", "min_count"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be at least 1")
        if self.vocab_size < 5:
            problems.append("vocab_size must be at least 5")
        if not 0 <= self.dropout < 1:
            problems.append("dropout must be in [0, 1)")
        if not 0 <= self.validation_fraction < 0.5:
            problems.append("validation_fraction must be in [0, 0.5)")
        if self.ensemble < 1:
            problems.append("ensemble must be at least 1")
        if self.patience < 0:
            problems.append("patience must be 0 or more")
        if not 0 <= self.max_minutes < math.inf:
            problems.append("max_minutes must be 0 (no limit) or a positive number of minutes")
        if not 0 < self.lr_decay < 1:
            problems.append("lr_decay must be in (0, 1)")
        if self.mix_order != 0 and not 1 <= self.mix_order <= MAX_NGRAM_ORDER:
            problems.append(f"mix_order must be 0 (no n-gram) or 1 to {MAX_NGRAM_ORDER}")
        for name in ("seed", "split_seed"):
            value = getattr(self, name)
            if value is not None and not 0 <= value + (self.ensemble - 1 if name == "seed" else 0) < 2**32:
                problems.append(f"{name} must be in [0, 2**32)")
        if self.lr_schedule not in LR_SCHEDULES:
            problems.append(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}")
        if self.output_precision not in OUTPUT_PRECISIONS:
            problems.append(f"output_precision must be one of {', '.join(OUTPUT_PRECISIONS)}")
        if self.weights_dtype not in WEIGHT_DTYPES:
            problems.append(f"weights_dtype must be one of {', '.join(WEIGHT_DTYPES)}")
        for name in ("learning_rate", "clipnorm"):
            if not 0 < getattr(self, name) < math.inf:
                problems.append(f"{name} must be a positive number")
        if problems:
            raise ConfigError("bad training configuration: " + "; ".join(problems))
        return self

    def _type_problems(self) -> list[str]:
        """Settings of the wrong type (a TOML file can hold `units = "big"`)."""
        kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "int | None": (int, type(None))}
        problems = []
        for f in dataclasses.fields(self):
            allowed, value = kinds.get(str(f.type)), getattr(self, f.name)
            wrong = allowed is not None and (
                not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)
            )
            if wrong:
                problems.append(f"{f.name} must be {str(f.type).replace(' | None', '')}, not {value!r}")
        if not all(isinstance(p, str) for p in self.corpus):
            problems.append("corpus must be a list of file paths")
        return problems

    @property
    def projection(self) -> int | None:
        """A linear layer from the hidden state to embedding size, needed to tie when they differ."""
        return self.embedding_dim if self.tie_embeddings and self.units != self.embedding_dim else None

    def architecture(self) -> dict:
        return {
            "cell": self.cell,
            "layers": self.layers,
            "units": self.units,
            "embedding_dim": self.embedding_dim,
            "projection": self.projection,
            "tied": self.tie_embeddings,
        } | ({"members": self.ensemble} if self.ensemble > 1 else {})

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> TrainConfig:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
        data = data.get("train", data)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        # Relative paths in a config file are relative to the file.
        base = Path(path).parent
        if "corpus" in data:
            corpus = [data["corpus"]] if isinstance(data["corpus"], str) else data["corpus"]
            data["corpus"] = tuple(str(p) if Path(p).is_absolute() else os.path.relpath(base / p) for p in corpus)
        if isinstance(data.get("out"), str) and not Path(data["out"]).is_absolute():
            data["out"] = os.path.relpath(base / data["out"])
        data.update({k: v for k, v in overrides.items() if v is not None})
        if "corpus" in data:
            data["corpus"] = tuple(data["corpus"])
        try:
            return cls(**data)
        except TypeError as e:
            raise ConfigError(f"{path}: {e}") from None


def _tf():
    """Import TensorFlow and Keras quietly, only when training."""
    try:
        if "tensorflow" not in sys.modules and os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2") != "0":
            _import_tf_without_banner()
        import keras
        import tensorflow as tf
    except ModuleNotFoundError as e:
        raise WordbotError(
            f"training needs TensorFlow, and {e.name} is not installed: pip install 'wordbot[train]' "
            "(in a checkout: pip install -e '.[train]'); predicting never needs it"
        ) from None
    return tf, keras


def _import_tf_without_banner() -> None:
    """TensorFlow's C++ libraries print four lines on loading (absl's "before
    InitializeLog" warning and oneDNN's notice, twice) that TF_CPP_MIN_LOG_LEVEL no
    longer silences; they go to file descriptor 2 directly, so that is muted for the
    import alone. Errors still surface: an import failure is a Python exception.
    TF_CPP_MIN_LOG_LEVEL=0 keeps every line."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.stderr.flush()
    saved, null = os.dup(2), os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(null, 2)
        import keras  # noqa: F401
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


def build_model(config: TrainConfig, vocab_size: int):
    """Embedding -> recurrent layer(s) -> (projection) -> logits over the vocabulary."""
    _, keras = _tf()

    class TiedEmbedding(keras.layers.Layer):
        """Word vectors that, when tied, also map vectors back to vocabulary logits."""

        def __init__(self, input_dim, output_dim, tied, precision="float32", **kwargs):
            super().__init__(**kwargs)
            self.input_dim, self.output_dim, self.tied = input_dim, output_dim, tied
            self.precision = precision

        def build(self, input_shape=None):
            init = keras.initializers.RandomUniform(-0.05, 0.05)  # Keras' Embedding default
            self.embeddings = self.add_weight(
                shape=(self.input_dim, self.output_dim), initializer=init, name="embeddings"
            )
            if self.tied:
                self.output_bias = self.add_weight(shape=(self.input_dim,), initializer="zeros", name="output_bias")

        def call(self, inputs, reverse=False):
            if reverse:
                kernel = self.embeddings
                if self.precision != "float32":
                    # The costliest product of training (hidden x vocabulary), in reduced
                    # precision; the weights, the bias and the loss stay float32.
                    inputs, kernel = keras.ops.cast(inputs, self.precision), keras.ops.cast(kernel, self.precision)
                logits = keras.ops.matmul(inputs, keras.ops.transpose(kernel))
                return keras.ops.cast(logits, "float32") + self.output_bias
            return keras.ops.take(self.embeddings, keras.ops.cast(inputs, "int32"), axis=0)

        def compute_output_spec(self, inputs, reverse=False):
            if reverse:
                return keras.KerasTensor((*inputs.shape[:-1], self.input_dim), dtype=self.compute_dtype)
            return keras.KerasTensor((*inputs.shape, self.output_dim), dtype=self.compute_dtype)

    recurrent = {"simple_rnn": keras.layers.SimpleRNN, "gru": keras.layers.GRU, "lstm": keras.layers.LSTM}
    inputs = keras.Input(shape=(None,), dtype="int32", name="tokens")
    embedding = TiedEmbedding(
        vocab_size, config.embedding_dim, config.tie_embeddings, config.output_precision, name="embedding"
    )
    x = embedding(inputs)
    x = keras.layers.Dropout(config.dropout, name="embedding_dropout")(x)
    for i in range(config.layers):
        x = recurrent[config.cell](config.units, return_sequences=True, name=f"rnn{i}")(x)
        x = keras.layers.Dropout(config.dropout, name=f"rnn{i}_dropout")(x)
    if config.projection:
        x = keras.layers.Dense(config.projection, name="projection")(x)
    if config.tie_embeddings:
        logits = embedding(x, reverse=True)
    else:
        logits = keras.layers.Dense(vocab_size, name="output", dtype=_dense_policy(keras, config))(x)
    return keras.Model(inputs, logits, name=f"wordbot_{config.cell}")


def _dense_policy(keras, config: TrainConfig):
    """The untied output layer's dtype policy: float32, or bfloat16 compute on float32 weights."""
    if config.output_precision == "float32":
        return None
    return keras.DTypePolicy(f"mixed_{config.output_precision}")


def masked_loss(y_true, logits):
    """Cross-entropy per target token, not counting the trivial <s> that follows </s>."""
    _, keras = _tf()
    logits = keras.ops.cast(logits, "float32")  # a bfloat16 output layer's logits, before the softmax
    ce = keras.losses.sparse_categorical_crossentropy(y_true, logits, from_logits=True)
    mask = keras.ops.cast(keras.ops.not_equal(y_true, BOS_ID), ce.dtype)
    return keras.ops.sum(ce * mask) / keras.ops.maximum(keras.ops.sum(mask), 1.0)


def export_weights(model, config: TrainConfig) -> dict[str, np.ndarray]:
    """Keras weights -> the named arrays of weights.npz."""
    embedding = model.get_layer("embedding")
    weights = {"embedding": embedding.embeddings.numpy()}
    if config.tie_embeddings:
        weights["output/bias"] = embedding.output_bias.numpy()
    else:
        out = model.get_layer("output")
        weights["output/kernel"], weights["output/bias"] = (w.numpy() for w in out.weights)
    for i in range(config.layers):
        kernel, recurrent, bias = (w.numpy() for w in model.get_layer(f"rnn{i}").weights)
        weights[f"rnn{i}/kernel"], weights[f"rnn{i}/recurrent_kernel"], weights[f"rnn{i}/bias"] = (
            kernel,
            recurrent,
            bias,
        )
    if config.projection:
        weights["projection/kernel"], weights["projection/bias"] = (
            w.numpy() for w in model.get_layer("projection").weights
        )
    return weights


def import_weights(model, config: TrainConfig, weights: dict[str, np.ndarray]) -> None:
    """The inverse of export_weights: put named arrays back into a Keras model."""
    embedding = model.get_layer("embedding")
    embedding.embeddings.assign(weights["embedding"])
    if config.tie_embeddings:
        embedding.output_bias.assign(weights["output/bias"])
    else:
        model.get_layer("output").set_weights([weights["output/kernel"], weights["output/bias"]])
    for i in range(config.layers):
        model.get_layer(f"rnn{i}").set_weights(
            [weights[f"rnn{i}/kernel"], weights[f"rnn{i}/recurrent_kernel"], weights[f"rnn{i}/bias"]]
        )
    if config.projection:
        model.get_layer("projection").set_weights([weights["projection/kernel"], weights["projection/bias"]])


def config_from_manifest(manifest: dict) -> TrainConfig:
    data = dict(manifest.get("config") or {})
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    data = {k: v for k, v in data.items() if k in known}
    data["corpus"] = tuple(data.get("corpus") or ())
    # How the output layer was computed while training is not part of the model: a
    # model rebuilt to predict computes in float32, as the NumPy engine does.
    data["output_precision"] = "float32"
    return TrainConfig(**data)


def keras_models_from_dir(path: str | Path | None = None) -> list:
    """Every network of a model directory (one, unless an ensemble) as the Keras model
    it was trained as, in float32, with its weights (for parity tests and benchmarks)."""
    manifest, tokenizer, weights = load_model(path)
    config = config_from_manifest(manifest)
    out = []
    for i in range(members(manifest["architecture"])):
        model = build_model(config, len(tokenizer))
        import_weights(model, config, member_weights(weights, i))
        out.append(model)
    return out


def keras_model_from_dir(path: str | Path | None = None, member: int = 0):
    """Network `member` of a model directory as a Keras model."""
    return keras_models_from_dir(path)[member]


def keras_next_probs(models: list, ids: np.ndarray) -> np.ndarray:
    """What the engine computes, the Keras way: the mean over the networks of the
    next-token distribution after the last of `ids` (shape (1, T)), by `model.predict`."""
    total = 0.0
    for model in models:
        out = model.predict(ids, verbose=0)
        logits = np.asarray(out)[0, -1].astype(np.float64)
        p = np.exp(logits - logits.max())
        total = total + p / p.sum()
    return total / len(models)


def _dataset(tf, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).prefetch(2)
    # Autotuning left fit() idle for half a minute after the last step here (DESIGN.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)


def _finished_epochs(work_dir: Path) -> dict:
    """Where an interrupted run stood after its last whole epoch ({} if none): epochs done,
    the best validation loss and its epoch, and the minutes spent."""
    path = work_dir / "progress.json"
    return json.loads(path.read_text()) if path.exists() else {}


class _HeldInterrupt:
    """Ctrl-C held back while the run's state on disk is brought up to date (Keras' backup,
    then the best weights, progress.json and the epoch's report), then raised: an interrupt
    in between left a backup one epoch ahead of the rest. Holds nest; `restore` puts the
    usual handler back whatever happened (call it when training ends)."""

    def __init__(self):
        self.depth, self.pending, self.previous = 0, False, None

    def hold(self) -> None:
        if self.depth == 0:
            try:
                previous = signal.signal(signal.SIGINT, self._note)
            except ValueError:  # not the main thread: nothing to hold
                return
            self.previous, self.pending = previous, False
        self.depth += 1

    def _note(self, signum, frame) -> None:
        self.pending = True

    def release(self) -> None:
        if self.depth == 0:
            return
        self.depth -= 1
        if self.depth == 0:
            self.restore()
            if self.pending:
                self.pending = False
                raise KeyboardInterrupt

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        self.depth, self.previous = 0, None


def _callbacks(
    keras,
    config: TrainConfig,
    work_dir: Path,
    has_validation: bool,
    log,
    steps_per_epoch: int,
    progress: bool = False,
    earlier: dict | None = None,
    held: _HeldInterrupt | None = None,
):
    """`earlier`: `_finished_epochs(work_dir)`, read here when not given. `held`: Ctrl-C is
    held back from the start of each epoch's end (and each backup) until its state is saved."""
    held = held or _HeldInterrupt()
    monitor = "val_loss" if has_validation else "loss"
    started = time.monotonic()
    earlier = _finished_epochs(work_dir) if earlier is None else earlier
    # Minutes spent in the epochs an interrupted run finished, so a resumed run reports the whole training.
    earlier_minutes = float(earlier.get("minutes", 0.0))

    class EpochReport(keras.callbacks.Callback):
        """One line per epoch with perplexities (what a language-model user reads)."""

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = [f"epoch {epoch + 1}", f"train perplexity {math.exp(min(logs.get('loss', 0), 50)):.1f}"]
            if "val_loss" in logs:
                parts.append(f"validation perplexity {math.exp(min(logs['val_loss'], 50)):.1f}")
            lr = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            parts.append(f"learning rate {lr:.2g}")
            parts.append(f"{earlier_minutes + (time.monotonic() - started) / 60:.1f} min")
            log(" · ".join(parts))
            if config.max_minutes and time.monotonic() - started > config.max_minutes * 60:
                log(f"time budget of {config.max_minutes:g} minutes reached; stopping")
                self.model.stop_training = True

    class KeepBest(keras.callbacks.Callback):
        """Save the best weights so far to the work directory; survives interruption."""

        def __init__(self):
            super().__init__()
            state = work_dir / "best.json"
            self.best = json.loads(state.read_text())["loss"] if state.exists() else math.inf

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get(monitor)
            if loss is not None and loss < self.best:
                self.best = loss
                np.savez(work_dir / "best.tmp.npz", **export_weights(self.model, config))
                os.replace(work_dir / "best.tmp.npz", work_dir / "best.npz")
                (work_dir / "best.json").write_text(json.dumps({"loss": loss, "epoch": epoch + 1}))
            if math.isfinite(self.best):
                best_epoch = json.loads((work_dir / "best.json").read_text())["epoch"]
                minutes = earlier_minutes + (time.monotonic() - started) / 60
                state = {"epochs_done": epoch + 1, "best": self.best, "best_epoch": best_epoch, "minutes": minutes}
                (work_dir / "progress.json").write_text(json.dumps(state))

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """Early stopping that remembers, across Ctrl-C, how long validation has stalled."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if earlier:
                self.best, self.best_epoch = earlier["best"], earlier["best_epoch"] - 1
                self.wait = earlier["epochs_done"] - earlier["best_epoch"]

    class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
        """Halve the learning rate on a plateau, measured against the best epoch so far
        even after a resume (the rate itself is restored with the optimizer)."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if earlier:
                self.best = earlier["best"]

    class Backup(keras.callbacks.BackupAndRestore):
        """Keras' backup every `save_freq` batches, and at the end of every epoch too:
        a backup taken at an epoch's last batch is still labelled with that epoch, so a
        resume from it would train the finished epoch again."""

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            self._batches_seen_since_last_saving = 0
            self._save_model()

        def _save_model(self):
            held.hold()  # a backup half written is no backup
            try:
                super()._save_model()
            finally:
                held.release()

    class EpochEnd(keras.callbacks.Callback):
        """First at an epoch's end: hold Ctrl-C (`last` releases it, last of all)."""

        def __init__(self, last: bool):
            super().__init__()
            self.last = last

        def on_epoch_end(self, epoch, logs=None):
            if self.last:
                held.release()
            else:
                held.hold()

    plateau = []
    if config.lr_schedule == "plateau":
        plateau = [ResumablePlateau(monitor=monitor, factor=config.lr_decay, patience=0, min_lr=1e-5)]
    # Keras adds its progress bar after every callback given, so it would finish an
    # epoch's bar after EpochReport printed its line, in the middle of the bar; given
    # first, the bar is complete (and ends its line) before the report.
    bar = [keras.callbacks.ProgbarLogger()] if progress else []
    return [
        EpochEnd(last=False),
        *bar,
        # A loss of NaN ruins every later epoch: stop there (KeepBest never keeps it).
        keras.callbacks.TerminateOnNaN(),
        # Back up every few hundred steps (and at least once an epoch) so Ctrl-C loses little.
        Backup(str(work_dir / "backup"), save_freq=max(1, min(500, steps_per_epoch))),
        KeepBest(),
        *plateau,
        ResumableEarlyStopping(monitor=monitor, patience=config.patience),
        EpochReport(),
        EpochEnd(last=True),
    ]


def train(config: TrainConfig, *, log=print, progress: bool | None = None) -> Path:
    """Train a model as configured and write its directory; returns the directory.

    An interrupted run leaves `<out>.partial/`; the same command resumes from it.
    """
    config.validate()
    check_output_dir(config.out)  # before hours of training, not after
    corpus_paths = [Path(p) for p in config.corpus]
    messages = read_corpus(corpus_paths, config.format)
    train_messages, val_messages = split_messages(messages, config.validation_fraction, config.split)
    tokenizer = Tokenizer.build(train_messages, config.vocab_size, config.min_count)
    train_stream = token_stream(train_messages, tokenizer)
    if len(train_stream) <= config.seq_len:
        raise CorpusError(
            f"corpus too small: its {len(train_messages):,} training message(s) make {len(train_stream):,} tokens, "
            f"and one window needs seq_len + 1 = {config.seq_len + 1}; give more text or a smaller --seq-len"
        )
    x, y = windows(train_stream, config.seq_len)
    val = None
    if val_messages:
        val_stream = token_stream(val_messages, tokenizer)
        val = windows(val_stream, min(config.seq_len, len(val_stream) - 1)) if len(val_stream) > 1 else None

    tf, keras = _tf()  # before anything is written: without TensorFlow, nothing is left behind
    out = Path(config.out)
    work_dir = out.parent / f"{out.name}.partial"
    work_dir.mkdir(parents=True, exist_ok=True)
    # Settings that may change between an interruption and the resumed run.
    run_config = dataclasses.asdict(config) | {
        "notes": "",
        "epochs": config.epochs if config.lr_schedule == "cosine" else 0,  # the cosine's length
        "max_minutes": 0,
        "patience": 0,
        "weights_dtype": "",  # only how the result is stored
    }
    # The text itself, not only its file names: an edited corpus makes another vocabulary.
    run_config["corpus_sha256"] = [sha256_of(p) for p in corpus_paths]
    stamp = work_dir / "config.json"
    resumed = stamp.exists()
    if resumed:
        changed = _changed_settings(stamp, json.loads(json.dumps(run_config)))
        if changed:
            raise ConfigError(
                f"{work_dir} holds an interrupted run with other settings ({'; '.join(changed)}); "
                f"rerun with those settings to resume, or delete {work_dir} to start afresh"
            )
    stamp.write_text(json.dumps(run_config, indent=2))

    # Keras warns that fit(shuffle=True) is ignored for a tf.data input: ours shuffles itself.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    log(
        f"{len(train_messages):,} training messages ({len(train_stream):,} tokens, {len(x):,} windows of "
        f"{config.seq_len}), {len(val_messages):,} validation messages; vocabulary {len(tokenizer):,}"
        + ("; resuming the interrupted run" if resumed else "")
    )
    if val_messages:
        ids = [i for m in val_messages for i in tokenizer.encode(m)]
        unknown = sum(i == UNK_ID for i in ids) / max(len(ids), 1)
        log(
            f"perplexities printed while training count every token, <unk> included ({unknown:.1%} of the validation "
            "tokens); the figures after training, like wordbot eval's, leave <unk> out and usually read higher"
        )
    else:
        log(
            f"no validation text ({len(messages):,} message(s), validation fraction {config.validation_fraction:g}): "
            "no early stopping on held-out text and no n-gram mix"
            + ("; with --format lines every line is a message" if config.format == "lines" else "")
        )
    if is_model_dir(out):
        log(f"{out} holds a model; it is replaced when training finishes (an interrupted run leaves it as it is)")
    if progress is None:
        progress = sys.stdout.isatty()
    started = time.monotonic()
    weights: dict[str, np.ndarray] = {}
    member_metrics = []
    for member in range(config.ensemble):
        # The first network works in DIR.partial/ itself, so a one-network run looks as it always did.
        member_dir = work_dir / f"member{member}" if member else work_dir
        member_dir.mkdir(exist_ok=True)
        budget = 0.0
        if config.max_minutes:
            # What is left of the time budget, shared by the networks still to train.
            left = config.max_minutes - (time.monotonic() - started) / 60
            budget = max(left / (config.ensemble - member), 1e-3)
        member_config = dataclasses.replace(config, seed=config.seed + member, max_minutes=budget)
        member_log = log
        if config.ensemble > 1:
            member_log = lambda line, m=member: log(f"network {m + 1}/{config.ensemble} · {line}")  # noqa: E731
        try:
            net_weights, metrics = _fit_network(
                tf, keras, member_config, tokenizer, (x, y), val, member_dir, member_log, progress
            )
        except TrainingDiverged as e:
            # Its backup holds NaN weights: resuming from it could only diverge again.
            shutil.rmtree(work_dir, ignore_errors=True)
            raise TrainingDiverged(f"{e} ({work_dir} was removed)") from None
        weights.update({member_prefix(member) + k: v for k, v in net_weights.items()})
        member_metrics.append(metrics)
    if config.ensemble == 1:
        metrics = member_metrics[0]
    else:
        # Summed over the networks, so a resumed run reports the whole training.
        epochs_run = sum(m["epochs_run"] for m in member_metrics)
        minutes = sum(m["train_minutes"] for m in member_metrics)
        metrics = {
            "epochs_run": epochs_run,
            "train_minutes": round(minutes, 2),
            "train_tokens_per_second": round(epochs_run * len(x) * config.seq_len / max(minutes * 60, 1e-9)),
            "networks": member_metrics,
        }
    manifest = {
        "architecture": config.architecture(),
        "corpus": {
            "files": [
                {"path": _portable_path(p, out), "sha256": sha256_of(p), "bytes": p.stat().st_size}
                for p in corpus_paths
            ],
            "format": config.format,
            "validation_fraction": config.validation_fraction,
            "split_seed": config.split,
            "train_messages": len(train_messages),
            "validation_messages": len(val_messages),
            "train_tokens": len(train_stream),
        },
        "config": dataclasses.asdict(config),
        "metrics": metrics,
    }
    ngram = None
    if config.mix_order and val_messages:
        from wordbot.ngram import KneserNey

        log(f"tuning the interpolation with a Kneser-Ney {config.mix_order}-gram on the validation text")
        ngram = KneserNey.from_texts(train_messages, tokenizer, config.mix_order)
        manifest.update(tune_mix(manifest, tokenizer, weights, ngram, val_messages, train_messages))
        log(
            f"validation perplexity (<unk> not counted): rnn {manifest['mix']['rnn_perplexity']:.1f}, "
            f"mix {manifest['mix']['mix_perplexity']:.1f} with n-gram weights {mix_weights_text(manifest['mix'])}; "
            f"serving {manifest['serving']['backend']}"
        )
    # The text the n-gram is counted from travels with the model (a few hundred kB for
    # the bundled corpus), so the mix works wherever the directory is copied.
    text = pack_messages(train_messages)
    manifest["corpus"]["training_text"] = {
        "path": TRAINING_TEXT,
        "sha256": hashlib.sha256(text).hexdigest(),
        "messages": len(train_messages),
    }
    save_model(out, manifest, tokenizer, weights, dtype=config.weights_dtype, files={TRAINING_TEXT: text})
    shutil.rmtree(work_dir, ignore_errors=True)
    if ngram is not None and manifest["serving"]["backend"] == "mix":
        from wordbot.ngram import remember

        remember(ngram, manifest)  # the first start counts nothing
    return out


class TrainingDiverged(WordbotError):
    """The network's weights became NaN: nothing worth keeping or resuming."""


def _changed_settings(stamp: Path, now: dict) -> list[str]:
    """What differs between the interrupted run's settings (its config.json) and this
    run's, as `name: then, now`; settings the older run did not record are not compared."""
    try:
        then = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return [f"{stamp} is unreadable"]
    if not isinstance(then, dict):
        return [f"{stamp} is unreadable"]
    changed = []
    for key in sorted(set(then) & set(now)):
        if then[key] != now[key]:
            if key == "corpus_sha256":
                changed.append("the corpus text has changed since")
            else:
                changed.append(f"{key}: {_shown(then[key])} then, {_shown(now[key])} now")
    return changed


def _shown(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)


def learning_rate(keras, config: TrainConfig, steps_per_epoch: int):
    """The optimizer's learning rate: a number the plateau callback halves, or a cosine
    decay from `learning_rate` to zero over `epochs` epochs. The decay follows the
    optimizer's step count, which a resumed run restores with the optimizer."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * steps_per_epoch)
    return config.learning_rate


def _fit_network(tf, keras, config: TrainConfig, tokenizer, train_xy, val, work_dir: Path, log, progress: bool):
    """Train one network (seed `config.seed`) in `work_dir`; returns (weights, metrics).

    A finished network leaves `final.npz` there, so a resumed ensemble skips it."""
    final, final_info = work_dir / "final.npz", work_dir / "final.json"
    if final.exists() and final_info.exists():
        with np.load(final, allow_pickle=False) as npz:
            weights = {k: npz[k] for k in npz.files}
        log("already trained; kept from the interrupted run")
        return weights, json.loads(final_info.read_text())
    x, y = train_xy
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, len(tokenizer))
    steps_per_epoch = math.ceil(len(x) / config.batch_size)
    model.compile(
        optimizer=keras.optimizers.Adam(
            learning_rate=learning_rate(keras, config, steps_per_epoch), global_clipnorm=config.clipnorm
        ),
        loss=masked_loss,
    )
    train_ds = _dataset(tf, x, y, config.batch_size, config.seed)
    val_ds = _dataset(tf, *val, config.batch_size, None) if val is not None else None
    started = time.monotonic()
    earlier = _finished_epochs(work_dir)
    held = _HeldInterrupt()
    callbacks = _callbacks(keras, config, work_dir, val_ds is not None, log, steps_per_epoch, progress, earlier, held)
    try:
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks, verbose=1 if progress else 0
        )
    finally:
        held.restore()  # whatever ended training, Ctrl-C interrupts again
    # Counted over the whole training, an interrupted run's finished epochs included.
    minutes = float(earlier.get("minutes", 0.0)) + (time.monotonic() - started) / 60
    epochs_run = int(earlier.get("epochs_done", 0)) + len(history.history.get("loss", []))
    best = work_dir / "best.npz"
    if best.exists():
        with np.load(best, allow_pickle=False) as npz:
            weights = {k: npz[k] for k in npz.files}
        best_info = json.loads((work_dir / "best.json").read_text())
    else:
        weights, best_info = export_weights(model, config), {}
    if not all(np.isfinite(w).all() for w in weights.values()):
        raise TrainingDiverged(
            "training diverged: the loss became NaN or infinite before any epoch finished with a finite one; "
            "try a lower --learning-rate or --clipnorm"
        )
    metrics: dict = {"epochs_run": epochs_run, "train_minutes": round(minutes, 2)}
    if config.ensemble > 1:
        metrics["seed"] = config.seed
    if best_info:
        metrics["best_epoch"] = best_info["epoch"]
        key = "validation_perplexity" if val_ds is not None else "train_perplexity"
        metrics[key] = round(math.exp(best_info["loss"]), 3)
    metrics["train_tokens_per_second"] = round(
        metrics["epochs_run"] * len(x) * config.seq_len / max(minutes * 60, 1e-9)
    )
    np.savez(work_dir / "final.tmp.npz", **weights)
    os.replace(work_dir / "final.tmp.npz", final)
    final_info.write_text(json.dumps(metrics))
    return weights, metrics


def tune_mix(manifest, tokenizer, weights, ngram, val_messages, train_messages, max_messages: int = 1000) -> dict:
    """Choose how the network is mixed with a Kneser-Ney n-gram, on validation text.

    The validation messages that repeat training text (an 8-word run in common: the
    same quotation filed twice) are left out when enough others remain: there the
    n-gram simply remembers, and weights tuned on them trust it more than new text
    deserves. The n-gram's weight is chosen per longest context it has seen
    (`ngram.OrderWeighted`); the mixture is served only if it beats the network alone
    by more than 1% in perplexity.
    """
    from wordbot.corpus import novel_messages
    from wordbot.engine import network
    from wordbot.evaluate import best_order_weights

    rnn = network(manifest, tokenizer, weights)
    candidates = val_messages[:max_messages]
    novel = novel_messages(candidates, train_messages)
    tune_on = novel if len(novel) >= min(50, len(candidates)) else candidates
    found = best_order_weights(rnn, ngram, tune_on)
    rnn_ppl, mix_ppl = found["model_perplexity"], found["by_order_perplexity"]
    described = f"{len(tune_on)} validation messages"
    if tune_on is novel and len(novel) < len(candidates):
        described += f" (of {len(candidates)}; those repeating an 8-word run of the training text left out)"
    return {
        "mix": {
            "order": ngram.order,
            "ngram_weight": round(found["single"], 2),
            "ngram_weight_by_order": {str(k): round(w, 2) for k, w in found["by_order"].items()},
            "positions_by_order": {str(k): n for k, n in found["positions_by_order"].items()},
            "rnn_perplexity": round(rnn_ppl, 2),
            "single_weight_perplexity": round(found["single_perplexity"], 2),
            "mix_perplexity": round(mix_ppl, 2),
            "tuned_on": described,
        },
        "serving": {"backend": "mix" if mix_ppl < 0.99 * rnn_ppl else "rnn"},
    }


def _portable_path(corpus: Path, out: Path) -> str:
    """The corpus path relative to the model directory when both share a tree."""
    try:
        return os.path.relpath(corpus.resolve(), out.resolve())
    except ValueError:  # different drives
        return str(corpus.resolve())
