"""What a learned memory costs, in one run: the served predictor with an empty memory
and a view of it that learned 100,000 messages, side by side, typing the same text.

    PYTHONPATH=. python benchmarks/bench_memory.py [--learned 100000] [--messages 120]

- learn: `Predictor.learn` of a 20-word message into the full memory (median, p99).
- per word: the next words after one more token of a message (as `wordbot eval` and
  a user typing see it: the state one step on, the distribution adapted afresh).
- per keystroke: the completions of each typed prefix of the next word.
- after learn: the first suggestion after a message was learned (the memory changed:
  nothing adapted before may be reused).
Both predictors are loaded separately (no shared caches) and timed alternately on the
same contexts, so load on the machine falls on both alike. The 100,000 messages are
the training text again and again under fresh keys, each with a word of its own
every 7 messages, so the memory's vocabulary grows too (about 14,000 new words).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wordbot.corpus import read_messages, split_messages  # noqa: E402
from wordbot.predictor import Predictor  # noqa: E402
from wordbot.text import is_word, tokenize  # noqa: E402
from wordbot.threads import one_blas_thread  # noqa: E402

MESSAGE_20 = "the quick brown fox jumps over the lazy dog while the cat sleeps on a warm mat by the door"


def timed(f, *args) -> float:
    t0 = time.perf_counter()
    f(*args)
    return (time.perf_counter() - t0) * 1e3


def typing(empty: Predictor, full: Predictor, messages: list[str]) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {k: [] for k in ("word empty", "word full", "key empty", "key full", "after learn")}
    for n, message in enumerate(messages):
        tokens = tokenize(message)
        for j, token in enumerate(tokens):
            context = tokens[:j]
            times["word empty"].append(timed(empty.suggest_after, context, "", 3))
            times["word full"].append(timed(full.suggest_after, context, "", 3))
            if is_word(token):
                for i in range(1, len(token)):
                    times["key empty"].append(timed(empty.suggest_after, context, token[:i], 3))
                    times["key full"].append(timed(full.suggest_after, context, token[:i], 3))
        full.learn(message, key=("typed", n))  # a committed line: the memory changes
        times["after learn"].append(timed(full.suggest_after, tokens[:2], "", 3))
    return times


def main() -> None:
    one_blas_thread()  # as every serving command does (wordbot/threads.py)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--learned", type=int, default=100_000, help="messages in the full memory")
    parser.add_argument("--messages", type=int, default=120, help="validation messages typed")
    args = parser.parse_args()
    empty = Predictor.load()
    full = Predictor.load()
    from wordbot.artifacts import model_directory
    from wordbot.corpus import training_messages

    texts = training_messages(empty.manifest, model_directory(None))
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    for i in range(args.learned):
        full.learn(f"{texts[i % len(texts)]} zq{i // 7}", key=i)
    learn_s = time.perf_counter() - t0
    rss1 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    adds = [timed(full.learn, MESSAGE_20, ("twenty", i)) for i in range(1000)]
    _, validation = split_messages(read_messages(ROOT / "data" / "corpus" / "fortunes-train.txt"), 0.05, 0)
    times = typing(empty, full, [m for m in validation if len(m) < 300][: args.messages])
    print(
        f"learned {args.learned:,} messages in {learn_s:.1f} s ({len(full.memory.words):,} new words, "
        f"peak RSS +{(rss1 - rss0) / 1024:.0f} MB)"
    )
    print(f"learn of a 20-word message: median {np.median(adds):.3f} ms, p99 {np.percentile(adds, 99):.3f} ms")
    print(f"\n{'ms':22s} {'empty':>16s} {'100k learned':>16s} {'ratio':>14s}")
    print(f"{'':22s} {'median   p99':>16s} {'median   p99':>16s} {'median  p99':>14s}")
    for what in ("word", "key"):
        e, f = np.array(times[f"{what} empty"]), np.array(times[f"{what} full"])
        row = [np.median(e), np.percentile(e, 99), np.median(f), np.percentile(f, 99)]
        label = "per word" if what == "word" else "per keystroke"
        print(
            f"{label + f' ({len(e):,})':22s} {row[0]:7.3f} {row[1]:7.3f}  {row[2]:7.3f} {row[3]:7.3f}"
            f"  {row[2] / row[0]:5.2f}x {row[3] / row[1]:5.2f}x"
        )
    a = np.array(times["after learn"])
    print(f"{'after learn (' + str(len(a)) + ')':22s} {'':16s} {np.median(a):7.3f} {np.percentile(a, 99):7.3f}")


if __name__ == "__main__":
    main()
