"""NumPy forward pass of the trained network: one step, or one pass over a context.

Follows Keras 3 exactly (gate order, GRU's reset_after=True, biases), so a model
trained with Keras predicts the same probabilities here without TensorFlow. A state
is an immutable tuple of arrays: advancing by one token costs one recurrent step,
which is what makes typing one more word cheap. A fresh context costs one product for
the input projections of all its tokens, then only the recurrent part step by step;
an ensemble steps its networks together, their weights stacked on a leading axis.
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
    """Softmax over the last axis, in float64 (the probabilities are summed and compared)."""
    z = logits.astype(np.float64)
    z -= z.max(axis=-1, keepdims=True)
    np.exp(z, out=z)
    z /= z.sum(axis=-1, keepdims=True)
    return z


def _stack(arrays: list[np.ndarray]) -> np.ndarray:
    """np.stack(arrays), or with no copy the array whose rows they already are (as
    wordbot.artifacts.load_model hands over an ensemble's converted weights)."""
    base = arrays[0].base
    if isinstance(base, np.ndarray) and base.shape == (len(arrays), *arrays[0].shape) and base.dtype == arrays[0].dtype:
        rows = [base[i] for i in range(len(arrays))]
        if all(
            a.base is base and a.__array_interface__ == row.__array_interface__
            for a, row in zip(arrays, rows, strict=True)
        ):
            return base
    return np.stack(arrays)


def _scaled_softmax(logits: np.ndarray, scale: float, out: np.ndarray) -> np.ndarray:
    """`scale` times the mean over the rows of softmax(logits (M, V) float32), written
    into `out` (V,) float64. `logits` is overwritten: each row exponentiated in place
    in float32 (five times faster than float64 here; each probability is off by at most
    a few float32 ulps, ~1e-7 of itself), the rows' sums taken in float64, then one
    weighted sum of the rows, each weighted by scale / (M * its sum)."""
    z = logits
    z -= z.max(axis=1, keepdims=True)
    np.exp(z, out=z)
    weights = (scale / (len(z) * z.sum(axis=1, dtype=np.float64))).astype(np.float32)
    return np.matmul(weights, z, out=out)


def _times(state: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """state @ matrix for one network (U,) @ (U, N), or for stacked ones (M, U) @ (M, U, N)."""
    if matrix.ndim == 2:
        return state @ matrix
    return np.matmul(state[:, None, :], matrix)[:, 0, :]


class _Layers:
    """The recurrent layers of one network, or of M networks stacked on a leading axis
    (every array then has one more dimension in front). Steps take the input's
    projection `x @ kernel + input bias`, so a whole context's can be one product."""

    def __init__(self, cell: str, units: int, kernels, recurrent, biases):
        self.cell, self.units = cell, units
        self.kernels, self.recurrent = kernels, recurrent
        # GRU keeps input and recurrent bias apart (reset_after=True); the others add one bias.
        self.input_bias = [b[..., 0, :] if cell == "gru" else b for b in biases]
        self.recurrent_bias = [b[..., 1, :] if cell == "gru" else None for b in biases]

    def project(self, i: int, x: np.ndarray) -> np.ndarray:
        """Layer i's input projection of x (..., [T,] width): one product for every token."""
        kernel, bias = self.kernels[i], self.input_bias[i]
        if kernel.ndim == 2:
            return x @ kernel + bias
        out = np.matmul(x if x.ndim == 3 else x[:, None, :], kernel)
        out += bias[:, None, :]
        return out if x.ndim == 3 else out[:, 0, :]

    def step(self, i: int, xw: np.ndarray, state):
        """Layer i's next state from its input projection `xw` and its state."""
        recurrent, u = self.recurrent[i], self.units
        if self.cell == "simple_rnn":
            h = _times(state, recurrent)
            h += xw
            return np.tanh(h, out=h)
        if self.cell == "gru":
            # Keras 3 GRU, reset_after=True: gates [z, r, h].
            hz = _times(state, recurrent) + self.recurrent_bias[i]
            z = _sigmoid(xw[..., :u] + hz[..., :u])
            r = _sigmoid(xw[..., u : 2 * u] + hz[..., u : 2 * u])
            candidate = np.tanh(xw[..., 2 * u :] + r * hz[..., 2 * u :])
            return (z * state + (1.0 - z) * candidate).astype(np.float32)
        # LSTM, gates [i, f, c, o].
        h, c = state
        gates = xw + _times(h, recurrent)
        i_gate = _sigmoid(gates[..., :u])
        f_gate = _sigmoid(gates[..., u : 2 * u])
        c = (f_gate * c + i_gate * np.tanh(gates[..., 2 * u : 3 * u])).astype(np.float32)
        h = (_sigmoid(gates[..., 3 * u :]) * np.tanh(c)).astype(np.float32)
        return (h, c)

    def _output(self, layer_state) -> np.ndarray:
        return layer_state[0] if self.cell == "lstm" else layer_state

    def advance(self, state: tuple, x: np.ndarray) -> tuple:
        """The state after one token whose embedding is x (..., E)."""
        new_state = []
        for i, layer_state in enumerate(state):
            layer_state = self.step(i, self.project(i, x), layer_state)
            new_state.append(layer_state)
            x = self._output(layer_state)
        return tuple(new_state)

    def run(self, state: tuple, x: np.ndarray) -> list[tuple]:
        """The states after each token of a context whose embeddings are x (..., T, E):
        per layer one product for all the tokens' input projections, then the recurrence."""
        steps = x.shape[-2]
        per_layer = []
        for i, layer_state in enumerate(state):
            xw = self.project(i, x)  # (..., T, gates * units)
            if self.cell == "simple_rnn":
                x = self._simple_run(i, xw, layer_state)
                per_layer.append([x[..., t, :] for t in range(steps)])
                continue
            states = []
            for t in range(steps):
                layer_state = self.step(i, xw[..., t, :], layer_state)
                states.append(layer_state)
            per_layer.append(states)
            x = np.stack([self._output(s) for s in states], axis=-2)
        return [tuple(layer[t] for layer in per_layer) for t in range(steps)]

    def _simple_run(self, i: int, xw: np.ndarray, state: np.ndarray) -> np.ndarray:
        """A SimpleRNN layer's states (..., T, units) over a context: h_t = tanh(h_(t-1) R
        + xw_t), what `step` computes, written row by row into one read-only array. An
        ensemble's networks run one after the other, so each one's recurrent matrix
        stays in cache for the whole context instead of alternating with the others'."""
        recurrent = self.recurrent[i]
        out = np.empty(xw.shape, dtype=np.result_type(xw, recurrent))
        if recurrent.ndim == 2:
            runs = [(recurrent, xw, out, state)]
        else:
            runs = [(recurrent[m], xw[m], out[m], state[m]) for m in range(len(recurrent))]
        for matrix, projected, rows, h in runs:
            for t, row in enumerate(rows):
                np.dot(h, matrix, out=row)
                row += projected[t]
                h = np.tanh(row, out=row)
        out.setflags(write=False)
        return out

    def initial_state(self, lead: tuple[int, ...] = ()) -> tuple:
        zero = np.zeros((*lead, self.units), dtype=np.float32)
        zero.setflags(write=False)
        return tuple((zero, zero) if self.cell == "lstm" else zero for _ in self.kernels)


class RNNLanguageModel:
    """A language model over a tokenizer: initial_state / advance / advance_many / probs."""

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
        self._layers = _Layers(self.cell, self.units, self.kernels, self.recurrent, self.biases)
        self._initial = self._layers.initial_state()

    @classmethod
    def load(cls, path: str | Path | None = None) -> RNNLanguageModel:
        return cls(*load_model(path))

    def initial_state(self) -> tuple:
        return self._initial

    def advance(self, state: tuple, token_id: int) -> tuple:
        return self._layers.advance(state, self.embedding[token_id])

    def advance_many(self, state: tuple, ids: Sequence[int]) -> list[tuple]:
        """The states after each of `ids` in turn, in one pass (what `advance` would give)."""
        if not len(ids):
            return []
        return self._layers.run(state, self.embedding[np.asarray(ids, dtype=np.int64)])

    def logits(self, state: tuple) -> np.ndarray:
        top = state[-1][0] if self.cell == "lstm" else state[-1]
        if self.projection is not None:
            kernel, bias = self.projection
            top = top @ kernel + bias
        return self.output @ top + self.output_bias

    def probs(self, state: tuple) -> np.ndarray:
        return self.scaled_probs(state, 1.0, np.empty(len(self.output_bias)))

    def scaled_probs(self, state: tuple, scale: float, out: np.ndarray) -> np.ndarray:
        """`scale * probs(state)` written into `out` (float64), with no array in between."""
        return _scaled_softmax(self.logits(state)[None, :], scale, out)

    def logits_many(self, states: Sequence[tuple]) -> np.ndarray:
        """(1, T, V) float64: the logits after each of T states, the output layer as one
        (T, width) @ (width, V) product instead of T products that each read the whole
        output matrix (what `wordbot eval` scores a message with). Computed in float64
        from the float32 weights, so its rounding is far below that of `logits` (a
        float32 product summed in another order would differ from it by up to ~1e-6)."""
        top = _tops(self.cell, states).astype(np.float64)  # (T, units)
        if self.projection is not None:
            kernel, bias = self.projection
            top = top @ kernel.astype(np.float64) + bias
        out = np.matmul(top, _output64(self).T)[None]
        out += self.output_bias
        return out

    def sequence_probs(self, ids: list[int]) -> np.ndarray:
        """Next-token distributions after each prefix of `ids` (for tests and evaluation)."""
        return np.stack([self.probs(state) for state in self.advance_many(self.initial_state(), ids)])


def _output64(network: RNNLanguageModel) -> np.ndarray:
    """The network's output matrix in float64, made at the first `logits_many` and kept
    (twice the float32 matrix's memory, only in a process that scores sequences)."""
    wide = getattr(network, "_wide_output", None)
    if wide is None:
        wide = network._wide_output = network.output.astype(np.float64)
    return wide


def _tops(cell: str, states: Sequence[tuple]) -> np.ndarray:
    """The top layer's output of each state, stacked: (T, [M,] units)."""
    return np.stack([state[-1][0] if cell == "lstm" else state[-1] for state in states])


def advance_all(lm, state, ids: Sequence[int]) -> list:
    """The states of `lm` after each of `ids` in turn: its own one-pass `advance_many`
    where it has one, else one `advance` per token (an n-gram's state is just its last
    tokens, so that costs no distribution)."""
    many = getattr(lm, "advance_many", None)
    if many is not None:
        return many(state, ids)
    out = []
    for token_id in ids:
        state = lm.advance(state, token_id)
        out.append(state)
    return out


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

    def advance_many(self, state: tuple, ids: Sequence[int]) -> list[tuple]:
        per_model = [advance_all(m, s, ids) for m, s in zip(self.models, state, strict=True)]
        return list(zip(*per_model, strict=True))


class Ensemble(Combined):
    """Several networks over one vocabulary, trained alike from different random
    starts; the next-token distribution is the mean of theirs. Averaging cancels part
    of each network's own errors (its variance), which on a small corpus is where a
    recurrent model loses most.

    The networks step together: their small arrays are stacked on a leading axis, so
    a step is one stacked product per layer, and the state is per layer an (M, units)
    array. The embeddings and output matrices stay each network's own (no copy); a
    stacked product over them is no faster, as it is bound by reading the matrices."""

    def __init__(self, networks: list[RNNLanguageModel]):
        super().__init__(networks)
        self.networks = self.models
        self.manifest = networks[0].manifest
        first = networks[0]
        self.cell = first.cell
        layers = range(first.layers)
        kernels = [_stack([n.kernels[i] for n in networks]) for i in layers]
        recurrent = [_stack([n.recurrent[i] for n in networks]) for i in layers]
        biases = [_stack([n.biases[i] for n in networks]) for i in layers]
        self._layers = _Layers(first.cell, first.units, kernels, recurrent, biases)
        self._projection = None
        if first.projection is not None:
            self._projection = tuple(_stack([n.projection[j] for n in networks]) for j in (0, 1))
        self._output_bias = _stack([n.output_bias for n in networks])  # (M, V)
        self._initial = self._layers.initial_state((len(networks),))

    def initial_state(self) -> tuple:
        return self._initial

    def advance(self, state: tuple, token_id: int) -> tuple:
        return self._layers.advance(state, np.stack([n.embedding[token_id] for n in self.networks]))

    def advance_many(self, state: tuple, ids: Sequence[int]) -> list[tuple]:
        if not len(ids):
            return []
        ids = np.asarray(ids, dtype=np.int64)
        return self._layers.run(state, np.stack([n.embedding[ids] for n in self.networks]))

    def logits(self, state: tuple) -> np.ndarray:
        """(M, V): every network's logits, the output products written into one array."""
        top = state[-1][0] if self.cell == "lstm" else state[-1]  # (M, units)
        if self._projection is not None:
            kernel, bias = self._projection
            top = _times(top, kernel) + bias
        out = np.empty(self._output_bias.shape, dtype=np.float32)
        for m, n in enumerate(self.networks):
            np.matmul(n.output, top[m], out=out[m])
        out += self._output_bias
        return out

    def probs(self, state: tuple) -> np.ndarray:
        return self.scaled_probs(state, 1.0, np.empty(self._output_bias.shape[1]))

    def logits_many(self, states: Sequence[tuple]) -> np.ndarray:
        """(M, T, V) float64: every network's logits after each of T states, one
        (T, width) @ (width, V) product per network (see `RNNLanguageModel.logits_many`)."""
        top = np.swapaxes(_tops(self.cell, states), 0, 1).astype(np.float64)  # (M, T, units)
        if self._projection is not None:
            kernel, bias = self._projection
            top = np.matmul(top, kernel.astype(np.float64)) + bias[:, None, :]
        out = np.empty((len(self.networks), len(states), self._output_bias.shape[1]))
        for m, n in enumerate(self.networks):
            np.matmul(top[m], _output64(n).T, out=out[m])
        out += self._output_bias[:, None, :]
        return out

    def scaled_probs(self, state: tuple, scale: float, out: np.ndarray) -> np.ndarray:
        """`scale * probs(state)` written into `out`: the mean of the networks' softmaxes
        as one weighted sum of their exponentials."""
        return _scaled_softmax(self.logits(state), scale, out)


def network(manifest: dict, tokenizer: Tokenizer, weights: dict[str, np.ndarray]) -> RNNLanguageModel | Ensemble:
    """The recurrent model a model directory describes: one network, or the ensemble
    of `architecture.members` networks."""
    count = members(manifest["architecture"])
    nets = [RNNLanguageModel(manifest, tokenizer, weights, member=i) for i in range(count)]
    return nets[0] if count == 1 else Ensemble(nets)


__all__ = ["BOS_ID", "Combined", "Ensemble", "RNNLanguageModel", "advance_all", "network", "softmax"]
