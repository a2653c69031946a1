"""The n-gram's files and the cache that keeps a model's counted n-gram between runs.

Two formats: version 1, one .npz with the vocabulary inside (what a model directory may
ship as ngram.npz; every table checked at load), and version 2, a directory of
uncompressed .npy files and ngram.json (the cache: memory-mapped, so a start reads the
few pages a suggestion uses; the full check is done once, when it is written).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
import weakref
from pathlib import Path

import numpy as np

from wordbot.artifacts import DEFAULT_ORDER, MAX_NGRAM_ORDER
from wordbot.bounded import read_json, read_npy, read_npz, shown, write_npy
from wordbot.errors import ModelError
from wordbot.ngram import NGRAM_REMEDY, KneserNey, _Order
from wordbot.text import Tokenizer

try:  # sha256 without `import hashlib`, which loads OpenSSL's libcrypto: 3.4 MB resident at every start
    from _sha256 import sha256  # CPython 3.11
except ImportError:  # pragma: no cover - other Pythons
    try:
        from _sha2 import sha256  # CPython 3.12+
    except ImportError:
        from hashlib import sha256

FORMAT = "wordbot-ngram"
FORMAT_VERSION = 2  # what the cache holds: a directory of .npy files (1: one .npz)
CACHE_DIR_ENV = "WORDBOT_CACHE_DIR"
HEADER = "ngram.json"

log = logging.getLogger(__name__)

_INT = ("i", "u")
_TABLE = ("words", "values", "starts", "gamma", "row_of_context")  # the fields of an _Order
# The exact type each table is written in (version 2 asks for these, so nothing is converted).
_DTYPES = {"words": "int32", "values": "float64", "starts": "int64", "gamma": "float64", "row_of_context": "int64"}


def _arrays(ngram: KneserNey) -> dict[str, np.ndarray]:
    """The n-gram's tables by file name: o{k}_{field} and context_keys_{m}."""
    arrays = {}
    for k, table in enumerate(ngram._orders, start=1):
        for name in _TABLE:
            arrays[f"o{k}_{name}"] = getattr(table, name)
    for m, keys in enumerate(ngram._context_keys):
        if keys is not None:
            arrays[f"context_keys_{m}"] = keys
    return arrays


def _expected(order: int) -> dict[str, str]:
    """The arrays of an n-gram of this order, with the type version 2 stores each in."""
    names = {f"context_keys_{m}": "int64" for m in range(2, order)}
    for k in range(1, order + 1):
        names |= {f"o{k}_{name}": _DTYPES[name] for name in _TABLE}
    return names


def _build(tokenizer: Tokenizer, order: int, data: dict[str, np.ndarray], discounts: np.ndarray) -> KneserNey:
    tables = [_Order(*(data[f"o{k}_{name}"] for name in _TABLE)) for k in range(1, order + 1)]
    keys = [data[f"context_keys_{m}"].astype(np.int64, copy=False) if m >= 2 else None for m in range(order)]
    return KneserNey(tokenizer, order, tables, keys, np.asarray(discounts, dtype=np.float64))


def vocab_sha256(tokenizer: Tokenizer) -> str:
    """The sha256 of a vocabulary, remembered per tokenizer (a start asks for it three
    times: the cache names and the n-gram's check)."""
    known = _VOCAB_SHA256.get(tokenizer)
    if known is None or known[0] != len(tokenizer.vocab):
        known = len(tokenizer.vocab), sha256("\n".join(tokenizer.vocab).encode("utf-8")).hexdigest()
        _VOCAB_SHA256[tokenizer] = known
    return known[1]


_VOCAB_SHA256: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


# -- version 1: one .npz ------------------------------------------------------------------


def save_npz(ngram: KneserNey, path) -> None:
    """Write the tables and vocabulary to one .npz (no pickles): a path or a binary file."""
    arrays: dict[str, np.ndarray] = {
        "format_version": np.array(1),
        "order": np.array(ngram.order),
        "discounts": ngram.discounts,
        "vocab": np.array(ngram.tokenizer.vocab, dtype=str),
    }
    np.savez(path if hasattr(path, "write") else Path(path), **arrays, **_arrays(ngram))


