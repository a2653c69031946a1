"""Cold start and peak memory of `wordbot next` (the served mix, and the network alone)
side by side with `python -c "import numpy"` (the floor), in one run, with the targets
of issue 15: wall time <= 2x the floor's, peak RSS <= the floor's + the weights' size
in memory + 16 MB.

    PYTHONPATH=. python benchmarks/bench_coldstart.py [--model DIR] [--repeat 7] [--first-start] [--keras]

Each command is a fresh process, and the rounds alternate (floor, mix, network, ...),
so background load hits every row alike. Wall time is from spawn to exit; peak RSS is
the child's ru_maxrss (os.wait4), so nothing of this script's own memory is counted.
Bytecode is cached (PYTHONDONTWRITEBYTECODE is dropped; the warm-up run writes it).
`wordbot next` runs with this run's own cache directory already filled by the warm-up
run, as at every start but a model's first on a machine: the n-gram, the served
vocabulary and a float16 model's weights as float32 (wordbot/weight_cache.py);
`--first-start` adds a row with an empty cache (the n-gram counted, the weights
converted, all written), `--keras` the TensorFlow rows (`import tensorflow`, and the
same answer the Keras way).
"""

from __future__ import annotations

import argparse
import math
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
MIX = "wordbot next (served mix)"
NETWORK = "wordbot next --backend rnn (network alone)"
FIRST = "wordbot next, first start (n-gram counted)"


def weights_in_memory(model_dir: Path) -> tuple[int, dict]:
    """(bytes of the network's weights as the engine holds them, float32; the manifest)."""
    from wordbot.artifacts import expected_shapes, load_model

    manifest = load_model(model_dir)[0]
    shapes = expected_shapes(manifest["architecture"], manifest["vocab_size"])
    return 4 * sum(math.prod(shape) for shape in shapes.values()), manifest


def measure(argv: list[str], env: dict) -> tuple[float, float, float]:
    """(wall seconds, peak resident MB, CPU seconds: user + system) of one fresh process."""
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
    return wall, usage.ru_maxrss / 1024, usage.ru_utime + usage.ru_stime  # Linux reports KiB


def commands(model_dir: Path, first_start: bool, keras: bool) -> dict[str, list[str]]:
    wordbot = shutil.which("wordbot")
    wordbot_cmd = [wordbot] if wordbot else [sys.executable, "-m", "wordbot"]
    next_cmd = [*wordbot_cmd, "next", PROMPT, "--model", str(model_dir)]
    out = {FLOOR: [sys.executable, "-c", "import numpy"], MIX: next_cmd, NETWORK: [*next_cmd, "--backend", "rnn"]}
    if first_start:
        out[FIRST] = ["FRESH-CACHE", *next_cmd]
    if keras:
        keras_answer = (
            "import numpy as np; from wordbot.training import keras_models_from_dir, keras_next_probs; "
            "from wordbot.artifacts import load_model; from wordbot.text import BOS_ID; "
            f"d = {str(model_dir)!r}; t = load_model(d)[1]; m = keras_models_from_dir(d); "
            f"p = keras_next_probs(m, np.array([[BOS_ID, *t.encode({PROMPT!r})]])); "
            "print([t.vocab[i] for i in np.argsort(-p)[:5]])"
        )
        out['python -c "import tensorflow"'] = [sys.executable, "-c", "import tensorflow"]
        out["the same answer the Keras way"] = [sys.executable, "-c", keras_answer]
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model directory (default: the bundled model)")
    parser.add_argument("--repeat", type=int, default=7, help="rounds (each runs every command once)")
    parser.add_argument("--first-start", action="store_true", help="add a row with an empty n-gram cache")
    parser.add_argument("--keras", action="store_true", help="add the TensorFlow rows (slow)")
    args = parser.parse_args(argv)

    model_dir = Path(args.model) if args.model else DEFAULT_MODEL_DIR
    cache = tempfile.TemporaryDirectory()  # this run's own n-gram cache, filled by the warm-up run
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "WORDBOT_CACHE_DIR": cache.name}
    # Bytecode cached, as every install has it (pip compiles it): with PYTHONDONTWRITEBYTECODE
    # set, each start would compile wordbot's modules from source (0.05-0.2 s).
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    todo = commands(model_dir, args.first_start, args.keras)
    runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name in todo}
    for cmd in todo.values():  # one untimed run each: the page cache and the n-gram cache warm
        measure(cmd, env)
    for _ in range(args.repeat):
        for name, cmd in todo.items():
            runs[name].append(measure(cmd, env))
    report(runs, model_dir, args.repeat)


def report(runs: dict[str, list[tuple[float, float, float]]], model_dir: Path, repeat: int) -> None:
    weights, manifest = weights_in_memory(model_dir)
    weights_mb = weights / 2**20
    wall = {name: statistics.median(w for w, _, _ in results) for name, results in runs.items()}
    rss = {name: statistics.median(r for _, r, _ in results) for name, results in runs.items()}
    # CPU time moves less with the neighbours' load than wall time does (a busy machine
    # makes a start wait for a core, not do more): its ratio is the idle machine's, nearly.
    cpu = {name: statistics.median(c for _, _, c in results) for name, results in runs.items()}
    time_target = 2 * wall[FLOOR]
    rss_target = rss[FLOOR] + weights_mb + 16
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}, ", end="")
    print(f"Python {platform.python_version()}; {repeat} alternating rounds, medians")
    print(f"model:   {model_dir} (format version {manifest.get('format_version')}, "
          f"weights stored as {manifest.get('weights_dtype', 'float32')})")  # fmt: skip
    print(f"weights in memory (float32, as the engine holds them): {weights_mb:.1f} MB")
    print(
        f"targets: wall <= 2 x the floor's {wall[FLOOR]:.3f} s = {time_target:.3f} s; peak RSS <= the floor's "
        f"{rss[FLOOR]:.1f} MB + {weights_mb:.1f} MB + 16 MB = {rss_target:.1f} MB"
    )
    print()
    print("| command | wall s (median) | min..max | peak RSS MB | wall / floor | CPU / floor ", end="")
    print("| RSS - target MB | both met |")
    print("|---|---:|---:|---:|---:|---:|---:|---|")
    for name, results in runs.items():
        walls = [w for w, _, _ in results]
        met = ""
        if name in (MIX, NETWORK):
            met = "yes" if wall[name] <= time_target and rss[name] <= rss_target else "no"
        print(
            f"| {name} | {wall[name]:.3f} | {min(walls):.3f}..{max(walls):.3f} | {rss[name]:.1f} | "
            f"{wall[name] / wall[FLOOR]:.2f}x | {cpu[name] / cpu[FLOOR]:.2f}x | {rss[name] - rss_target:+.1f} | {met} |"
        )


if __name__ == "__main__":
    main()
