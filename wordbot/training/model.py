"""The Keras side of training: importing TensorFlow quietly (only when called), the
model (`build_model` reads like a keras-io example), the loss, and moving weights
between Keras and the NumPy model directory (for export, parity tests and benchmarks).
"""

from __future__ import annotations

import dataclasses
import os
import sys
from pathlib import Path

import numpy as np

from wordbot.artifacts import load_model, member_weights, members
from wordbot.errors import WordbotError
from wordbot.text import BOS_ID
from wordbot.training.config import TrainConfig


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


def _tied_embedding_class(keras):
    """The embedding layer, defined once Keras is loaded."""

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

    return TiedEmbedding


def build_model(config: TrainConfig, vocab_size: int):
    """Embedding -> recurrent layer(s) -> (projection) -> logits over the vocabulary."""
    _, keras = _tf()
    TiedEmbedding = _tied_embedding_class(keras)
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
