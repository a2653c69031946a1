"""Test doubles that the tests and the benchmarks share: `fake_discord`, a fake Discord server
that discord.py's real client talks to; `reference`, the served distribution as computed
before the fast paths, that parity tests and bench_engine.py hold them to. Not used by
wordbot itself; `fake_discord` needs aiohttp's server side, which the `dev` extra installs
(`pip install wordbot[dev]`)."""
