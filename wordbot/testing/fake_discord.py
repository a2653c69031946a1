"""A fake Discord for tests and benchmarks: the REST routes and the websocket gateway that
discord.py's real, unmodified client talks to, served by aiohttp on 127.0.0.1.

Point the client at it with `server.point_client_here(monkeypatch)` (or `patch_client()`), which
sets `discord.http.Route.BASE` and `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`. It keeps
one guild with two text channels and a role (`add_guild` makes more, each owned by one shard, for
tests that run several shard processes), records every request and every message the bot POSTs,
and speaks enough of the gateway (HELLO, IDENTIFY, READY, GUILD_CREATE, heartbeats, RESUME,
INVALID_SESSION, dispatch) for the client to connect, drop, resume and answer.

This module holds the server's state, its start and stop, and `FakeDiscordThread`; the rest is
in mixins by route family: `fake_discord_users` (what tests do as users), `fake_discord_gateway`
(the websocket), `fake_discord_http` (the REST routes), and `fake_discord_payloads` (plain data).
Tests import `FakeDiscord`, `FakeDiscordThread` and `MESSAGE_CONTENT_INTENT` from here.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import threading
from collections.abc import Iterator
from typing import Any

import discord
import yarl
from aiohttp import web

from wordbot.testing.fake_discord_gateway import GatewayMixin
from wordbot.testing.fake_discord_http import RestMixin
from wordbot.testing.fake_discord_payloads import MESSAGE_CONTENT_INTENT, Posted, Session, user_payload
from wordbot.testing.fake_discord_users import UsersMixin

__all__ = [  # what tests and benchmarks import from here; the rest lives in the mixins' modules
    "MESSAGE_CONTENT_INTENT",
    "FakeDiscord",
    "FakeDiscordThread",
    "Posted",
    "Session",
]


class FakeDiscord(UsersMixin, GatewayMixin, RestMixin):
    """The fake server. `await start()`, then point the client here, then talk as users with
    `send_message()` and wait for the bot's answers with `wait_for_reply()`."""

    def __init__(
        self,
        *,
        token: str = "fake-token",
        shards: int = 1,
        heartbeat_interval_ms: int = 41_250,
        message_content_allowed: bool = True,
    ) -> None:
        self.token = token
        self.recommended_shards = shards
        self.heartbeat_interval_ms = heartbeat_interval_ms
        self.message_content_allowed = message_content_allowed
        self._ids = itertools.count()
        self.bot_user = user_payload(self.new_id(), "wordbot", bot=True)
        self.application_id = int(self.bot_user["id"])
        self.guild_id = self.new_id()
        self.channel_id = self.new_id()
        self.bot_role_id = self.new_id()  # the role Discord makes for a bot when it joins a server
        self.role_id = self.new_id()  # a role for people, "moderators"
        self.other_channel_id = self.new_id()  # a second text channel, "random"
        self.users = {name: user_payload(self.new_id(), name) for name in ("alice", "bob", "carol", "dave")}
        self.users["otherbot"] = user_payload(self.new_id(), "otherbot", bot=True)
        self.messages: dict[int, dict[str, Any]] = {}
        self.posted: list[Posted] = []
        self.requests: list[tuple[str, str]] = []  # (method, path) of every REST call
        self.unhandled: list[tuple[str, str]] = []  # REST calls this fake does not know
        self.identifies: list[dict[str, Any]] = []
        self.resumes: list[dict[str, Any]] = []
        self.heartbeats = 0
        self.commands: list[dict[str, Any]] = []  # registered global application commands
        self.command_puts = 0
        self.interaction_responses: list[dict[str, Any]] = []
        self._component_messages: dict[str, int] = {}  # component interaction id -> its message id
        self.sessions: dict[str, Session] = {}
        self.closes: list[int | None] = []  # close code of each gateway connection that ended
        # Channels where a POSTed message gets Discord's 403 (50013, Missing Permissions), and
        # where a reply does (160002: replying needs Read Message History).
        self.forbidden_channels: set[int] = set()
        self.no_history_channels: set[int] = set()
        self.channel_overwrites: list[dict[str, Any]] = []  # the channel's permission overwrites
        self.dispatched_at: dict[int, float] = {}  # message id -> perf_counter when sent to the bot
        self.guild_present = True  # False once the server removed the bot (remove_guild)
        self.edited: list[dict[str, Any]] = []  # messages the bot edited (PATCH), as they became
        self.history_requests = 0  # GETs of a channel's message history
        self.rate_limit_history_at = 0  # that history request gets a 429 (0: none)
        self.extra_guilds: dict[int, int] = {}  # more servers (add_guild): guild id -> its one channel
        self._changed = asyncio.Condition()
        self._runner: web.AppRunner | None = None
        self.port = 0

    def new_id(self, at: datetime.datetime | None = None) -> int:
        # A snowflake of the current time (or `at`): discord.py dates messages and interactions
        # by their id, and answers an "expired" interaction in the channel instead.
        return discord.utils.time_snowflake(at or discord.utils.utcnow()) + next(self._ids) % (1 << 22)

    # -- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        app = web.Application()
        app.router.add_get("/gateway", self._gateway)
        app.router.add_route("*", "/api/v10/{path:.*}", self._rest)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]  # the random port we got

    async def close(self) -> None:
        for session in self.sessions.values():
            if session.ws is not None and not session.ws.closed:
                await session.ws.close()
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def api_base(self) -> str:
        return f"http://127.0.0.1:{self.port}/api/v10"

    @property
    def gateway_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/gateway"

    @contextlib.contextmanager
    def patch_client(self) -> Iterator[None]:
        """Point discord.py's REST base and default gateway at this server while inside."""
        old_base, old_gateway = discord.http.Route.BASE, discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY
        discord.http.Route.BASE = self.api_base
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        try:
            yield
        finally:
            discord.http.Route.BASE = old_base
            discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = old_gateway

    def point_client_here(self, monkeypatch: Any) -> None:
        monkeypatch.setattr(discord.http.Route, "BASE", self.api_base)
        monkeypatch.setattr(discord.gateway.DiscordWebSocket, "DEFAULT_GATEWAY", yarl.URL(self.gateway_url))


class FakeDiscordThread:
    """A FakeDiscord on its own thread and event loop, for code that runs its own loop (the
    blocking `bot.run()`, a benchmark whose bot may block its loop). `call()` runs a coroutine
    on the server's loop from another loop; `call_sync()` from plain code."""

    def __init__(self, **options: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server = FakeDiscord(**options)
        self.call_sync(self.server.start())

    def call_sync(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    async def call(self, coro: Any) -> Any:
        return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, self.loop))

    def close(self) -> None:
        self.call_sync(self.server.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()
