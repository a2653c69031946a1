"""The training configuration: a frozen dataclass (one comment per field) that is saved
beside the model, its checks, and reading it from a TOML file. Imports no TensorFlow."""

from __future__ import annotations

import dataclasses
import math
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

from wordbot.artifacts import CELLS, MAX_NGRAM_ORDER, WEIGHT_DTYPES
from wordbot.corpus import FORMATS
from wordbot.errors import ConfigError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

LR_SCHEDULES = ("plateau", "cosine")
OUTPUT_PRECISIONS = ("float32", "bfloat16")
# Upper bounds of the sizes, so a typo (units = 1e9) is refused before anything is allocated.
SIZE_LIMITS = {
    "layers": 16,
    "units": 16_384,
    "embedding_dim": 16_384,
    "vocab_size": 2_000_000,
    "seq_len": 100_000,
    "batch_size": 1_000_000,
    "epochs": 1_000_000,
    "ensemble": 64,
}


@dataclass(frozen=True)
class TrainConfig:
    corpus: tuple[str, ...] = ()  # training text files; validation is carved out of them
    format: str = "lines"  # "lines": one message per line; "paragraphs": blank-line separated
    out: str = "model"  # the model directory to write
    cell: str = "simple_rnn"  # simple_rnn, gru or lstm
    layers: int = 1  # stacked recurrent layers
    units: int = 512  # hidden units per recurrent layer
    embedding_dim: int = 256  # word vector size (and output projection size when tied)
    tie_embeddings: bool = True  # output layer reuses the input embedding (fewer weights, better on small text)
    vocab_size: int = 10_000  # cap, special tokens included
    min_count: int = 2  # rarer tokens become <unk>
    seq_len: int = 64  # truncated backpropagation through time: steps per window
    batch_size: int = 64
    epochs: int = 20  # upper bound; early stopping usually ends sooner
    dropout: float = 0.3  # after the embedding and after every recurrent layer
    clipnorm: float = 1.0  # gradient clipping by global norm keeps RNN updates sane
    learning_rate: float = 2e-3
    lr_schedule: str = "plateau"  # "plateau": times lr_decay when validation stalls; "cosine": to 0 over `epochs`
    lr_decay: float = 0.5  # multiply the learning rate by this when validation stalls (plateau schedule)
    patience: int = 2  # epochs without validation improvement before stopping
    validation_fraction: float = 0.05  # messages held out for validation, chosen by seed
    seed: int = 0  # weight initialisation and shuffling
    split_seed: int | None = None  # which messages are held out (default: seed); fix it to compare seeds fairly
    max_minutes: float = 0  # stop after this many minutes of training (0: no limit)
    ensemble: int = 1  # networks trained alike from seeds seed, seed+1, ... and averaged when predicting
    weights_dtype: str = "float32"  # how weights.npz stores them: float32, or float16 (half the size)
    output_precision: str = "float32"  # "bfloat16": output layer computed in bfloat16 (fast with AMX/AVX512-BF16)
    mix_order: int = 4  # interpolate with a Kneser-Ney n-gram of this order when validation says it helps (0: never)
    base: str = ""  # fine-tune this model's networks and tokenizer ("default": the bundled one; "": from scratch)
    notes: str = field(default="", compare=False)  # free text kept in the manifest

    @property
    def split(self) -> int:
        return self.seed if self.split_seed is None else self.split_seed

    def validate(self) -> TrainConfig:
        problems = _type_problems(self)
        if problems:  # the checks below compare numbers
            raise ConfigError("bad training configuration: " + "; ".join(problems))
        problems = _choice_problems(self) + _range_problems(self)
        if problems:
            raise ConfigError("bad training configuration: " + "; ".join(problems))
        return self

    @property
    def projection(self) -> int | None:
        """A linear layer from the hidden state to embedding size, needed to tie when they differ."""
        return self.embedding_dim if self.tie_embeddings and self.units != self.embedding_dim else None

    def architecture(self) -> dict:
        return {
            "cell": self.cell,
            "layers": self.layers,
            "units": self.units,
            "embedding_dim": self.embedding_dim,
            "projection": self.projection,
            "tied": self.tie_embeddings,
        } | ({"members": self.ensemble} if self.ensemble > 1 else {})

    @classmethod
    def from_toml(cls, path: str | Path, **overrides) -> TrainConfig:
        """The settings of a TOML file (top level or a [train] table), `overrides` on top.
        Relative paths in the file are relative to the file."""
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as e:
            raise ConfigError(f"cannot read config {path}: {e.strerror or e}") from None
        except (UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
            raise ConfigError(f"cannot read config {path}: {e}") from None
        data = data.get("train", data)
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: [train] must be a table of settings")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"{path}: unknown setting(s) {', '.join(unknown)}")
        base = Path(path).parent
        if "corpus" in data:
            corpus = [data["corpus"]] if isinstance(data["corpus"], str) else data["corpus"]
            if not isinstance(corpus, list) or not all(isinstance(p, str) for p in corpus):
                raise ConfigError(f"{path}: corpus must be a file path or a list of file paths, not {corpus!r}")
            data["corpus"] = tuple(p if Path(p).is_absolute() else os.path.relpath(base / p) for p in corpus)
        if "out" in data and not isinstance(data["out"], str):
            raise ConfigError(f"{path}: out must be a directory path (a string), not {data['out']!r}")
        if "out" in data and not Path(data["out"]).is_absolute():
            data["out"] = os.path.relpath(base / data["out"])
        data.update({k: v for k, v in overrides.items() if v is not None})
        if "corpus" in data:
            data["corpus"] = tuple(data["corpus"])
        config = cls(**data)
        problems = _type_problems(config)
        if problems:
            raise ConfigError(f"{path}: " + "; ".join(problems))
        return config


_KINDS = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "int | None": (int, type(None))}


