"""The model directory: manifest.json, tokenizer.json and the weights, one
memory-mapped .npy file per array (format version 2) or weights.npz (version 1).

Loading checks everything a later crash would otherwise trip over, bounded by the
directory's own file sizes, and says which file is wrong and how. Saving, atomic and
recoverable, is wordbot.saving.
"""

from __future__ import annotations

import logging
import math
import os
import stat
from pathlib import Path

import numpy as np

from wordbot.bounded import (
    MAX_EXPANSION,
    all_finite,
    check_npy,
    inside,
    read_json,
    read_npy,
    read_npz,
    shown,
    unreadable,
)
from wordbot.errors import ModelError
from wordbot.text import Tokenizer

log = logging.getLogger(__name__)

FORMAT = "wordbot-model"
FORMAT_VERSION = 2  # what wordbot.saving writes: one .npy file per array
READ_VERSIONS = (1, 2)  # 1: the arrays in weights.npz
CELLS = ("simple_rnn", "gru", "lstm")
BACKENDS = ("rnn", "ngram", "mix")  # what wordbot.predictor serves: the network, the n-gram, their mix
MAX_NGRAM_ORDER = 6  # the highest order wordbot.ngram counts
DEFAULT_ORDER = 4  # the n-gram order counted and mixed in when a manifest names none
GATES = {"simple_rnn": 1, "gru": 3, "lstm": 4}


def _data_dir() -> Path:
    """The bundled data: inside the package when installed from a wheel (wordbot/_data,
    see pyproject.toml), else the source tree's data/ (a checkout or an editable install)."""
    package = Path(__file__).resolve().parent
    installed = package / "_data"
    return installed if (installed / "models" / "default" / "manifest.json").is_file() else package.parent / "data"


DATA_DIR = _data_dir()
DEFAULT_MODEL_DIR = DATA_DIR / "models" / "default"


def model_directory(path: str | os.PathLike | None) -> Path:
    """The model directory a command means: `path`, or the bundled model when it is None."""
    return Path(path) if path is not None else DEFAULT_MODEL_DIR


def served_backend(manifest: dict) -> str:
    """The backend a model serves unless told otherwise: the manifest's `serving.backend`
    (chosen on validation text when the model was made), else the network alone."""
    return (manifest.get("serving") or {}).get("backend", "rnn")


WEIGHT_DTYPES = ("float32", "float16")

# Bounds on what a model directory may declare, checked before anything is allocated
# (the bundled model: 2 members, 1 layer, 512 units, vocabulary 10,000).
MAX_MEMBERS = 16
MAX_LAYERS = 16
MAX_WIDTH = 1 << 15  # units, embedding_dim, projection
MAX_VOCAB = 1 << 21
MAX_PARAMETERS = 1 << 30  # 4 GiB as float32
MAX_JSON_BYTES = {"manifest.json": 4 << 20, "tokenizer.json": 64 << 20}


def weight_file(name: str) -> str:
    """The file of array `name` in a version-2 directory, flat so the directory has no
    subdirectories: "member1/rnn0/kernel" -> "weights.member1.rnn0.kernel.npy"."""
    return "weights." + name.replace("/", ".") + ".npy"


def weight_files(manifest: dict) -> list[str]:
    """The files that hold a model's weights, by the manifest's format version."""
    if manifest.get("format_version") == 1:
        return ["weights.npz"]
    return [weight_file(name) for name in expected_shapes(manifest["architecture"], manifest["vocab_size"])]


def member_prefix(i: int) -> str:
    """Where network i of an ensemble keeps its arrays: the first one unprefixed, so a
    one-network directory reads as before."""
    return "" if i == 0 else f"member{i}/"