def load_npz(path: Path, tokenizer: Tokenizer | None = None) -> KneserNey:
    """An n-gram `save_npz` wrote. Only its own arrays are read, each bounded by the
    file's size, and every table is checked against the others and the vocabulary."""
    head = read_npz(path, {"format_version": ((), _INT), "order": ((), _INT)})
    if int(head["format_version"]) != 1:
        raise ModelError(f"{shown(path)}: n-gram format_version {int(head['format_version'])}; {NGRAM_REMEDY}")
    order = int(head["order"])
    if not 1 <= order <= MAX_NGRAM_ORDER:
        raise ModelError(f"{shown(path)}: n-gram order {order}, not 1 to {MAX_NGRAM_ORDER}; {NGRAM_REMEDY}")
    names = {"discounts": ((order, 3), ("f",)), "vocab": (None, ("U",))}
    names |= {name: (None, ("f",) if dtype == "float64" else _INT) for name, dtype in _expected(order).items()}
    data = read_npz(path, names)
    vocab = [str(t) for t in data["vocab"].reshape(-1)]
    if tokenizer is None:
        try:
            tokenizer = Tokenizer(vocab)
        except ValueError as e:
            raise ModelError(f"{shown(path)}: {e}; {NGRAM_REMEDY}") from None
    elif tokenizer.vocab != vocab:
        raise ModelError(f"{shown(path)}: vocabulary differs from the tokenizer's; {NGRAM_REMEDY}")
    if data["vocab"].ndim != 1 or not np.isfinite(data["discounts"]).all():
        problem = "vocab or discounts malformed"
    else:
        problem = _shapes_problem(data, order, len(vocab)) or _tables_problem(data, order, len(vocab))
    if problem:
        raise ModelError(f"{shown(path)}: {problem}; {NGRAM_REMEDY}")
    return _build(tokenizer, order, data, data["discounts"])


# -- version 2: a directory of .npy files ---------------------------------------------------


def save_directory(ngram: KneserNey, directory: Path) -> None:
    """Write the n-gram into `directory` (which must not hold one yet): one .npy per
    table, flushed, then ngram.json with each file's size and modification time. The
    tables are checked in full here, once, so loading can trust files that are still
    exactly as written."""
    arrays = _arrays(ngram)
    problem = _shapes_problem(arrays, ngram.order, ngram.vocab_size) or _tables_problem(
        arrays, ngram.order, ngram.vocab_size
    )
    if problem:
        raise ValueError(f"refusing to write an inconsistent n-gram: {problem}")
    directory.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, array in arrays.items():
        path = directory / f"{name}.npy"
        write_npy(path, np.asarray(array, dtype=np.dtype(_expected(ngram.order)[name]).newbyteorder("<")))
        done = os.stat(path)
        files[name] = {"bytes": done.st_size, "mtime_ns": done.st_mtime_ns}
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "order": ngram.order,
        "vocab_size": ngram.vocab_size,
        "vocab_sha256": vocab_sha256(ngram.tokenizer),
        "discounts": np.asarray(ngram.discounts, dtype=np.float64).tolist(),
        "files": files,
    }
    with open(directory / HEADER, "w", encoding="utf-8") as f:
        f.write(json.dumps(header, indent=1) + "\n")
        f.flush()
        os.fsync(f.fileno())


def load_directory(directory: Path, tokenizer: Tokenizer) -> KneserNey:
    """An n-gram `save_directory` wrote, over `tokenizer`'s vocabulary, its tables
    memory-mapped. What is checked reads O(1) pages: ngram.json (version, order,
    vocabulary by sha256, discounts), each file's .npy header (type and length) against
    its size, the tables' lengths against each other, the ends of every `starts`; and
    each file's size and modification time against those ngram.json recorded when it
    was written, after the full check of `save_directory`: so the values that index
    (words, rows, context keys) are the ones checked, unless a file was rewritten and its
    time set back on purpose."""
    head = read_json(directory / HEADER, 1 << 20)
    where = shown(directory / HEADER)
    if head.get("format") != FORMAT or head.get("format_version") != FORMAT_VERSION:
        raise ModelError(f"{where}: n-gram format_version {head.get('format_version')!r}; {NGRAM_REMEDY}")
    order = head.get("order")
    if not isinstance(order, int) or isinstance(order, bool) or not 1 <= order <= MAX_NGRAM_ORDER:
        raise ModelError(f"{where}: n-gram order {order!r}, not 1 to {MAX_NGRAM_ORDER}; {NGRAM_REMEDY}")
    if head.get("vocab_size") != len(tokenizer) or head.get("vocab_sha256") != vocab_sha256(tokenizer):
        raise ModelError(f"{where}: vocabulary differs from the tokenizer's; {NGRAM_REMEDY}")
    try:
        discounts = np.array(head.get("discounts"), dtype=np.float64)
    except (TypeError, ValueError):
        discounts = np.full(0, np.nan)
    files = head.get("files")
    if discounts.shape != (order, 3) or not np.isfinite(discounts).all() or not isinstance(files, dict):
        raise ModelError(f"{where}: discounts or files malformed; {NGRAM_REMEDY}")
    data = {}
    for name, dtype in _expected(order).items():
        path = directory / f"{name}.npy"
        data[name] = read_npy(path, None, (dtype,), random_access=True, kind="n-gram table")
        recorded, now = files.get(name), os.stat(path)
        if not isinstance(recorded, dict) or (recorded.get("bytes"), recorded.get("mtime_ns")) != (
            now.st_size,
            now.st_mtime_ns,
        ):
            raise ModelError(f"{shown(path)}: changed since it was written; {NGRAM_REMEDY}")
    problem = _shapes_problem(data, order, len(tokenizer))
    if problem:
        raise ModelError(f"{shown(directory)}: {problem}; {NGRAM_REMEDY}")
    return _build(tokenizer, order, data, discounts)


