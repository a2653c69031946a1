"""Training: the only part of wordbot that imports TensorFlow, and only inside the
functions that fit or export, so the bot and the REPL never pay for it.

`train(config)` runs data -> fit -> export:

- config.py     TrainConfig (frozen, saved beside the model) and reading it from TOML
- data.py       corpus -> split -> vocabulary -> windows
- model.py      the Keras model, the loss, weights to and from a model directory
- callbacks.py  what makes a recurrent network train and survive interruption
- fit.py        fitting each network (one, or an ensemble)
- export.py     the manifest, the tuned n-gram mix, the model directory
- finetune.py   starting from a trained model (--from): its settings, defaults, refusals
- watch.py      training-log.csv and the sample continuation after each epoch
- curves.py     drawing the log with matplotlib (wordbot info --plot)
- run.py        train() and its work directory DIR.partial/
"""

from __future__ import annotations

from wordbot.training.config import LR_SCHEDULES, OUTPUT_PRECISIONS, TrainConfig
from wordbot.training.export import tune_mix
from wordbot.training.fit import TrainingDiverged, learning_rate
from wordbot.training.model import (
    build_model,
    config_from_manifest,
    export_weights,
    import_weights,
    keras_model_from_dir,
    keras_models_from_dir,
    keras_next_probs,
    masked_loss,
)
from wordbot.training.run import train

__all__ = [
    "LR_SCHEDULES",
    "OUTPUT_PRECISIONS",
    "TrainConfig",
    "TrainingDiverged",
    "build_model",
    "config_from_manifest",
    "export_weights",
    "import_weights",
    "keras_model_from_dir",
    "keras_models_from_dir",
    "keras_next_probs",
    "learning_rate",
    "masked_loss",
    "train",
    "tune_mix",
]
