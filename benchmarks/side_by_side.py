"""Run one benchmark on two versions of wordbot in one run, alternating, and print
their figures side by side with the ratio new / old.

    python benchmarks/side_by_side.py --base REV benchmarks/bench_engine.py [-- ARGS...]

The old version is `git archive REV` unpacked into a temporary folder; each version
runs its *own* copy of the benchmark script (so a script that moved with the code
still runs), with PYTHONPATH and the working directory set to its tree. The runs
alternate (old, new, old, new, ...) so a change of the machine's load hits both alike.
Lines of the two outputs that read the same apart from their numbers are paired, and
each number of the new output is printed with its ratio to the old one (the median
over the rounds).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
NUMBER = re.compile(r"-?\d+(?:,\d{3})*(?:\.\d+)?(?:e[-+]?\d+)?")


def checkout(rev: str, into: Path) -> Path:
    """`rev`'s tracked files (the bundled model included) unpacked into `into`."""
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", rev], check=True, capture_output=True).stdout
    tar = into / "tree.tar"
    tar.write_bytes(archive)
    with tarfile.open(tar) as t:
        t.extractall(into / "tree", filter="data")
    tar.unlink()
    return into / "tree"


def run(tree: Path, script: str, args: list[str]) -> tuple[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree))
    t0 = time.perf_counter()
    done = subprocess.run(
        [sys.executable, str(tree / script), *args], cwd=tree, env=env, capture_output=True, text=True
    )
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        sys.exit(f"{tree / script} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return done.stdout, seconds


def shape(line: str) -> str:
    return NUMBER.sub("#", line).strip()


def numbers(line: str) -> list[float]:
    return [float(n.replace(",", "")) for n in NUMBER.findall(line)]


def paired(old_runs: list[str], new_runs: list[str]) -> list[str]:
    """The new output's numeric lines, each number followed by its median ratio to the old."""
    out = []
    old_lines = [r.splitlines() for r in old_runs]
    new_lines = [r.splitlines() for r in new_runs]
    old_by_shape: dict[str, list[list[float]]] = {}
    for lines in old_lines:
        for line in lines:
            if NUMBER.search(line):
                old_by_shape.setdefault(shape(line), []).append(numbers(line))
    for index, line in enumerate(new_lines[0]):
        if not NUMBER.search(line) or shape(line) not in old_by_shape:
            continue
        new_values = [numbers(lines[index]) for lines in new_lines if index < len(lines)]
        old_values = old_by_shape[shape(line)]
        cells = []
        for j in range(len(new_values[0])):
            new_median = statistics.median(v[j] for v in new_values)
            old_median = statistics.median(v[j] for v in old_values)
            ratio = f"{new_median / old_median:.2f}x" if old_median else "-"
            cells.append(f"{old_median:g} -> {new_median:g} ({ratio})")
        out.append(f"{shape(line)}\n    " + "; ".join(cells))
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base", required=True, help="the old version: a commit, tag or branch")
    parser.add_argument("--rounds", type=int, default=2, help="runs of each version, alternating")
    parser.add_argument("--base-script", help="the script's path in the old tree, if it moved")
    parser.add_argument("script", help="the benchmark, relative to the repository root")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="after --: the benchmark's own arguments")
    args = parser.parse_args(argv)
    bench_args = args.args[1:] if args.args[:1] == ["--"] else args.args
    with tempfile.TemporaryDirectory(prefix="wordbot-base-") as tmp:
        base = checkout(args.base, Path(tmp))
        old_runs, new_runs = [], []
        for round_ in range(args.rounds):
            for name, tree, script, runs in (
                ("old", base, args.base_script or args.script, old_runs),
                ("new", ROOT, args.script, new_runs),
            ):
                stdout, seconds = run(tree, script, bench_args)
                runs.append(stdout)
                version = args.base if name == "old" else "working tree"
                print(f"--- round {round_ + 1}, {name} ({version}), {seconds:.0f} s")
                print(stdout.rstrip())
        print(f"\n=== side by side: median of {args.rounds} rounds, old ({args.base}) -> new (ratio new/old)")
        print("\n".join(paired(old_runs, new_runs)))


if __name__ == "__main__":
    main()
