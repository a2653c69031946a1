"""The callbacks that make a recurrent network train and survive interruption: a report
line per epoch, the best weights kept, early stopping and a falling learning rate that
remember an interrupted run, and a backup written whole or not at all. Ctrl-C is held
back while an epoch's state is saved. Keras is passed in, never imported here.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import signal
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from wordbot.errors import WordbotError
from wordbot.training.config import TrainConfig
from wordbot.training.model import export_weights

ROOM_MARGIN = 16 << 20  # bytes left free beyond a backup's own size


def finished_epochs(work_dir: Path) -> dict:
    """Where an interrupted run stood after its last whole epoch ({} if none): epochs done,
    the best validation loss and its epoch, and the minutes spent."""
    path = work_dir / "progress.json"
    if not path.exists():
        return {}
    try:
        state = json.loads(path.read_text())
    except (OSError, ValueError):
        state = None
    if not isinstance(state, dict) or not {"epochs_done", "best", "best_epoch"} <= state.keys():
        raise WordbotError(f"{path} is damaged; delete {work_dir} to start the training afresh")
    return state


class HeldInterrupt:
    """Ctrl-C held back while the run's state on disk is brought up to date (Keras' backup,
    then the best weights, progress.json and the epoch's report), then raised: an interrupt
    in between left a backup one epoch ahead of the rest. Holds nest; `restore` puts the
    usual handler back whatever happened (call it when training ends)."""

    def __init__(self):
        self.depth, self.pending, self.previous = 0, False, None

    def hold(self) -> None:
        if self.depth == 0:
            try:
                previous = signal.signal(signal.SIGINT, self._note)
            except ValueError:  # not the main thread: nothing to hold
                return
            self.previous, self.pending = previous, False
        self.depth += 1

    def _note(self, signum, frame) -> None:
        self.pending = True

    def release(self) -> None:
        if self.depth == 0:
            return
        self.depth -= 1
        if self.depth == 0:
            self.restore()
            if self.pending:
                self.pending = False
                raise KeyboardInterrupt

    def restore(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
        self.depth, self.previous = 0, None


@dataclass
class Run:
    """What every callback of one network's training shares."""

    keras: object
    config: TrainConfig
    work_dir: Path
    monitor: str  # "val_loss", or "loss" without validation text
    log: object
    earlier: dict  # finished_epochs(work_dir)
    held: HeldInterrupt
    started: float = field(default_factory=time.monotonic)

    def minutes(self) -> float:
        """Minutes of training, an interrupted run's finished epochs included."""
        return float(self.earlier.get("minutes", 0.0)) + (time.monotonic() - self.started) / 60


