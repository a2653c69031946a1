"""The data step of training: read the corpus, split off validation text, build the
vocabulary and cut the token stream into windows. NumPy only."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wordbot.corpus import read_corpus, split_messages, token_stream, windows
from wordbot.errors import CorpusError
from wordbot.text import UNK_ID, Tokenizer
from wordbot.training.config import TrainConfig


@dataclass(frozen=True)
class TrainingData:
    paths: list[Path]  # the corpus files
    messages: list[str]  # all of them, before the split
    train_messages: list[str]
    val_messages: list[str]
    tokenizer: Tokenizer
    train_tokens: int  # length of the training token stream
    xy: tuple[np.ndarray, np.ndarray]  # training windows: inputs, targets shifted by one
    val: tuple[np.ndarray, np.ndarray] | None  # validation windows, if any


def prepare(config: TrainConfig, tokenizer: Tokenizer | None = None) -> TrainingData:
    """Everything the fit step needs, from the configured corpus. `tokenizer`: the
    vocabulary of the model being fine-tuned, kept as it is (else one is built)."""
    paths = [Path(p) for p in config.corpus]
    messages = read_corpus(paths, config.format)
    train_messages, val_messages = split_messages(messages, config.validation_fraction, config.split)
    if tokenizer is None:
        tokenizer = Tokenizer.build(train_messages, config.vocab_size, config.min_count)
    train_stream = token_stream(train_messages, tokenizer)
    if len(train_stream) <= config.seq_len:
        raise CorpusError(
            f"corpus too small: its {len(train_messages):,} training message(s) make {len(train_stream):,} tokens, "
            f"and one window needs seq_len + 1 = {config.seq_len + 1}; give more text or a smaller --seq-len"
        )
    val = None
    if val_messages:
        val_stream = token_stream(val_messages, tokenizer)
        val = windows(val_stream, min(config.seq_len, len(val_stream) - 1)) if len(val_stream) > 1 else None
    xy = windows(train_stream, config.seq_len)
    return TrainingData(paths, messages, train_messages, val_messages, tokenizer, len(train_stream), xy, val)


def describe(data: TrainingData, config: TrainConfig, resumed: bool) -> list[str]:
    """The lines training starts with: how much text, and what the perplexities count."""
    lines = [
        f"{len(data.train_messages):,} training messages ({data.train_tokens:,} tokens, {len(data.xy[0]):,} windows "
        f"of {config.seq_len}), {len(data.val_messages):,} validation messages; vocabulary {len(data.tokenizer):,}"
        + ("; resuming the interrupted run" if resumed else "")
    ]
    if data.val_messages:
        ids = [i for m in data.val_messages for i in data.tokenizer.encode(m)]
        unknown = sum(i == UNK_ID for i in ids) / max(len(ids), 1)
        lines.append(
            f"perplexities printed while training count every token, <unk> included ({unknown:.1%} of the validation "
            "tokens); the figures after training, like wordbot eval's, leave <unk> out and usually read higher"
        )
    else:
        lines.append(
            f"no validation text ({len(data.messages):,} message(s), validation fraction "
            f"{config.validation_fraction:g}): no early stopping on held-out text and no n-gram mix"
            + ("; with --format lines every line is a message" if config.format == "lines" else "")
        )
    return lines
