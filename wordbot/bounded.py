"""Reading what a model directory holds, with bounds checked before the work: JSON
of a bounded size and nesting, only the wanted arrays of an .npz (each checked against
its expected shape and the file's own size before its data is read), gzip decompressed
up to a limit, and paths that stay inside the directory. A directory someone else made
costs at most what its files' sizes allow, and a bad one gives one line that names the
file."""

from __future__ import annotations

import json
import math
import mmap
import os
import stat
import zlib
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from wordbot.errors import ModelError

if TYPE_CHECKING:
    import zipfile  # imported when an .npz is read: it loads bz2 and lzma (1 MB resident)

MAX_EXPANSION = 64  # what a compressed file may expand to, times its size on disk
MAP_AT_LEAST = 1 << 16  # bytes: an uncompressed array this large is memory-mapped, not copied


def shown(path: str | os.PathLike) -> str:
    """A path as an error message shows it: whole unless absurdly long."""
    text = str(path)
    if not text.isprintable():  # a newline or an escape sequence in a name stays visible, on one line
        text = repr(text)[1:-1]
    return text if len(text) <= 200 else f"{text[:120]}…{text[-60:]} ({len(text):,} characters)"


def unreadable(path: Path, e: OSError) -> ModelError:
    if isinstance(e, PermissionError):
        return ModelError(
            f"{shown(path)}: permission denied; make the model readable (chmod -R a+rX DIR) or run as its owner"
        )
    return ModelError(f"{shown(path)}: cannot be read ({e.strerror or e})")


