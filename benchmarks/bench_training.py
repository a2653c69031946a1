"""Training throughput: wordbot's every-position training vs the seed tutorial's
one-target-per-window training, same corpus, same model size, same batch, one run;
and wordbot with its output layer computed in bfloat16 (`output_precision`).

    python benchmarks/bench_training.py [--steps 30] [--units 512] [--batch-size 64]

Reports target tokens per second (tokens whose prediction is trained) for both, and
the ratio. Run on an otherwise idle machine: both share its cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

ROOT = Path(__file__).resolve().parent.parent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30, help="timed batches per method")
    parser.add_argument("--units", type=int, default=512)
    parser.add_argument("--embedding-dim", type=int, default=384)
    parser.add_argument("--vocab-size", type=int, default=10_000)
    parser.add_argument("--seq-len", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()

    import keras
    import tensorflow as tf

    from wordbot.corpus import read_messages, token_stream, windows
    from wordbot.text import Tokenizer
    from wordbot.training import TrainConfig, build_model, masked_loss

    messages = read_messages(ROOT / "data" / "corpus" / "fortunes-train.txt")
    tokenizer = Tokenizer.build(messages, args.vocab_size, 2)
    stream = token_stream(messages, tokenizer)
    config = TrainConfig(
        corpus=("x",),
        units=args.units,
        embedding_dim=args.embedding_dim,
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        vocab_size=args.vocab_size,
    )
    B, L, V = args.batch_size, args.seq_len, len(tokenizer)

    # wordbot: windows of L tokens, a target at every position; its output layer in
    # float32, and in bfloat16 as the bundled model was trained (output_precision).
    x, y = windows(stream, L)
    model = build_model(config, V)
    model.compile(optimizer=keras.optimizers.Adam(2e-3, clipnorm=1.0), loss=masked_loss)
    fast = build_model(dataclasses.replace(config, output_precision="bfloat16"), V)
    fast.compile(optimizer=keras.optimizers.Adam(2e-3, clipnorm=1.0), loss=masked_loss)

    # The seed tutorial: slide a window one token at a time; only the token after it is a target.
    starts = np.arange(0, len(stream) - L - 1)
    seed_x = np.stack([stream[s : s + L] for s in starts[: B * (args.steps + 5)]])
    seed_y = stream[starts[: B * (args.steps + 5)] + L]
    seed = keras.Sequential(
        [
            keras.Input((None,), dtype="int32"),
            keras.layers.Embedding(V, args.embedding_dim),
            keras.layers.SimpleRNN(args.units),
            keras.layers.Dense(V),
        ]
    )
    seed.compile(
        optimizer=keras.optimizers.Adam(2e-3), loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )

    def measure(m, xs, ys, targets_per_batch):
        ds = tf.data.Dataset.from_tensor_slices((xs, ys)).batch(B, drop_remainder=True)
        m.fit(ds.take(3), epochs=1, verbose=0)  # compile and warm up
        timed = ds.skip(3).take(args.steps)
        started = time.perf_counter()
        m.fit(timed, epochs=1, verbose=0)
        seconds = time.perf_counter() - started
        return args.steps * targets_per_batch / seconds, seconds / args.steps

    xs, ys = x[: B * (args.steps + 5)], y[: B * (args.steps + 5)]
    rates = {
        "seed tutorial (one target per window)": measure(seed, seed_x, seed_y, B),
        "wordbot (every position)": measure(model, xs, ys, B * L),
        "wordbot, bfloat16 output layer": measure(fast, xs, ys, B * L),
    }
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, TF {tf.__version__}")
    print(f"model: SimpleRNN {args.units}, embedding {args.embedding_dim}, vocabulary {V}, windows {L}, batch {B}")
    print(f"{'method':<40} {'target tokens/s':>16} {'s/batch':>9}")
    for name, (rate, per_batch) in rates.items():
        print(f"{name:<40} {rate:16,.0f} {per_batch:9.3f}")
    theirs, ours, ours_fast = (r[0] for r in rates.values())
    print(f"ratio: {ours / theirs:.1f}x more trained targets per second than the seed tutorial")
    print(f"bfloat16 output layer: {ours_fast / ours:.2f}x the float32 rate ({ours_fast / theirs:.1f}x the tutorial's)")


if __name__ == "__main__":
    main()
