"""The bot under a burst: time from MESSAGE_CREATE to the POSTed reply (median, p99) and the
longest event-loop stall, for wordbot's bot and for a baseline bot whose `!next` calls Keras
`model.predict` per command on the same weights (the tutorial way), in one run.

    PYTHONPATH=. python benchmarks/bench_bot.py [--model DIR] [--commands 200] [--users 4]
    PYTHONPATH=. python benchmarks/bench_bot.py --stores [--postgres URL] [--commands 200] [--rounds 1]

Both bots are the real discord.py client talking to wordbot/testing/fake_discord.py over 127.0.0.1. The
fake server runs in its own thread and event loop, so a bot that blocks its loop cannot also
slow down "Discord": its timestamps are what a user would see. Each bot first answers a few
commands one at a time (warm-up and idle latency), then gets all `--commands` at once from
`--users` users. Without --model it uses the bundled default, or, if there is none yet, random
weights of the default size (latency does not depend on the weight values).

`--stores` measures instead the bot as it runs for real, `wordbot discord` processes that learn:
two shard processes (shards 0 and 1 of 2) on one PostgreSQL database against one process on
SQLite, in one run, each serving the same two servers with a listened channel each. The burst
is `--commands` `!next` commands, each after a chat message that the bot learns (so the store is
written and read during it), spread over both servers. A third row, one process on the same
PostgreSQL, tells what the database costs from what two processes on the machine cost.
PostgreSQL: `--postgres URL` (an empty database or schema), else a throwaway server started as
the tests start theirs (tests/postgres.py: fsync off, a temporary directory, a free port).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # the checkout's wordbot (the fake Discord is wordbot.testing's, not tests/')

import discord  # noqa: E402
from discord.ext import commands  # noqa: E402

from wordbot.artifacts import DEFAULT_MODEL_DIR  # noqa: E402
from wordbot.bot import NO_MENTIONS, build_bot, format_next, intents  # noqa: E402
from wordbot.corpus import read_messages  # noqa: E402
from wordbot.predictor import Prediction, Predictor  # noqa: E402
from wordbot.testing.fake_discord import FakeDiscordThread  # noqa: E402

TEST_FILE = ROOT / "data" / "corpus" / "fortunes-test.txt"
USERS = ["alice", "bob", "carol", "dave"]
WARMUP = 10  # commands answered one at a time before the burst
K = 5  # words per answer, as !next gives by default


class StallMonitor:
    """Wakes every `tick` seconds; the worst lateness is the longest the loop was blocked."""

    def __init__(self, tick: float = 0.005) -> None:
        self.tick = tick
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.tick)
            self.worst = max(self.worst, loop.time() - before - self.tick)

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)


def keras_baseline_bot(model_dir: Path) -> commands.Bot:
    """The tutorial bot: tokenise, pad, `model.predict` inside the handler, top k."""
    from wordbot.artifacts import load_model
    from wordbot.training import keras_models_from_dir, keras_next_probs

    manifest, tokenizer, _ = load_model(model_dir)
    models = keras_models_from_dir(model_dir)
    seq_len = int((manifest.get("config") or {}).get("seq_len", 64))
    words = np.array(tokenizer.word_ids)
    bot = commands.Bot(command_prefix="!", intents=intents(), allowed_mentions=NO_MENTIONS)

    @bot.command(name="next")
    async def next_(ctx: commands.Context, *, text: str = "") -> None:
        ids = tokenizer.encode(text, bos=True)[-seq_len:]
        x = np.zeros((1, seq_len), dtype=np.int32)  # pad_sequences(..., padding="pre")
        x[0, seq_len - len(ids) :] = ids
        probs = keras_next_probs(models, x)
        top = words[np.argsort(probs[words])[::-1][:K]]
        predictions = [Prediction(tokenizer.vocab[i], float(probs[i])) for i in top]
        await ctx.reply(format_next(text, predictions), mention_author=False)

    return bot


class ConstantPredictor:
    """Answers instantly with the same words: what is left is discord.py and the fake server."""

    def __init__(self, predictor: Predictor) -> None:
        self.answer = predictor.next_words("", K)

    def next_words(self, text: str, k: int = K) -> list[Prediction]:
        return self.answer[:k]


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def timed_burst(side: FakeDiscordThread, server: Any, send_all: Any) -> tuple[list[float], float]:
    """Send a burst of commands (`send_all`, on the server's loop), wait for every reply:
    each reply's latency from its command's dispatch, and the seconds the burst took."""

    async def wait_all(sent: list[dict[str, Any]]) -> list[Any]:
        return await asyncio.gather(*(server.wait_for_reply(m, timeout=600) for m in sent))

    started = time.perf_counter()
    sent = await side.call(send_all())
    replies = await side.call(wait_all(sent))
    assert all("→" in r.content for r in replies), "a command was not answered with predictions"
    latencies = [r.at - server.dispatched_at[int(m["id"])] for m, r in zip(sent, replies, strict=True)]
    return latencies, max(r.at for r in replies) - started


async def measure(make_bot: Callable[[], commands.Bot], prompts: list[str], users: int) -> dict[str, float]:
    side = FakeDiscordThread()
    server = side.server
    bot = make_bot()
    with server.patch_client():
        return await run_bot(side, bot, prompts, users)


async def run_bot(side: FakeDiscordThread, bot: commands.Bot, prompts: list[str], users: int) -> dict[str, float]:
    server = side.server
    task = asyncio.create_task(bot.start(server.token))
    await asyncio.wait_for(bot.wait_until_ready(), 60)
    monitor = StallMonitor()
    monitor.start()
    try:
        idle = []
        for prompt in prompts[:WARMUP]:
            message = await side.call(server.send_message(f"!next {prompt}"))
            reply = await side.call(server.wait_for_reply(message, timeout=120))
            idle.append(reply.at - server.dispatched_at[int(message["id"])])
        monitor.worst = 0.0
        burst = prompts[WARMUP:]

        async def send_all() -> list[dict[str, Any]]:
            return [await server.send_message(f"!next {p}", author=USERS[i % users]) for i, p in enumerate(burst)]

        latencies, elapsed = await timed_burst(side, server, send_all)
    finally:
        await monitor.stop()
        await bot.close()
        await asyncio.gather(task, return_exceptions=True)
        side.close()
    return {
        "idle_median_ms": statistics.median(idle) * 1e3,
        "median_ms": statistics.median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "max_ms": max(latencies) * 1e3,
        "stall_ms": monitor.worst * 1e3,
        "per_s": len(burst) / elapsed,
    }


def prompts_from_test_file(count: int) -> list[str]:
    """Distinct prompts: the first 4-12 words of the test file's messages."""
    prompts = []
    for i, message in enumerate(read_messages(TEST_FILE)):
        words = message.split()[: 4 + i % 9]
        if words:
            prompts.append(" ".join(words))
        if len(prompts) == count:
            break
    return prompts


# -- --stores: shard processes on PostgreSQL against one process on SQLite -------------------

PROCESS_SCRIPT = (  # `wordbot discord ARGS`, pointed at the fake Discord
    "import sys, discord, yarl\n"
    "discord.http.Route.BASE = sys.argv[1]\n"
    "discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sys.argv[2])\n"
    "from wordbot import cli\n"
    "sys.exit(cli.main(['discord', *sys.argv[3:]]))\n"
)


def start_process(side: FakeDiscordThread, args: list[str], workdir: Path, name: str) -> subprocess.Popen[bytes]:
    server = side.server
    env = {k: v for k, v in os.environ.items() if not k.startswith("WORDBOT_") or k == "WORDBOT_CACHE_DIR"}
    env |= {"DISCORD_TOKEN": server.token, "WORDBOT_STATE_DIR": str(workdir / f"state-{name}")}
    env |= {"WORDBOT_COOLDOWN_COMMANDS": "10000", "WORDBOT_LOG_LEVEL": "warning", "PYTHONPATH": str(ROOT)}
    with open(workdir / f"{name}.log", "w") as log:
        command = [sys.executable, "-c", PROCESS_SCRIPT, server.api_base, server.gateway_url, *args]
        return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def stop_processes(processes: list[subprocess.Popen[bytes]]) -> None:
    """SIGTERM: each flushes what it learned and closes its store."""
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    for process in processes:
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def answer(side: FakeDiscordThread, content: str, channel: int, timeout: float = 120.0) -> str:
    """The bot's answer in `channel`, asking again while its process is still starting."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            message = await side.call(side.server.send_message(content, channel=channel))
            return (await side.call(side.server.wait_for_reply(message, timeout=3))).content
        except (RuntimeError, TimeoutError):  # no gateway session for that shard yet, or not ready
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.5)


async def learning_burst(side: FakeDiscordThread, channels: list[int], prompts: list[str], users: int) -> dict:
    """Every channel answers and listens, a warm-up, then the burst: `!next PROMPT` commands, each
    after a chat message the bot learns, spread over the channels (so over the processes)."""
    server = side.server
    for channel in channels:
        await answer(side, "!next the", channel)
        assert (await answer(side, f"!wordbot listen <#{channel}>", channel)).startswith("I'll learn from")
    for i, prompt in enumerate(prompts[:WARMUP]):
        await answer(side, f"!next {prompt}", channels[i % len(channels)])
    burst = prompts[WARMUP:]

    async def send_all() -> list[dict[str, Any]]:
        sent = []
        for i, prompt in enumerate(burst):
            where = {"channel": channels[i % len(channels)], "author": USERS[i % users]}
            await server.send_message(f"and so {prompt} again", **where)  # learned
            sent.append(await server.send_message(f"!next {prompt}", **where))
        return sent

    latencies, elapsed = await timed_burst(side, server, send_all)
    return {
        "median_ms": statistics.median(latencies) * 1e3,
        "p99_ms": percentile(latencies, 99) * 1e3,
        "per_s": len(burst) / elapsed,
    }


def measure_processes(shards: int, store: str, model: Path, prompts: list[str], users: int, workdir: Path) -> dict:
    """`shards` processes (one shard each; 1: one process, unsharded) on `store`, two new servers.
    (With `--postgres`, both rows use that database: the second forgets the first's servers at
    start, as servers that removed the bot.)"""
    side = FakeDiscordThread()
    guilds, channels = zip(*[side.server.add_guild(i % shards, shards) for i in range(2)], strict=True)
    common = ["--store", store, "--model", str(model)]
    each = [["--shard-ids", str(i), "--shard-count", str(shards)] for i in range(shards)] if shards > 1 else [[]]
    processes = [start_process(side, args + common, workdir, f"{shards}-{i}") for i, args in enumerate(each)]
    try:
        result = asyncio.run(learning_burst(side, list(channels), prompts, users))
    finally:
        stop_processes(processes)
        side.close()
        if any(p.returncode != 0 for p in processes):
            print(f"a bot process failed: see {workdir}/{shards}-*.log", file=sys.stderr)
    return result | {"stored": stored(store, list(guilds))}


def stored(store: str, guilds: list[int]) -> int:
    """How many messages of `guilds` the store kept, once the processes stopped."""
    sql = f"SELECT count(*) FROM messages WHERE guild IN ({', '.join(str(int(g)) for g in guilds)})"
    if store.startswith("sqlite:///"):
        with contextlib.closing(sqlite3.connect(store[len("sqlite:///") :])) as conn:
            return conn.execute(sql).fetchone()[0]
    import psycopg

    with psycopg.connect(store) as conn:
        return conn.execute(sql).fetchone()[0]


@contextlib.contextmanager
def postgres(url: str | None) -> Any:
    """A function giving the database for a row: `url` every time, or a throwaway server's
    fresh schema each time (the server stopped afterwards)."""
    if url is not None:
        yield lambda: url
        return
    sys.path.insert(0, str(ROOT / "tests"))
    from postgres import PostgresServer  # the tests' throwaway server: temporary directory, free port

    server = PostgresServer()
    try:
        server.start()
        yield server.new_database
    finally:
        server.stop()


ROWS = [  # (name, processes, store)
    ("one process, SQLite", 1, "sqlite"),
    ("two shard processes (0 and 1 of 2), one PostgreSQL", 2, "postgresql"),
    ("one process, PostgreSQL (to tell the store's share from the processes')", 1, "postgresql"),
]


def main_stores(args: argparse.Namespace, model: Path) -> None:
    prompts = prompts_from_test_file(WARMUP + args.commands)
    workdir = Path(tempfile.mkdtemp(prefix="wordbot-bench-stores-"))
    runs: dict[str, list[dict]] = {name: [] for name, _, _ in ROWS}
    with postgres(args.postgres) as database:
        for turn in range(args.rounds):  # the rows take turns, so the machine's load hits them alike
            for name, shards, kind in ROWS:
                print(f"round {turn + 1}: measuring {name} ...", file=sys.stderr, flush=True)
                store = f"sqlite:///{workdir / f'wordbot-{turn}.sqlite3'}" if kind == "sqlite" else database()
                runs[name].append(measure_processes(shards, store, model, prompts, args.users, workdir))
    results = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
    machine = platform.processor() or platform.machine()
    print(f"machine: {machine}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f} at the end")
    print(f"burst: {args.commands} `!next` commands, each after a learned chat message, over 2 servers,", end="")
    print(f" from {args.users} users; medians of {args.rounds} rounds")
    print()
    print("| bot | burst median | burst p99 | replies/s | messages stored |")
    print("|---|---:|---:|---:|---:|")
    for name, r in results.items():
        print(f"| {name} | {r['median_ms']:.1f} ms | {r['p99_ms']:.1f} ms | {r['per_s']:.0f} | {r['stored']:.0f} |")
    one, two, _ = results.values()
    print(f"| ratio, two on PostgreSQL / one on SQLite | {two['median_ms'] / one['median_ms']:.2f}x |", end="")
    print(f" {two['p99_ms'] / one['p99_ms']:.2f}x | {two['per_s'] / one['per_s']:.2f}x | |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="model directory (default: bundled)")
    parser.add_argument("--commands", type=int, default=200, help="commands in the burst")
    parser.add_argument("--users", type=int, default=4, choices=range(1, len(USERS) + 1), help="users sending")
    parser.add_argument("--stores", action="store_true", help="shard processes on PostgreSQL vs one on SQLite")
    parser.add_argument("--postgres", metavar="URL", help="with --stores: the database (default: a throwaway one)")
    parser.add_argument("--rounds", type=int, default=1, help="with --stores: rounds of the rows in turn (medians)")
    args = parser.parse_args()
    # This run's own n-gram cache: the first load counts the 5-gram, later starts read it
    # (as for a user after the first start), and the user's ~/.cache is left alone.
    cache = tempfile.TemporaryDirectory(prefix="wordbot-bench-")
    os.environ["WORDBOT_CACHE_DIR"] = cache.name
    if args.stores:
        main_stores(args, args.model or DEFAULT_MODEL_DIR)
        return

    model_dir = args.model or DEFAULT_MODEL_DIR
    predictor = Predictor.load(model_dir)
    prompts = prompts_from_test_file(WARMUP + args.commands)

    def make_wordbot() -> commands.Bot:
        return build_bot(predictor, cooldown_rate=10**6, sync_commands=False, guild_ready_timeout=0.05)

    def make_floor() -> commands.Bot:
        return build_bot(
            ConstantPredictor(predictor),  # type: ignore[arg-type]
            cooldown_rate=10**6,
            sync_commands=False,
            guild_ready_timeout=0.05,
        )

    def make_keras() -> commands.Bot:
        return keras_baseline_bot(model_dir)

    results = {}
    for name, make in [
        ("floor: same bot, constant answer (no model)", make_floor),
        ("wordbot (NumPy engine, asyncio.to_thread)", make_wordbot),
        ("baseline (Keras model.predict in the handler)", make_keras),
    ]:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        results[name] = asyncio.run(measure(make, prompts, args.users))

    print(f"model: {predictor.describe()}")
    print(
        f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}, discord.py {discord.__version__}"
    )
    print(f"burst: {args.commands} `!next` commands at once from {args.users} users, after {WARMUP} one at a time")
    print()
    print("| bot | idle median | burst median | burst p99 | burst max | replies/s | longest loop stall |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        print(
            f"| {name} | {r['idle_median_ms']:.1f} ms | {r['median_ms']:.1f} ms | {r['p99_ms']:.1f} ms"
            f" | {r['max_ms']:.1f} ms | {r['per_s']:.0f} | {r['stall_ms']:.1f} ms |"
        )


if __name__ == "__main__":
    main()
