"""Read training corpora and cut them for training: one message per line (the
default fortunes corpus, chat logs) or prose paragraphs separated by blank lines;
a deterministic validation split; the token-id stream cut into windows.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import io
import json
import os
import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from wordbot.bounded import MAX_EXPANSION, inside, open_regular, shown
from wordbot.errors import CorpusError, ModelError
from wordbot.text import BOS_ID, EOS_ID, Tokenizer, is_word, tokenize

FORMATS = ("lines", "paragraphs")
# The model directory's own copy of the text it was trained on: the n-gram half of the
# mix is counted from it, so a model directory works wherever it is copied.
TRAINING_TEXT = "training-text.json.gz"
MAX_TRAINING_TEXT = 1 << 30  # bytes that copy may hold, compressed or not
MAX_CORPUS_BYTES = 1 << 30  # per file: the text is held in memory, several times over, while training


def read_bounded(path: str | Path, limit: int, what: str = "file") -> bytes:
    """The bytes of a regular file of at most `limit` bytes. Devices (/dev/zero), FIFOs
    and sockets are refused before a byte is read (a FIFO is opened without waiting for
    a writer), and a file that grows while read is cut off at the bound, not read on."""
    try:
        f = open_regular(Path(path))  # refuses devices, FIFOs and sockets without waiting on them
    except ModelError:
        raise CorpusError(
            f"{what} {path} is not a regular file (a device, a pipe or a socket); give a text file"
        ) from None
    except OSError as e:
        raise CorpusError(f"cannot read {what} {path}: {e.strerror or e}") from None
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > limit:
            raise CorpusError(f"{what} {path} is {size:,} bytes; at most {limit:,} are read")
        try:
            raw = f.read(limit + 1)
        except OSError as e:
            raise CorpusError(f"cannot read {what} {path}: {e.strerror or e}") from None
    if len(raw) > limit:
        raise CorpusError(f"{what} {path} is larger than {limit:,} bytes, the most that is read")
    return raw


def read_messages(path: str | Path, fmt: str = "lines") -> list[str]:
    """The messages of one file: non-empty lines, or blank-line-separated paragraphs."""
    path = Path(path)
    if fmt not in FORMATS:
        raise CorpusError(f"unknown corpus format {fmt!r}; choose one of {', '.join(FORMATS)}")
    if path.is_dir():
        raise CorpusError(f"corpus {path} is a directory; give the text files in it (for example {path / '*.txt'})")
    raw = read_bounded(path, MAX_CORPUS_BYTES, "corpus")
    text = decode_text(raw, path)
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    if fmt == "lines":
        messages = [line.strip() for line in text.split("\n")]
    else:
        messages = [" ".join(p.split()) for p in text.split("\n\n")]
    return [m for m in messages if m]


def decode_text(raw: bytes, path: str | Path) -> str:
    """A text file's bytes as text: UTF-8 (a byte-order mark is dropped), or UTF-16 when
    it starts with a UTF-16 byte-order mark, as Windows editors save "Unicode" text.
    Anything else is refused with a message that says how to convert it."""
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise CorpusError(f"{path}: starts like UTF-16 text but is not valid UTF-16") from None
    if b"\0" in raw[:65536]:
        raise CorpusError(
            f"{path}: not text (it holds NUL bytes: a binary file, or UTF-16 without a byte-order mark); "
            "give UTF-8 text"
        )
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        offset = e.start + (3 if raw.startswith(codecs.BOM_UTF8) else 0)
        line = raw[:offset].count(b"\n") + 1
        raise CorpusError(
            f"{path}: not UTF-8 text (invalid byte at line {line}, offset {offset}); if it is Latin-1 or "
            f"Windows-1252, convert it: iconv -f cp1252 -t utf-8 {path} > {Path(path).stem}.utf8.txt"
        ) from None


def read_corpus(paths: Sequence[str | Path], fmt: str = "lines") -> list[str]:
    if not paths:
        raise CorpusError("no corpus files given")
    seen: dict[Path, str | Path] = {}
    for p in paths:
        try:
            key = Path(p).resolve()
        except OSError:
            continue
        if key in seen:
            same = f"{p}" if str(seen[key]) == str(p) else f"{p} (the same file as {seen[key]})"
            raise CorpusError(
                f"corpus file {same} is given twice; give each file once (a repeated file would be "
                "both trained on and validated on)"
            )
        seen[key] = p
    messages = [m for p in paths for m in read_messages(p, fmt)]
    if not messages:
        raise CorpusError(f"corpus {', '.join(map(str, paths))} holds no text")
    return messages


def sha256_of(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def split_messages(messages: Sequence[str], validation_fraction: float, seed: int) -> tuple[list[str], list[str]]:
    """A seeded, order-preserving split: the same corpus and seed give the same split."""
    if not 0 <= validation_fraction < 1:
        raise CorpusError(f"validation fraction must be in [0, 1), not {validation_fraction}")
    n_val = round(len(messages) * validation_fraction)
    if validation_fraction > 0 and len(messages) >= 2:
        n_val = min(max(n_val, 1), len(messages) - 1)
    chosen = set(random.Random(seed).sample(range(len(messages)), n_val))
    train = [m for i, m in enumerate(messages) if i not in chosen]
    val = [m for i, m in enumerate(messages) if i in chosen]
    return train, val


def token_stream(messages: Sequence[str], tokenizer: Tokenizer) -> np.ndarray:
    """All messages as one id stream, each wrapped in <s> ... </s>."""
    ids: list[int] = []
    for message in messages:
        ids.extend(tokenizer.encode(message, bos=True, eos=True))
    return np.asarray(ids, dtype=np.int32)


def windows(stream: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Cut a stream into (inputs, targets) windows for truncated backprop through time.

    Targets are the inputs shifted by one, so every position is a training target.
    """
    n = (len(stream) - 1) // seq_len
    if n == 0:
        raise CorpusError(f"corpus too small: {len(stream)} tokens make no window of {seq_len}")
    x = stream[: n * seq_len].reshape(n, seq_len)
    y = stream[1 : n * seq_len + 1].reshape(n, seq_len)
    return x, y