def members(architecture: dict) -> int:
    """How many networks of this architecture the model averages (1 unless an ensemble)."""
    n = architecture.get("members", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= MAX_MEMBERS:
        raise ModelError(f"architecture.members must be an integer from 1 to {MAX_MEMBERS}, not {n!r}")
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
        highest = MAX_LAYERS if name == "layers" else MAX_WIDTH
        if value is not None and value > highest:
            raise ModelError(f"architecture.{name} is {value:,}; this wordbot reads at most {highest:,}")
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
    order = mix.get("order", DEFAULT_ORDER)
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


def _sections_problem(manifest: dict) -> str | None:
    """What is wrong with the shape of the sections that `wordbot info`, the n-gram and
    the help screens read (architecture, corpus, metrics), or None."""
    if not isinstance(manifest.get("architecture"), dict):
        return "architecture must be a JSON object"
    corpus = manifest.get("corpus", {})
    if not isinstance(corpus, dict):
        return "corpus must be a JSON object"
    files = corpus.get("files", [])
    if not isinstance(files, list) or not all(
        isinstance(f, dict) and isinstance(f.get("path"), str) and isinstance(f.get("sha256", ""), str | None)
        for f in files
    ):
        return "corpus.files must be a list of {path, sha256} objects"
    own = corpus.get("training_text")
    if own is not None and not (isinstance(own, dict) and isinstance(own.get("sha256", ""), str | None)):
        return "corpus.training_text must be a {path, sha256} object"
    if not _is_number(corpus.get("validation_fraction", 0.0), 0, 1) or not isinstance(corpus.get("split_seed", 0), int):
        return "corpus.validation_fraction must be a number from 0 to 1 and corpus.split_seed an integer"
    metrics = manifest.get("metrics", {})
    if not isinstance(metrics, dict):
        return "metrics must be a JSON object"
    if "validation_perplexity" in metrics and not _is_number(metrics["validation_perplexity"]):
        return f"metrics.validation_perplexity must be a number, not {metrics['validation_perplexity']!r}"
    networks = metrics.get("networks", [])
    if not isinstance(networks, list) or not all(isinstance(n, dict) for n in networks):
        return "metrics.networks must be a list of JSON objects"
    mix = manifest.get("mix")
    if mix and "ngram_weight" not in mix and not mix.get("ngram_weight_by_order"):
        return "mix names no ngram_weight or ngram_weight_by_order"
    return None


def _checked_manifest(directory: Path) -> dict:
    manifest = read_json(directory / "manifest.json", MAX_JSON_BYTES["manifest.json"])
    where = shown(directory / "manifest.json")
    if manifest.get("format") != FORMAT:
        raise ModelError(f"{where}: not a wordbot model manifest")
    version = manifest.get("format_version")
    if version not in READ_VERSIONS:
        newer = isinstance(version, int) and not isinstance(version, bool) and version > FORMAT_VERSION
        raise ModelError(
            f"{where}: format version {version!r}; this wordbot reads versions "
            f"{' and '.join(map(str, READ_VERSIONS))}"
            + ("; a newer wordbot wrote it: upgrade wordbot" if newer else "")
        )
    problem = _mix_problem(manifest) or _sections_problem(manifest)
    if problem:
        raise ModelError(f"{where}: {problem}")
    vocab_size = manifest.get("vocab_size")
    if not isinstance(vocab_size, int) or isinstance(vocab_size, bool) or not 4 <= vocab_size <= MAX_VOCAB:
        raise ModelError(
            f"{where}: vocab_size (the vocabulary size) must be an integer from 4 to {MAX_VOCAB:,}, not {vocab_size!r}"
        )
    own = (manifest.get("corpus") or {}).get("training_text")
    if own is not None:
        inside(directory, own.get("path"), "corpus.training_text.path")
    return manifest


def save_lock_path(directory: Path) -> Path:
    """The lock file of saves of `directory` (wordbot.saving)."""
    return directory.parent / f".{directory.name}.lock"


def save_leftovers(directory: Path) -> tuple[list[Path], list[Path]]:
    """The temporary (.NAME.tmp-*) and set-aside (.NAME.old-*) directories of saves of
    `directory`, newest first; none where the parent cannot be listed."""
    tmp, old = f".{directory.name}.tmp-", f".{directory.name}.old-"
    try:
        with os.scandir(directory.parent) as entries:
            found = [Path(e.path) for e in entries if e.name.startswith((tmp, old)) and e.is_dir(follow_symlinks=False)]
    except OSError:
        return [], []
    found.sort(key=_mtime, reverse=True)
    return [p for p in found if p.name.startswith(tmp)], [p for p in found if p.name.startswith(old)]


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def load_model(directory: str | Path | None = None) -> tuple[dict, Tokenizer, dict[str, np.ndarray]]:
    """Read and check a model directory: (manifest, tokenizer, weights).

    The manifest is checked first, and the sizes it declares against the weight files'
    own sizes before any array is read, so a directory that claims more than it holds
    costs nothing to refuse. float32 arrays of a version-2 directory are memory-mapped,
    and float16 ones after their first conversion (wordbot.weight_cache)."""
    directory = model_directory(directory)
    if any(save_leftovers(directory)) or os.path.lexists(save_lock_path(directory)):
        from wordbot.saving import recover_interrupted_save  # (builds on this module; imported only when needed)

        directory = recover_interrupted_save(directory)
    try:
        mode = os.stat(directory).st_mode
    except FileNotFoundError:
        raise ModelError(f"model directory {shown(directory)} does not exist") from None
    except OSError as e:
        raise ModelError(f"model directory {shown(directory)}: {e.strerror or e}") from None
    if not stat.S_ISDIR(mode):
        raise ModelError(f"{shown(directory)} is not a directory; a model is a directory with manifest.json")
    manifest = _checked_manifest(directory)
    try:
        shapes = expected_shapes(manifest["architecture"], manifest["vocab_size"])
    except (KeyError, TypeError) as e:
        raise ModelError(f"{shown(directory / 'manifest.json')}: architecture incomplete ({e})") from None
    except ModelError as e:
        raise ModelError(f"{shown(directory / 'manifest.json')}: {e}") from None
    if manifest["format_version"] == 1:
        _check_declared(directory / "weights.npz", shapes)
    elif sum(math.prod(shape) for shape in shapes.values()) > MAX_PARAMETERS:
        raise ModelError(f"{shown(directory / 'manifest.json')}: declares more than {MAX_PARAMETERS:,} weights")
    tokenizer = _tokenizer(directory, manifest)
    if manifest["format_version"] == 1:
        specs = {name: (shape, WEIGHT_DTYPES) for name, shape in shapes.items()}
        weights = read_npz(directory / "weights.npz", specs, kind="weights archive")
        for name, array in weights.items():
            if not all_finite(array):
                raise ModelError(f"{shown(directory / 'weights.npz')}: array {name!r} holds NaN or infinite values")
            weights[name] = array.astype(np.float32, copy=False)  # float32 arrays stay memory-mapped
    else:
        weights = _weights_v2(directory, manifest, shapes)  # float32 and checked finite as they are read
    return manifest, tokenizer, weights


def _check_declared(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """Refuse a weights.npz too small for what the manifest declares, before reading it."""
    declared = sum(math.prod(shape) for shape in shapes.values())
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise ModelError(f"{shown(path.parent)}: weights.npz is missing") from None
    except OSError as e:
        raise unreadable(path, e) from None
    if declared > MAX_PARAMETERS or 2 * declared > MAX_EXPANSION * size:
        raise ModelError(
            f"{shown(path)}: not a weights archive this manifest can use: manifest.json declares {declared:,} "
            f"weights, more than its {size:,} bytes can hold; the file is damaged or truncated"
        )


def _tokenizer(directory: Path, manifest: dict) -> Tokenizer:
    # About 14 bytes a token in the bundled model's; the limit keeps parsing it bounded.
    limit = min(MAX_JSON_BYTES["tokenizer.json"], (64 << 10) + 128 * manifest["vocab_size"])
    tokenizer_json = read_json(directory / "tokenizer.json", limit)
    try:
        tokenizer = Tokenizer.from_json(tokenizer_json)
    except ValueError as e:
        raise ModelError(f"{shown(directory / 'tokenizer.json')}: {e}") from None
    if manifest["vocab_size"] != len(tokenizer):
        raise ModelError(
            f"{shown(directory)}: manifest says vocabulary size {manifest['vocab_size']}, "
            f"tokenizer.json has {len(tokenizer)}"
        )
    return tokenizer


def _weights_v2(directory: Path, manifest: dict, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    """The arrays of a version-2 directory: float32 memory-mapped, float16 converted,
    or mapped from the float32 copy a previous start kept (wordbot.weight_cache)."""
    count = members(manifest["architecture"])
    half = manifest.get("weights_dtype") == "float16"
    files = {name: inside(directory, weight_file(name), f"the weights of {name!r}") for name in shapes}
    cache = None
    if half:
        from wordbot import weight_cache  # (with the n-gram cache: a float32 model needs neither)

        cache = weight_cache.cached_weights_path(shapes, files)
        try:
            cached = weight_cache.read_cached(cache, shapes, count) if cache is not None else None
        except (OSError, ValueError) as e:  # damaged: converted again and replaced
            log.debug("wordbot: ignoring the unreadable weights cache %s (%s)", cache, e)
            cached = None
        if cached is not None:
            return cached
    weights = _read_weights(files, shapes, count, stacked=count > 1 and half)
    if cache is not None:
        weight_cache.write_cache(cache, weights, shapes, count)
    return weights


def _read_weights(
    files: dict[str, Path], shapes: dict[str, tuple[int, ...]], count: int, stacked: bool
) -> dict[str, np.ndarray]:
    """Every weight file read (float16 converted; checked finite). `stacked`: an
    ensemble's arrays of one name are converted into one (members, ...) array, each
    network's array a row of it, so the engine's stacks of them (engine.Ensemble) are no
    second copy."""
    weights = {}
    for name, shape in shapes.items():
        if name.startswith("member"):
            continue  # read with network 0's array of the same name
        keys = [member_prefix(i) + name for i in range(count)]
        out = None
        if stacked:  # allocated once every file is known to hold its part
            for key in keys:
                check_npy(files[key], shape, WEIGHT_DTYPES, kind="weights file")
            out = np.empty((count, *shape), dtype=np.float32)
        for i, key in enumerate(keys):
            into = None if out is None else out[i]
            weights[key] = read_npy(
                files[key], shape, WEIGHT_DTYPES, as_float32=True, into=into, finite=True, kind="weights file"
            )
    return weights


def weights_sha256(directory: str | Path) -> str:
    """One sha256 over the files that hold a model's weights (weights.npz's own sha256
    for a version-1 directory), so a derived model can name exactly what it started from."""
    import hashlib

    directory = Path(directory)
    manifest = _checked_manifest(directory)
    names = weight_files(manifest)
    if names == ["weights.npz"]:
        from wordbot.corpus import sha256_of

        return sha256_of(directory / "weights.npz")
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode("utf-8") + b"\0")
        with open(directory / name, "rb") as f:
            while chunk := f.read(1 << 20):
                digest.update(chunk)
    return digest.hexdigest()
