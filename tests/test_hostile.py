"""Hostile model directories and the CLI's edges (issue 12, classes 2 and 3).

Each tampered directory is run as `python -m wordbot ...` in a subprocess whose
address space is capped (RLIMIT_AS), with a timeout: it must end with exit status 2
and exactly one line on standard error, `wordbot: error: ...`, never a traceback,
however much the directory claims or holds. The permission cases run without root's
file capabilities (tests/unprivileged.py), so that they bite although tests run as root.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import resource
import shutil
import struct
import subprocess
import sys
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest

from wordbot.corpus import pack_messages

from . import unprivileged
from .conftest import ROOT, make_model_dir

MEMORY_LIMIT = 1536 << 20  # 1.5 GiB of address space: a 2 GB allocation cannot happen
TIMEOUT = 90


def _limit_memory() -> None:  # in the child, before exec
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def wordbot(*args: str, limit: bool = True, **kwargs) -> subprocess.CompletedProcess:
    kwargs["env"] = {**os.environ, "PYTHONPATH": str(ROOT)} | kwargs.get("env", {})
    if "stdout" not in kwargs:
        kwargs["capture_output"] = True
    kwargs.setdefault("preexec_fn", _limit_memory if limit else None)
    return subprocess.run([sys.executable, "-m", "wordbot", *args], text=True, timeout=TIMEOUT, **kwargs)


def assert_one_line_error(result: subprocess.CompletedProcess, *words: str, status: int = 2) -> str:
    assert "Traceback" not in result.stderr, result.stderr[-3000:]
    assert result.returncode == status, (result.returncode, result.stderr[-3000:])
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr[-3000:]
    assert lines[0].startswith("wordbot: error: "), lines
    for word in words:
        assert word.lower() in lines[0].lower(), lines[0]
    return lines[0]


# -- building tampered directories -----------------------------------------------------


def _pristine(directory: Path, **options) -> Path:
    """A tiny model with its own copy of its training text, as `wordbot train` writes."""
    directory = make_model_dir(directory, **options)
    data = pack_messages(["the cat sat on the mat", "what is the time", "a dog and a cat"] * 50)
    (directory / "training-text.json.gz").write_bytes(data)
    _edit(directory, lambda m: m["corpus"].update(training_text=_text_entry("training-text.json.gz", data)))
    return directory


@pytest.fixture(scope="module")
def pristine(tmp_path_factory) -> Path:
    return _pristine(tmp_path_factory.mktemp("pristine") / "model")


@pytest.fixture(scope="module")
def pristine_v1(tmp_path_factory) -> Path:
    """The same, in format version 1 (weights.npz), which wordbot still reads."""
    return _pristine(tmp_path_factory.mktemp("pristine-v1") / "model", format_version=1)


@pytest.fixture
def model(pristine, tmp_path) -> Path:
    directory = tmp_path / "box" / "model"
    shutil.copytree(pristine, directory)
    return directory


@pytest.fixture
def model_v1(pristine_v1, tmp_path) -> Path:
    directory = tmp_path / "box-v1" / "model"
    shutil.copytree(pristine_v1, directory)
    return directory


def _text_entry(path: str, data: bytes) -> dict:
    return {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "messages": 150}


def _edit(directory: Path, change) -> None:
    path = directory / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))


def _architecture(**changes):
    return lambda d: _edit(d, lambda m: m["architecture"].update(changes))


def _set(key, value):
    return lambda d: _edit(d, lambda m: m.update({key: value}))


def _training_text_path(path: str):
    return lambda d: _edit(d, lambda m: m["corpus"]["training_text"].update(path=path, sha256=None))


def _deflate_bomb(prefix: bytes, zeros: int) -> tuple[bytes, int]:
    """A raw deflate stream of `prefix` and then `zeros` NUL bytes, a few MB for 2 GB:
    one 16 MiB block compressed with a full flush (which makes it independent of what
    came before) is repeated. Returns (stream, crc32 of the whole)."""
    chunk = 16 << 20
    assert zeros % chunk == 0
    c = zlib.compressobj(9, zlib.DEFLATED, -15)
    head = c.compress(prefix) + c.flush(zlib.Z_FULL_FLUSH)
    block = c.compress(b"\0" * chunk) + c.flush(zlib.Z_FULL_FLUSH)
    tail = c.flush(zlib.Z_FINISH)
    crc = zlib.crc32(prefix)
    for _ in range(zeros // chunk):
        crc = zlib.crc32(b"\0" * chunk, crc)
    return head + block * (zeros // chunk) + tail, crc


def _gzip_bomb(path: Path, megabytes_out: int = 2048) -> bytes:
    """Gzip members of 16 MiB of spaces, concatenated (a valid gzip file): ~2 MB that
    expand to 2 GB of what starts like JSON."""
    member = gzip.compress(b"[" + b" " * ((16 << 20) - 1), mtime=0)
    spaces = gzip.compress(b" " * (16 << 20), mtime=0)
    data = member + spaces * (megabytes_out // 16 - 1)
    path.write_bytes(data)
    return data


def _bomb_text(d: Path) -> None:
    data = _gzip_bomb(d / "training-text.json.gz")
    _edit(d, lambda m: m["corpus"].update(training_text=_text_entry("training-text.json.gz", data)))


def _npy_header(shape: tuple[int, ...], dtype: str) -> bytes:
    header = {"descr": np.dtype(dtype).str, "fortran_order": False, "shape": shape}
    text = repr(header).encode("latin1")
    pad = 64 - (10 + len(text) + 1) % 64
    text += b" " * pad + b"\n"
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(text)) + text


def _zip_with(path: Path, extra: dict[str, tuple[bytes, int, int, int]] | None = None, drop=()) -> None:
    """Rewrite the zip at `path` with its members less `drop`, plus `extra` raw members
    given as (compressed bytes, crc32, uncompressed size, compression method)."""
    with zipfile.ZipFile(path) as z:
        kept = [(info.filename, z.read(info)) for info in z.infolist() if info.filename not in drop]
    out, central = bytearray(), bytearray()
    entries = [(name, data, zlib.crc32(data), len(data), zipfile.ZIP_STORED) for name, data in kept]
    entries += [(name, *spec) for name, spec in (extra or {}).items()]
    for name, data, crc, size, method in entries:
        raw = name.encode()
        offset = len(out)
        out += struct.pack("<4s5H3L2H", b"PK\x03\x04", 20, 0, method, 0, 0, crc, len(data), size, len(raw), 0)
        out += raw + data
        central += struct.pack(
            "<4s6H3L5H2L", b"PK\x01\x02", 20, 20, 0, method, 0, 0, crc, len(data), size, len(raw), 0, 0, 0, 0, 0, offset
        )
        central += raw
    end = struct.pack("<4s4H2LH", b"PK\x05\x06", 0, 0, len(entries), len(entries), len(central), len(out), 0)
    path.write_bytes(bytes(out + central + end))


def _extra_bomb_member(d: Path) -> None:
    """An unused member, `bomb.npy`: a valid .npy of 2 GiB of zeros in ~2 MB."""
    size = 2 << 30
    header = _npy_header((size,), "uint8")
    stream, crc = _deflate_bomb(header, size)
    _zip_with(d / "weights.npz", {"bomb.npy": (stream, crc, len(header) + size, zipfile.ZIP_DEFLATED)})


def _huge_header_member(d: Path) -> None:
    """`embedding.npy` replaced by a header that claims 4 TiB, and 1 KB of data."""
    data = _npy_header((1 << 40,), "float32") + b"\0" * 1024
    _zip_with(d / "weights.npz", {"embedding.npy": (data, zlib.crc32(data), len(data), zipfile.ZIP_STORED)},
              drop={"embedding.npy"})  # fmt: skip


def _npy_claiming(shape: tuple[int, ...], name: str = "weights.embedding.npy"):
    """`name` replaced by a .npy header that claims `shape` of float32, and 1 KB of data."""
    return lambda d: (d / name).write_bytes(_npy_header(shape, "float32") + b"\0" * 1024)


def _float16_ensemble_claiming_gigabytes(d: Path) -> None:
    """Two float16 networks whose embeddings (6,000 x 32,768) would take 1.5 GB as
    float32: within the bounds on what a manifest may declare, but not what the files
    hold, which must be found before anything is allocated for them."""
    tokenizer = json.loads((d / "tokenizer.json").read_text())
    tokenizer["vocab"] += [f"w{i}" for i in range(6000 - len(tokenizer["vocab"]))]
    (d / "tokenizer.json").write_text(json.dumps(tokenizer))
    _edit(d, lambda m: m.update(vocab_size=6000, weights_dtype="float16"))
    _architecture(members=2, embedding_dim=32768, projection=32768)(d)


def _truncate(name: str, keep: float = 0.5):
    def cut(d: Path) -> None:
        data = (d / name).read_bytes()
        (d / name).write_bytes(data[: int(len(data) * keep)])

    return cut


def _ngram(d: Path, **changes) -> None:
    """A real ngram.npz for this model, with some arrays changed (None: removed)."""
    from wordbot.ngram import KneserNey
    from wordbot.text import Tokenizer

    tokenizer = Tokenizer.load(d / "tokenizer.json")
    KneserNey.from_texts(["the cat sat on the mat", "a dog"] * 20, tokenizer, 3).save(d / "ngram.npz")
    with np.load(d / "ngram.npz") as npz:
        arrays = {k: npz[k] for k in npz.files}
    for name, value in changes.items():
        if value is None:
            del arrays[name]
        else:
            arrays[name] = value(arrays[name]) if callable(value) else value
    np.savez(d / "ngram.npz", **arrays)


def _ngram_cut_short(d: Path) -> None:
    """Valid zip, every array present, the tables cut short: a crash in probs() later."""
    _ngram(d, o3_words=lambda a: a[:2], o3_values=lambda a: a[:2])


def _deep_tokenizer(d: Path) -> None:
    depth = 20_000  # under the size limit: the nesting itself must be refused
    (d / "tokenizer.json").write_text('{"format_version": 1, "vocab": ' + "[" * depth + "]" * depth + "}")


def _fifo(name: str):
    """`name` replaced by a named pipe, which a plain open() waits on for ever."""
    return lambda d: (d / name).unlink() or os.mkfifo(d / name)


def _link(name: str, target: str):
    return lambda d: (d / name).unlink() or (d / name).symlink_to(target)


NEXT = ("next", "hi", "--model")
# name: (tamper, command before DIR, command after DIR, words the error must name)
CASES = {
    "members 100000000": (_architecture(members=100_000_000), NEXT, (), ("manifest.json", "members")),
    "layers 100000000": (_architecture(layers=100_000_000), NEXT, (), ("manifest.json", "layers")),
    "units 1e9": (_architecture(units=1_000_000_000), NEXT, (), ("manifest.json", "units")),
    "sizes beyond weights.npz": (_architecture(units=4000), NEXT, (), ("weights.npz",)),
    "vocab_size 1e9": (_set("vocab_size", 1_000_000_000), NEXT, (), ("vocabulary",)),
    "gzip bomb as training text": (_bomb_text, NEXT, ("--backend", "mix"), ("training-text.json.gz", "expands")),
    "training text /dev/zero": (_training_text_path("/dev/zero"), NEXT, (), ("/dev/zero", "inside")),
    "training text /etc/passwd": (_training_text_path("/etc/passwd"), NEXT, (), ("/etc/passwd", "inside")),
    "training text ../x": (_training_text_path("../x"), NEXT, (), ("../x", "inside")),
    "training text symlink out": (
        _link("training-text.json.gz", "/etc/passwd"),
        NEXT,
        (),
        ("training-text.json.gz", "inside"),
    ),
    "weights member claims 4 TiB": (_huge_header_member, NEXT, (), ("weights.npz", "embedding")),
    "truncated weights.npz": (_truncate("weights.npz"), NEXT, (), ("weights.npz",)),
    "mix without weights": (_set("mix", {"order": 3}), ("info",), (), ("manifest.json", "mix")),
    "metrics a list": (_set("metrics", [1, 2]), ("info",), (), ("manifest.json", "metrics")),
    "metrics.networks a number": (_set("metrics", {"networks": 5}), ("info",), (), ("manifest.json", "networks")),
    "metrics.validation_perplexity text": (
        _set("metrics", {"validation_perplexity": "low"}),
        NEXT,
        (),
        ("manifest.json", "validation_perplexity"),
    ),
    "corpus a string": (_set("corpus", "fortunes"), ("info",), (), ("manifest.json", "corpus")),
    "corpus.files a number": (_set("corpus", {"files": 5}), NEXT, (), ("manifest.json", "corpus.files")),
    "corpus.files without paths": (_set("corpus", {"files": [{"sha256": 1}]}), ("info",), (), ("corpus.files",)),
    "architecture a list": (_set("architecture", [1]), ("info",), (), ("manifest.json", "architecture")),
    "ngram.npz garbage": (
        lambda d: (d / "ngram.npz").write_bytes(b"junk" * 100),
        NEXT,
        ("--backend", "ngram"),
        ("ngram.npz",),
    ),
    "ngram.npz truncated": (
        lambda d: _ngram(d) or _truncate("ngram.npz")(d),
        NEXT,
        ("--backend", "ngram"),
        ("ngram.npz",),
    ),
    "ngram.npz without order": (lambda d: _ngram(d, order=None), NEXT, ("--backend", "mix"), ("ngram.npz", "order")),
    "ngram.npz order 99": (lambda d: _ngram(d, order=np.array(99)), NEXT, ("--backend", "ngram"), ("ngram.npz",)),
    "ngram.npz other vocabulary": (
        lambda d: _ngram(d, vocab=lambda a: np.array([*a[:-1], "zzz"])),
        NEXT,
        ("--backend", "ngram"),
        ("ngram.npz", "vocabulary"),
    ),
    "ngram.npz tables cut short": (_ngram_cut_short, NEXT, ("--backend", "ngram"), ("ngram.npz",)),
    "ngram.npz words out of range": (
        lambda d: _ngram(d, o3_words=lambda a: a + 10**6),
        NEXT,
        ("--backend", "ngram"),
        ("ngram.npz",),
    ),
    "deep tokenizer.json": (_deep_tokenizer, NEXT, (), ("tokenizer.json", "nested")),
    "tokenizer.json of 20 MB": (
        lambda d: (d / "tokenizer.json").write_text('{"vocab": [' + '"a",' * 5_000_000 + '"b"]}'),
        NEXT,
        (),
        ("tokenizer.json", "larger than"),
    ),
    "tokenizer.json a FIFO": (_fifo("tokenizer.json"), NEXT, (), ("tokenizer.json", "not a regular file")),
    "manifest.json /dev/zero": (_link("manifest.json", "/dev/zero"), ("info",), (), ("manifest.json", "regular")),
    "weights.npz a FIFO": (_fifo("weights.npz"), NEXT, (), ("weights.npz",)),
    # Format version 2: one .npy file per array, memory-mapped once its header and size pass.
    "sizes beyond the .npy files": (_architecture(units=4000), NEXT, (), ("weights.rnn0.kernel.npy", "shape")),
    "weights .npy claims 4 TiB": (_npy_claiming((1 << 40,)), NEXT, (), ("weights.embedding.npy", "shape")),
    "weights .npy right shape, 1 KB of data": (
        lambda d: _npy_claiming(np.load(d / "weights.embedding.npy").shape)(d),
        NEXT,
        (),
        ("weights.embedding.npy", "truncated"),
    ),
    "truncated weights .npy": (_truncate("weights.embedding.npy"), NEXT, (), ("weights.embedding.npy", "truncated")),
    "weights .npy header cut": (_truncate("weights.embedding.npy", 0.0005), NEXT, (), ("weights.embedding.npy",)),
    "weights .npy missing": (lambda d: (d / "weights.embedding.npy").unlink(), NEXT, (), ("weights.embedding.npy",)),
    "weights .npy a FIFO": (_fifo("weights.embedding.npy"), NEXT, (), ("weights.embedding.npy",)),
    "weights .npy /dev/zero": (_link("weights.embedding.npy", "/dev/zero"), NEXT, (), ("weights.embedding.npy",)),
    "format version 3": (_set("format_version", 3), NEXT, (), ("manifest.json", "format version 3", "upgrade")),
    "float16 ensemble claiming 1.5 GB": (
        _float16_ensemble_claiming_gigabytes,
        NEXT,
        (),
        ("weights.embedding.npy", "has shape (800, 16)"),
    ),
}
V1_CASES = {"sizes beyond weights.npz", "weights member claims 4 TiB", "truncated weights.npz", "weights.npz a FIFO"}


@pytest.mark.parametrize("case", list(CASES))
def test_a_tampered_model_directory_gives_one_line_and_status_2(model, model_v1, case):
    tamper, before, after, words = CASES[case]
    directory = model_v1 if case in V1_CASES else model
    tamper(directory)
    result = wordbot(*before, str(directory), *after)
    assert_one_line_error(result, *words)


def test_an_unused_zip_bomb_member_in_weights_npz_is_never_read(model_v1):
    model = model_v1
    _extra_bomb_member(model)
    assert (model / "weights.npz").stat().st_size < 8 << 20
    result = wordbot("next", "the", "--model", str(model), "-k", "3")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(result.stdout.splitlines()) == 3 and not result.stderr


def test_a_sane_directory_passes_the_same_checks(model, model_v1):
    """The checks above refuse nothing a real model holds: the tiny one (both formats) and the bundled one."""
    for directory in (model, model_v1, None):
        for backend in ("rnn", "mix"):
            args = ("--model", str(directory)) if directory else ()
            result = wordbot("next", "the", "-k", "2", "--backend", backend, *args)
            assert result.returncode == 0 and len(result.stdout.splitlines()) == 2, result.stderr[-3000:]
    assert wordbot("info", str(model)).returncode == 0


def test_info_shows_a_mix_without_its_perplexities(model):
    """The manifest's mix needs a weight; the figures that `wordbot train` adds are optional."""
    _set("mix", {"ngram_weight": 0.4})(model)
    result = wordbot("info", str(model))
    assert result.returncode == 0 and not result.stderr, result.stderr[-3000:]
    assert "mix: Kneser-Ney 4-gram weight 0.40; validation perplexity (<unk> not counted) ? alone" in result.stdout