def pack_messages(messages: Sequence[str]) -> bytes:
    """Messages as the gzipped JSON list of TRAINING_TEXT (byte-for-byte reproducible)."""
    return gzip.compress(json.dumps(list(messages), ensure_ascii=False).encode("utf-8"), mtime=0)


def training_messages(manifest: dict, model_dir: str | Path) -> list[str]:
    """The exact messages a model was trained on (its validation part left out): the
    model directory's own copy (TRAINING_TEXT, which `wordbot train` writes) when the
    manifest names one, else the corpus files it names, split again as in training.

    Corpus paths in the manifest are relative to the model directory, or absolute.
    """
    corpus = manifest.get("corpus") or {}
    own = corpus.get("training_text")
    if isinstance(own, dict) and own.get("path"):
        return _own_copy(inside(Path(model_dir), own["path"], "corpus.training_text.path"), own.get("sha256"))
    files = corpus.get("files") or []
    if not files:
        raise CorpusError("the model's manifest names no training corpus")
    paths = []
    for entry in files:
        path = Path(entry["path"])
        if not path.is_absolute():
            path = (Path(model_dir) / path).resolve()
        if not path.is_file():
            raise CorpusError(f"the training corpus {path} is not there (the model directory names it)")
        if entry.get("sha256") and sha256_of(path) != entry["sha256"]:
            raise CorpusError(f"the training corpus {path} has changed since the model was trained")
        paths.append(path)
    messages = read_corpus(paths, corpus.get("format", "lines"))
    train, _ = split_messages(messages, corpus.get("validation_fraction", 0.0), corpus.get("split_seed", 0))
    return train


def _own_copy(path: Path, sha256: str | None) -> list[str]:
    what = f"the model's copy of its training text {shown(path)}"
    try:
        with open_regular(path) as f:
            data = f.read(MAX_TRAINING_TEXT + 1)
    except PermissionError:
        raise CorpusError(f"{what}: permission denied; make it readable (chmod a+r) or use --backend rnn") from None
    except OSError as e:
        raise CorpusError(f"{what} cannot be read ({e.strerror or e})") from None
    if len(data) > MAX_TRAINING_TEXT:
        raise CorpusError(f"{what} is larger than {MAX_TRAINING_TEXT >> 20} MiB; it is not what wordbot wrote")
    if sha256 and hashlib.sha256(data).hexdigest() != sha256:
        raise CorpusError(f"{what} has changed since the model was trained")
    try:
        messages = json.loads(_gunzip(data, min(MAX_EXPANSION * len(data), MAX_TRAINING_TEXT), what).decode("utf-8"))
    except (OSError, EOFError, UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CorpusError(f"{what} is unreadable ({e})") from None
    if not isinstance(messages, list) or not all(isinstance(m, str) for m in messages):
        raise CorpusError(f"{what} is not a list of messages")
    return messages


def _gunzip(data: bytes, limit: int, what: str) -> bytes:
    """`gzip.decompress(data)`, but refused as soon as it passes `limit` bytes."""
    out, total = [], 0
    with gzip.GzipFile(fileobj=io.BytesIO(data)) as f:
        while chunk := f.read(1 << 20):
            total += len(chunk)
            if total > limit:
                raise CorpusError(
                    f"{what} expands beyond {limit:,} bytes ({MAX_EXPANSION} times its size); "
                    "it is damaged or not what wordbot wrote (delete it to serve --backend rnn)"
                )
            out.append(chunk)
    return b"".join(out)


def _word_runs(message: str, length: int) -> set[tuple[str, ...]]:
    words = [t for t in tokenize(message) if is_word(t)]
    return {tuple(words[i : i + length]) for i in range(len(words) - length + 1)}


def novel_messages(candidates: Sequence[str], reference: Sequence[str], run: int = 8) -> list[str]:
    """The candidates that share no run of `run` words with any reference message.

    Collections repeat themselves (the same quotation filed twice); a held-out message
    that repeats training text measures memory, not prediction. The bundled test file
    was cut this way (data/corpus/PROVENANCE.md), and tuning on the same kind of text
    keeps validation honest about it."""
    seen: set[tuple[str, ...]] = set()
    for message in reference:
        seen |= _word_runs(message, run)
    return [m for m in candidates if seen.isdisjoint(_word_runs(m, run))]


__all__ = [
    "BOS_ID",
    "EOS_ID",
    "FORMATS",
    "MAX_CORPUS_BYTES",
    "TRAINING_TEXT",
    "novel_messages",
    "pack_messages",
    "read_bounded",
    "read_corpus",
    "read_messages",
    "sha256_of",
    "split_messages",
    "token_stream",
    "training_messages",
    "windows",
]
