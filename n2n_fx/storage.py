"""Writing files safely: atomic replacement, and disk faults as one-line errors.

Every file n2n_fx writes goes through here. A write either completes (temp file, fsync,
rename) or leaves the previous file untouched and no temp file behind; a permission
problem or a full disk raises ``DiskError`` naming the file and what to do.
"""

from __future__ import annotations

import contextlib
import errno
import io
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from .errors import DiskError

__all__ = [
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_torch_save",
    "append_line",
    "torch_bytes",
    "disk_error",
    "writing",
    "TEMP_SUFFIX",
]

_UMASK = os.umask(0o022)
os.umask(_UMASK)  # read once: files get the usual permissions (mkstemp alone gives 0600)
TEMP_SUFFIX = ".tmp"  # temp files are ".<name>.<random>.tmp", beside their target

_ADVICE = {
    errno.ENOSPC: "free some disk space",
    errno.EDQUOT: "free some disk space (quota exceeded)",
    errno.EACCES: "make the folder writable",
    errno.EPERM: "make the folder writable",
    errno.EROFS: "the file system is read-only; use a writable folder",
    errno.ENOENT: "its folder does not exist; create it or pick another path",
    errno.ENOTDIR: "a parent of it is a file, not a folder; pick another path",
}


def disk_error(path: Path | str, err: OSError) -> DiskError:
    """The one-line ``DiskError`` for an ``OSError`` met while writing ``path``."""
    why = err.strerror or type(err).__name__
    advice = _ADVICE.get(err.errno or 0, "check the disk and the folder's permissions")
    return DiskError(f"cannot write {path}: {why}; {advice}")


@contextlib.contextmanager
def writing(path: Path | str) -> Iterator[None]:
    """Turn an ``OSError`` raised inside the block into the one-line ``DiskError`` for ``path``."""
    try:
        yield
    except OSError as e:
        raise disk_error(path, e) from None


def atomic_write_bytes(path: Path | str, data: bytes | memoryview, *, parents: bool = True) -> None:
    """Replace ``path`` by ``data``: all of it or, on any failure, the old file and no temp file.

    ``parents``: create missing folders (else a missing folder is a ``DiskError``, e.g. for a
    path the user typed)."""
    path = Path(path)
    tmp = None
    with writing(path):
        if parents:
            path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=TEMP_SUFFIX)
            with os.fdopen(fd, "wb") as f:
                os.fchmod(fd, 0o666 & ~_UMASK)
                _write(f, data, path)
            os.replace(tmp, path)
            tmp = None
        finally:
            if tmp is not None:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)


def atomic_write_text(path: Path | str, text: str) -> None:
    """``atomic_write_bytes`` of ``text`` in UTF-8."""
    atomic_write_bytes(path, text.encode())


def torch_bytes(obj: Any) -> bytes:
    """``torch.save(obj)`` into memory (a write then fails only as an ``OSError``, never mid-pickle)."""
    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


def atomic_torch_save(obj: Any, path: Path | str) -> None:
    """``torch.save(obj, path)``, atomically."""
    atomic_write_bytes(path, torch_bytes(obj))


def append_line(path: Path | str, line: str) -> None:
    """Append ``line`` and a newline to ``path`` and fsync (a cut last line is dropped by readers)."""
    with writing(path), Path(path).open("ab") as f:
        _write(f, (line + "\n").encode(), Path(path))


def _write(f: Any, data: bytes | memoryview, path: Path) -> None:
    """Write ``data`` for ``path`` through the open file ``f`` and make it durable (every write goes here)."""
    f.write(data)
    f.flush()
    os.fsync(f.fileno())
