"""The fake Discord's websocket gateway, a mixin of `FakeDiscord` (fake_discord.py): HELLO,
heartbeats, IDENTIFY (READY and a GUILD_CREATE for each server the shard owns), RESUME (replaying
what the session missed), INVALID_SESSION, DISPATCH routed to the shard that owns the server, the
guild payloads, and cutting connections. The state it reads and writes is set in `FakeDiscord`."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import discord
from aiohttp import WSMsgType, web

from wordbot.testing.fake_discord_payloads import (
    DISPATCH,
    EPOCH,
    HEARTBEAT,
    HEARTBEAT_ACK,
    HELLO,
    IDENTIFY,
    INVALID_SESSION,
    MESSAGE_CONTENT_INTENT,
    RESUME,
    Session,
)


class GatewayMixin:
    """The gateway half of `FakeDiscord`: it serves `/gateway` and sends events to sessions."""

    async def drop_connections(self) -> None:
        """Cut every gateway connection without a close frame, like a network failure."""
        for session in self.sessions.values():
            if session.ws is not None:
                ws, session.ws = session.ws, None
                with contextlib.suppress(Exception):
                    ws._req.transport.close()  # no close handshake: the client sees a dead socket

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

    def _guild_roles(self) -> list[dict[str, Any]]:
        """The first server's roles: @everyone, the bot's own role, and "moderators"."""
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
        return [everyone, bot_role, moderators]

    def _guild_channels(self) -> list[dict[str, Any]]:
        """The first server's text channels: #general (with its overwrites) and #random."""
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
        return [channel, {**channel, "id": str(self.other_channel_id), "name": "random", "position": 1}]

    def _guild_payload(self) -> dict[str, Any]:
        """The first server as GUILD_CREATE sends it, with the bot as its one member."""
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
            "roles": self._guild_roles(),
            "emojis": [],
            "stickers": [],
            "features": [],
            "channels": self._guild_channels(),
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
