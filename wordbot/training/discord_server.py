"""Fine-tuning on one Discord server's stored messages (`wordbot train --from default
--discord-server GUILD_ID`): read through the bot's store (no Discord connection), written
as the run's corpus in DIR.partial/, and recorded in the model (which messages, so the bot
stops serving it once any of them is forgotten). NumPy only."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from wordbot.errors import ConfigError, WordbotError

MIN_MESSAGES = 200  # fewer make a validation split of a handful of messages: nothing to choose on


@dataclass(frozen=True)
class ServerText:
    """A server's stored messages, ready to train on."""

    corpus: Path  # one message per line
    manifest: dict  # the manifest's `discord_server` section
    files: dict[str, bytes]  # more files for the model directory (what it was trained on)


def server_text(guild: int, store_url: str | None, out: str | os.PathLike) -> ServerText:
    """Read `guild`'s messages from the store at `store_url` (None: WORDBOT_STORE, else the
    bot's default SQLite file) into `<out>.partial/discord-<guild>.txt`."""
    from wordbot.bot.config import redacted_store
    from wordbot.bot.server_models import trained_record
    from wordbot.bot.store import open_store

    if guild <= 0:
        raise ConfigError(f"--discord-server takes a server id (a positive number), not {guild}")
    url = store_url or os.environ.get("WORDBOT_STORE") or None
    _sqlite_file_exists(url)
    store = open_store(url, flush_interval=None)  # a StoreError is one line
    try:
        messages = [m for m in store.messages(guild) if m.text.strip()]
    finally:
        store.close()
    where = "the bot's default store" if url is None else f"the store {redacted_store(url)}"
    if len(messages) < MIN_MESSAGES:
        raise WordbotError(
            f"server {guild} has {len(messages):,} stored message(s) in {where}; fine-tuning needs at least "
            f"{MIN_MESSAGES:,} (let the bot listen longer, or read history with /wordbot learn)"
        )
    section, listed = trained_record(guild, messages)
    out = Path(out)
    work_dir = out.parent / f"{out.name}.partial"
    work_dir.mkdir(parents=True, exist_ok=True)
    corpus = work_dir / f"discord-{guild}.txt"
    text = "".join(" ".join(m.text.split()) + "\n" for m in messages).encode("utf-8", "surrogatepass")
    # Rewritten only when it changed: an unchanged server resumes an interrupted run.
    if not corpus.exists() or corpus.read_bytes() != text:
        tmp = corpus.with_name(corpus.name + ".tmp")
        tmp.write_bytes(text)
        os.replace(tmp, corpus)
    return ServerText(corpus, section, {section["messages_file"]: listed})


def _sqlite_file_exists(url: str | None) -> None:
    """A SQLite store to read must be there: opening it would make an empty one."""
    from wordbot.bot.store import sqlite_path

    path = sqlite_path(url)  # a bad SQLite URL: a StoreError, one line
    if path is not None and not path.is_file():
        where = "the bot's default store" if url is None else "the store"
        raise WordbotError(f"no SQLite file at {path} ({where}): the bot keeps one once a server lets it learn")
