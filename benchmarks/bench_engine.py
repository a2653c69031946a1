"""Time per suggestion: the served model (the mix) per word, per keystroke and for a
fresh context, against one 10,000 x 384 product (the unit), against the networks' own
output products (the floor of a word), and against the served model as wordbot
computed it before the fast paths (the reference: the engine of `--base`, read with
`git show`, stepping a context one token at a time, and the dense n-gram and mix kept
in `wordbot.testing.reference`), with one and with NumPy's default BLAS threads on an
idle and a busy machine; then the straightforward Keras ways (model.predict, model(x),
a tf.function) on the network, and the figures issue 15 asks for with their targets.

    PYTHONPATH=. python benchmarks/bench_engine.py [--model DIR] [--compare DIR] [--requests 200] [--no-keras]

Requests replay the first messages of the test file word by word (`next_words` after
each word) and letter by letter (`complete` of each partial word). A fresh context is
the last 40 words of the test text before a message, asked with empty caches (a `!next`
in the bot). Busy: two other processes spin both cores. Keras has no state between
requests, so each request feeds it the last `--context` tokens; a keystroke costs it
the same forward pass as a word. Keras runs the network(s) alone (the mix adds the
n-gram, which Keras does not have); for an ensemble it averages their distributions.
`--compare DIR` serves another model directory in the same rounds (e.g. a one-network
copy of the bundled ensemble), so its rows are read against the same unit.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import multiprocessing
import os
import platform
import statistics
import subprocess
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
BASE = "43a2bc0"  # main before the fast paths: its engine steps a context one token at a time


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


def fresh_contexts(n: int, words: int = 40) -> list[str]:
    """The `words` words of test text before each of `n` messages (a context no cache holds)."""
    tokens = [t for m in read_messages(TEST_FILE)[: n + 200] for t in tokenize(m)]
    step = max(1, (len(tokens) - words) // n)
    return [detokenize(tokens[i : i + words]) for i in range(0, step * n, step)]


def reference(model_dir: Path, base: str) -> Predictor:
    """The served model as wordbot computed it before the fast paths: the engine of
    `base` (read with `git show`), the same n-gram and weights mixed densely
    (`DenseMix`), and a Predictor that steps a context one token at a time."""
    from wordbot.artifacts import load_model
    from wordbot.testing.reference import DenseMix

    source = subprocess.run(["git", "-C", str(ROOT), "show", f"{base}:wordbot/engine.py"], capture_output=True)
    if source.returncode:
        raise SystemExit(f"cannot read the reference engine at {base}: {source.stderr.decode()}")
    spec = importlib.util.spec_from_loader("reference_engine", loader=None)
    old = importlib.util.module_from_spec(spec)
    exec(compile(source.stdout, f"{base}:wordbot/engine.py", "exec"), old.__dict__)

    class StepByStep(Predictor):
        def _state(self, key):
            cached = self._states.get(key)
            if cached is not None:
                return cached
            n = len(key) - 1
            while n > 0 and key[:n] not in self._states:
                n -= 1
            state = self._states[key[:n]] if n > 0 else self.lm.initial_state()
            for i in range(n, len(key)):
                state = self.lm.advance(state, key[i])
                self._remember(self._states, key[: i + 1], state, 4096)
            return state

    served = Predictor.load(model_dir)
    manifest, tokenizer, weights = load_model(model_dir)
    lm = old.network(manifest, tokenizer, weights)
    if served.backend == "mix":
        lm = DenseMix(lm, served.lm.models[1], served.lm.weights)
    return StepByStep(lm, manifest=manifest, backend=served.backend)


def product_ms(repeat: int = 300) -> list[float]:
    """One float32 product of a 10,000 x 384 matrix and a vector: the unit of the figures."""
    rng = np.random.default_rng(0)
    matrix, vector = rng.standard_normal((10_000, 384), dtype=np.float32), rng.standard_normal(384, dtype=np.float32)
    return timed(lambda _: matrix @ vector, [None] * repeat)


def output_products_ms(predictor: Predictor, repeat: int = 300) -> list[float]:
    """The served networks' logits (their output products and little else) at the states
    of a real text, one after the other as serving meets them: the floor of a word."""
    network = predictor.lm.models[0] if predictor.backend == "mix" else predictor.lm
    ids = network.tokenizer.encode(" ".join(read_messages(TEST_FILE)[:20]))[:repeat]
    states = network.advance_many(network.initial_state(), [BOS_ID, *ids])
    return timed(network.logits, states)


def _spin() -> None:
    while True:
        pass


@contextlib.contextmanager
def busy(on: bool):
    """Two other processes spinning both cores (when `on`)."""
    procs = [multiprocessing.Process(target=_spin, daemon=True) for _ in range(2 if on else 0)]
    for proc in procs:
        proc.start()
    try:
        yield
    finally:
        for proc in procs:
            proc.terminate()
            proc.join()


def fresh_ms(predictor: Predictor, texts: list[str]) -> list[float]:
    out = []
    for text in texts:
        predictor._states.clear()
        predictor._probs.clear()
        out.extend(timed(lambda t: predictor.next_words(t, k=3), [text]))
    return out


def parity_line(new: Predictor, old: Predictor, texts: list[str]) -> str:
    """The fast path's answers against the reference's on the fresh contexts: the largest
    difference of a probability, and in how many the top 3 words are the same."""
    diff, same = 0.0, 0
    for text in texts:
        ids = new._context(tokenize(text))
        diff = max(diff, float(np.abs(new.token_probs(ids) - old.token_probs(ids)).max()))
        same += [w for w, _ in new.next_words(text, k=3)] == [w for w, _ in old.next_words(text, k=3)]
    return f"parity: max |p_new - p_reference| = {diff:.1e} over {len(texts)} fresh contexts; the same top 3 in {same}"


def serving_table(model_dir: Path, base: str, word_texts, key_texts, fresh_texts, compare=()) -> dict:
    """The served model's figures, new and `base` (and each `compare` directory), idle
    and busy, 1 and default threads. Returns the idle one-thread medians by what."""
    from threadpoolctl import threadpool_info, threadpool_limits

    new, old = Predictor.load(model_dir), reference(model_dir, base)
    others = [(Path(d).name, Predictor.load(d)) for d in compare]
    default = max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas")
    rows = []
    for load in ("idle", "busy"):
        for threads in sorted({1, default}):
            with busy(load == "busy"), threadpool_limits(limits=threads, user_api="blas"):
                unit = product_ms()
                for name, predictor in (("new", new), (f"{base}", old), *others):
                    predictor._states.clear()
                    predictor._probs.clear()
                    predictor.next_words("warm up", k=3)
                    rows.append(
                        (
                            load,
                            threads,
                            name,
                            "per word (next_words)",
                            timed(lambda t, p=predictor: p.next_words(t, k=3), word_texts),
                            unit,
                        )
                    )
                    rows.append(
                        (
                            load,
                            threads,
                            name,
                            "per keystroke (complete)",
                            timed(lambda t, p=predictor: p.complete(t, k=3), key_texts),
                            unit,
                        )
                    )
                    rows.append((load, threads, name, "fresh 40-word context", fresh_ms(predictor, fresh_texts), unit))
                rows.append((load, threads, "-", "one 10,000 x 384 product", unit, unit))
                rows.append((load, threads, "-", "the networks' output products", output_products_ms(new), unit))
    print(f"served: {new.describe()}")
    print(parity_line(new, old, fresh_texts))
    for _, other in others:
        print(f"compared: {other.describe()}")
    print()
    print("| load | BLAS threads | engine | what | median ms | p99 ms | x one product | new vs old |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    medians = {(r[0], r[1], r[2], r[3]): statistics.median(r[4]) for r in rows}
    for load, threads, name, what, ms, unit in rows:
        median, p99 = summary(ms)
        vs_old = ""
        if name == "new":
            vs_old = f"{medians[(load, threads, base, what)] / median:.1f}x faster"
        print(
            f"| {load} | {threads} | {name} | {what} | {median:.3f} | {p99:.3f} | "
            f"{median / statistics.median(unit):.1f} | {vs_old} |"
        )
    for name in ("new", base):
        for what in ("per word (next_words)", "fresh 40-word context"):
            ratio = medians[("busy", default, name, what)] / medians[("busy", 1, name, what)]
            print(f"busy, {name}, {what}: {default} threads take {ratio:.1f}x the time of 1 thread")
    print()
    idle = {what: medians[("idle", 1, name, what)] for (load, threads, name, what) in medians if name in ("new", "-")}
    idle["reference fresh 40-word context"] = medians[("idle", 1, base, "fresh 40-word context")]
    for name, _ in others:
        for what in ("per word (next_words)", "fresh 40-word context"):
            idle[f"{name}: {what}"] = medians[("idle", 1, name, what)]
    return idle


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--messages", type=int, default=40, help="test messages to replay")
    parser.add_argument("--requests", type=int, default=200, help="Keras requests per way (they are slow)")
    parser.add_argument("--context", type=int, default=32, help="tokens fed to Keras per request")
    parser.add_argument("--fresh", type=int, default=100, help="fresh 40-word contexts asked")
    parser.add_argument("--compare", action="append", default=[], help="another model directory to time alongside")
    parser.add_argument("--base", default=BASE, help="the commit whose step-by-step engine is the reference")
    parser.add_argument("--no-keras", action="store_true", help="skip the Keras ways (no TensorFlow needed)")
    args = parser.parse_args(argv)

    model_dir = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    word_texts, key_texts = requests(args.messages)
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f},")
    print(f"         Python {platform.python_version()}, NumPy {np.__version__}")
    idle = serving_table(model_dir, args.base, word_texts, key_texts, fresh_contexts(args.fresh), args.compare)
    if args.no_keras:
        targets(idle, None)
        return
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")  # as the serving commands run
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
    print(f"TensorFlow {tf.__version__}")
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
    targets(idle, summary(keras_ms["model.predict"])[0])


def targets(idle: dict, predict: float | None) -> None:
    """Issue 15's figures (idle, one BLAS thread, medians) against its bars, each said
    met or not. Per word: >= 200x model.predict, or where that is below the floor of
    the networks' own output products, <= 4 units; which of the two binds is said."""
    unit, floor = idle["one 10,000 x 384 product"], idle["the networks' output products"]
    word, key = idle["per word (next_words)"], idle["per keystroke (complete)"]
    fresh, old_fresh = idle["fresh 40-word context"], idle["reference fresh 40-word context"]

    def met(ok: bool) -> str:
        return "MET" if ok else "NOT MET"

    print("issue 15 (idle, 1 BLAS thread, medians):")
    print(f"  unit: one 10,000 x 384 product {unit:.3f} ms; the networks' output products {floor:.3f} ms", end="")
    print(f" = {floor / unit:.1f} units (the floor of a word)")
    print(f"  per word: {word:.3f} ms = {word / unit:.1f} units", end="")
    print(f", of which {word - floor:.3f} ms besides the output products")
    if predict is None:
        print("    which bar binds: unknown without Keras (run without --no-keras for model.predict)")
        print(f"    <= 4 units: {met(word <= 4 * unit)}")
    else:
        wanted = predict / 200
        print(f"    model.predict {predict:.1f} ms = {predict / word:.0f}x a word; 200x needs {wanted:.3f} ms a word")
        if wanted < floor:
            print(f"    that is below the floor ({floor:.3f} ms), so the <= 4 units bar binds: {met(word <= 4 * unit)}")
        else:
            print(f"    that is above the floor ({floor:.3f} ms), so the 200x bar binds: {met(word <= wanted)}")
    print(f"  per keystroke: {key:.3f} ms = {key / unit:.2f} units (bar <= 0.33): {met(key <= unit / 3)}")
    print(
        f"  fresh 40-word context: {fresh:.3f} ms, reference {old_fresh:.3f} ms: {old_fresh / fresh:.2f}x faster",
        end="",
    )
    print(f" (bar >= 4x: {met(old_fresh >= 4 * fresh)}; one word's output products alone allow at most", end="")
    print(f" {old_fresh / floor:.1f}x)")
    for name in sorted({k.split(": ")[0] for k in idle if ": " in k}):
        w, f = idle[f"{name}: per word (next_words)"], idle[f"{name}: fresh 40-word context"]
        print(
            f"  {name}: per word {w:.3f} ms = {w / unit:.1f} units ({word / w:.2f}x faster than the served model),",
            end="",
        )
        print(f" fresh 40-word context {f:.3f} ms ({fresh / f:.2f}x faster; {old_fresh / f:.2f}x the reference)")


if __name__ == "__main__":
    main()
