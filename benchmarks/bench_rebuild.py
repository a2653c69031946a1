"""Learning a stored history again (the bot's memory rebuild at start, the REPL's history
load), in one run: `Predictor.learn` message by message beside `Predictor.learn_many`, the
same messages into fresh views of one loaded predictor, alternately, a few rounds each.

    PYTHONPATH=. python benchmarks/bench_rebuild.py [--messages 20000] [--rounds 3]

Both must end in the same memory (checked: the learned weight's totals, every count); the
times are the medians of the rounds. Meanwhile a second thread asks the view being taught
for suggestions (`complete` after a context, as an answer to a member does) every 20 ms:
how long those wait while the history is learned is the price of the lock being held.
The messages are the training text again and again, a word of its own every 7 messages
(as benchmarks/bench_memory.py learns them).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wordbot.artifacts import model_directory  # noqa: E402
from wordbot.corpus import training_messages  # noqa: E402
from wordbot.predictor import Predictor  # noqa: E402
from wordbot.threads import one_blas_thread  # noqa: E402

PROMPTS = ("the quick brown", "a friend in need is", "never put off until", "all that glitters")


def answering(view: Predictor, stop: threading.Event, waits: list[float]) -> None:
    """Suggestions asked of `view` every 20 ms until `stop`: each one's time, in ms."""
    i = 0
    while not stop.wait(0.02):
        start = time.perf_counter()
        view.complete(f"{PROMPTS[i % len(PROMPTS)]} zq{i % 50}")
        waits.append((time.perf_counter() - start) * 1e3)
        i += 1


def rebuild(predictor: Predictor, texts: list[str], batched: bool) -> tuple[float, Predictor, list[float]]:
    view, waits, stop = predictor.view(), [], threading.Event()
    asker = threading.Thread(target=answering, args=(view, stop, waits))
    asker.start()
    start = time.perf_counter()
    if batched:
        view.learn_many(texts, keys=range(len(texts)))
    else:
        for i, text in enumerate(texts):
            view.learn(text, key=i)
    seconds = time.perf_counter() - start
    stop.set()
    asker.join()
    return seconds, view, waits


def main() -> None:
    one_blas_thread()  # as every serving command does (wordbot/threads.py)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=20_000, help="messages learned again")
    parser.add_argument("--rounds", type=int, default=3, help="rebuilds of each kind, alternately")
    parser.add_argument("--only", choices=("learn", "learn_many"), help="time one kind alone (an older tree: learn)")
    args = parser.parse_args()
    predictor = Predictor.load()
    lines = training_messages(predictor.manifest, model_directory(None))
    texts = [f"{lines[i % len(lines)]} zq{i // 7}" for i in range(args.messages)]
    times: dict[str, list[float]] = {"learn": [], "learn_many": []}
    waits: dict[str, list[float]] = {"learn": [], "learn_many": []}
    ended: dict[str, tuple] = {}
    for r in range(args.rounds):
        for batched in (r % 2 == 1, r % 2 == 0):  # which goes first alternates
            name = "learn_many" if batched else "learn"
            if args.only not in (None, name):
                continue
            seconds, view, asked = rebuild(predictor, texts, batched)
            times[name].append(seconds)
            waits[name] += asked
            memory = view.memory
            found = (memory._weights.totals.copy(), memory._contexts, memory.words, memory.tokens)
            ended[name] = found
            print(f"round {r + 1}: {name:10s} {seconds:6.2f} s", flush=True)
        if len(ended) == 2:
            (one, many) = ended.values()
            assert np.array_equal(one[0], many[0]) and one[1:] == many[1:], "learn_many differs from learn"
    checked = " (the same memory at the end: checked)" if len(ended) == 2 else ""
    print(f"\n{args.messages:,} messages, median of {args.rounds} rounds{checked}")
    for name in ended:
        median, asked = statistics.median(times[name]), sorted(waits[name])
        p99 = asked[min(len(asked) - 1, int(0.99 * len(asked)))] if asked else float("nan")
        print(
            f"{name:10s} {median:6.2f} s ({median / args.messages * 1e3:.3f} ms a message); "
            f"a suggestion meanwhile: median {statistics.median(asked):.2f} ms, p99 {p99:.2f}, max {asked[-1]:.2f} "
            f"(n={len(asked)})"
        )
    if len(ended) == 2:
        print(
            f"learn_many is {statistics.median(times['learn']) / statistics.median(times['learn_many']):.2f}x as fast"
        )


if __name__ == "__main__":
    main()