def _epoch_report(run: Run):
    class EpochReport(run.keras.callbacks.Callback):
        """One line per epoch with perplexities (what a language-model user reads)."""

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            parts = [f"epoch {epoch + 1}", f"train perplexity {math.exp(min(logs.get('loss', 0), 50)):.1f}"]
            if "val_loss" in logs:
                parts.append(f"validation perplexity {math.exp(min(logs['val_loss'], 50)):.1f}")
            lr = float(run.keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            parts.append(f"learning rate {lr:.2g}")
            parts.append(f"{run.minutes():.1f} min")
            run.log(" · ".join(parts))
            budget = run.config.max_minutes
            if budget and not self.model.stop_training and time.monotonic() - run.started > budget * 60:
                run.log(f"time budget of {budget:.3g} minutes reached; stopping")
                self.model.stop_training = True

    return EpochReport()


def _time_budget(run: Run, steps_per_epoch: int):
    class TimeBudget(run.keras.callbacks.Callback):
        """--max-minutes, checked after every batch: once the time is up, Keras ends the epoch
        at this batch (its validation, best weights, backup and report follow, as at any
        epoch's end) and training stops, rather than running the rest of a long epoch."""

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            budget = run.config.max_minutes
            if budget and not self.model.stop_training and time.monotonic() - run.started > budget * 60:
                run.log(
                    f"time budget of {budget:.3g} minutes reached in epoch {self.epoch + 1} after batch {batch + 1} "
                    f"of {steps_per_epoch}; stopping there"
                )
                self.model.stop_training = True

    return TimeBudget()


def _keep_best(run: Run):
    work_dir = run.work_dir

    class KeepBest(run.keras.callbacks.Callback):
        """Save the best weights so far to the work directory; survives interruption."""

        def __init__(self):
            super().__init__()
            state = work_dir / "best.json"
            self.best = json.loads(state.read_text())["loss"] if state.exists() else math.inf

        def on_epoch_end(self, epoch, logs=None):
            loss = (logs or {}).get(run.monitor)
            if loss is not None and loss < self.best:
                self.best = loss
                np.savez(work_dir / "best.tmp.npz", **export_weights(self.model, run.config))
                os.replace(work_dir / "best.tmp.npz", work_dir / "best.npz")
                write_json(work_dir / "best.json", {"loss": loss, "epoch": epoch + 1})
            if math.isfinite(self.best):
                best_epoch = json.loads((work_dir / "best.json").read_text())["epoch"]
                state = {"epochs_done": epoch + 1, "best": self.best, "best_epoch": best_epoch}
                write_json(work_dir / "progress.json", state | {"minutes": run.minutes()})

    return KeepBest()


def write_json(path: Path, data) -> None:
    """Written beside, then renamed: a full disk leaves the previous file whole."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _resumable_schedules(run: Run) -> list:
    keras, earlier, config = run.keras, run.earlier, run.config

    class ResumableEarlyStopping(keras.callbacks.EarlyStopping):
        """Early stopping that remembers, across Ctrl-C, how long validation has stalled."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if earlier:
                self.best, self.best_epoch = earlier["best"], earlier["best_epoch"] - 1
                self.wait = earlier["epochs_done"] - earlier["best_epoch"]

    class ResumablePlateau(keras.callbacks.ReduceLROnPlateau):
        """Halve the learning rate on a plateau, measured against the best epoch so far
        even after a resume (the rate itself is restored with the optimizer)."""

        def on_train_begin(self, logs=None):
            super().on_train_begin(logs)
            if earlier:
                self.best = earlier["best"]

    plateau = []
    if config.lr_schedule == "plateau":
        plateau = [ResumablePlateau(monitor=run.monitor, factor=config.lr_decay, patience=0, min_lr=1e-5)]
    return [*plateau, ResumableEarlyStopping(monitor=run.monitor, patience=config.patience)]


def _backup(run: Run, save_freq: int):
    held, backup_dir = run.held, run.work_dir / "backup"

    class Backup(run.keras.callbacks.BackupAndRestore):
        """Keras' backup schedule (every `save_freq` batches) and at the end of every epoch
        too (a backup taken at an epoch's last batch is still labelled with that epoch, so
        a resume from it would train the finished epoch again). Written with NumPy, beside,
        then swapped in: h5py crashed the process on a full disk, and a kill mid-write left
        a truncated backup that the next run resumed from. A damaged one is refused."""

        def on_train_begin(self, logs=None):
            recover_backup(backup_dir)
            self._load_model()

        def _load_model(self):
            epoch = load_backup(self.model, backup_dir)
            if epoch is not None:
                self.model._initial_epoch = epoch

        def on_epoch_end(self, epoch, logs=None):
            super().on_epoch_end(epoch, logs)
            self._batches_seen_since_last_saving = 0
            self._save_model()

        def _save_model(self):
            held.hold()  # a backup half written is no backup
            try:
                write_backup(self.model, backup_dir, {"epoch": self._current_epoch, "batch": self._last_batch_seen})
            finally:
                held.release()

    return Backup(str(backup_dir), save_freq=save_freq)


def _state(model) -> list:
    """Every variable a resumed run needs: the model's weights and the optimizer's
    (its moments, step count and learning rate)."""
    return [*model.weights, *model.optimizer.variables]


def write_backup(model, backup_dir: Path, metadata: dict) -> None:
    """The training state (state.npz) and where it stood (training_metadata.json) written
    to backup.new/, then swapped for backup/; `recover_backup` finishes an interrupted swap."""
    new, old = backup_dir.with_name("backup.new"), backup_dir.with_name("backup.old")
    _check_room(model, backup_dir.parent)
    shutil.rmtree(new, ignore_errors=True)
    try:
        new.mkdir()
        with open(new / "state.npz", "wb") as f:
            np.savez(f, *(np.asarray(v.numpy()) for v in _state(model)))
            f.flush()
            os.fsync(f.fileno())
        (new / "training_metadata.json").write_text(json.dumps(metadata))
    except OSError as e:
        shutil.rmtree(new, ignore_errors=True)
        raise WordbotError(
            f"cannot write the training backup in {backup_dir.parent} ({e.strerror or e}); "
            "free some disk space and run the same command again to resume from the last backup"
        ) from None
    if backup_dir.exists():
        os.replace(backup_dir, old)
    os.replace(new, backup_dir)
    shutil.rmtree(old, ignore_errors=True)


def load_backup(model, backup_dir: Path) -> int | None:
    """Put the backed-up state into `model` (compiled); returns the epoch to resume at,
    or None without a backup. A backup that does not fit the model is refused."""
    state, info = backup_dir / "state.npz", backup_dir / "training_metadata.json"
    if not state.exists():
        return None
    if not model.optimizer.built:
        model.optimizer.build(model.trainable_variables)
    variables = _state(model)
    try:
        epoch = json.loads(info.read_text())["epoch"]
        with np.load(state, allow_pickle=False) as npz:
            arrays = [npz[f"arr_{i}"] for i in range(len(npz.files))]
        if not isinstance(epoch, int) or len(arrays) != len(variables):
            raise ValueError("it holds another model's state")
        for variable, array in zip(variables, arrays, strict=True):
            if tuple(variable.shape) != array.shape:
                raise ValueError(f"{variable.path} has shape {array.shape}, not {tuple(variable.shape)}")
    except (OSError, ValueError, KeyError, TypeError, zipfile.BadZipFile, EOFError) as e:
        raise WordbotError(
            f"the training backup in {backup_dir} is damaged ({_first_line(e)}); "
            f"delete {backup_dir.parent} to start the training afresh"
        ) from None
    for variable, array in zip(variables, arrays, strict=True):
        variable.assign(array)
    return epoch


def recover_backup(backup_dir: Path) -> None:
    """After a kill in the middle of `write_backup`: the whole new backup if it was
    written, else the previous one, becomes backup/ again."""
    new, old = backup_dir.with_name("backup.new"), backup_dir.with_name("backup.old")
    if not backup_dir.exists():
        if (new / "training_metadata.json").is_file():
            os.replace(new, backup_dir)
        elif old.exists():
            os.replace(old, backup_dir)
    shutil.rmtree(new, ignore_errors=True)
    shutil.rmtree(old, ignore_errors=True)


def _check_room(model, directory: Path) -> None:
    """Refuse a backup that cannot fit, before writing it."""
    need = sum(int(np.prod(v.shape)) * 4 for v in _state(model))
    free = shutil.disk_usage(directory).free
    if free < need + ROOM_MARGIN:
        raise WordbotError(
            f"disk full: {free / 1e6:.0f} MB free in {directory}, and a backup of the training needs "
            f"about {(need + ROOM_MARGIN) / 1e6:.0f} MB; free some space and run the same command again to resume"
        )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__)[:200]


