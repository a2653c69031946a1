"""A bot in a process of its own against the fake Discord (wordbot/testing/fake_discord.py),
for the tests that run `wordbot discord` for real and stop it as systemd would."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

# `wordbot discord ARGS...` with discord.py pointed at the fake server (argv 1 and 2) first.
DISCORD_CLI = (
    "import sys, discord, yarl\n"
    "discord.http.Route.BASE = sys.argv[1]\n"
    "discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(sys.argv[2])\n"
    "from wordbot import cli\n"
    "sys.exit(cli.main(['discord', *sys.argv[3:]]))\n"
)


def discord_command(server: Any, *args: str) -> list[str]:
    """The command line of `wordbot discord ARGS` against `server` (a FakeDiscord)."""
    return [sys.executable, "-c", DISCORD_CLI, server.api_base, server.gateway_url, *args]


class Ended:
    """What a process stopped by `sigterm_at_end` wrote, and its exit status."""

    out: str = ""
    err: str = ""
    returncode: int | None = None


@contextlib.contextmanager
def sigterm_at_end(proc: subprocess.Popen[str], timeout: float = 20.0) -> Iterator[Ended]:
    """The block runs with `proc` up; at its end SIGTERM, which it must obey within `timeout`
    (its output and status then in the `Ended` yielded). Killed if the block fails or it hangs."""
    ended = Ended()
    try:
        yield ended
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=timeout)
        ended.out, ended.err = out or "", err or ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    ended.returncode = proc.returncode