# -- permissions -------------------------------------------------------------------------


def _unprivileged_wordbot(*args: str) -> subprocess.CompletedProcess:
    reason = unprivileged.skip_reason()
    if reason:
        pytest.skip(reason)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return unprivileged.run_unprivileged([sys.executable, "-m", "wordbot", *args], env=env, timeout=TIMEOUT)


@pytest.mark.parametrize(
    "target", [".", "manifest.json", "tokenizer.json", "weights.embedding.npy", "training-text.json.gz"]
)
def test_an_unreadable_model_directory_or_file_is_named(model, target):
    path = model / target
    os.chmod(path, 0)
    try:
        backend = ("--backend", "mix") if target == "training-text.json.gz" else ()
        result = _unprivileged_wordbot("next", "hi", "--model", str(model), *backend)
    finally:
        os.chmod(path, 0o755)
    assert_one_line_error(result, "permission denied", str(path.resolve() if target != "." else model))


def test_a_cache_directory_without_search_permission_is_skipped(model, tmp_path):
    """The n-gram is counted in memory and the answer is the same."""
    expected = wordbot("next", "the", "--backend", "mix", "--model", str(model))
    assert expected.returncode == 0, expected.stderr
    cache = tmp_path / "locked-cache"
    cache.mkdir()
    os.chmod(cache, 0o600)  # readable bits but no search (x): stat of anything inside fails
    try:
        reason = unprivileged.skip_reason()
        if reason:
            pytest.skip(reason)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "WORDBOT_CACHE_DIR": str(cache)}
        _pin_corpus(model)
        result = unprivileged.run_unprivileged(
            [sys.executable, "-m", "wordbot", "next", "the", "--backend", "mix", "--model", str(model)],
            env=env,
            timeout=TIMEOUT,
        )
    finally:
        os.chmod(cache, 0o700)
    assert "Traceback" not in result.stderr and not result.stderr, result.stderr[-3000:]
    assert result.returncode == 0 and result.stdout == expected.stdout
    assert os.listdir(cache) == []


