"""Saving a model directory (format version 2, or 1 on request) atomically and recoverably.

A save writes a complete directory beside the target (manifest.json last, every file
flushed), moves the old model aside, renames the new one into place and removes the
old, all under a lock file. A save killed between any two steps is finished or undone
by the next load or save (`recover_interrupted_save`), which never races a save still
running and never writes where it cannot.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from wordbot import __version__
from wordbot.artifacts import (
    FORMAT,
    FORMAT_VERSION,
    READ_VERSIONS,
    WEIGHT_DTYPES,
    expected_shapes,
    save_leftovers,
    save_lock_path,
    weight_file,
)
from wordbot.errors import ModelError
from wordbot.locks import LockHeld, locked
from wordbot.text import Tokenizer


def is_model_dir(path: str | Path) -> bool:
    """Whether `path` is a wordbot model directory (its manifest says so), which a new
    model may replace; anything else at an output path must be left alone."""
    manifest = Path(path) / "manifest.json"
    try:
        return manifest.is_file() and json.loads(manifest.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, UnicodeDecodeError, ValueError, AttributeError):
        return False


def check_output_dir(path: str | Path) -> None:
    """Refuse to write a model over anything but nothing or an older model directory."""
    path = Path(path)
    if path.exists() and not is_model_dir(path):
        what = "a file" if not path.is_dir() else "a directory that is not a wordbot model"
        raise ModelError(f"{path} is {what}; choose another --out (a model only replaces an older model)")


def check_writable(path: str | Path) -> None:
    """Refuse an output path whose directory cannot be written (read-only, not ours, a
    read-only filesystem), by trying: before hours of training, not after."""
    parent = Path(path).absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent  # the directory that mkdir would start from
    try:
        fd, probe = tempfile.mkstemp(prefix=".wordbot-probe-", dir=parent)
    except OSError as e:
        raise ModelError(f"cannot write in {parent} ({e.strerror or e}); choose another --out") from None
    os.close(fd)
    os.unlink(probe)


# Called with each step's name as a save goes (tests kill a save between any two).
_save_step: Callable[[str], None] = lambda step: None  # noqa: E731


def save_model(
    directory: str | Path,
    manifest: dict,
    tokenizer: Tokenizer,
    weights: dict[str, np.ndarray],
    dtype: str = "float32",
    files: dict[str, bytes] | None = None,
    format_version: int = FORMAT_VERSION,
) -> Path:
    """Write a model directory atomically and recoverably.

    The files go to .NAME.tmp-*, manifest.json last; then NAME is moved to .NAME.old-PID,
    the new directory renamed to NAME, and the old one removed, under the lock
    .NAME.lock. A save killed between any two steps is finished (the new model was
    whole) or undone by the next save or load (`recover_interrupted_save`).
    `dtype` "float16" halves the weights' files; the engine computes in float32 either way.
    `files` are more files for the directory, by name (the copy of the training text).
    `format_version` 1 writes the arrays into one weights.npz, as wordbot did before
    version 2 (one .npy file per array, memory-mapped when loaded).
    """
    directory = Path(directory)
    if dtype not in WEIGHT_DTYPES:
        raise ModelError(f"weights are stored as {' or '.join(WEIGHT_DTYPES)}, not {dtype!r}")
    if format_version not in READ_VERSIONS:
        raise ModelError(f"model format version {format_version!r} is not one wordbot writes")
    check_output_dir(directory)
    manifest = {
        "format": FORMAT,
        "format_version": format_version,
        "wordbot_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **manifest,
        "weights_dtype": dtype,
        "vocab_size": len(tokenizer),
    }
    manifest["format_version"] = format_version  # the files written below, whatever a base model's manifest said
    shapes = expected_shapes(manifest["architecture"], len(tokenizer))
    missing = sorted(set(shapes) - set(weights))
    if missing:
        raise ModelError(f"cannot save: weights lack {', '.join(missing)}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with locked(save_lock_path(directory), unlink=True):
        _save_step("locked")
        _recover(directory)  # an earlier save killed midway, finished or undone first
        check_output_dir(directory)
        tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.tmp-", dir=directory.parent))
        try:
            _write_files(tmp, shapes, weights, dtype, tokenizer, files or {}, manifest)
            _swap_in(tmp, directory)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return directory


def _write_files(tmp: Path, shapes, weights, dtype, tokenizer, files: dict[str, bytes], manifest: dict) -> None:
    """Every file of the model, each flushed to disk, manifest.json last: a temporary
    directory with a manifest is whole."""
    # mkdtemp makes the directory private (0700); a model is as shareable as any file.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)
    if manifest["format_version"] == 1:
        written = ["weights.npz"]
        with open(tmp / "weights.npz", "wb") as f:
            np.savez(f, **{k: np.asarray(weights[k], dtype=dtype) for k in shapes})
    else:
        written = [weight_file(k) for k in shapes]
        for k, name in zip(shapes, written, strict=True):
            with open(tmp / name, "wb") as f:  # little-endian C order: mapped as is when loaded
                np.save(f, np.ascontiguousarray(weights[k], dtype=np.dtype(dtype).newbyteorder("<")))
    _save_step("weights")
    tokenizer.save(tmp / "tokenizer.json")
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    for name in (*written, "tokenizer.json", *files):
        with open(tmp / name, "rb") as f:
            os.fsync(f.fileno())
    _save_step("files")
    with open(tmp / "manifest.json", "w", encoding="utf-8") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
        f.flush()
        os.fsync(f.fileno())
    _save_step("manifest")


def _swap_in(tmp: Path, directory: Path) -> None:
    old = None
    if directory.exists():
        old = directory.parent / f".{directory.name}.old-{os.getpid()}"
        os.replace(directory, old)
        _save_step("moved-aside")
    os.replace(tmp, directory)
    _save_step("renamed")
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _save_step("cleaned")


def _survivor(directory: Path, tmps: list[Path], olds: list[Path]) -> Path | None:
    """What an interrupted save left to stand for `directory` when it is gone: a whole
    new model (its manifest written last) before the old one."""
    whole = [p for p in tmps if (p / "manifest.json").is_file()]
    return (whole or olds or [None])[0]


def _recover(directory: Path) -> None:
    """Finish or undo saves of `directory` killed midway (the caller holds the lock)."""
    tmps, olds = save_leftovers(directory)
    if not directory.exists():
        survivor = _survivor(directory, tmps, olds)
        if survivor is not None:
            os.replace(survivor, directory)
    for path in (*tmps, *olds):
        if path.exists():
            shutil.rmtree(path)


def recover_interrupted_save(directory: str | Path) -> Path:
    """The directory to load `directory` from, after a save of it killed midway.

    When no save is running (its lock is free), the killed one is finished or undone,
    and `directory` is returned. While one runs, or where nothing may be written (a
    read-only directory), nothing is touched, and what stands for the model is
    returned: `directory` if it is there, else the whole new copy or the old one."""
    directory = Path(directory)
    tmps, olds = save_leftovers(directory)
    if not tmps and not olds and not save_lock_path(directory).exists():
        return directory
    try:
        with locked(save_lock_path(directory), wait=False, unlink=True):
            _recover(directory)
            return directory
    except (LockHeld, OSError):
        pass
    if directory.exists():
        return directory
    tmps, olds = save_leftovers(directory)
    return _survivor(directory, tmps, olds) or directory
