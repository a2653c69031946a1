"""Time per suggestion of the model as it is served (the bundled mix, or --backend):
`next_words` after every word and `complete` of every partial word of the first
messages of the training file, and the time to load it (n-gram cache warm).

    PYTHONPATH=. python benchmarks/bench_served.py [--backend mix] [--messages 30]

It imports wordbot from PYTHONPATH and reads the corpus under the working directory,
so `side_by_side.py` can run this one script on two trees:

    python benchmarks/side_by_side.py --base main --base-script "$PWD/benchmarks/bench_served.py" \\
        benchmarks/bench_served.py
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", help="rnn, ngram or mix (default: what the model's manifest serves)")
    parser.add_argument("--messages", type=int, default=30, help="training messages to replay")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the requests; the fastest is kept")
    args = parser.parse_args(argv)

    from wordbot.corpus import read_messages
    from wordbot.predictor import Predictor
    from wordbot.text import detokenize, is_word, tokenize

    Predictor.load(backend=args.backend)  # counts the n-gram into the cache if it is not there
    t0 = time.perf_counter()
    predictor = Predictor.load(backend=args.backend)
    load_s = time.perf_counter() - t0

    words, keys = [], []
    for message in read_messages(Path("data/corpus/fortunes-train.txt"))[: args.messages]:
        tokens = tokenize(message)
        for i, token in enumerate(tokens):
            prefix = detokenize(tokens[:i])
            words.append(prefix)
            if is_word(token):
                keys.extend(f"{prefix} {token[:j]}".lstrip() for j in range(1, len(token)))

    def median_ms(fn, items) -> float:
        best = []
        for _ in range(args.repeat):
            predictor._states.clear()  # every pass from cold caches, as the first time
            predictor._probs.clear()
            times = []
            for item in items:
                t = time.perf_counter()
                fn(item)
                times.append((time.perf_counter() - t) * 1e3)
            best.append(statistics.median(times))
        return min(best)

    per_word = median_ms(lambda t: predictor.next_words(t, k=3), words)
    per_key = median_ms(lambda t: predictor.complete(t, k=3), keys)
    print(f"served {predictor.backend}, {len(predictor.tokenizer)} words: load {load_s:.3f} s")
    print(f"per word (next_words), median of {len(words)}: {per_word:.3f} ms")
    print(f"per keystroke (complete), median of {len(keys)}: {per_key:.3f} ms")


if __name__ == "__main__":
    main()
