"""What tests do as users of the fake Discord, a mixin of `FakeDiscord` (fake_discord.py): write,
edit and delete messages, run slash commands, press buttons, mention the bot, change a channel's
permissions, add servers for shards, remove the bot; and wait for what the bot POSTs back."""

from __future__ import annotations

import asyncio
import datetime
import time
from collections.abc import Callable
from typing import Any

import discord

from wordbot.testing.fake_discord_payloads import EPOCH, Posted


class UsersMixin:
    """The users' side of `FakeDiscord`: events they cause go out through the gateway's
    `dispatch`; its state is `FakeDiscord`'s."""

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
