"""REPL benchmark: per-keystroke suggestion latency and cold start to the first prompt.

Types a 2,000-character text letter by letter and times, at every keystroke, what the
REPL computes (the menu; the menu plus ghost text), split into keystrokes inside a word
and at word boundaries; side by side in the same run with the straightforward way:
Keras `model.predict` on the whole context at every keystroke, same weights. Then the
REPL's cold start to its first prompt in a real pseudo-terminal, beside
`python -c "import tensorflow"`.

    python benchmarks/bench_repl.py [--model DIR] [--keras-keystrokes 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from prompt_toolkit.completion import CompleteEvent  # noqa: E402
from prompt_toolkit.document import Document  # noqa: E402

from wordbot.repl import GhostText, Settings, SuggestionCompleter  # noqa: E402
from wordbot.text import BOS_ID, partial_word, tokenize  # noqa: E402

TEXT_CHARS = 2_000
K = 5


def typing_text(chars: int = TEXT_CHARS) -> str:
    """The first messages of the held-out fortunes, joined, cut at `chars` characters."""
    lines = (ROOT / "data" / "corpus" / "fortunes-test.txt").read_text(encoding="utf-8").splitlines()
    text = ""
    for line in lines:
        if line.strip():
            text += line.strip() + " "
        if len(text) >= chars:
            break
    return text[:chars]


def summary(ms: list[float]) -> str:
    if not ms:
        return "n=0"
    return f"median {statistics.median(ms):.3f} ms, p99 {np.percentile(ms, 99):.3f} ms (n={len(ms)})"


def stats(ms: list[float]) -> dict:
    return {"n": len(ms), "median": statistics.median(ms), "p99": float(np.percentile(ms, 99))} if ms else {}


def time_repl(predictor, text: str) -> dict[str, dict[str, list[float]]]:
    """What the REPL computes per keystroke, called as prompt_toolkit calls it (in a thread
    there, here inline): the completer alone, and the completer plus the ghost text."""
    settings = Settings(k=K)
    completer = SuggestionCompleter(predictor, settings)
    ghost = GhostText(predictor, settings)
    out = {"menu": {"inside": [], "boundary": []}, "menu+ghost": {"inside": [], "boundary": []}}
    for i in range(1, len(text) + 1):
        document = Document(text[:i])
        where = "inside" if partial_word(text[:i]) else "boundary"
        start = time.perf_counter()
        list(completer.get_completions(document, CompleteEvent(text_inserted=True)))
        menu = time.perf_counter()
        ghost.get_suggestion(None, document)
        end = time.perf_counter()
        out["menu"][where].append((menu - start) * 1000)
        out["menu+ghost"][where].append((end - start) * 1000)
    return out


def keras_suggest(models, tokenizer, vocab_words: list[str], word_ids: np.ndarray, text: str) -> list[str]:
    """The straightforward way: predict on the whole context (with every network of
    an ensemble), softmax, filter, top k."""
    from wordbot.training import keras_next_probs

    partial = partial_word(text)
    context = text[: len(text) - len(partial)] if partial else text
    ids = [BOS_ID, *tokenizer.encode_tokens(tokenize(context))]
    probs = keras_next_probs(models, np.array([ids], dtype=np.int32))
    candidates = word_ids
    if partial:
        prefix = partial.lower()
        candidates = np.array([i for i, w in zip(word_ids, vocab_words, strict=True) if w.startswith(prefix)])
        if len(candidates) == 0:
            return []
    top = candidates[np.argsort(-probs[candidates])[:K]]
    return [tokenizer.vocab[i] for i in top]


def time_keras(model_dir, text: str, keystrokes: int) -> tuple[dict[str, list[float]], float]:
    """Keras `model.predict` per keystroke, on an evenly spread sample of the keystrokes."""
    start = time.perf_counter()
    from wordbot.training import keras_models_from_dir

    models = keras_models_from_dir(model_dir)
    load_s = time.perf_counter() - start
    from wordbot.artifacts import load_model

    _, tokenizer, _ = load_model(model_dir)
    word_ids = np.array(tokenizer.word_ids)
    vocab_words = [tokenizer.vocab[i] for i in word_ids]
    positions = range(1, len(text) + 1)
    if keystrokes and keystrokes < len(text):
        positions = np.unique(np.linspace(1, len(text), keystrokes).astype(int)).tolist()
    keras_suggest(models, tokenizer, vocab_words, word_ids, text[:10])  # build the predict function once
    out: dict[str, list[float]] = {"inside": [], "boundary": []}
    for i in positions:
        where = "inside" if partial_word(text[:i]) else "boundary"
        t = time.perf_counter()
        keras_suggest(models, tokenizer, vocab_words, word_ids, text[:i])
        out[where].append((time.perf_counter() - t) * 1000)
    return out, load_s


def first_prompt_seconds(model_dir) -> tuple[float, int]:
    """Spawn `python -m wordbot repl` in an 80x24 pseudo-terminal; seconds until the prompt
    is on screen, and the peak resident memory (kB) of the process at that point."""
    import pexpect
    import pyte

    with tempfile.TemporaryDirectory() as state:
        env = dict(os.environ, WORDBOT_STATE_DIR=state, PYTHONPATH=str(ROOT), TERM="xterm")
        args = ["-m", "wordbot", "repl", *(["--model", str(model_dir)] if model_dir else [])]
        start = time.perf_counter()
        child = pexpect.spawn(sys.executable, args, env=env, dimensions=(24, 80), cwd=str(ROOT))

        class Screen(pyte.Screen):
            def write_process_input(self, data: str) -> None:
                child.send(data)

        screen = Screen(80, 24)
        stream = pyte.ByteStream(screen)
        while not any(line.startswith("> ") for line in screen.display):
            try:
                stream.feed(child.read_nonblocking(65536, timeout=30))
            except pexpect.TIMEOUT:
                raise SystemExit("the REPL showed no prompt in 30 s") from None
        elapsed = time.perf_counter() - start
        peak_kb = 0
        for line in Path(f"/proc/{child.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                peak_kb = int(line.split()[1])
        child.sendcontrol("d")
        child.expect(pexpect.EOF, timeout=20)
        child.close()
        return elapsed, peak_kb


def command_seconds(code: str) -> float:
    start = time.perf_counter()
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, env=env)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--keras-keystrokes", type=int, default=300, help="keystrokes timed with Keras; 0 = all")
    parser.add_argument("--runs", type=int, default=5, help="cold starts of each kind")
    parser.add_argument("--skip-keras", action="store_true", help="only the REPL's own figures")
    args = parser.parse_args(argv)
    # This run's own n-gram cache: the first load counts the 5-gram, later starts read it
    # (as for a user after the first start), and the user's ~/.cache is left alone.
    cache = tempfile.TemporaryDirectory(prefix="wordbot-bench-")
    os.environ["WORDBOT_CACHE_DIR"] = cache.name

    from wordbot.predictor import Predictor

    model_dir = args.model
    predictor = Predictor.load(model_dir)
    text = typing_text()
    print(f"model: {predictor.describe()}")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"typing {len(text)} characters letter by letter, k={K}")

    repl = time_repl(predictor, text)
    for what, split in repl.items():
        for where, ms in split.items():
            print(f"  repl {what:<10} {where:<8} {summary(ms)}")
        print(f"  repl {what:<10} {'all':<8} {summary(split['inside'] + split['boundary'])}")

    if not args.skip_keras:
        keras, load_s = time_keras(model_dir, text, args.keras_keystrokes)
        print(f"  keras model.predict (load {load_s:.1f} s with TensorFlow import):")
        for where, ms in keras.items():
            print(f"  keras predict    {where:<8} {summary(ms)}")
        print(f"  keras predict    {'all':<8} {summary(keras['inside'] + keras['boundary'])}")

    starts, peaks = zip(*(first_prompt_seconds(model_dir) for _ in range(args.runs)), strict=True)
    print(
        f"cold start to first prompt: median {statistics.median(starts):.2f} s "
        f"(min {min(starts):.2f}, max {max(starts):.2f}, n={len(starts)}), "
        f"peak RSS {statistics.median(peaks) / 1024:.0f} MB"
    )
    bare = [command_seconds("pass") for _ in range(args.runs)]
    print(f"python -c pass: median {statistics.median(bare):.2f} s")
    if not args.skip_keras:
        tf = [command_seconds("import tensorflow") for _ in range(max(1, args.runs // 2 + 1))]
        print(
            f"python -c 'import tensorflow': median {statistics.median(tf):.2f} s "
            f"(min {min(tf):.2f}, max {max(tf):.2f}, n={len(tf)})"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
