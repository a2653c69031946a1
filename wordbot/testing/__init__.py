"""Test doubles that the tests and the benchmarks share: `fake_discord`, a fake Discord server
that discord.py's real client talks to. Not used by wordbot itself; it needs aiohttp's server
side, which the `dev` extra installs (`pip install wordbot[dev]`)."""
