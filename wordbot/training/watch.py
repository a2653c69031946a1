"""Watching a network learn: `training-log.csv` (a row per epoch, kept across a resume)
and one sampled continuation of a fixed prompt after every epoch, computed by the NumPy
engine on that epoch's weights. Keras is passed in, never imported here."""

from __future__ import annotations

import csv
import io
import math
import os
import time
from pathlib import Path

from wordbot.text import Tokenizer
from wordbot.training.config import TrainConfig
from wordbot.training.model import export_weights

LOG_NAME = "training-log.csv"
COLUMNS = ("network", "epoch", "loss", "validation_perplexity", "learning_rate", "tokens_per_second", "seconds")
SAMPLE_WORDS = 12
SAMPLE_SEED = 0
FALLBACK_PROMPT = "The"


def sample_prompt(val_messages: list[str]) -> str:
    """The first three words of the first validation message (the same in every run over
    the same corpus and split), or FALLBACK_PROMPT without validation text."""
    words = val_messages[0].split()[:3] if val_messages else []
    return " ".join(words) or FALLBACK_PROMPT


def sample_text(weights: dict, config: TrainConfig, tokenizer: Tokenizer, prompt: str) -> str:
    """A seeded continuation of `prompt` by one network's weights (as export_weights names them)."""
    from wordbot.engine import RNNLanguageModel
    from wordbot.predictor import Predictor

    architecture = {k: v for k, v in config.architecture().items() if k != "members"}
    lm = RNNLanguageModel({"architecture": architecture}, tokenizer, weights)
    return Predictor(lm).continue_text(prompt, SAMPLE_WORDS, seed=SAMPLE_SEED)


def read_rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict) -> None:
    """One row, with the header when the file is new; flushed at once (a kill loses no epoch)."""
    new = not path.exists() or path.stat().st_size == 0
    with open(path, "a", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=COLUMNS)
        if new:
            writer.writeheader()
        writer.writerow({k: row.get(k, "") for k in COLUMNS})
        f.flush()
        os.fsync(f.fileno())


def keep_rows(path: Path, network: int, epochs_done: int) -> None:
    """After a resume: drop this network's rows for epochs the resumed run trains again."""
    rows = read_rows(path)
    kept = [r for r in rows if int(r["network"]) != network or int(r["epoch"]) <= epochs_done]
    if len(kept) == len(rows):
        return
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(kept)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(buffer.getvalue(), encoding="utf-8")
    os.replace(tmp, path)


def perplexity(loss: float | None) -> str:
    return "" if loss is None else f"{math.exp(min(loss, 50)):.3f}"


def epoch_watch(keras, config: TrainConfig, log_path: Path, network: int, tokens: int, sample, log):
    """The callback that writes the epoch's row and prints its sample. `sample`: (tokenizer,
    prompt), or None for no sample; `tokens`: target tokens in one epoch of training."""

    class EpochWatch(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.monotonic()
            self.rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            seconds = time.monotonic() - self.started
            row = {
                "network": network,
                "epoch": epoch + 1,
                "loss": f"{logs.get('loss', math.nan):.5f}",
                "validation_perplexity": perplexity(logs.get("val_loss")),
                "learning_rate": f"{self.rate:.3g}",
                "tokens_per_second": round(tokens / max(seconds, 1e-9)),
                "seconds": f"{seconds:.2f}",
            }
            append_row(log_path, row)
            if sample is not None and math.isfinite(logs.get("loss", math.nan)):  # NaN weights sample nothing
                tokenizer, prompt = sample
                try:
                    text = sample_text(export_weights(self.model, config), config, tokenizer, prompt)
                except ValueError:  # weights that give no distribution: a sample never ends a run
                    return
                log(f"  sample: {prompt}{text}")

    return EpochWatch()
