"""The model directory: manifest.json, tokenizer.json and weights.npz.

Saving writes a complete directory beside the target and renames it into place, so
an interrupted save never leaves a half-written model where a good one was. Loading
checks everything a later crash would otherwise trip over, and says which file is
wrong and how.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from wordbot import __version__
from wordbot.errors import ModelError
from wordbot.locks import LockHeld, locked
from wordbot.text import Tokenizer

FORMAT = "wordbot-model"
FORMAT_VERSION = 1
CELLS = ("simple_rnn", "gru", "lstm")
BACKENDS = ("rnn", "ngram", "mix")  # what wordbot.predictor serves: the network, the n-gram, their mix
MAX_NGRAM_ORDER = 6  # the highest order wordbot.ngram counts
GATES = {"simple_rnn": 1, "gru": 3, "lstm": 4}


def _data_dir() -> Path:
    """The bundled data: inside the package when installed from a wheel (wordbot/_data,
    see pyproject.toml), else the source tree's data/ (a checkout or an editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / "_data"
    return installed if (installed / "models" / "default" / "manifest.json").is_file() else package.parent / "data"


DATA_DIR = _data_dir()
DEFAULT_MODEL_DIR = DATA_DIR / "models" / "default"


WEIGHT_DTYPES = ("float32", "float16")


def member_prefix(i: int) -> str:
    """Where network i of an ensemble keeps its arrays: the first one unprefixed, so a
    one-network directory reads as before."""
    return "" if i == 0 else f"member{i}/"


def members(architecture: dict) -> int:
    """How many networks of this architecture the model averages (1 unless an ensemble)."""
    n = architecture.get("members", 1)
    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise ModelError(f"architecture.members must be a positive integer, not {n!r}")
    return n


def member_weights(weights: dict[str, np.ndarray], member: int) -> dict[str, np.ndarray]:
    """The arrays of network `member`, under the names a one-network model uses."""
    prefix = member_prefix(member)
    if not prefix:
        return {name: array for name, array in weights.items() if not name.startswith("member")}
    return {name[len(prefix) :]: array for name, array in weights.items() if name.startswith(prefix)}


def expected_shapes(architecture: dict, vocab_size: int) -> dict[str, tuple[int, ...]]:
    """Every array the engine needs, with the shape the manifest implies."""
    one = _network_shapes(architecture, vocab_size)
    return {member_prefix(i) + name: shape for i in range(members(architecture)) for name, shape in one.items()}


