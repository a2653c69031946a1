"""`train()`: data -> fit -> export, around the work directory DIR.partial/ that lets
an interrupted run resume (its settings, a lock with the owner's PID). TensorFlow is
imported by the fit step only."""

from __future__ import annotations

import dataclasses
import errno
import json
import os
import shutil
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from wordbot.corpus import sha256_of
from wordbot.errors import ConfigError, WordbotError
from wordbot.locks import LockHeld, acquire_lock
from wordbot.saving import check_output_dir, check_writable, is_model_dir
from wordbot.training.config import TrainConfig
from wordbot.training.data import describe, prepare
from wordbot.training.export import export
from wordbot.training.finetune import Base
from wordbot.training.fit import TrainingDiverged, fit_all
from wordbot.training.model import _tf
from wordbot.training.watch import LOG_NAME


def train(
    config: TrainConfig,
    *,
    log=print,
    progress: bool | None = None,
    manifest_extra: dict | None = None,
    files: dict[str, bytes] | None = None,
) -> Path:
    """Train a model as configured and write its directory; returns the directory.

    An interrupted run leaves `<out>.partial/`; the same command resumes from it.
    `manifest_extra`: more sections for the manifest; `files`: more files for the directory
    (a Discord server's: which of its messages the model was trained on).
    """
    config.validate()
    check_output_dir(config.out)  # before hours of training, not after
    check_writable(config.out)
    base = Base.load(config.base) if config.base else None
    data = prepare(config, base.tokenizer if base else None)
    _tf()  # before anything is written: without TensorFlow, nothing is left behind
    out = Path(config.out)
    work_dir = out.parent / f"{out.name}.partial"
    with work_directory(work_dir):
        resumed = _stamp(work_dir, config, data.paths)
        if base:
            log(f"fine-tuning {base.name} ({base.directory}): its networks and vocabulary of {len(base.tokenizer):,}")
        for line in describe(data, config, resumed):
            log(line)
        if is_model_dir(out):
            log(f"{out} holds a model; it is replaced when training finishes (an interrupted run leaves it as it is)")
        try:
            weights, metrics = fit_all(
                config, data, work_dir, log, sys.stdout.isatty() if progress is None else progress, base
            )
        except TrainingDiverged as e:
            # Its backup holds NaN weights: resuming from it could only diverge again.
            shutil.rmtree(work_dir, ignore_errors=True)
            raise TrainingDiverged(f"{e} ({work_dir} was removed)") from None
        export(
            config,
            data,
            weights,
            metrics,
            log,
            base=base,
            training_log=work_dir / LOG_NAME,
            manifest_extra=manifest_extra,
            files=files,
        )
        shutil.rmtree(work_dir, ignore_errors=True)
    return out


_DISK_FULL = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


@contextmanager
def work_directory(work_dir: Path) -> Iterator[None]:
    """DIR.partial/, created if need be and locked for this run: two runs of the same
    command would otherwise train into the same backup files."""
    try:
        for attempt in range(3):
            work_dir.mkdir(parents=True, exist_ok=True)
            try:
                fd = acquire_lock(work_dir / "lock", wait=False)
                break
            except FileNotFoundError:  # a run that held it just finished and removed it
                if attempt == 2:
                    raise
    except LockHeld as e:
        raise WordbotError(
            f"{work_dir} is in use by another wordbot train (process {e.pid or 'unknown'}); "
            "wait for it to finish, or stop it and run this command again to resume"
        ) from None
    except PermissionError as e:
        raise WordbotError(f"cannot write in {work_dir} ({e.strerror}); choose another --out") from None
    try:
        yield
    finally:
        os.close(fd)


def _stamp(work_dir: Path, config: TrainConfig, paths: list[Path]) -> bool:
    """Record this run's settings in DIR.partial/config.json, or check them against the
    interrupted run's there; returns whether this run resumes one."""
    # Settings that may change between an interruption and the resumed run.
    run_config = dataclasses.asdict(config) | {
        "notes": "",
        "epochs": config.epochs if config.lr_schedule == "cosine" else 0,  # the cosine's length
        "max_minutes": 0,
        "patience": 0,
        "weights_dtype": "",  # only how the result is stored
    }
    # The text itself, not only its file names: an edited corpus makes another vocabulary.
    run_config["corpus_sha256"] = [sha256_of(p) for p in paths]
    stamp = work_dir / "config.json"
    resumed = stamp.exists()
    if resumed:
        changed = _changed_settings(stamp, json.loads(json.dumps(run_config)))
        if changed:
            raise ConfigError(
                f"{work_dir} holds an interrupted run with other settings ({'; '.join(changed)}); "
                f"rerun with those settings to resume, or delete {work_dir} to start afresh"
            )
    stamp.write_text(json.dumps(run_config, indent=2))
    return resumed


def _changed_settings(stamp: Path, now: dict) -> list[str]:
    """What differs between the interrupted run's settings (its config.json) and this
    run's, as `name: then, now`; settings the older run did not record are not compared."""
    try:
        then = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return [f"{stamp} is unreadable"]
    if not isinstance(then, dict):
        return [f"{stamp} is unreadable"]
    changed = []
    for key in sorted(set(then) & set(now)):
        if then[key] != now[key]:
            if key == "corpus_sha256":
                changed.append("the corpus text has changed since")
            else:
                changed.append(f"{key}: {_shown(then[key])} then, {_shown(now[key])} now")
    return changed


def _shown(value) -> str:
    if isinstance(value, list):
        return ", ".join(map(str, value))
    return str(value)
