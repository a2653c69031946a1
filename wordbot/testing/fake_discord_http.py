"""The fake Discord's REST routes, a mixin of `FakeDiscord` (fake_discord.py): the bot user and
application, the gateway URL, global application commands, messages (post, edit, fetch, history
pages with an optional 429), typing, interaction callbacks and webhook follow-ups. Discord's
errors (401, 403 50013/160002, 400 50035, 404) come back as discord.py expects them."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from wordbot.testing.fake_discord_payloads import EPOCH, Posted, json_response


class RestMixin:
    """The REST half of `FakeDiscord`: it serves `/api/v10/...`; its state is `FakeDiscord`'s."""

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
                return await self._put_commands(request)
            case ("POST", "channels", channel_id, "messages"):
                return await self._post_message(int(channel_id), await self._payload(request))
            case ("GET", "channels", channel_id, "messages"):
                return self._history(int(channel_id), request.query)
            case ("PATCH", "channels", _, "messages", message_id) if int(message_id) in self.messages:
                return self._edit_message(int(message_id), await self._payload(request))
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

    async def _put_commands(self, request: web.Request) -> web.Response:
        """The bot registers its global slash commands (a bulk overwrite): they get ids."""
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

    def _edit_message(self, message_id: int, body: dict[str, Any]) -> web.Response:
        """The bot edits a message (PATCH): its content and, when given, its components."""
        edited = {**self.messages[message_id], "content": body.get("content"), "edited_timestamp": EPOCH}
        if "components" in body:
            edited["components"] = body["components"]
        self.messages[message_id] = edited
        self.edited.append(edited)
        return json_response(edited)

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