def load(path: str | os.PathLike, tokenizer: Tokenizer | None = None) -> KneserNey:
    """An n-gram in either format: a directory (version 2, which needs the tokenizer)
    or an .npz (version 1)."""
    path = Path(path)
    if path.is_dir():
        if tokenizer is None:
            raise ModelError(f"{shown(path)}: an n-gram directory is read with its model's tokenizer")
        return load_directory(path, tokenizer)
    return load_npz(path, tokenizer)


def _shapes_problem(data: dict[str, np.ndarray], order: int, vocab_size: int) -> str | None:
    """What makes the tables' lengths disagree (reading O(1) of their pages), or None."""
    for m in range(2, order):
        if data[f"context_keys_{m}"].ndim != 1:
            return f"context_keys_{m} is not a list"
    for k in range(1, order + 1):
        words, values, starts, gamma, rows_of = (data[f"o{k}_{name}"] for name in _TABLE)
        contexts = 1 if k == 1 else vocab_size if k == 2 else len(data[f"context_keys_{k - 1}"])
        rows = len(gamma.reshape(-1))
        if (
            words.ndim != 1
            or values.shape != words.shape
            or starts.shape != (rows + 1,)
            or gamma.ndim != 1
            or rows_of.shape != (contexts,)
        ):
            return f"the order-{k} arrays disagree in length"
        if starts[0] != 0 or starts[-1] != len(words):
            return f"o{k}_starts does not index o{k}_words"
    return None


def _tables_problem(data: dict[str, np.ndarray], order: int, vocab_size: int) -> str | None:
    """What makes the values of consistent-length tables unsafe to index with (a row or
    word outside its table, unsorted context keys, NaN), reading all of them; or None."""
    for m in range(2, order):
        keys = data[f"context_keys_{m}"]
        if (np.diff(keys.astype(np.int64)) <= 0).any():
            return f"context_keys_{m} is not a sorted list"
    for k in range(1, order + 1):
        words, values, starts, gamma, rows_of = (data[f"o{k}_{name}"] for name in _TABLE)
        rows = len(gamma)
        if (np.diff(starts) < 0).any():
            return f"o{k}_starts does not index o{k}_words"
        if len(words) and (words.min() < 0 or words.max() >= vocab_size):
            return f"o{k}_words holds ids outside the vocabulary"
        if len(rows_of) and (rows_of.min() < -1 or rows_of.max() >= rows):
            return f"o{k}_row_of_context points outside the table"
        if not (np.isfinite(values).all() and np.isfinite(gamma).all()):
            return f"the order-{k} table holds NaN or infinite values"
    return None


# -- the cache --------------------------------------------------------------------------


def train_for_model(manifest: dict, directory: str | os.PathLike, tokenizer: Tokenizer,
                    order: int = DEFAULT_ORDER) -> KneserNey:  # fmt: skip
    """A Kneser-Ney model on exactly the text a model directory was trained on
    (its validation part left out), over that model's vocabulary."""
    from wordbot.corpus import training_messages

    return KneserNey.from_texts(training_messages(manifest, directory), tokenizer, order)


def cache_dir() -> Path:
    """Where counted n-grams are kept between runs: $WORDBOT_CACHE_DIR, else the
    platform's user cache directory (~/.cache/wordbot on Linux)."""
    if os.environ.get(CACHE_DIR_ENV):
        return Path(os.environ[CACHE_DIR_ENV])
    xdg, home = os.environ.get("XDG_CACHE_HOME", ""), os.environ.get("HOME", "")
    if sys.platform == "linux" and os.path.isabs(home):  # platformdirs' answer, without importing it (~10 ms)
        return Path(xdg if os.path.isabs(xdg) else os.path.join(home, ".cache"), "wordbot")
    import platformdirs

    return Path(platformdirs.user_cache_dir("wordbot"))


