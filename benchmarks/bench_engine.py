"""Time per suggestion: the NumPy engine behind Predictor vs the straightforward Keras
ways (model.predict, model(x), a tf.function) on the same weights, in one run.

    PYTHONPATH=. python benchmarks/bench_engine.py [--model DIR] [--requests 200]

Requests replay the first messages of the test file word by word (`next_words` after
each word) and letter by letter (`complete` of each partial word). Keras has no state
between requests, so each request feeds it the last `--context` tokens; a keystroke
costs it the same forward pass as a word. Without --model it uses the bundled model's
network(s) alone (the mix adds the n-gram, which Keras does not have); for an ensemble
Keras runs every network and averages their distributions, as the engine does.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wordbot.artifacts import DEFAULT_MODEL_DIR  # noqa: E402
from wordbot.corpus import read_messages  # noqa: E402
from wordbot.predictor import Predictor  # noqa: E402
from wordbot.text import BOS_ID, detokenize, is_word, tokenize  # noqa: E402

TEST_FILE = ROOT / "data" / "corpus" / "fortunes-test.txt"
TRAIN_FILE = ROOT / "data" / "corpus" / "fortunes-train.txt"


def requests(n_messages: int) -> tuple[list[str], list[str]]:
    """Texts after every word of the first messages, and texts ending inside a word."""
    words, keys = [], []
    for message in read_messages(TEST_FILE)[:n_messages]:
        tokens = tokenize(message)
        for i, token in enumerate(tokens):
            prefix = detokenize(tokens[:i])
            words.append(prefix)
            if is_word(token):
                keys.extend(f"{prefix} {token[:j]}".lstrip() for j in range(1, len(token)))
    return words, keys


def timed(fn, items, limit: int | None = None) -> list[float]:
    out = []
    for item in items[:limit]:
        t0 = time.perf_counter()
        fn(item)
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def summary(ms: list[float]) -> tuple[float, float]:
    return statistics.median(ms), float(np.percentile(ms, 99))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--messages", type=int, default=40, help="test messages to replay")
    parser.add_argument("--requests", type=int, default=200, help="Keras requests per way (they are slow)")
    parser.add_argument("--context", type=int, default=32, help="tokens fed to Keras per request")
    args = parser.parse_args(argv)

    model_dir = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    word_texts, key_texts = requests(args.messages)

    predictor = Predictor.load(model_dir, backend="rnn")  # the same network Keras runs
    predictor.next_words("warm up", k=3)
    numpy_word = timed(lambda t: predictor.next_words(t, k=3), word_texts)
    numpy_key = timed(lambda t: predictor.complete(t, k=3), key_texts)

    t0 = time.perf_counter()
    import tensorflow as tf

    from wordbot.training import keras_models_from_dir

    models = keras_models_from_dir(model_dir)
    members = len(models)
    keras_load_s = time.perf_counter() - t0
    tokenizer = predictor.tokenizer
    word_ids = np.array([i for i in tokenizer.word_ids if i != 1])

    def window(text: str) -> np.ndarray:
        ids = [BOS_ID, *tokenizer.encode(text)][-args.context :]
        return np.array([ids], dtype=np.int32)

    def last_probs(outputs) -> np.ndarray:
        """The mean over the networks of their next-token distributions at the end."""
        total = 0.0
        for out in outputs:
            logits = np.asarray(out)[0, -1].astype(np.float64)
            p = np.exp(logits - logits.max())
            total = total + p / p.sum()
        return total / len(outputs)

    def top3(outputs) -> list[str]:
        p = last_probs(outputs)
        best = word_ids[np.argsort(-p[word_ids])[:3]]
        return [tokenizer.vocab[i] for i in best]

    compiled_models = [
        tf.function(lambda x, m=m: m(x, training=False), input_signature=[tf.TensorSpec([1, None], tf.int32)])
        for m in models
    ]

    def compiled(x):
        return [f(x) for f in compiled_models]

    ways = {
        "model.predict": lambda t: top3([m.predict(window(t), verbose=0) for m in models]),
        "model(x)": lambda t: top3([m(window(t), training=False) for m in models]),
        "tf.function": lambda t: top3(compiled(window(t))),
    }
    keras_ms = {}
    for name, fn in ways.items():
        fn("warm up")
        keras_ms[name] = timed(fn, word_texts, args.requests)

    # Same weights, same answer: the engine's distribution against Keras's.
    text = word_texts[min(20, len(word_texts) - 1)]
    ids = [BOS_ID, *tokenizer.encode(text)]
    keras_p = last_probs(compiled(np.array([ids], dtype=np.int32)))
    parity = float(np.max(np.abs(predictor.token_probs(ids) - keras_p)))

    arch = predictor.manifest["architecture"]
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f},")
    print(f"         Python {platform.python_version()}, NumPy {np.__version__}, TensorFlow {tf.__version__}")
    print(
        f"model:   {model_dir}: "
        f"{members} x {arch['cell']} {arch['layers']}x{arch['units']}, embedding {arch['embedding_dim']}, "
        f"vocabulary {len(tokenizer):,}; Keras context {args.context} tokens"
    )
    print(f"parity:  max |p_numpy - p_keras| = {parity:.1e}; Keras import+build+load {keras_load_s:.1f} s")
    print()
    base = summary(numpy_word)[0]
    print("| way | requests | median ms | p99 ms | median vs NumPy per word |")
    print("|---|---:|---:|---:|---:|")
    rows = [
        ("NumPy Predictor, per word (next_words)", numpy_word),
        ("NumPy Predictor, per keystroke (complete)", numpy_key),
    ]
    rows += [(f"Keras {name}, per word or keystroke", ms) for name, ms in keras_ms.items()]
    for name, ms in rows:
        median, p99 = summary(ms)
        print(f"| {name} | {len(ms)} | {median:.3f} | {p99:.3f} | {median / base:.1f}x |")


if __name__ == "__main__":
    main()
