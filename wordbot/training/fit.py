"""The fit step: each network of the model (one, or an ensemble) compiled and fitted
with its callbacks in the work directory, resuming where an interrupted run stopped;
returns the weights as named arrays and the training figures."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from wordbot.artifacts import member_prefix
from wordbot.errors import WordbotError
from wordbot.training.callbacks import HeldInterrupt, finished_epochs, make_callbacks, write_json
from wordbot.training.config import TrainConfig
from wordbot.training.data import TrainingData
from wordbot.training.finetune import Base
from wordbot.training.model import _tf, build_model, export_weights, import_weights, masked_loss
from wordbot.training.watch import LOG_NAME, append_row, epoch_watch, keep_rows, perplexity, sample_prompt


class TrainingDiverged(WordbotError):
    """The network's weights became NaN: nothing worth keeping or resuming."""


def fit_all(
    config: TrainConfig, data: TrainingData, work_dir: Path, log, progress: bool, base: Base | None = None
) -> tuple[dict, dict]:
    """Train every network (from `base`'s networks when fine-tuning); returns (weights by name, metrics)."""
    # Keras warns that fit(shuffle=True) is ignored for a tf.data input: ours shuffles itself.
    warnings.filterwarnings("ignore", message="`shuffle=True` was passed")
    started = time.monotonic()
    weights: dict[str, np.ndarray] = {}
    member_metrics = []
    for member in range(config.ensemble):
        # The first network works in DIR.partial/ itself, so a one-network run looks as it always did.
        member_dir = work_dir / f"member{member}" if member else work_dir
        member_dir.mkdir(exist_ok=True)
        budget = 0.0
        if config.max_minutes:
            # What is left of the time budget, shared by the networks still to train.
            left = config.max_minutes - (time.monotonic() - started) / 60
            budget = max(left / (config.ensemble - member), 1e-3)
        member_config = dataclasses.replace(config, seed=config.seed + member, max_minutes=budget)
        member_log = log
        if config.ensemble > 1:
            member_log = lambda line, m=member: log(f"network {m + 1}/{config.ensemble} · {line}")  # noqa: E731
        watch = Watch(work_dir / LOG_NAME, member, base.member(member) if base else None)
        net_weights, metrics = fit_network(member_config, data, member_dir, member_log, progress, watch)
        weights.update({member_prefix(member) + k: v for k, v in net_weights.items()})
        member_metrics.append(metrics)
    if config.ensemble == 1:
        return weights, member_metrics[0]
    # Summed over the networks, so a resumed run reports the whole training.
    epochs_run = sum(m["epochs_run"] for m in member_metrics)
    minutes = sum(m["train_minutes"] for m in member_metrics)
    return weights, {
        "epochs_run": epochs_run,
        "train_minutes": round(minutes, 2),
        "train_tokens_per_second": round(epochs_run * data.xy[0].size / max(minutes * 60, 1e-9)),
        "networks": member_metrics,
    }


def learning_rate(keras, config: TrainConfig, steps_per_epoch: int):
    """The optimizer's learning rate: a number the plateau callback halves, or a cosine
    decay from `learning_rate` to zero over `epochs` epochs. The decay follows the
    optimizer's step count, which a resumed run restores with the optimizer."""
    if config.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(config.learning_rate, config.epochs * steps_per_epoch)
    return config.learning_rate


@dataclass(frozen=True)
class Watch:
    """Where one network's epochs are logged, and the weights it starts from (None: random)."""

    log_path: Path
    network: int = 0
    start: dict | None = None


