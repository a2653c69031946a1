"""A float16 model's weights converted once: kept as float32 in the cache directory (one
.npy file per model, beside the n-grams) and memory-mapped read-only at later starts, so
a start neither converts them nor fills 34 MB of fresh memory (the bundled model), and
processes serving the same model share the pages.

The file is named after the weight files' identity (device, inode, size, modification
and change times) and the shapes the manifest implies: a weight file rewritten in place
gets a new change time even when its modification time is set back, so it is
converted again. The full checks (shape, finite values) are made when the copy is
written, after a conversion.
"""

from __future__ import annotations

import contextlib
import json
import math
import mmap
import os
from pathlib import Path

import numpy as np

from wordbot.bounded import _opened_npy
from wordbot.ngram_cache import cache_dir, sha256, write_cached

FORMAT_VERSION = 1  # of the file's layout: every array, an ensemble's stacked by name


def cached_weights_path(shapes: dict[str, tuple[int, ...]], files: dict[str, Path]) -> Path | None:
    """Where the float32 copy of these weight files is kept; None when a file cannot
    be looked at (the loader then says what is wrong with it)."""
    material: list = [FORMAT_VERSION]
    for name, shape in shapes.items():
        try:
            st = os.stat(files[name])
        except OSError:
            return None
        material.append([name, list(shape), st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns])
    key = sha256(json.dumps(material).encode("utf-8")).hexdigest()[:32]
    return cache_dir() / f"weights-{key}.npy"


def _layout(shapes: dict[str, tuple[int, ...]], count: int) -> list[tuple[str, tuple[int, ...]]]:
    """The blocks of the file in order: one (count, *shape) block per network-0 name,
    the networks' arrays of that name its rows."""
    return [(name, (count, *shape)) for name, shape in shapes.items() if not name.startswith("member")]


def read_cached(path: Path, shapes: dict[str, tuple[int, ...]], count: int) -> dict[str, np.ndarray] | None:
    """The arrays a cache file holds, mapped read-only (an ensemble's arrays of one name
    are rows of one array, as `load_model` hands them over); None when there is none.
    Raises ValueError or OSError for a file of the wrong type or size."""
    from wordbot.artifacts import member_prefix

    layout = _layout(shapes, count)
    total = sum(math.prod(shape) for _, shape in layout)
    if not os.path.isfile(path):
        return None
    f = _opened_npy(path, (total,), ("float32",), "weights cache")[0]  # type and size checked
    with f:
        offset = f.tell()
        mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    with contextlib.suppress(OSError):  # a read-only cache is still a cache
        os.utime(path)  # recently used: kept by the cache's pruning
    weights = {}
    for name, shape in layout:
        block = np.ndarray(shape, dtype=np.float32, buffer=mapped, offset=offset)  # read-only: the map is
        offset += block.nbytes
        for i in range(count):
            weights[member_prefix(i) + name] = block[i]
    return weights


def write_cache(path: Path, weights: dict[str, np.ndarray], shapes: dict[str, tuple[int, ...]], count: int) -> None:
    """Keep converted, checked `weights` at `path` (atomically, flushed to disk: a torn
    file would be read as weights); a cache that cannot be written is skipped."""
    from wordbot.artifacts import member_prefix

    layout = _layout(shapes, count)
    total = sum(math.prod(shape) for _, shape in layout)

    def write(f) -> None:
        header = {"descr": "<f4", "fortran_order": False, "shape": (total,)}
        np.lib.format.write_array_header_1_0(f, header)
        for name, _ in layout:
            for i in range(count):
                f.write(memoryview(np.ascontiguousarray(weights[member_prefix(i) + name], dtype="<f4")).cast("B"))
        f.flush()
        os.fsync(f.fileno())

    write_cached(path, write)