def _pin_corpus(d: Path) -> None:
    """Name the corpus by sha256, so the counted n-gram has a cache key."""
    _edit(d, lambda m: m["corpus"].update(files=[{"path": "corpus.txt", "sha256": "ab" * 32}]))


def test_a_cache_file_cut_short_is_recounted_and_replaced(model, tmp_path):
    from wordbot.ngram import KneserNey

    _pin_corpus(model)
    env = {"WORDBOT_CACHE_DIR": str(tmp_path / "cache")}
    first = wordbot("next", "the", "--backend", "mix", "--model", str(model), env=env)
    assert first.returncode == 0, first.stderr
    (cached,) = (tmp_path / "cache").glob("ngram-*")
    for path in cached.glob("o*.npy"):
        array = np.load(path)
        np.save(path, array[: len(array) // 3])  # still valid .npy files, every array there, all of them short
    again = wordbot("next", "the", "--backend", "mix", "--model", str(model), env=env)
    assert again.returncode == 0 and again.stdout == first.stdout and not again.stderr, again.stderr[-3000:]
    KneserNey.load(cached, _served_tokenizer(model))  # replaced by a whole one


def _served_tokenizer(model: Path):
    from wordbot.predictor import Predictor

    return Predictor.load(model, backend="mix").tokenizer


# -- the CLI's edges -----------------------------------------------------------------------


def test_closed_standard_output_is_one_line(tiny_model_dir):
    result = wordbot("next", "hi", "--model", str(tiny_model_dir), stdout=None, stderr=subprocess.PIPE,
                     preexec_fn=_close(1))  # fmt: skip
    assert_one_line_error(result, "standard output", status=1)


def test_closed_standard_input_is_one_line(tiny_model_dir):
    result = wordbot("next", "-", "--model", str(tiny_model_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                     preexec_fn=_close(0))  # fmt: skip
    assert_one_line_error(result, "standard input")


def _close(fd: int):
    def close() -> None:
        _limit_memory()
        os.close(fd)

    return close


def test_an_ascii_terminal_gets_one_line_not_a_traceback(tiny_model_dir, tmp_path):
    text = tmp_path / "t.txt"
    text.write_text("café\n" * 30, encoding="utf-8")
    directory = tmp_path / "model"
    shutil.copytree(tiny_model_dir, directory)
    # A word that cannot be written in ASCII is among the suggestions.
    tokenizer = json.loads((directory / "tokenizer.json").read_text())
    tokenizer["vocab"][-1] = "café"
    (directory / "tokenizer.json").write_text(json.dumps(tokenizer))
    result = wordbot("next", "the", "-k", "800", "--model", str(directory), env={"PYTHONIOENCODING": "ascii"})
    assert_one_line_error(result, "ascii", "PYTHONIOENCODING=utf-8", status=1)


def test_a_model_path_too_long_for_the_system_is_one_line():
    result = wordbot("next", "hi", "--model", "m" * 5000)
    line = assert_one_line_error(result, "name too long")
    assert len(line) < 400


def test_a_file_name_with_a_newline_stays_on_one_line(tmp_path):
    result = wordbot("next", "hi", "--model", str(tmp_path / "evil\nwordbot: error: forged"))
    assert_one_line_error(result, "does not exist", "evil\\n")


def test_info_also_refuses_a_path_too_long():
    assert_one_line_error(wordbot("info", "/tmp/" + "d" * 5000))


FACES = {
    "discord": (("discord", "--model"), {"DISCORD_TOKEN": "x" * 24 + "." + "y" * 6 + "." + "z" * 27}, None),
    "repl": (("repl", "--model"), {}, "hello\n"),
}


@pytest.mark.parametrize("face", list(FACES))
@pytest.mark.parametrize("case", ["members 100000000", "deep tokenizer.json", "training text ../x"])
def test_the_faces_start_with_one_line_on_a_tampered_model(model, case, face):
    """`wordbot discord` and the REPL load the model before anything else (the bot before
    it connects): the same tampered directories stop them with the same one line."""
    tamper, _, _, words = CASES[case]
    tamper(model)
    before, env, stdin = FACES[face]
    result = wordbot(*before, str(model), env=env, input=stdin)
    assert_one_line_error(result, *words)
