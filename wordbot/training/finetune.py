"""Fine-tuning: starting from a trained model (`wordbot train --from MODEL`). Its networks,
tokenizer and shape are kept; the settings of the fit get fine-tuning defaults; options
that contradict the model are refused. NumPy only."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wordbot.artifacts import load_model, member_weights, members, model_directory, weights_sha256
from wordbot.errors import ConfigError
from wordbot.text import Tokenizer
from wordbot.training.config import TrainConfig

# What a fine-tuning run changes from the model's own training settings: a quarter of the
# bundled model's rate, halved whenever validation stalls, stopping after one stalled epoch.
# The rate was chosen on validation text among 2.5e-4, 5e-4 and 1e-3 (benchmarks/README.md,
# "The fine-tuning learning rate, chosen on validation").
FINETUNE_DEFAULTS = {
    "learning_rate": 5e-4,
    "lr_schedule": "plateau",
    "epochs": 10,
    "patience": 1,
    "max_minutes": 0,
    "split_seed": None,
    "notes": "",
}
# Settings that make the model what it is: another value would need another model.
SHAPE = ("cell", "layers", "units", "embedding_dim", "tie_embeddings", "vocab_size", "min_count", "ensemble")
_OPTION = {"tie_embeddings": "--untied", "ensemble": "--ensemble"}


@dataclass(frozen=True)
class Base:
    """The model a fine-tuning run starts from."""

    name: str  # as given: "default" or a directory
    directory: Path
    manifest: dict
    tokenizer: Tokenizer
    weights: dict[str, np.ndarray]

    @classmethod
    def load(cls, name: str) -> Base:
        directory = model_directory(None if name == "default" else name)
        manifest, tokenizer, weights = load_model(directory)
        weights = {k: np.asarray(v, dtype=np.float32) for k, v in weights.items()}
        return cls(name, directory, manifest, tokenizer, weights)

    def member(self, i: int) -> dict[str, np.ndarray]:
        return member_weights(self.weights, i)

    def provenance(self) -> dict:
        """What the manifest of the fine-tuned model says about where it came from."""
        corpus = self.manifest.get("corpus") or {}
        return {
            "model": self.name,
            "directory": str(self.directory.resolve()),
            "sha256": weights_sha256(self.directory),
            "created": self.manifest.get("created"),
            "corpus": [Path(f["path"]).name for f in corpus.get("files") or []],
            "vocab_size": len(self.tokenizer),
        }


def base_settings(manifest: dict) -> dict:
    """The base model's own training settings that a fine-tuning run keeps."""
    from wordbot.training.model import config_from_manifest

    config = config_from_manifest(manifest)
    settings = {f.name: getattr(config, f.name) for f in dataclasses.fields(TrainConfig)}
    settings["ensemble"] = members(manifest["architecture"])
    # The manifest's output precision is float32 for prediction; training keeps the original.
    settings["output_precision"] = (manifest.get("config") or {}).get("output_precision", "float32")
    for name in ("corpus", "out"):
        settings.pop(name)
    return settings


def finetune_config(base: str, manifest: dict, given: dict) -> TrainConfig:
    """The configuration of fine-tuning `manifest`'s model (named `base`): its settings,
    then FINETUNE_DEFAULTS, then the options `given` (None: not given). An option that
    contradicts the model's shape is refused in one line."""
    settings = base_settings(manifest)
    given = {k: v for k, v in given.items() if v is not None}
    for name in SHAPE:
        if name in given and given[name] != settings[name]:
            option = _OPTION.get(name, "--" + name.replace("_", "-"))
            if name != "tie_embeddings":
                option += f" {given[name]}"
            raise ConfigError(
                f"{option} contradicts the model it starts from ({base} has {name.replace('_', ' ')} "
                f"{settings[name]}); leave it out when fine-tuning with --from"
            )
    return TrainConfig(**(settings | FINETUNE_DEFAULTS | given | {"base": base}))


def from_options(base: str, given: dict, config_file: str | None = None) -> TrainConfig:
    """`wordbot train CORPUS... --from BASE`: the fine-tuning configuration of its options."""
    if config_file:
        raise ConfigError("--from takes its settings from the model it starts from; leave --config out")
    if not given.get("corpus"):
        raise ConfigError("give the text to fine-tune on: wordbot train FILE... --from MODEL")
    manifest, _, _ = load_model(None if base == "default" else base)
    return finetune_config(base, manifest, given)
