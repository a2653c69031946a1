"""NumPy forward pass of the trained network, one token at a time.

Follows Keras 3 exactly (gate order, GRU's reset_after=True, biases), so a model
trained with Keras predicts the same probabilities here without TensorFlow. A state
is an immutable tuple of arrays: advancing by one token costs one recurrent step,
which is what makes typing one more word cheap.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wordbot.artifacts import load_model, member_weights, members
from wordbot.text import BOS_ID, Tokenizer


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # stable for large |x|, same as 1/(1+e^-x)


def softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64) - logits.max()
    e = np.exp(z)
    return e / e.sum()


class RNNLanguageModel:
    """A language model over a tokenizer: initial_state / advance / probs."""

    def __init__(self, manifest: dict, tokenizer: Tokenizer, weights: dict[str, np.ndarray], member: int = 0):
        arch = manifest["architecture"]
        weights = member_weights(weights, member)
        self.manifest = manifest
        self.tokenizer = tokenizer
        self.cell: str = arch["cell"]
        self.layers: int = arch["layers"]
        self.units: int = arch["units"]
        self.embedding = weights["embedding"]  # (V, E)
        self.kernels = [weights[f"rnn{i}/kernel"] for i in range(self.layers)]
        self.recurrent = [weights[f"rnn{i}/recurrent_kernel"] for i in range(self.layers)]
        self.biases = [weights[f"rnn{i}/bias"] for i in range(self.layers)]
        self.projection = (weights["projection/kernel"], weights["projection/bias"]) if arch.get("projection") else None
        # Output as (V, width) so one gemv gives every logit; tied models reuse the embedding.
        if arch.get("tied"):
            self.output = self.embedding
        else:
            self.output = np.ascontiguousarray(weights["output/kernel"].T)
        self.output_bias = weights["output/bias"]
        zero = np.zeros(self.units, dtype=np.float32)
        per_layer = (zero, zero) if self.cell == "lstm" else zero
        self._initial = tuple(per_layer for _ in range(self.layers))

    @classmethod
    def load(cls, path: str | Path | None = None) -> RNNLanguageModel:
        return cls(*load_model(path))

    def initial_state(self) -> tuple:
        return self._initial

    def advance(self, state: tuple, token_id: int) -> tuple:
        x = self.embedding[token_id]
        new_state = []
        for i, layer_state in enumerate(state):
            layer_state = self._step(i, x, layer_state)
            new_state.append(layer_state)
            x = layer_state[0] if self.cell == "lstm" else layer_state
        return tuple(new_state)

    def _step(self, i: int, x: np.ndarray, state):
        kernel, recurrent, bias = self.kernels[i], self.recurrent[i], self.biases[i]
        if self.cell == "simple_rnn":
            return np.tanh(x @ kernel + state @ recurrent + bias)
        if self.cell == "gru":
            # Keras 3 GRU, reset_after=True: gates [z, r, h]; bias rows are input and recurrent.
            u = self.units
            xz = x @ kernel + bias[0]
            hz = state @ recurrent + bias[1]
            z = _sigmoid(xz[:u] + hz[:u])
            r = _sigmoid(xz[u : 2 * u] + hz[u : 2 * u])
            candidate = np.tanh(xz[2 * u :] + r * hz[2 * u :])
            return (z * state + (1.0 - z) * candidate).astype(np.float32)
        # LSTM, gates [i, f, c, o].
        h, c = state
        u = self.units
        gates = x @ kernel + h @ recurrent + bias
        i_gate = _sigmoid(gates[:u])
        f_gate = _sigmoid(gates[u : 2 * u])
        c = (f_gate * c + i_gate * np.tanh(gates[2 * u : 3 * u])).astype(np.float32)
        h = (_sigmoid(gates[3 * u :]) * np.tanh(c)).astype(np.float32)
        return (h, c)

    def logits(self, state: tuple) -> np.ndarray:
        top = state[-1][0] if self.cell == "lstm" else state[-1]
        if self.projection is not None:
            kernel, bias = self.projection
            top = top @ kernel + bias
        return self.output @ top + self.output_bias

    def probs(self, state: tuple) -> np.ndarray:
        return softmax(self.logits(state))

    def sequence_probs(self, ids: list[int]) -> np.ndarray:
        """Next-token distributions after each prefix of `ids` (for tests and evaluation)."""
        state = self.initial_state()
        out = []
        for token_id in ids:
            state = self.advance(state, token_id)
            out.append(self.probs(state))
        return np.stack(out)


class Combined:
    """Language models over one vocabulary driven together: the state is the tuple of
    theirs, each advanced by the same token. Subclasses say how `probs` combines them."""

    def __init__(self, models: Sequence):
        if not models:
            raise ValueError("nothing to combine")
        vocab = models[0].tokenizer.vocab
        if any(m.tokenizer.vocab != vocab for m in models[1:]):
            raise ValueError("mixed models must share one vocabulary")
        self.models = list(models)
        self.tokenizer = models[0].tokenizer

    def initial_state(self) -> tuple:
        return tuple(m.initial_state() for m in self.models)

    def advance(self, state: tuple, token_id: int) -> tuple:
        return tuple(m.advance(s, token_id) for m, s in zip(self.models, state, strict=True))


class Ensemble(Combined):
    """Several networks over one vocabulary, trained alike from different random
    starts; the next-token distribution is the mean of theirs. Averaging cancels part
    of each network's own errors (its variance), which on a small corpus is where a
    recurrent model loses most."""

    def __init__(self, networks: list[RNNLanguageModel]):
        super().__init__(networks)
        self.networks = self.models
        self.manifest = networks[0].manifest

    def probs(self, state: tuple) -> np.ndarray:
        p = self.networks[0].probs(state[0])
        for n, s in zip(self.networks[1:], state[1:], strict=True):
            p += n.probs(s)
        return p / len(self.networks)


def network(manifest: dict, tokenizer: Tokenizer, weights: dict[str, np.ndarray]) -> RNNLanguageModel | Ensemble:
    """The recurrent model a model directory describes: one network, or the ensemble
    of `architecture.members` networks."""
    count = members(manifest["architecture"])
    nets = [RNNLanguageModel(manifest, tokenizer, weights, member=i) for i in range(count)]
    return nets[0] if count == 1 else Ensemble(nets)


__all__ = ["BOS_ID", "Combined", "Ensemble", "RNNLanguageModel", "network", "softmax"]
