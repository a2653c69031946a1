"""A fake Discord for tests and benchmarks: the REST routes and the websocket gateway that
discord.py's real, unmodified client talks to, served by aiohttp on 127.0.0.1.

Point the client at it with `server.point_client_here(monkeypatch)` (or `patch_client()`), which
sets `discord.http.Route.BASE` and `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY`. It keeps
one guild with two text channels and a role (`add_guild` makes more, each owned by one shard, for
tests that run several shard processes), records every request and every message the bot POSTs,
and speaks enough of the gateway (HELLO, IDENTIFY, READY, GUILD_CREATE, heartbeats, RESUME,
INVALID_SESSION, dispatch) for the client to connect, drop, resume and answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import itertools
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import discord
import yarl
from aiohttp import WSMsgType, web

# Gateway opcodes (https://discord.com/developers/docs/topics/opcodes-and-status-codes).
DISPATCH, HEARTBEAT, IDENTIFY, RESUME, INVALID_SESSION, HELLO, HEARTBEAT_ACK = 0, 1, 2, 6, 9, 10, 11
MESSAGE_CONTENT_INTENT = 1 << 15
EPOCH = "2024-01-01T00:00:00.000000+00:00"


def json_response(data: Any, status: int = 200) -> web.Response:
    # discord.py only parses a body whose content-type is exactly "application/json";
    # aiohttp's json_response would add "; charset=utf-8".
    return web.Response(body=json.dumps(data).encode(), status=status, headers={"Content-Type": "application/json"})


def user_payload(user_id: int, name: str, *, bot: bool = False) -> dict[str, Any]:
    return {
        "id": str(user_id),
        "username": name,
        "global_name": name,
        "discriminator": "0",
        "avatar": None,
        "bot": bot,
        "public_flags": 0,
        "flags": 0,
    }


@dataclass
class Session:
    """One gateway session: what was dispatched to it, so a RESUME can replay what it missed."""

    session_id: str
    shard: tuple[int, int]
    intents: int
    seq: int = 0
    events: list[dict[str, Any]] = field(default_factory=list)
    ws: web.WebSocketResponse | None = None


@dataclass
class Posted:
    """A message the bot sent: the channel, the JSON payload as POSTed, and when it arrived."""

    channel_id: int
    payload: dict[str, Any]
    message: dict[str, Any]
    at: float
    interaction_token: str | None = None  # set for a slash command's response or follow-up

    @property
    def content(self) -> str:
        return self.payload.get("content") or ""

    @property
    def reply_to(self) -> int | None:
        ref = self.payload.get("message_reference")
        return int(ref["message_id"]) if ref else None


class FakeDiscord:
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

    # -- what tests do as users --------------------------------------------------------------

    def message_payload(
        self,
        content: str,
        *,
        author: str = "alice",
        reply_to: dict[str, Any] | None = None,
        mentions: list[dict[str, Any]] | None = None,
        dm_channel: int | None = None,
        channel: int | None = None,
        webhook: bool = False,
        written: datetime.datetime | None = None,
        guild: int | None = None,
    ) -> dict[str, Any]:
        """A MESSAGE_CREATE payload; `dm_channel`: in that direct-message channel, not the guild;
        `channel`: in that guild channel (default: #general); `webhook`: posted by a webhook;
        `written`: when (its id says so; default: now); `guild`: in a server from `add_guild`
        (in its channel, unless `channel` says another)."""
        user = self.users.get(author, self.bot_user)
        if guild is not None and channel is None:
            channel = self.extra_guilds[guild]
        message: dict[str, Any] = {
            "id": str(self.new_id(written)),
            "channel_id": str(channel or self.channel_id),
            "guild_id": str(guild or self.guild_of(channel)),
            "author": user,
            "member": {"roles": [], "joined_at": EPOCH, "deaf": False, "mute": False, "flags": 0},
            "content": content,
            "timestamp": EPOCH,
            "edited_timestamp": None,
            "tts": False,
            "mention_everyone": "@everyone" in content or "@here" in content,
            "mentions": mentions or [],
            "mention_roles": [],
            "attachments": [],
            "embeds": [],
            "pinned": False,
            "type": 0,
            "flags": 0,
        }
        if webhook:
            message["webhook_id"] = str(self.new_id())
        if dm_channel is not None:
            message["channel_id"] = str(dm_channel)
            del message["guild_id"], message["member"]
        if reply_to is not None:
            message["type"] = 19  # a reply
            message["message_reference"] = {
                "type": 0,
                "message_id": reply_to["id"],
                "channel_id": reply_to["channel_id"],
                "guild_id": reply_to.get("guild_id"),
            }
            message["referenced_message"] = reply_to
        return message

    async def send_message(self, content: str, **kwargs: Any) -> dict[str, Any]:
        """A user writes `content` in the channel; the bot's gateway gets MESSAGE_CREATE."""
        message = self.message_payload(content, **kwargs)
        self.messages[int(message["id"])] = message
        self.dispatched_at[int(message["id"])] = time.perf_counter()
        await self.dispatch("MESSAGE_CREATE", message)
        return message

    def add_guild(self, shard: int = 0, shard_count: int = 1) -> tuple[int, int]:
        """Another server with one text channel ("general"), whose id Discord routes to `shard` of
        `shard_count` (`(guild_id >> 22) % shard_count`): its (guild id, channel id); call before
        the bot connects. A message sent with `guild=` (or `channel=` its channel) is in that
        server and goes to that shard's session; once there are such servers, a DM goes to
        shard 0's session, as Discord sends DMs."""
        guild = self.new_id()
        while (guild >> 22) % shard_count != shard:
            guild += 1 << 22  # a millisecond later: the id's shard moves by one
        channel = self.new_id()
        self.extra_guilds[guild] = channel
        return guild, channel

    def guild_of(self, channel: int | None) -> int:
        """The server a channel is in: one made by `add_guild`, else the first server."""
        return next((g for g, c in self.extra_guilds.items() if c == channel), self.guild_id)

    async def send_interaction(
        self, name: str, options: dict[str, Any] | None = None, *, author: str = "alice", subcommand: str | None = None
    ) -> dict[str, Any]:
        """A user runs the slash command `/name` (`/name subcommand`) with `options`; the gateway
        gets INTERACTION_CREATE."""
        command = next(c for c in self.commands if c["name"] == name)
        if subcommand is not None:
            command = next(o for o in command["options"] if o["name"] == subcommand)
        types = {option["name"]: option["type"] for option in command.get("options", [])}
        given = [{"name": key, "type": types[key], "value": value} for key, value in (options or {}).items()]
        if subcommand is not None:
            given = [{"name": subcommand, "type": 1, "options": given}]
        data = {
            "id": next(c for c in self.commands if c["name"] == name)["id"],
            "name": name,
            "type": 1,
            "options": given,
        }
        channels = [str(value) for key, value in (options or {}).items() if types[key] == 7]  # channel options
        if channels:  # as Discord sends them: the channels named, resolved
            permissions = str(discord.Permissions.text().value)
            resolved = {c: {"id": c, "type": 0, "name": "general", "permissions": permissions} for c in channels}
            data["resolved"] = {"channels": resolved}
        interaction = self._interaction(2, data, author)  # 2: an application command
        await self.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    def _interaction(self, kind: int, data: dict[str, Any], author: str) -> dict[str, Any]:
        """An INTERACTION_CREATE payload of type `kind` by `author` in #general."""
        return {
            "id": str(self.new_id()),
            "application_id": str(self.application_id),
            "type": kind,
            "token": f"interaction-token-{self.new_id()}",
            "version": 1,
            "guild_id": str(self.guild_id),
            "channel_id": str(self.channel_id),
            "channel": {"id": str(self.channel_id), "type": 0, "guild_id": str(self.guild_id), "name": "general"},
            "member": {
                "user": self.users[author],
                "roles": [],
                "joined_at": EPOCH,
                "deaf": False,
                "mute": False,
                "flags": 0,
                "permissions": str(discord.Permissions.text().value),
            },
            "data": data,
            "app_permissions": str(discord.Permissions.text().value),
            "locale": "en-US",
            "guild_locale": "en-US",
            "entitlements": [],
            "authorizing_integration_owners": {"0": str(self.guild_id)},
            "context": 0,
            "attachment_size_limit": 8 * 1024 * 1024,
        }

    def buttons(self, message_id: int) -> dict[str, dict[str, Any]]:
        """The buttons on a message the bot sent, by label, as it is now (edits included)."""
        rows = self.messages[message_id].get("components") or []
        return {b["label"]: b for row in rows for b in row.get("components", []) if b.get("type") == 2}

    async def press_button(self, message_id: int, label: str, *, author: str = "alice") -> dict[str, Any]:
        """A user presses the button `label` on a message the bot sent; the gateway gets
        INTERACTION_CREATE of type 3 (a message component) with the button's custom_id."""
        button = self.buttons(message_id)[label]
        data = {"custom_id": button["custom_id"], "component_type": 2}
        interaction = {**self._interaction(3, data, author), "message": self.messages[message_id]}
        self._component_messages[interaction["id"]] = message_id
        await self.dispatch("INTERACTION_CREATE", interaction)
        return interaction

    async def wait_for_interaction_answer(self, interaction: dict[str, Any], timeout: float = 10.0) -> Posted:
        """The message that answers a slash command: its response or its first follow-up."""
        token = interaction["token"]
        return await self.wait_for(lambda p: p.interaction_token == token, timeout)

    def mention(self) -> str:
        return f"<@{self.bot_user['id']}>"

    def mentioned(self, name: str, *, nick: str | None = None) -> dict[str, Any]:
        """An entry of a MESSAGE_CREATE's `mentions` for the user `name`, as Discord sends it in
        a server: the user with their membership (`nick`: their nickname in the server)."""
        member = {"nick": nick, "roles": [], "joined_at": EPOCH, "deaf": False, "mute": False, "flags": 0}
        return {**self.users[name], "member": member}

    def role_mention(self) -> str:
        """What a user gets picking the bot's role, not the bot, in Discord's @ autocomplete."""
        return f"<@&{self.bot_role_id}>"

    async def wait_for_reply(self, message: dict[str, Any], timeout: float = 10.0) -> Posted:
        """The first message the bot POSTed as a reply to `message`."""
        message_id = int(message["id"])
        return await self.wait_for(lambda p: p.reply_to == message_id, timeout)

    async def wait_for(self, predicate: Callable[[Posted], bool], timeout: float = 10.0) -> Posted:
        async def find() -> Posted:
            async with self._changed:
                while True:
                    for posted in self.posted:
                        if predicate(posted):
                            return posted
                    await self._changed.wait()

        return await asyncio.wait_for(find(), timeout)

    async def wait_until(self, condition: Callable[[], bool], timeout: float = 10.0) -> None:
        async def poll() -> None:
            while not condition():
                await asyncio.sleep(0.01)

        await asyncio.wait_for(poll(), timeout)

    async def set_channel_overwrites(self, overwrites: list[dict[str, Any]]) -> None:
        """An admin edits the channel's permissions; the gateway gets CHANNEL_UPDATE."""
        self.channel_overwrites = overwrites
        channel = next(c for c in self._guild_payload()["channels"] if c["id"] == str(self.channel_id))
        await self.dispatch("CHANNEL_UPDATE", {**channel, "guild_id": str(self.guild_id)})

    async def delete_message(self, message: dict[str, Any]) -> None:
        """Someone deletes `message`; the gateway gets MESSAGE_DELETE (the id, not the message)."""
        self.messages.pop(int(message["id"]), None)
        ids = {"id": message["id"], "channel_id": message["channel_id"], "guild_id": str(self.guild_id)}
        await self.dispatch("MESSAGE_DELETE", ids)

    async def bulk_delete(self, messages: list[dict[str, Any]]) -> None:
        """A moderator purges `messages` (one channel); the gateway gets MESSAGE_DELETE_BULK."""
        for message in messages:
            self.messages.pop(int(message["id"]), None)
        ids = [message["id"] for message in messages]
        payload = {"ids": ids, "channel_id": messages[0]["channel_id"], "guild_id": str(self.guild_id)}
        await self.dispatch("MESSAGE_DELETE_BULK", payload)

    async def edit_message(self, message: dict[str, Any], content: str) -> dict[str, Any]:
        """Its author edits `message`; the gateway gets MESSAGE_UPDATE with the whole message."""
        edited = {**message, "content": content, "edited_timestamp": EPOCH}
        self.messages[int(message["id"])] = edited
        await self.dispatch("MESSAGE_UPDATE", edited)
        return edited

    async def remove_guild(self) -> None:
        """The server kicks the bot: GUILD_DELETE without `unavailable`; later IDENTIFYs get no guild."""
        session = self._session_for_guild()
        self.guild_present = False
        await self.dispatch("GUILD_DELETE", {"id": str(self.guild_id)}, session)

    async def drop_connections(self) -> None:
        """Cut every gateway connection without a close frame, like a network failure."""
        for session in self.sessions.values():
            if session.ws is not None:
                ws, session.ws = session.ws, None
                with contextlib.suppress(Exception):
                    ws._req.transport.close()  # no close handshake: the client sees a dead socket

    # -- gateway -----------------------------------------------------------------------------

    def _session_for_guild(self, guild: int | None = None) -> Session | None:
        for session in self.sessions.values():
            index, count = session.shard
            if ((guild or self.guild_id) >> 22) % count == index:
                return session
        return None

    def _session_for_event(self, data: Any) -> Session | None:
        """The session that owns the event's server: a server of `add_guild` by its id; once
        there are such, a DM (no server) to shard 0's session; otherwise the first server's."""
        guild = int(data.get("guild_id") or 0) if isinstance(data, dict) else 0
        if guild in self.extra_guilds:
            return self._session_for_guild(guild)
        if self.extra_guilds and not guild:
            return next((s for s in self.sessions.values() if s.shard[0] == 0), None)
        return self._session_for_guild()

    async def dispatch(self, event: str, data: dict[str, Any], session: Session | None = None) -> None:
        """Send a DISPATCH to the session that owns the guild; kept for replay on RESUME."""
        session = session or self._session_for_event(data)
        if session is None:
            raise RuntimeError("no gateway session is connected")
        if (
            event == "MESSAGE_CREATE"
            and not session.intents & MESSAGE_CONTENT_INTENT
            and self.bot_user["id"] not in {m["id"] for m in data.get("mentions", [])}
        ):
            data = {**data, "content": ""}  # what Discord does without the Message Content intent
        session.seq += 1
        frame = {"op": DISPATCH, "t": event, "s": session.seq, "d": data}
        session.events.append(frame)
        if session.ws is not None and not session.ws.closed:
            with contextlib.suppress(ConnectionError, RuntimeError):
                await session.ws.send_str(json.dumps(frame))

    def _guild_payload(self) -> dict[str, Any]:
        everyone = {
            "id": str(self.guild_id),
            "name": "@everyone",
            # Members may do what members usually may, but not manage the server: the owner may.
            "permissions": str(
                (discord.Permissions.general().value | discord.Permissions.text().value)
                & ~discord.Permissions(manage_guild=True).value
            ),
            "position": 0,
            "color": 0,
            "hoist": False,
            "managed": False,
            "mentionable": False,
            "flags": 0,
        }
        bot_role = {
            **everyone,
            "id": str(self.bot_role_id),
            "name": "wordbot",
            "permissions": "0",
            "position": 1,
            "managed": True,
            "tags": {"bot_id": self.bot_user["id"]},
        }
        moderators = {**everyone, "id": str(self.role_id), "name": "moderators", "permissions": "0", "position": 2}
        channel = {
            "id": str(self.channel_id),
            "type": 0,
            "guild_id": str(self.guild_id),
            "name": "general",
            "position": 0,
            "permission_overwrites": self.channel_overwrites,
            "nsfw": False,
            "parent_id": None,
            "topic": None,
            "last_message_id": None,
            "rate_limit_per_user": 0,
        }
        me = {
            "user": self.bot_user,
            "roles": [str(self.bot_role_id)],
            "joined_at": EPOCH,
            "deaf": False,
            "mute": False,
            "flags": 0,
        }
        return {
            "id": str(self.guild_id),
            "name": "wordbot test server",
            "icon": None,
            "owner_id": self.users["alice"]["id"],
            "roles": [everyone, bot_role, moderators],
            "emojis": [],
            "stickers": [],
            "features": [],
            "channels": [channel, {**channel, "id": str(self.other_channel_id), "name": "random", "position": 1}],
            "threads": [],
            "members": [me],
            "member_count": len(self.users) + 1,
            "large": False,
            "unavailable": False,
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
            "joined_at": EPOCH,
            "premium_tier": 0,
            "mfa_level": 0,
            "verification_level": 0,
            "explicit_content_filter": 0,
            "default_message_notifications": 0,
            "system_channel_flags": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
        }

    async def _gateway(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        await ws.send_str(json.dumps({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}))
        session: Session | None = None
        async for msg in ws:
            if msg.type is not WSMsgType.TEXT:
                continue
            frame = json.loads(msg.data)
            op, data = frame.get("op"), frame.get("d")
            if op == HEARTBEAT:
                self.heartbeats += 1
                await ws.send_str(json.dumps({"op": HEARTBEAT_ACK}))
            elif op == IDENTIFY:
                session = await self._identify(ws, data)
                if session is None:
                    break
            elif op == RESUME:
                session = await self._resume(ws, data)
            # presence updates, member chunk requests and the rest: ignored
        if session is not None and session.ws is ws:
            session.ws = None
        self.closes.append(ws.close_code)
        return ws

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        self.identifies.append(data)
        async with self._changed:
            self._changed.notify_all()
        if data.get("token") != self.token:
            await ws.close(code=4004, message=b"Authentication failed.")
            return None
        intents = int(data.get("intents", 0))
        if intents & MESSAGE_CONTENT_INTENT and not self.message_content_allowed:
            await ws.close(code=4014, message=b"Disallowed intent(s).")
            return None
        shard = tuple(data.get("shard") or (0, 1))
        session = Session(session_id=f"session-{self.new_id()}", shard=shard, intents=intents, ws=ws)
        # A new IDENTIFY for a shard replaces that shard's old session.
        for old_id in [s.session_id for s in self.sessions.values() if s.shard == shard]:
            del self.sessions[old_id]
        self.sessions[session.session_id] = session
        ready = {
            "v": 10,
            "user": self.bot_user,
            "guilds": [{"id": str(self.guild_id), "unavailable": True}] if self._owns_guild(shard) else [],
            "session_id": session.session_id,
            "resume_gateway_url": self.gateway_url,
            "shard": list(shard),
            "application": {"id": str(self.application_id), "flags": 0},
        }
        owned = [guild for guild in self.extra_guilds if (guild >> 22) % shard[1] == shard[0]]
        ready["guilds"] += [{"id": str(guild), "unavailable": True} for guild in owned]
        await self.dispatch("READY", ready, session)
        if self._owns_guild(shard):
            await self.dispatch("GUILD_CREATE", self._guild_payload(), session)
        for guild in owned:
            await self.dispatch("GUILD_CREATE", self._extra_guild_payload(guild), session)
        return session

    def _extra_guild_payload(self, guild: int) -> dict[str, Any]:
        """A server of `add_guild`: the first server's payload with its own ids and one channel."""
        payload = self._guild_payload()
        everyone = {**payload["roles"][0], "id": str(guild)}
        channel = {**payload["channels"][0], "id": str(self.extra_guilds[guild]), "guild_id": str(guild)}
        channel["permission_overwrites"] = []
        roles = [everyone, *payload["roles"][1:]]
        return {**payload, "id": str(guild), "name": f"server {guild}", "roles": roles, "channels": [channel]}

    def _owns_guild(self, shard: tuple[int, int]) -> bool:
        index, count = shard
        return self.guild_present and (self.guild_id >> 22) % count == index

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        self.resumes.append(data)
        session = self.sessions.get(data.get("session_id", ""))
        if session is None or data.get("token") != self.token:
            await ws.send_str(json.dumps({"op": INVALID_SESSION, "d": False}))
            return None
        session.ws = ws
        missed = [frame for frame in session.events if frame["s"] > (data.get("seq") or 0)]
        for frame in missed:
            await ws.send_str(json.dumps(frame))
        await self.dispatch("RESUMED", {}, session)
        return session

    # -- REST --------------------------------------------------------------------------------

    async def _rest(self, request: web.Request) -> web.Response:
        path = "/" + request.match_info["path"]
        self.requests.append((request.method, path))
        if request.headers.get("Authorization") != f"Bot {self.token}" and not path.startswith(
            ("/webhooks/", "/interactions/")
        ):
            return json_response({"message": "401: Unauthorized", "code": 0}, 401)
        parts = path.strip("/").split("/")
        route = (request.method, *parts)
        match route:
            case ("GET", "users", "@me"):
                return json_response(self.bot_user)
            case ("GET", "oauth2", "applications", "@me"):
                return json_response(self._application())
            case ("GET", "gateway", "bot"):
                limit = {"total": 1000, "remaining": 999, "reset_after": 0, "max_concurrency": 1}
                return json_response(
                    {"url": self.gateway_url, "shards": self.recommended_shards, "session_start_limit": limit}
                )
            case ("GET", "gateway"):
                return json_response({"url": self.gateway_url})
            case ("GET", "applications", _, "commands"):
                return json_response(self.commands)
            case ("PUT", "applications", _, "commands"):
                self.command_puts += 1
                body = await request.json()
                self.commands = [
                    {
                        **command,
                        "id": str(self.new_id()),
                        "application_id": str(self.application_id),
                        "version": "1",
                        "type": command.get("type", 1),
                        "default_member_permissions": None,
                        "dm_permission": True,
                    }
                    for command in body
                ]
                return json_response(self.commands)
            case ("POST", "channels", channel_id, "messages"):
                return await self._post_message(int(channel_id), await self._payload(request))
            case ("GET", "channels", channel_id, "messages"):
                return self._history(int(channel_id), request.query)
            case ("PATCH", "channels", _, "messages", message_id) if int(message_id) in self.messages:
                body = await self._payload(request)
                edited = {**self.messages[int(message_id)], "content": body.get("content"), "edited_timestamp": EPOCH}
                if "components" in body:
                    edited["components"] = body["components"]
                self.messages[int(message_id)] = edited
                self.edited.append(edited)
                return json_response(edited)
            case ("GET", "channels", _, "messages", message_id):
                message = self.messages.get(int(message_id))
                if message is None:
                    return json_response({"message": "Unknown Message", "code": 10008}, 404)
                return json_response(message)
            case ("POST", "channels", _, "typing"):
                return web.Response(status=204)
            case ("POST", "interactions", interaction_id, token, "callback"):
                return await self._interaction_callback(interaction_id, token, await self._payload(request))
            case ("POST", "webhooks", _, token):
                return await self._post_message(self.channel_id, await self._payload(request), token)
            case ("PATCH", "webhooks", _, token, "messages", _):
                return await self._post_message(self.channel_id, await self._payload(request), token)
        self.unhandled.append((request.method, path))
        return json_response({"message": "404: Not Found", "code": 0}, 404)

    def _history(self, channel_id: int, query: Any) -> web.Response:
        """A page of a channel's messages, newest first, before `before`; once, when
        `rate_limit_history_at` says so, Discord's 429 instead (the client waits and asks again)."""
        self.history_requests += 1
        if self.history_requests == self.rate_limit_history_at:
            limited = {"message": "You are being rate limited.", "retry_after": 0.05, "global": False}
            # Discord's own 429s come through its proxy (Via); discord.py takes one without it for a
            # Cloudflare ban and gives up.
            body = json.dumps(limited).encode()
            return web.Response(
                body=body, status=429, headers={"Content-Type": "application/json", "Via": "1.1 google"}
            )
        before = int(query.get("before", 1 << 63))
        limit = min(int(query.get("limit", 50)), 100)
        ids = sorted((i for i, m in self.messages.items() if int(m["channel_id"]) == channel_id and i < before))
        return json_response([self.messages[i] for i in reversed(ids[-limit:])])

    def add_history(self, content: str, **kwargs: Any) -> dict[str, Any]:
        """A message written before the bot was there: in the channel's history, never dispatched."""
        message = self.message_payload(content, **kwargs)
        self.messages[int(message["id"])] = message
        return message

    async def _payload(self, request: web.Request) -> dict[str, Any]:
        if request.content_type.startswith("multipart/"):
            reader = await request.multipart()
            async for part in reader:
                if part.name == "payload_json":
                    return json.loads(await part.text())
            return {}
        return await request.json() if request.can_read_body else {}

    async def _interaction_callback(self, interaction_id: str, token: str, body: dict[str, Any]) -> web.Response:
        self.interaction_responses.append(body)
        answer = {"interaction": {"id": interaction_id, "type": 2}, "resource": {"type": body["type"]}}
        if body["type"] == 4:  # a message right away, rather than "thinking..." and a follow-up
            posted = await self._post_message(self.channel_id, body.get("data") or {}, token)
            answer["resource"]["message"] = json.loads(posted.body)
            answer["interaction"]["response_message_id"] = answer["resource"]["message"]["id"]
        elif body["type"] == 7 and interaction_id in self._component_messages:  # a button's message updated
            message_id = self._component_messages[interaction_id]
            data = body.get("data") or {}
            edited = {**self.messages[message_id], "edited_timestamp": EPOCH}
            edited.update({key: data[key] for key in ("content", "components") if key in data})
            self.messages[message_id] = edited
            self.edited.append(edited)
            answer["resource"]["message"] = edited
            answer["interaction"]["response_message_id"] = str(message_id)
        else:
            answer["interaction"]["response_message_loading"] = body["type"] == 5
        return json_response(answer)

    async def _post_message(
        self, channel_id: int, payload: dict[str, Any], interaction_token: str | None = None
    ) -> web.Response:
        arrived = time.perf_counter()
        if len(payload.get("content") or "") > 2000:
            error = {"message": "Invalid Form Body", "code": 50035}
            return json_response(error, 400)
        if interaction_token is None and channel_id in self.forbidden_channels:
            return json_response({"message": "Missing Permissions", "code": 50013}, 403)
        if interaction_token is None and channel_id in self.no_history_channels and payload.get("message_reference"):
            error = {"message": "Cannot reply without permission to read message history", "code": 160002}
            return json_response(error, 403)
        message = self.message_payload(payload.get("content") or "", author="wordbot", channel=channel_id)
        message["member"]["roles"] = [str(self.bot_role_id)]  # discord.py updates guild.me from it
        if payload.get("message_reference"):
            message["message_reference"] = payload["message_reference"]
        message["components"] = payload.get("components") or []
        self.messages[int(message["id"])] = message
        self.posted.append(Posted(channel_id, payload, message, arrived, interaction_token))
        async with self._changed:
            self._changed.notify_all()
        return json_response(message)

    def _application(self) -> dict[str, Any]:
        return {
            "id": str(self.application_id),
            "name": "wordbot",
            "icon": None,
            "description": "",
            "rpc_origins": [],
            "bot_public": True,
            "bot_require_code_grant": False,
            "owner": self.users["alice"],
            "summary": "",
            "verify_key": "0" * 64,
            "team": None,
            "flags": 0,
            "tags": [],
        }


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
