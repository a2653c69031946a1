"""Cold start and peak memory: `wordbot next` (the served mix, and the network alone)
vs `python -c "import numpy"` (the floor), a process that imports TensorFlow, and
answering the same request the Keras way, measured side by side in one run; with the
targets (2x the floor's time; the floor's RSS + the weights in memory + 16 MB).

    PYTHONPATH=. python benchmarks/bench_coldstart.py [--model DIR] [--repeat 5]

Each command is a fresh process; the runs are interleaved so background load hits
them alike. Wall time is from spawn to exit; peak RSS is the child's ru_maxrss
(os.wait4), so nothing of this script's own memory is counted. `wordbot next` is
measured twice: with the n-gram already in its cache (every start but the first),
and with an empty cache directory (the first start counts the n-gram).
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wordbot.artifacts import DEFAULT_MODEL_DIR  # noqa: E402

PROMPT = "What is the meaning of"
FLOOR = 'python -c "import numpy" (floor)'


def weights_in_memory(model_dir: Path) -> int:
    """Bytes of the network's weights as the engine holds them (float32)."""
    import math

    from wordbot.artifacts import expected_shapes, load_model

    manifest = load_model(model_dir)[0]
    shapes = expected_shapes(manifest["architecture"], manifest["vocab_size"])
    return 4 * sum(math.prod(shape) for shape in shapes.values())


def measure(argv: list[str], env: dict) -> tuple[float, float]:
    """(wall seconds, peak resident MB) of one fresh process."""
    if argv[0] == "FRESH-CACHE":  # run with an empty n-gram cache of its own
        with tempfile.TemporaryDirectory() as cache:
            return measure(argv[1:], {**env, "WORDBOT_CACHE_DIR": cache})
    t0 = time.perf_counter()
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, cwd=ROOT)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err[-2000:]}")
    return wall, usage.ru_maxrss / 1024  # Linux reports KiB


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each command")
    args = parser.parse_args(argv)

    model_dir = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    cache = tempfile.TemporaryDirectory()  # this run's own n-gram cache, filled by the warm-up run
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "WORDBOT_CACHE_DIR": cache.name}
    wordbot = shutil.which("wordbot")
    wordbot_cmd = [wordbot] if wordbot else [sys.executable, "-m", "wordbot"]
    keras_answer = (
        "import numpy as np; from wordbot.training import keras_models_from_dir, keras_next_probs; "
        "from wordbot.artifacts import load_model; from wordbot.text import BOS_ID; "
        f"d = {str(model_dir)!r}; t = load_model(d)[1]; m = keras_models_from_dir(d); "
        f"p = keras_next_probs(m, np.array([[BOS_ID, *t.encode({PROMPT!r})]])); "
        "print([t.vocab[i] for i in np.argsort(-p)[:5]])"
    )
    commands = {
        "wordbot next (NumPy engine)": [*wordbot_cmd, "next", PROMPT, "--model", str(model_dir)],
        "wordbot next, first start (n-gram counted)": [
            "FRESH-CACHE",
            *wordbot_cmd,
            *("next", PROMPT, "--model", str(model_dir)),
        ],
        'python -c "import tensorflow"': [sys.executable, "-c", "import tensorflow"],
        "the same answer the Keras way": [sys.executable, "-c", keras_answer],
        "wordbot next --backend rnn (the network alone)": [
            *wordbot_cmd,
            *("next", PROMPT, "--model", str(model_dir), "--backend", "rnn"),
        ],
        FLOOR: [sys.executable, "-c", "import numpy"],
    }
    runs: dict[str, list[tuple[float, float]]] = {name: [] for name in commands}
    for cmd in commands.values():  # one untimed run each warms the page cache
        measure(cmd, env)
    for _ in range(args.repeat):
        for name, cmd in commands.items():
            runs[name].append(measure(cmd, env))

    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f},")
    print(f"         Python {platform.python_version()}; {args.repeat} runs each, interleaved, medians")
    print(f"model:   {model_dir}")
    print()
    base_wall = statistics.median(w for w, _ in runs["wordbot next (NumPy engine)"])
    base_rss = statistics.median(r for _, r in runs["wordbot next (NumPy engine)"])
    floor_wall = statistics.median(w for w, _ in runs[FLOOR])
    floor_rss = statistics.median(r for _, r in runs[FLOOR])
    weights_mb = weights_in_memory(model_dir) / 2**20
    print(
        f"targets: wall <= 2 x the floor's = {2 * floor_wall:.2f} s; peak RSS <= the floor's + the weights' "
        f"{weights_mb:.0f} MB in memory + 16 MB = {floor_rss + weights_mb + 16:.0f} MB"
    )
    for name in ("wordbot next (NumPy engine)", "wordbot next --backend rnn (the network alone)"):
        wall = statistics.median(w for w, _ in runs[name])
        rss = statistics.median(r for _, r in runs[name])
        print(
            f"{name}: {wall / floor_wall:.1f} x the floor's wall time, "
            f"peak RSS {rss - floor_rss - weights_mb:+.0f} MB beyond the floor + the weights"
        )
    print()
    print("| command | wall s (median) | wall s (min..max) | peak RSS MB | wall vs wordbot | RSS vs wordbot |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, results in runs.items():
        walls = [w for w, _ in results]
        wall, rss = statistics.median(walls), statistics.median(r for _, r in results)
        print(
            f"| {name} | {wall:.2f} | {min(walls):.2f}..{max(walls):.2f} | {rss:.0f} | "
            f"{wall / base_wall:.1f}x | {rss / base_rss:.1f}x |"
        )


if __name__ == "__main__":
    main()
