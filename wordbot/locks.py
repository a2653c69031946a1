"""Lock files: an exclusive lock that says who holds it (the owner's PID inside) and
vanishes with its owner (the kernel's flock), for saves of a model directory and for a
training run's work directory."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from wordbot.errors import WordbotError


class LockHeld(WordbotError):
    """Another process holds a lock file; `pid` says which (None if it did not say)."""

    def __init__(self, path: Path, pid: int | None):
        super().__init__(f"{path} is locked by process {pid if pid is not None else '(unknown)'}")
        self.path, self.pid = path, pid


@contextmanager
def locked(path: str | Path, *, wait: bool = True, unlink: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on the file `path` (created if need be, holding our PID).

    The lock is the kernel's (flock), so a process killed while holding it leaves the
    file but not the lock. With `wait` False, a lock held elsewhere raises LockHeld at
    once. `unlink` removes the file when done (a waiter then retries on the new file)."""
    path = Path(path)
    fd = acquire_lock(path, wait)
    try:
        yield
    finally:
        if unlink:
            with suppress(OSError):
                os.unlink(path)
        os.close(fd)


def acquire_lock(path: Path, wait: bool) -> int:
    """The descriptor of the locked file `path` (closing it releases the lock); see `locked`."""
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            try:
                same = os.path.samestat(os.fstat(fd), os.stat(path))
            except FileNotFoundError:
                same = False  # its holder removed it as we waited: lock the new one
            if same:
                os.ftruncate(fd, 0)
                os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
                return fd
            os.close(fd)
        except BlockingIOError:
            pid = _lock_owner(fd)
            os.close(fd)
            raise LockHeld(path, pid) from None
        except BaseException:
            os.close(fd)
            raise


def _lock_owner(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii").strip()
    except (OSError, UnicodeDecodeError):
        return None
    return int(text) if text.isdigit() else None