def _epoch_end(run: Run, last: bool):
    held = run.held

    class EpochEnd(run.keras.callbacks.Callback):
        """First at an epoch's end: hold Ctrl-C (`last` releases it, last of all)."""

        def on_epoch_end(self, epoch, logs=None):
            if last:
                held.release()
            else:
                held.hold()

    return EpochEnd()


def make_callbacks(
    keras,
    config: TrainConfig,
    work_dir: Path,
    has_validation: bool,
    log,
    steps_per_epoch: int,
    progress: bool = False,
    earlier: dict | None = None,
    held: HeldInterrupt | None = None,
    after_report: tuple = (),
) -> list:
    """`earlier`: `finished_epochs(work_dir)`, read here when not given. `held`: Ctrl-C is
    held back from the start of each epoch's end (and each backup) until its state is saved.
    `after_report`: callbacks whose lines follow the epoch's report (the log, the sample)."""
    run = Run(
        keras,
        config,
        work_dir,
        "val_loss" if has_validation else "loss",
        log,
        finished_epochs(work_dir) if earlier is None else earlier,
        held or HeldInterrupt(),
    )
    # Keras adds its progress bar after every callback given, so it would finish an
    # epoch's bar after EpochReport printed its line, in the middle of the bar; given
    # first, the bar is complete (and ends its line) before the report.
    bar = [keras.callbacks.ProgbarLogger()] if progress else []
    return [
        _epoch_end(run, last=False),
        *bar,
        _time_budget(run, steps_per_epoch),
        # A loss of NaN ruins every later epoch: stop there (KeepBest never keeps it).
        keras.callbacks.TerminateOnNaN(),
        # Back up every few hundred steps (and at least once an epoch) so Ctrl-C loses little.
        _backup(run, save_freq=max(1, min(500, steps_per_epoch))),
        _keep_best(run),
        *_resumable_schedules(run),
        _epoch_report(run),
        *after_report,
        _epoch_end(run, last=True),
    ]
