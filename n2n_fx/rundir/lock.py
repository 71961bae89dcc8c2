"""One process per run directory: an exclusive lock that dies with its holder.

The lock is ``<run dir>/.lock``, held with ``flock`` for as long as the process writes the
run. The kernel drops it when the process ends, however it ends (kill -9 included), so a
lock left by a dead process is simply taken over. The file records who holds it (pid,
host, start time), so a second process is told whom it is waiting for.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from ..errors import RunDirError
from ..storage import writing

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the recorded pid decides
    fcntl = None  # type: ignore[assignment]

__all__ = ["RunLock", "LOCK_NAME"]

LOCK_NAME = ".lock"


class RunLock:
    """The lock of the run directory ``folder``; ``acquire`` raises ``RunDirError`` if another process holds it.

    Example::

        lock = RunLock("runs/r").acquire()   # RunDirError: "runs/r is in use by pid 4242 on host a ..."
        ...
        lock.release()
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None
        self.previous: dict[str, Any] | None = None  # the holder recorded before us (a dead process), if any

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> RunLock:
        if self._fd is not None:
            return self
        with writing(self.path):
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            recorded = _read(fd)
            if not _try_lock(fd, recorded):
                raise RunDirError(
                    f"{self.path.parent} is in use by {_describe(recorded)}; wait for it to finish or stop it, then retry"
                )
            self.previous = recorded or None
            me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()}
            with writing(self.path):
                os.ftruncate(fd, 0)
                os.pwrite(fd, json.dumps(me).encode(), 0)
        except BaseException:  # any exit, Ctrl-C included, closes the file first; re-raised
            os.close(fd)
            raise
        self._fd = fd
        return self

    def release(self) -> None:
        """Give the lock up (the file stays: removing it would race with a process about to lock it)."""
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        os.close(self._fd)  # closing drops the flock
        self._fd = None

    def __enter__(self) -> RunLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def _read(fd: int) -> dict[str, Any]:
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _try_lock(fd: int, recorded: dict[str, Any]) -> bool:
    """Lock ``fd``; False if another live process holds it."""
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except OSError as e:
            if e.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                return False
            if e.errno != errno.ENOLCK:  # a file system without locks: fall back to the recorded pid
                raise
    return not _alive(recorded)


def _alive(recorded: dict[str, Any]) -> bool:
    pid = recorded.get("pid")
    if not isinstance(pid, int):
        return False
    if recorded.get("host") != socket.gethostname():
        return True  # cannot check another host's processes: assume it still runs
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _describe(recorded: dict[str, Any]) -> str:
    if not recorded.get("pid"):
        return "another process"
    since = recorded.get("started")
    when = f", since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))}" if isinstance(since, float) else ""
    return f"pid {recorded['pid']} on host {recorded.get('host', '?')}{when}"