def open_regular(path: Path):
    """`open(path, "rb")`, refused unless a regular file: not a device such as /dev/zero,
    and not a FIFO, which plain open() would wait on forever for a writer."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise ModelError(f"{shown(path)}: not a regular file; a model directory holds only files")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_json(path: Path, limit: int) -> dict:
    """A JSON object from a file of at most `limit` bytes (nesting bounded too)."""
    try:
        with open_regular(path) as f:
            raw = f.read(limit + 1)
    except FileNotFoundError:
        raise ModelError(f"{shown(path.parent)}: {path.name} is missing; not a wordbot model directory") from None
    except IsADirectoryError:
        raise ModelError(f"{shown(path)}: a directory, not a file; not a wordbot model directory") from None
    except OSError as e:
        raise unreadable(path, e) from None
    if len(raw) > limit:
        raise ModelError(f"{shown(path)}: larger than {limit:,} bytes; not a file wordbot wrote")
    try:
        data = json.loads(raw.decode("utf-8"))
    except RecursionError:
        raise ModelError(f"{shown(path)}: nested too deeply; not a file wordbot wrote") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"{shown(path)}: unreadable ({e})") from None
    if not isinstance(data, dict):
        raise ModelError(f"{shown(path)}: expected a JSON object")
    return data


def inside(directory: Path, name: object, what: str) -> Path:
    """`directory / name` for a path a manifest names, refused unless it stays inside the
    model directory: relative, no `..`, no symlink leading out, not a device or a pipe."""
    if not isinstance(name, str) or not name or "\0" in name:
        raise ModelError(f"{shown(directory / 'manifest.json')}: {what} must be a file name, not {name!r}")
    relative = Path(name)
    if relative.is_absolute() or ".." in relative.parts:
        raise ModelError(
            f"{shown(directory / 'manifest.json')}: {what} {name!r} must name a file inside the model directory"
        )
    path = directory / relative
    try:
        real, root = path.resolve(), directory.resolve()
        mode = os.stat(real).st_mode if os.path.lexists(path) else None
    except OSError as e:
        raise unreadable(path, e) from None
    if real != root and root not in real.parents:
        raise ModelError(f"{shown(path)}: a link to {shown(real)}; {what} must be a file inside the model directory")
    if mode is not None and not stat.S_ISREG(mode):
        raise ModelError(f"{shown(path)}: not a regular file; {what} must be a file inside the model directory")
    return path


NpzSpec = tuple[tuple[int, ...] | None, tuple[str, ...]]  # (shape or None: any, dtype names or kinds)


def read_npz(
    path: Path, wanted: dict[str, NpzSpec], optional: bool = False, kind: str = "n-gram file"
) -> dict[str, np.ndarray]:
    """The arrays `wanted` of an .npz, and nothing else: each member's sizes in the zip
    directory and its .npy header are checked against its spec (and all of them
    against the file's own size) before a byte of data is read. `optional`: a missing
    member is left out rather than refused. Never unpickles."""
    import zipfile

    try:
        f = open_regular(path)
    except OSError as e:
        raise unreadable(path, e) from None
    with f:
        try:
            size = os.fstat(f.fileno()).st_size
            archive = zipfile.ZipFile(f)
        except (zipfile.BadZipFile, OSError, ValueError, EOFError):
            raise ModelError(f"{shown(path)}: not a {kind} (.npz); the file is damaged or truncated") from None
        with archive:
            members = {info.filename: info for info in archive.infolist()}
            found = {name: members[name + ".npy"] for name in wanted if name + ".npy" in members}
            missing = [name for name in wanted if name not in found]
            if missing and not optional:
                raise ModelError(f"{shown(path)}: array {missing[0]!r} is missing")
            if sum(info.file_size for info in found.values()) > MAX_EXPANSION * size:
                raise ModelError(f"{shown(path)}: its arrays claim more than the file can hold; it is damaged")
            return {name: _read_member(archive, info, path, name, *wanted[name]) for name, info in found.items()}


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: Path, name: str,
                 shape: tuple[int, ...] | None, dtypes: tuple[str, ...]) -> np.ndarray:  # fmt: skip
    where = f"{shown(path)}: array {name!r}"
    import zipfile

    try:
        with archive.open(info) as member:
            version = np.lib.format.read_magic(member)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unknown .npy version {version}")
            read_header = (
                np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            )
            found, fortran, dtype = read_header(member, max_header_size=10_000)
            if dtype.hasobject or (dtype.name not in dtypes and dtype.kind not in dtypes):
                raise ModelError(f"{where} is {dtype}, expected {' or '.join(dtypes)}")
            if shape is not None and found != shape:
                raise ModelError(f"{where} has shape {found}, manifest implies {shape}")
            nbytes = math.prod(found) * dtype.itemsize
            if member.tell() + nbytes != info.file_size:
                raise ModelError(f"{where}: its header claims {nbytes:,} bytes, the archive holds another size")
            if info.compress_type == zipfile.ZIP_STORED and nbytes >= MAP_AT_LEAST:
                return _mapped(archive, info, member, found, fortran, dtype)
            data = bytearray(nbytes)
            view, done = memoryview(data), 0
            while done < nbytes:
                chunk = member.read(min(nbytes - done, 1 << 22))
                if not chunk:
                    raise EOFError("the data ends early")
                view[done : done + len(chunk)] = chunk
                done += len(chunk)
            member.read(1)  # to the end, where the checksum is compared
    except ModelError:
        raise
    except (OSError, ValueError, EOFError, zipfile.BadZipFile, SyntaxError, zlib.error) as e:
        raise ModelError(f"{where} is unreadable ({e}); the file is damaged or truncated") from None
    array = np.frombuffer(data, dtype=dtype)
    return array.reshape(found[::-1]).T if fortran else array.reshape(found)


def _mapped(archive: zipfile.ZipFile, info: zipfile.ZipInfo, member, shape, fortran: bool, dtype) -> np.ndarray:
    """An uncompressed member's array memory-mapped in place (read-only, no copy: pages
    are read when used and shared with every process that maps the file), after its
    bytes are read through once in small chunks so the archive's checksum is compared
    as for a copied one. `member` is open just past the .npy header."""
    header = member.tell()
    while member.read(1 << 20):
        pass  # to the end, where the checksum is compared
    f = archive.fp
    f.seek(info.header_offset)
    local = f.read(30)  # the member's local header: its name and extra field lengths at 26 and 28
    if len(local) != 30 or local[:4] != b"PK\x03\x04":
        raise ValueError("bad local header")
    start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
    mapped = np.memmap(f, dtype=dtype, mode="r", offset=start + header, shape=shape, order="F" if fortran else "C")
    return np.asarray(mapped)  # a plain ndarray over the map, which it keeps open


def read_npy(path: Path, shape: tuple[int, ...] | None, dtypes: tuple[str, ...], *, as_float32: bool = False,
             into: np.ndarray | None = None, random_access: bool = False, finite: bool = False,
             kind: str = "array file") -> np.ndarray:  # fmt: skip
    """The array of one uncompressed .npy file, memory-mapped read-only (no copy: pages
    are read when used and shared with every process that maps the file), after its
    header is checked against `shape` and `dtypes` and its size against the file's own
    (`check_npy`), so only the header's page is read here. `as_float32`: an array stored
    otherwise (float16) is converted, a chunk at a time, into a float32 copy (no mapping
    of it is kept, so the stored pages never count twice); `into`: read and converted
    into this float32 array of the same shape (a row of a larger one), which is
    returned. `random_access`: a table read a few entries at a time (binary searches,
    rows), so the kernel reads no pages ahead of a fault (MADV_RANDOM; see `write_npy`
    for the other half). `finite`: an array holding NaN or infinity is refused (checked
    while converting, where the values are in cache). Never unpickles."""
    f, found, order, dtype = _opened_npy(path, shape, dtypes, kind)
    with f:
        nbytes = math.prod(found) * dtype.itemsize
        if into is not None or (as_float32 and dtype != np.float32):
            array, is_finite = _converted(f, path, found, dtype, order, into)
        elif nbytes < MAP_AT_LEAST:  # a page or so: a copy costs less than a mapping
            data = f.read(nbytes)
            if len(data) != nbytes:
                raise ModelError(f"{shown(path)}: the data ends early; the file is damaged or truncated")
            array = np.frombuffer(data, dtype=dtype).reshape(found, order=order)
            is_finite = not finite or all_finite(array)
        else:
            mapped = np.memmap(f, dtype=dtype, mode="r", offset=f.tell(), shape=found, order=order)
            if random_access and hasattr(mmap, "MADV_RANDOM"):
                mapped._mmap.madvise(mmap.MADV_RANDOM)
            array = np.asarray(mapped)
            is_finite = not finite or all_finite(array)
    if finite and not is_finite:
        raise ModelError(f"{shown(path)}: holds NaN or infinite values; the {kind} is damaged")
    return array


def check_npy(path: Path, shape: tuple[int, ...] | None, dtypes: tuple[str, ...], kind: str = "array file") -> None:
    """What `read_npy` checks before it reads anything: a regular file, an .npy header
    of the expected type and shape, and a size that holds exactly that (a caller can
    then allocate for the data knowing the files hold it)."""
    _opened_npy(path, shape, dtypes, kind)[0].close()


def _opened_npy(path: Path, shape, dtypes: tuple[str, ...], kind: str):
    """(open file just past the header, shape, "C" or "F", dtype), the header checked."""
    try:
        f = open_regular(path)
    except FileNotFoundError:
        raise ModelError(f"{shown(path.parent)}: {path.name} is missing") from None
    except OSError as e:
        raise unreadable(path, e) from None
    try:
        try:
            found, fortran, dtype = _npy_header(f)
            size = os.fstat(f.fileno()).st_size
        except (OSError, ValueError, EOFError, SyntaxError) as e:
            raise ModelError(f"{shown(path)}: not a {kind} (.npy: {e}); the file is damaged or truncated") from None
        if dtype.hasobject or (dtype.name not in dtypes and dtype.kind not in dtypes):
            raise ModelError(f"{shown(path)} is {dtype}, expected {' or '.join(dtypes)}")
        if shape is not None and found != shape:
            raise ModelError(f"{shown(path)} has shape {found}, the manifest implies {shape}")
        nbytes = math.prod(found) * dtype.itemsize
        if f.tell() + nbytes != size:
            raise ModelError(
                f"{shown(path)}: holds {size - f.tell():,} bytes of data, its header says {nbytes:,}; "
                "the file is damaged or truncated"
            )
    except BaseException:
        f.close()
        raise
    return f, found, "F" if fortran else "C", dtype


def write_npy(path: Path, array: np.ndarray, chunk: int = 1 << 16) -> None:
    """Write `array` as an .npy file, flushed to disk, in writes of `chunk` bytes.

    Why small writes: Linux (6.x, ext4 and others) caches a file in folios as large as
    the writes that made it, up to 2 MB, and a fault on a mapping maps the whole folio;
    one binary search over a table written in one write then makes megabytes resident.
    Written 64 KB at a time, a fault maps at most 64 KB."""
    array = np.ascontiguousarray(array)
    with open(path, "wb", buffering=0) as f:
        np.lib.format.write_array_header_1_0(f, np.lib.format.header_data_from_array_1_0(array))
        data = memoryview(array.reshape(-1)).cast("B")
        for start in range(0, len(data), chunk):
            f.write(data[start : start + chunk])
        os.fsync(f.fileno())


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    version = np.lib.format.read_magic(f)
    if version not in ((1, 0), (2, 0)):
        raise ValueError(f"unknown .npy version {version}")
    read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
    return read_header(f, max_header_size=10_000)


def _converted(f, path: Path, shape, dtype: np.dtype, order: str,
               into: np.ndarray | None = None) -> tuple[np.ndarray, bool]:  # fmt: skip
    """The array that follows in `f`, read in chunks into a new float32 array (or
    `into`), and whether every value is finite."""
    if into is not None and not (into.flags.c_contiguous if order == "C" else into.flags.f_contiguous):
        converted, is_finite = _converted(f, path, shape, dtype, order)
        into[...] = converted
        return into, is_finite
    out = np.empty(shape, dtype=np.float32, order=order) if into is None else into
    flat = out.reshape(-1, order="A")  # a view: out's own memory order
    half = dtype == np.float16
    chunk = (1 << 17) // dtype.itemsize  # small enough that what is read stays in cache for the checks
    buffer = np.empty(chunk, dtype=np.int16 if half else dtype)
    is_finite = True
    for start in range(0, flat.size, chunk):
        n = min(chunk, flat.size - start)
        if f.readinto(memoryview(buffer[:n]).cast("B")) != n * dtype.itemsize:
            raise ModelError(f"{shown(path)}: the data ends early; the file is damaged or truncated")
        if half:
            is_finite &= half_to_single(buffer[:n], flat[start : start + n])
        else:
            flat[start : start + n] = buffer[:n]
            is_finite = is_finite and bool(np.isfinite(buffer[:n]).all())
    return out, is_finite


_HALF_EXPONENT = 0x7C00  # float16: sign 1 bit, exponent 5 bits (all ones: infinity or NaN), fraction 10
_KEEP_SIGN_AND_MAGNITUDE = np.int32(np.uint32(0x8FFFFFFF).view(np.int32))
_EXPONENT_BIAS_GAP = np.float32(2.0**112)  # 2 ** (127 - 15): float32's exponent bias less float16's


def half_to_single(bits: np.ndarray, out: np.ndarray) -> bool:
    """Convert float16 values, given by their bits as int16, into the float32 array `out`,
    exactly as `out[...] = bits.view(np.float16)` does, in three vectorised passes
    instead of NumPy's element-by-element cast (about 3x faster: it is most of loading
    float16 weights). Returns whether every value is finite; where one is not, NumPy's
    cast writes it (infinity, NaN).

    How: sign-extended to 32 bits and shifted left 13, a float16's exponent and fraction
    land where float32's low exponent bits and fraction are, and its sign in bit 31
    (with copies in bits 28-30, cleared by the mask). Read as a float32 that is the
    value times 2**-112, exactly, subnormals included; multiplying by 2**112 is exact."""
    ints = out.view(np.int32)
    np.left_shift(bits, 13, out=ints, dtype=np.int32)
    np.bitwise_and(ints, _KEEP_SIGN_AND_MAGNITUDE, out=ints)
    np.multiply(out, _EXPONENT_BIAS_GAP, out=out)
    if not (np.bitwise_and(bits, _HALF_EXPONENT) == _HALF_EXPONENT).any():
        return True
    out[...] = bits.view(np.float16)
    return False


def all_finite(array: np.ndarray, chunk: int = 1 << 18) -> bool:
    """No NaN or infinity in `array`, checked a chunk at a time (no array-sized temporary)."""
    flat = array.reshape(-1)
    return all(np.isfinite(flat[i : i + chunk]).all() for i in range(0, len(flat), chunk))
