"""One process at a time in a run folder: an exclusive ``flock`` on ``<run_dir>/.lock``.

:func:`hold` takes ``fcntl.flock(LOCK_EX | LOCK_NB)`` on ``<run_dir>/.lock`` and writes into it
who holds it (pid, host, start time, as JSON). A second process that wants the same folder (a
``resume=`` of a run that is still going, two runs given the same ``hydra.run.dir``) is refused at
once with a :class:`~sim.errors.ConfigError` saying "held by pid N on host H since T"; nothing
waits. The kernel drops a flock when its holder dies, however it dies (SIGKILL included), so a
killed run never leaves a stale lock: the ``.lock`` file it leaves behind is free and the next
:func:`hold` simply takes it.

A holder removes ``.lock`` when it lets go (also when the job failed or raised), so a finished run
folder holds no ``.lock``; only a killed run leaves one (next to its ``checkpoint/``, neither read
by ``python -m sim.plot`` nor by the sweep collector). Removing a lock file is the classic flock
race (a second process opens the old file, the holder unlinks it, the second process locks the
now nameless file while a third creates and locks a new one): :func:`hold` therefore checks,
after locking, that the file it locked is still the one named ``.lock``, and tries again if not.
The holder unlinks before it closes, i.e. while it still holds the lock.

The lock file is bookkeeping, not an output: its few bytes are written in place (a reader that
catches it half-written reports an unknown holder); every output still goes through
:mod:`sim.io`.

Within one process (and thread) :func:`hold` is reentrant: ``python -m sim`` takes the lock before
writing ``.hydra/`` and :func:`sim.app.execute` takes it again for the job. Locks are advisory
(they keep out other users of this module, not other programs), work on local file systems and on
NFS (Linux emulates flock with NFS byte-range locks). Where ``fcntl`` does not exist (Windows),
or the file system refuses flock (ENOLCK, EOPNOTSUPP), there is no locking: :func:`hold` runs the
block unguarded (with a warning in the second case).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

from sim.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: no flock; run folders are not locked there (documented above)
    fcntl = None

LOCK_FILE = ".lock"
UNSUPPORTED = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}  # file systems without flock
_held: dict[tuple[str, int], list] = {}  # (lock path, thread id) -> [fd, depth]
_guard = threading.Lock()


def holder(run_dir) -> dict | None:
    """Who the lock file of ``run_dir`` says holds it (``None`` if there is no readable record).

    This only reads the record; whether the lock is actually held is what :func:`hold` finds out."""
    try:
        data = json.loads((Path(run_dir) / LOCK_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def describe(info: dict | None) -> str:
    if not info:
        return "held by another process (its pid, host and start time not yet written)"
    return f"held by pid {info.get('pid', '?')} on host {info.get('host', '?')} since {info.get('since', '?')}"


def _refusal(key: str, run_dir: Path) -> ConfigError:
    return ConfigError(
        key, str(run_dir), f"a run folder no other process is using (its {LOCK_FILE} is {describe(holder(run_dir))})"
    )


def busy(run_dir, key: str = "resume") -> ConfigError | None:
    """The refusal :func:`hold` would raise if ``run_dir`` is locked by another process, else None.

    A probe that creates nothing (no folder, no lock file) and leaves the lock as it found it."""
    path = Path(run_dir) / LOCK_FILE
    if fcntl is None or (os.path.realpath(path), threading.get_ident()) in _held:  # (ours)
        return None
    try:
        fd = os.open(path, os.O_RDWR)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno in UNSUPPORTED:
            return None
        if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
            raise
        return _refusal(key, Path(run_dir))
    finally:
        os.close(fd)  # (drops the probe's flock if it got one)
    return None


def _record() -> bytes:
    since = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime())
    return (json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": since}) + "\n").encode()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except FileNotFoundError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def _acquire(path: Path, key: str, run_dir: Path) -> int | None:
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in UNSUPPORTED:  # as on Windows: run unguarded rather than not at all
                path.unlink(missing_ok=True)
                print(f"warning: {run_dir} cannot be locked ({exc.strerror}); running without a lock", file=sys.stderr)
                return None
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise
            raise _refusal(key, run_dir) from None
        if _same_file(fd, path):
            break
        os.close(fd)  # the holder removed the file between our open and our flock: take the new one
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, _record(), 0)
    except BaseException:
        _release(path, fd)
        raise
    return fd


def _release(path: Path, fd: int) -> None:
    try:
        if _same_file(fd, path):
            path.unlink(missing_ok=True)  # while still holding the lock (see the module docstring)
    finally:
        os.close(fd)  # drops the flock


@contextmanager
def hold(run_dir, key: str = "resume"):
    """Hold ``<run_dir>/.lock`` for the block (creating ``run_dir`` if needed).

    Raises :class:`~sim.errors.ConfigError` naming ``key`` and ``run_dir`` (and who holds the lock)
    when another process holds it."""
    run_dir = Path(run_dir)
    if fcntl is None:  # no flock on this platform: unguarded (see the module docstring)
        yield
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK_FILE
    ident = (os.path.realpath(path), threading.get_ident())
    with _guard:
        entry = _held.get(ident)
        if entry is not None:
            entry[1] += 1
    if entry is None:
        fd = _acquire(path, key, run_dir)
        with _guard:
            entry = _held[ident] = [fd, 1]
    try:
        yield
    finally:
        with _guard:
            entry[1] -= 1
            last = entry[1] == 0
            if last:
                del _held[ident]
        if last and entry[0] is not None:
            _release(path, entry[0])