def fit_network(
    config: TrainConfig, data: TrainingData, work_dir: Path, log, progress: bool, watch: Watch | None = None
) -> tuple[dict, dict]:
    """Train one network (seed `config.seed`) in `work_dir`; returns (weights, metrics).

    A finished network leaves `final.npz` there, so a resumed ensemble skips it."""
    watch = watch or Watch(work_dir / LOG_NAME)
    final, final_info = work_dir / "final.npz", work_dir / "final.json"
    if final.exists() and final_info.exists():
        with np.load(final, allow_pickle=False) as npz:
            weights = {k: npz[k] for k in npz.files}
        log("already trained; kept from the interrupted run")
        return weights, json.loads(final_info.read_text())
    tf, keras = _tf()
    keras.utils.set_random_seed(config.seed)
    model = build_model(config, len(data.tokenizer))
    if watch.start is not None:
        import_weights(model, config, watch.start)
    steps_per_epoch = math.ceil(len(data.xy[0]) / config.batch_size)
    optimizer = keras.optimizers.Adam(
        learning_rate=learning_rate(keras, config, steps_per_epoch), global_clipnorm=config.clipnorm
    )
    model.compile(optimizer=optimizer, loss=masked_loss)
    train_ds = _dataset(tf, *data.xy, config.batch_size, config.seed)
    val_ds = _dataset(tf, *data.val, config.batch_size, None) if data.val is not None else None
    started, earlier, held = time.monotonic(), finished_epochs(work_dir), HeldInterrupt()
    keep_rows(watch.log_path, watch.network, int(earlier.get("epochs_done", 0)))
    if watch.start is not None and val_ds is not None and not (work_dir / "backup").exists():
        _log_start(model, val_ds, watch, log)
    sample = (data.tokenizer, sample_prompt(data.val_messages))
    tokens = int(data.xy[0].size)
    after = (epoch_watch(keras, config, watch.log_path, watch.network, tokens, sample, log),)
    callbacks = make_callbacks(
        keras, config, work_dir, val_ds is not None, log, steps_per_epoch, progress, earlier, held, after
    )
    try:
        history = model.fit(
            train_ds, validation_data=val_ds, epochs=config.epochs, callbacks=callbacks, verbose=1 if progress else 0
        )
    finally:
        held.restore()  # whatever ended training, Ctrl-C interrupts again
    # Counted over the whole training, an interrupted run's finished epochs included.
    minutes = float(earlier.get("minutes", 0.0)) + (time.monotonic() - started) / 60
    epochs_run = int(earlier.get("epochs_done", 0)) + len(history.history.get("loss", []))
    weights, metrics = _best_weights(model, config, work_dir, monitor_val=val_ds is not None)
    metrics = {"epochs_run": epochs_run, "train_minutes": round(minutes, 2)} | metrics
    metrics["train_tokens_per_second"] = round(epochs_run * data.xy[0].size / max(minutes * 60, 1e-9))
    np.savez(work_dir / "final.tmp.npz", **weights)
    os.replace(work_dir / "final.tmp.npz", final)
    write_json(final_info, metrics)
    return weights, metrics


def _log_start(model, val_ds, watch: Watch, log) -> None:
    """Row 0 of the log: the validation perplexity of the weights fine-tuning starts from."""
    loss = float(model.evaluate(val_ds, verbose=0))
    append_row(watch.log_path, {"network": watch.network, "epoch": 0, "validation_perplexity": perplexity(loss)})
    log(f"before fine-tuning: validation perplexity {math.exp(min(loss, 50)):.1f}")


def _best_weights(model, config: TrainConfig, work_dir: Path, monitor_val: bool) -> tuple[dict, dict]:
    """The weights of the best epoch (the last ones if none was kept) and their figures."""
    best = work_dir / "best.npz"
    if best.exists():
        with np.load(best, allow_pickle=False) as npz:
            weights = {k: npz[k] for k in npz.files}
        best_info = json.loads((work_dir / "best.json").read_text())
    else:
        weights, best_info = export_weights(model, config), {}
    if not all(np.isfinite(w).all() for w in weights.values()):
        raise TrainingDiverged(
            "training diverged: the loss became NaN or infinite before any epoch finished with a finite one; "
            "try a lower --learning-rate or --clipnorm"
        )
    metrics: dict = {}
    if config.ensemble > 1:
        metrics["seed"] = config.seed
    if best_info:
        metrics["best_epoch"] = best_info["epoch"]
        key = "validation_perplexity" if monitor_val else "train_perplexity"
        metrics[key] = round(math.exp(best_info["loss"]), 3)
    return weights, metrics


def _dataset(tf, x: np.ndarray, y: np.ndarray, batch_size: int, shuffle_seed: int | None):
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle_seed is not None:
        ds = ds.shuffle(len(x), seed=shuffle_seed, reshuffle_each_iteration=True)
    ds = ds.batch(batch_size).prefetch(2)
    # Autotuning left fit() idle for half a minute after the last step here (DESIGN.md).
    options = tf.data.Options()
    options.autotune.enabled = False
    return ds.with_options(options)