def _network_shapes(architecture: dict, vocab_size: int) -> dict[str, tuple[int, ...]]:
    cell = architecture["cell"]
    if cell not in CELLS:
        raise ModelError(f"unknown cell {cell!r}; expected one of {', '.join(CELLS)}")
    emb, units, layers = architecture["embedding_dim"], architecture["units"], architecture["layers"]
    projection = architecture.get("projection")
    for name, value in (("embedding_dim", emb), ("units", units), ("layers", layers), ("projection", projection)):
        if (value is not None or name != "projection") and (
            not isinstance(value, int) or isinstance(value, bool) or value < 1
        ):
            raise ModelError(f"architecture.{name} must be a positive integer, not {value!r}")
    gates = GATES[cell]
    shapes: dict[str, tuple[int, ...]] = {"embedding": (vocab_size, emb)}
    width = emb
    for i in range(layers):
        shapes[f"rnn{i}/kernel"] = (width, gates * units)
        shapes[f"rnn{i}/recurrent_kernel"] = (units, gates * units)
        shapes[f"rnn{i}/bias"] = (2, 3 * units) if cell == "gru" else (gates * units,)
        width = units
    if projection:
        shapes["projection/kernel"] = (units, projection)
        shapes["projection/bias"] = (projection,)
        width = projection
    if architecture.get("tied"):
        if width != emb:
            raise ModelError(f"tied output needs width {width} to equal embedding_dim {emb}")
    else:
        shapes["output/kernel"] = (width, vocab_size)
    shapes["output/bias"] = (vocab_size,)
    return shapes


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
) -> Path:
    """Write a model directory atomically and recoverably.

    The files go to .NAME.tmp-*, manifest.json last; then NAME is moved to .NAME.old-PID,
    the new directory renamed to NAME, and the old one removed, under the lock
    .NAME.lock. A save killed between any two steps is finished (the new model was
    whole) or undone by the next save or load (`recover_interrupted_save`).
    `dtype` "float16" halves weights.npz; the engine computes in float32 either way.
    `files` are more files for the directory, by name (the copy of the training text).
    """
    directory = Path(directory)
    if dtype not in WEIGHT_DTYPES:
        raise ModelError(f"weights are stored as {' or '.join(WEIGHT_DTYPES)}, not {dtype!r}")
    check_output_dir(directory)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "wordbot_version": __version__,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **manifest,
        "weights_dtype": dtype,
        "vocab_size": len(tokenizer),
    }
    shapes = expected_shapes(manifest["architecture"], len(tokenizer))
    missing = sorted(set(shapes) - set(weights))
    if missing:
        raise ModelError(f"cannot save: weights lack {', '.join(missing)}")
    directory.parent.mkdir(parents=True, exist_ok=True)
    with locked(_lock_path(directory), unlink=True):
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
    with open(tmp / "weights.npz", "wb") as f:
        np.savez(f, **{k: np.asarray(weights[k], dtype=dtype) for k in shapes})
    _save_step("weights")
    tokenizer.save(tmp / "tokenizer.json")
    for name, data in files.items():
        (tmp / name).write_bytes(data)
    for name in ("weights.npz", "tokenizer.json", *files):
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


def _lock_path(directory: Path) -> Path:
    return directory.parent / f".{directory.name}.lock"


