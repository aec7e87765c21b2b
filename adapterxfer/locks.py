"""Advisory locks (``flock``) that leave nothing behind.

``hold``: one process at a time holds a lock file beside what it writes (an output folder, a study);
the file is removed when the lock is released, also after an error, and one a killed process left is taken
over and removed by the next holder (the kernel drops a dead process's locks).

``owning`` / ``abandoned``: a temporary file or folder is locked by the process writing it, so a sweep can
tell one a killed process left (nobody holds it) from one that is being written right now.
"""

from __future__ import annotations

import fcntl
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import UserError


class Held(Exception):
    """Another live process holds the lock."""


@contextmanager
def hold(path: Path):
    """Hold ``path`` as a lock file while the block runs; raise ``Held`` at once if another process holds it."""
    path = Path(path)
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Held(path) from None
        # The previous holder may have removed the file between our open and our lock: lock the current one.
        try:
            if os.path.samestat(os.fstat(fd), os.stat(path)):
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    try:
        yield
    finally:
        path.unlink(missing_ok=True)  # still held: a process that opened it meanwhile retries on a new file
        os.close(fd)


@contextmanager
def holding(path: Path, refusal: str):
    """``hold``, or a one-line UserError (``refusal``) at once where another process holds it."""
    try:
        with hold(path):
            yield
    except Held:
        raise UserError(refusal) from None


@contextmanager
def owning(path: Path):
    """Lock an existing temporary file or folder for as long as this process writes it (see ``abandoned``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            pass  # a filesystem without flock on a read-only descriptor (NFS): nothing can tell it abandoned then
        yield
    finally:
        os.close(fd)


def held(path: Path) -> bool:
    """True when a live process holds ``path`` now (as ``hold`` or ``owning`` do, or filelock's FileLock)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False  # gone
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    except OSError:
        return False  # no way to tell here (a filesystem without flock on a read-only descriptor)
    finally:
        os.close(fd)


def abandoned(path: Path) -> bool:
    """True when ``path`` is there and no live process holds it (a killed one left it, or nobody locked it)."""
    return path.exists() and not held(path)
