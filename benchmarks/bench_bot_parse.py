"""The worst-case parse of a 2,000-character message by the bot, before and after, in one run.

    PYTHONPATH=. python benchmarks/bench_bot_parse.py [--repeat 5]

Before: the trailing-count regex the bot used until this change (kept below as the reference),
which backtracks over a whitespace run once per character of it: quadratic, on the event loop.
After: `wordbot.bot.parse.parse_prompt` (cut to RAW_LIMIT, whitespace runs squeezed, one scan from
the end for the count), and its count scan `split_count` alone on the unsqueezed text. Each figure
is the fastest of --repeat runs; the messages are what discord.py hands the command (the text after
`!next `) or the mention form (the text around the mention).
"""

from __future__ import annotations

import argparse
import platform
import re
import sys
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checkout's wordbot

from wordbot.bot.parse import parse_prompt, split_count

# The reference: wordbot/bot.py's parsing before the split into wordbot/bot/ (commit 97b7225).
OLD_TRAILING_COUNT = re.compile(
    r"(?:^|\s+)(?:(?P<key>[a-z]+)=|--?(?P<flag>[a-z]+)(?:=|\s+))?(?P<count>\d{1,4})\s*$", re.IGNORECASE
)
OLD_NAMES = {"k": {"k"}, "words": {"words", "n"}}


def old_split_count(text: str, key: str, *, bare: bool, bare_max: int = 100, alone: bool = False):
    match = OLD_TRAILING_COUNT.search(text)
    if match is None:
        return text, None
    named = match["key"] or match["flag"]
    if named and named.lower() not in OLD_NAMES.get(key, {key}):
        return text, None
    if not named and (not bare or (match.start() == 0 and not alone) or int(match["count"]) > bare_max):
        return text, None
    return text[: match.start()], int(match["count"])


# (name, the text, the count's key, whether a bare number counts): each about 2,000 characters.
CASES = [
    ("!next a + 1,990 spaces + x", "a" + " " * 1990 + "x", "k", False),
    ("!continue a + 1,990 spaces + x", "a" + " " * 1990 + "x", "words", True),
    ("@bot a + 1,990 newlines + x", "a" + "\n" * 1990 + "x", "words", True),
    ("!next 999 x (1 space 1)", "1 " * 999 + "x", "k", False),
    ("!next 1,990 spaces + k=3", "a" + " " * 1990 + "k=3", "k", False),
]


def fastest(function: Callable[[], object], repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5, help="runs of each parse; the fastest counts (default 5)")
    args = parser.parse_args()
    print(f"python {platform.python_version()}, {platform.machine()}; fastest of {args.repeat} runs, in ms")
    print(f"{'message':34} {'chars':>5} {'before':>9} {'after':>8} {'scan only':>9} {'before/after':>12}")
    for name, text, key, bare in CASES:
        before = fastest(lambda t=text, k=key, b=bare: old_split_count(t, k, bare=b), args.repeat)
        after = fastest(lambda t=text, k=key, b=bare: parse_prompt(t, k, bare=b), args.repeat)
        scan = fastest(lambda t=text, k=key, b=bare: split_count(t, k, bare=b), args.repeat)
        assert parse_prompt(text, key, bare=bare).count == old_split_count(text, key, bare=bare)[1], name
        ratio = before / after
        print(f"{name:34} {len(text):5} {before * 1e3:9.3f} {after * 1e3:8.3f} {scan * 1e3:9.3f} {ratio:11.1f}x")


if __name__ == "__main__":
    main()