def _leftovers(directory: Path) -> tuple[list[Path], list[Path]]:
    """The temporary (.NAME.tmp-*) and set-aside (.NAME.old-*) directories of saves of
    `directory`, newest first; none where the parent cannot be listed."""
    tmp, old = f".{directory.name}.tmp-", f".{directory.name}.old-"
    try:
        with os.scandir(directory.parent) as entries:
            found = [Path(e.path) for e in entries if e.name.startswith((tmp, old)) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return [], []
    found.sort(key=lambda p: _mtime(p), reverse=True)
    return [p for p in found if p.name.startswith(tmp)], [p for p in found if p.name.startswith(old)]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _survivor(directory: Path, tmps: list[Path], olds: list[Path]) -> Path | None:
    """What an interrupted save left to stand for `directory` when it is gone: a whole
    new model (its manifest written last) before the old one."""
    whole = [p for p in tmps if (p / "manifest.json").is_file()]
    return (whole or olds or [None])[0]


def _recover(directory: Path) -> None:
    """Finish or undo saves of `directory` killed midway (the caller holds the lock)."""
    tmps, olds = _leftovers(directory)
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
    tmps, olds = _leftovers(directory)
    if not tmps and not olds and not _lock_path(directory).exists():
        return directory
    try:
        with locked(_lock_path(directory), wait=False, unlink=True):
            _recover(directory)
            return directory
    except (LockHeld, OSError):
        pass
    if directory.exists():
        return directory
    tmps, olds = _leftovers(directory)
    return _survivor(directory, tmps, olds) or directory


def _read_json(path: Path) -> dict:
    if not path.is_file():
        raise ModelError(f"{path.parent}: {path.name} is missing; not a wordbot model directory")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{path}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object")
    return data


def _is_number(value, low: float = -math.inf, high: float = math.inf) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and low <= value <= high


def _mix_problem(manifest: dict) -> str | None:
    """What is wrong with the manifest's "mix" and "serving" sections (which the n-gram
    half of a model is built from), or None."""
    serving = manifest.get("serving", {})
    if not isinstance(serving, dict) or serving.get("backend", "rnn") not in BACKENDS:
        return f"serving.backend must be one of {', '.join(BACKENDS)}"
    mix = manifest.get("mix")
    if mix is None:
        return None
    if not isinstance(mix, dict):
        return "mix must be a JSON object"
    order = mix.get("order", 4)
    if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= MAX_NGRAM_ORDER:
        return f"mix.order must be an integer from 1 to {MAX_NGRAM_ORDER}, not {order!r}"
    if "ngram_weight" in mix and not _is_number(mix["ngram_weight"], 0, 1):
        return f"mix.ngram_weight must be a number from 0 to 1, not {mix['ngram_weight']!r}"
    by_order = mix.get("ngram_weight_by_order")
    if by_order is not None and not (
        isinstance(by_order, dict)
        and all(isinstance(k, str) and k.isdigit() and _is_number(w, 0, 1) for k, w in by_order.items())
    ):
        return "mix.ngram_weight_by_order must map context orders to weights from 0 to 1"
    for key in ("rnn_perplexity", "mix_perplexity", "single_weight_perplexity"):
        if key in mix and not _is_number(mix[key]):
            return f"mix.{key} must be a number, not {mix[key]!r}"
    return None


def load_model(directory: str | Path | None = None) -> tuple[dict, Tokenizer, dict[str, np.ndarray]]:
    """Read and check a model directory: (manifest, tokenizer, weights)."""
    directory = Path(directory) if directory is not None else DEFAULT_MODEL_DIR
    directory = recover_interrupted_save(directory)
    if not directory.exists():
        raise ModelError(f"model directory {directory} does not exist")
    if not directory.is_dir():
        raise ModelError(f"{directory} is not a directory; a model is a directory with manifest.json")
    manifest = _read_json(directory / "manifest.json")
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{directory / 'manifest.json'}: not a wordbot model manifest")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise ModelError(
            f"{directory / 'manifest.json'}: format version {manifest.get('format_version')!r}, "
            f"this wordbot reads version {FORMAT_VERSION}"
        )
    try:
        tokenizer = Tokenizer.from_json(_read_json(directory / "tokenizer.json"))
    except ModelError:
        raise
    except ValueError as e:
        raise ModelError(f"{directory / 'tokenizer.json'}: {e}") from None
    if manifest.get("vocab_size") != len(tokenizer):
        raise ModelError(
            f"{directory}: manifest says vocabulary size {manifest.get('vocab_size')}, "
            f"tokenizer.json has {len(tokenizer)}"
        )
    problem = _mix_problem(manifest)
    if problem:
        raise ModelError(f"{directory / 'manifest.json'}: {problem}")
    try:
        shapes = expected_shapes(manifest["architecture"], len(tokenizer))
    except (KeyError, TypeError) as e:
        raise ModelError(f"{directory / 'manifest.json'}: architecture incomplete ({e})") from None
    except ModelError as e:
        raise ModelError(f"{directory / 'manifest.json'}: {e}") from None
    path = directory / "weights.npz"
    if not path.is_file():
        raise ModelError(f"{directory}: weights.npz is missing")
    if not zipfile.is_zipfile(path):  # else NumPy tries it as a pickle and talks of allow_pickle
        raise ModelError(f"{path}: not a weights archive (.npz); the file is damaged or truncated")
    try:
        with np.load(path, allow_pickle=False) as npz:
            weights = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise ModelError(f"{path}: unreadable ({e})") from None
    for name, shape in shapes.items():
        if name not in weights:
            raise ModelError(f"{path}: array {name!r} is missing")
        if weights[name].dtype.name not in WEIGHT_DTYPES:
            raise ModelError(f"{path}: array {name!r} is {weights[name].dtype}, expected float32 or float16")
        if weights[name].shape != shape:
            raise ModelError(f"{path}: array {name!r} has shape {weights[name].shape}, manifest implies {shape}")
        if not np.isfinite(weights[name]).all():
            raise ModelError(f"{path}: array {name!r} holds NaN or infinite values")
        weights[name] = weights[name].astype(np.float32, copy=False)
    return manifest, tokenizer, weights
