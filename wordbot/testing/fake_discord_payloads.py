"""What the fake Discord (fake_discord.py) sends and keeps, as plain data: the gateway opcodes,
Discord's JSON response, a user's payload, a gateway `Session` (for RESUME) and a `Posted` message
(what the bot sent). No routes and no server state here."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

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
