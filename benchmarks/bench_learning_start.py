"""Learning at start must never make anyone wait: the REPL learns the last 10,000 lines of its
history, the bot learns its stored messages again, both in a background thread. This times,
in one run, what a user meets meanwhile and after, side by side:

- the REPL: a suggestion (`complete`, what the menu asks for) and a committed line's `learn`
  while the history is being learned, and once it is done;
- the bot: `!next` from MESSAGE_CREATE to the POSTed reply (the real discord.py client against
  wordbot/testing/fake_discord.py, on its own thread) while N stored messages are being learned
  again, and once they are.

    PYTHONPATH=. python benchmarks/bench_learning_start.py [--model DIR] [--lines 10000] [--messages 20000]

The texts are lines of data/corpus/fortunes-train.txt.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from wordbot.bot import build_bot  # noqa: E402
from wordbot.bot.store import Message, SQLiteStore  # noqa: E402
from wordbot.predictor import Predictor  # noqa: E402
from wordbot.repl.learning import Learner  # noqa: E402
from wordbot.testing.fake_discord import FakeDiscordThread  # noqa: E402

PROMPTS = ("the quick brown", "a friend in need is", "never put off until", "all that glitters")


def texts(count: int) -> list[str]:
    lines = [line for line in (ROOT / "data/corpus/fortunes-train.txt").read_text().splitlines() if line.strip()]
    return [lines[i % len(lines)] for i in range(count)]


def summary(ms: list[float]) -> str:
    if not ms:
        return "none"
    ordered = sorted(ms)
    p90 = ordered[min(len(ordered) - 1, int(0.9 * len(ordered)))]
    return f"median {statistics.median(ms):.2f} ms, p90 {p90:.2f} ms, max {max(ms):.2f} ms (n={len(ms)})"


def timed(call, *args) -> float:
    start = time.perf_counter()
    call(*args)
    return (time.perf_counter() - start) * 1000


def repl(predictor: Predictor, lines: int) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        history = Path(tmp) / "history"
        history.write_text("".join(f"\n# 2026-01-01 00:00:00\n+{line}\n" for line in texts(lines)), encoding="utf-8")
        learner = Learner(history)
        view = learner.attach(predictor)
        view.complete(PROMPTS[0] + " ")  # warm
        start = time.perf_counter()
        learner.start()
        during_menu, during_commit, i = [], [], 0
        while learner.thread.is_alive():
            during_menu.append(timed(view.complete, f"{PROMPTS[i % 4]} {i} "))
            during_commit.append(timed(learner.learn, f"a committed line number {i} about the Zorblax cluster"))
            i += 1
            time.sleep(0.02)  # a person types
        learned = time.perf_counter() - start
        after_menu = [timed(view.complete, f"{PROMPTS[j % 4]} {j} ") for j in range(len(during_menu) or 20)]
        after_commit = [
            timed(learner.learn, f"a later committed line {j} about the Zorblax cluster") for j in range(200)
        ]
    print(f"REPL, {lines:,} history lines learned in the background in {learned:.1f} s")
    print(f"  suggestion while learning: {summary(during_menu)}")
    print(f"  suggestion after:          {summary(after_menu)}")
    print(f"  committed line while learning: {summary(during_commit)}")
    print(f"  committed line after:          {summary(after_commit)}")


async def bot(predictor: Predictor, messages: int) -> None:
    fake = FakeDiscordThread()
    server = fake.server
    with tempfile.TemporaryDirectory() as tmp, server.patch_client():
        store = SQLiteStore(Path(tmp) / "wordbot.sqlite3", flush_interval=None)
        for i, text in enumerate(texts(messages)):
            store.add_message(Message(i + 1, server.guild_id, server.channel_id, 7, float(i), text))
        store.close()
        store = SQLiteStore(Path(tmp) / "wordbot.sqlite3")
        client = build_bot(predictor, store=store, guild_ready_timeout=0.05, cooldown_rate=100_000)
        start = time.perf_counter()
        task = asyncio.create_task(client.start(server.token))
        while not client.is_ready():
            await asyncio.sleep(0.005)
        ready = time.perf_counter() - start
        communities = client.get_cog("learning").communities

        async def ask(i: int) -> float:
            sent = await fake.call(server.send_message(f"!next {PROMPTS[i % 4]} {i}"))
            posted = await fake.call(server.wait_for_reply(sent, 60))
            return (posted.at - server.dispatched_at[int(sent["id"])]) * 1000

        during, i = [], 0
        while not communities.rebuilt.is_set():
            during.append(await ask(i))
            i += 1
        learned = time.perf_counter() - start
        after = [await ask(j) for j in range(len(during) or 20)]
        await client.close()
        await task
        store.close()
    fake.close()
    print(
        f"bot, ready after {ready:.2f} s; {messages:,} stored messages relearned in the background in {learned:.1f} s"
    )
    print(f"  !next while learning: {summary(during)}")
    print(f"  !next after:          {summary(after)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model directory (default: the bundled one)")
    parser.add_argument("--lines", type=int, default=10_000, help="REPL history lines")
    parser.add_argument("--messages", type=int, default=20_000, help="bot stored messages")
    args = parser.parse_args()
    predictor = Predictor.load(args.model)
    repl(predictor, args.lines)
    asyncio.run(bot(predictor, args.messages))


if __name__ == "__main__":
    main()