def _type_problems(config: TrainConfig) -> list[str]:
    """Settings of the wrong type (a TOML file can hold `units = "big"` or `units = [1]`)."""
    problems = []
    for f in dataclasses.fields(config):
        allowed, value = _KINDS.get(str(f.type)), getattr(config, f.name)
        wrong = allowed is not None and (
            not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed)
        )
        if wrong:
            problems.append(f"{f.name} must be {str(f.type).replace(' | None', '')}, not {_short(value)}")
    if not isinstance(config.corpus, tuple) or not all(isinstance(p, str) for p in config.corpus):
        problems.append("corpus must be a list of file paths")
    return problems


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _choice_problems(config: TrainConfig) -> list[str]:
    problems = []
    if not config.corpus:
        problems.append("no corpus files")
    for name, choices in (
        ("cell", CELLS),
        ("format", FORMATS),
        ("lr_schedule", LR_SCHEDULES),
        ("output_precision", OUTPUT_PRECISIONS),
        ("weights_dtype", WEIGHT_DTYPES),
    ):
        if getattr(config, name) not in choices:
            problems.append(f"{name} must be one of {', '.join(choices)}, not {_short(getattr(config, name))}")
    return problems


def _range_problems(config: TrainConfig) -> list[str]:
    problems = []
    for name in ("layers", "units", "embedding_dim", "seq_len", "batch_size", "epochs", "min_count"):
        if getattr(config, name) < 1:
            problems.append(f"{name} must be at least 1")
    for name, most in SIZE_LIMITS.items():
        if getattr(config, name) > most:
            problems.append(f"{name} must be at most {most:,}")
    if config.vocab_size < 5:
        problems.append("vocab_size must be at least 5")
    if not 0 <= config.dropout < 1:
        problems.append("dropout must be in [0, 1)")
    if not 0 <= config.validation_fraction < 0.5:
        problems.append("validation_fraction must be in [0, 0.5)")
    if config.ensemble < 1:
        problems.append("ensemble must be at least 1")
    if config.patience < 0:
        problems.append("patience must be 0 or more")
    if not 0 <= config.max_minutes < math.inf:
        problems.append("max_minutes must be 0 (no limit) or a positive number of minutes")
    if not 0 < config.lr_decay < 1:
        problems.append("lr_decay must be in (0, 1)")
    if config.mix_order != 0 and not 1 <= config.mix_order <= MAX_NGRAM_ORDER:
        problems.append(f"mix_order must be 0 (no n-gram) or 1 to {MAX_NGRAM_ORDER}")
    for name in ("seed", "split_seed"):
        value = getattr(config, name)
        if value is not None and not 0 <= value + (config.ensemble - 1 if name == "seed" else 0) < 2**32:
            problems.append(f"{name} must be in [0, 2**32)")
    for name in ("learning_rate", "clipnorm"):
        if not 0 < getattr(config, name) < math.inf:
            problems.append(f"{name} must be a positive number")
    return problems