def _cache_key(manifest: dict, tokenizer: Tokenizer, order: int) -> str | None:
    """A name for the n-gram of exactly this training text, split, vocabulary and
    order; None when the manifest does not pin the text down by its sha256."""
    corpus = manifest.get("corpus") or {}
    files = corpus.get("files") or []
    if not files or not all(isinstance(f, dict) and f.get("sha256") for f in files):
        return None
    material = {
        "ngram_format": FORMAT_VERSION,
        "order": order,
        "files": [f["sha256"] for f in files],
        "format": corpus.get("format", "lines"),
        "validation_fraction": corpus.get("validation_fraction", 0.0),
        "split_seed": corpus.get("split_seed", 0),
        "vocab": vocab_sha256(tokenizer),
    }
    return sha256(json.dumps(material, sort_keys=True).encode("utf-8")).hexdigest()[:32]


def cached_path(manifest: dict, tokenizer: Tokenizer, kind: str, suffix: str, order: int = 0) -> Path | None:
    """Where something made from a model's training text and `tokenizer` is cached
    (`kind`-KEY`suffix` in the cache directory); None when the text is not pinned down."""
    key = _cache_key(manifest, tokenizer, order)
    return cache_dir() / f"{kind}-{key}{suffix}" if key else None


def counted_for_model(manifest: dict, directory: str | os.PathLike, tokenizer: Tokenizer, order: int) -> KneserNey:
    """`train_for_model`, remembered in the cache directory: counting the bundled
    model's 5-gram takes seconds and 200 MB, mapping the cached one a few milliseconds
    and the pages a suggestion reads. The cache is only a cache: unreadable, changed
    or unwritable, it is counted again (and replaced)."""
    path = cached_path(manifest, tokenizer, "ngram", "", order)
    try:  # not path.exists(): in a directory without search permission that raises too
        cached = load_directory(path, tokenizer) if path is not None and os.path.isdir(path) else None
    except (OSError, ValueError, KeyError, EOFError) as e:  # ModelError is a ValueError: counted and replaced
        log.debug("wordbot: ignoring the unreadable n-gram cache %s (%s)", path, e)
        cached = None
    if cached is not None:
        with contextlib.suppress(OSError):  # a read-only cache is still a cache
            os.utime(path)  # recently used: kept by the pruning below
        return cached
    ngram = train_for_model(manifest, directory, tokenizer, order)
    remember(ngram, manifest)
    return ngram


def remember(ngram: KneserNey, manifest: dict) -> None:
    """Keep `ngram`, counted on the training text of the model `manifest` describes, in
    the cache (`wordbot train` does, so a model keeps its n-gram on this machine even
    if its corpus moves). A cache that cannot be written is skipped."""
    import shutil  # (with tempfile: only when the cache is written)
    import tempfile

    path = cached_path(manifest, ngram.tokenizer, "ngram", "", ngram.order)
    if path is None:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".ngram-", suffix=".tmp", dir=path.parent))
        try:
            save_directory(ngram, tmp)
            _replace_directory(tmp, path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)  # gone already unless something failed
        _prune_cache(path.parent)
    except OSError as e:
        log.debug("wordbot: cannot cache %s in %s (%s)", path.name, path.parent, e)


def _replace_directory(new: Path, path: Path) -> None:
    """Rename `new` to `path`, a damaged copy there first moved aside and removed."""
    import shutil
    import tempfile

    if os.path.lexists(path):
        aside = Path(tempfile.mkdtemp(prefix=".ngram-old-", suffix=".tmp", dir=path.parent))
        os.replace(path, aside / "old")
        shutil.rmtree(aside, ignore_errors=True)
    os.rename(new, path)


def write_cached(path: Path, write) -> None:
    """Write a cache file atomically through `write(binary file)`; a cache that cannot
    be written is skipped."""
    import tempfile

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".ngram-", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        _prune_cache(path.parent)
    except OSError as e:
        log.debug("wordbot: cannot cache %s in %s (%s)", path.name, path.parent, e)


CACHE_KEEP = 4  # n-grams kept in the cache, the most recently used (58 MB each for fortunes)


def _prune_cache(directory: Path) -> None:
    """Keep the CACHE_KEEP most recently used n-grams (and vocabularies, weights), and drop
    temporary files and directories that a killed process left more than an hour ago."""
    import shutil

    def age(p: Path) -> float:
        try:
            return p.stat().st_mtime
        except OSError:
            return 0.0

    old = []
    for pattern in ("ngram-*", "vocab-*.json", "weights-*.npy"):  # n-grams (.npz before), vocabularies, weights
        old += sorted(directory.glob(pattern), key=age, reverse=True)[CACHE_KEEP:]
    stale = [p for p in directory.glob(".ngram-*.tmp") if age(p) < time.time() - 3600]
    for p in old + stale:
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
