"""The run directory: every file a run writes, written atomically, so a crash loses nothing.

Layout::

    run.json            marker + format version (what makes a folder a run)
    config.json         the resolved SearchConfig
    teacher.pt          teacher: state_dict + spec to rebuild it; a user's own model: its traced graph
                        as data (teacher/fxfile.py); a flagged full pickle only when that cannot be stored
    teacher.json        how the teacher was trained (epochs, best epoch, accuracies) and any warning
    timing.json         seconds the search took (all sessions of a resumed run)
    history.jsonl       one row per rollout (stage, iteration, actions, params, accuracy, reward, ...)
    checkpoint.pt       resume state: learners, baseline, iteration, best-so-far, RNG states
    reward_cache.json   architecture hash -> reward record
    policies/*.pt       trained policies (state_dict + config)
    student*.pt         best students: state_dict + the actions that rebuild them from the teacher
    student*.py         their generated forward() code, for reading
    report.md/.txt      the report; curves.png (and pareto.md/.csv/.json/.png) beside it
    run.log             the run's progress lines (data, teacher, iterations, warnings); a resume appends
    .lock               held by the process writing the run (pid, host); dies with it

A run is created in that order: run.json (with a copy of the config), config.json,
data.json, teacher.pt (the inputs), then checkpoint.pt once the search starts. A run stopped before its first checkpoint is
started over by a resume (which writes the inputs it lacks), or replaced by a new run in
the same folder.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, DiskError, RunDirError
from ..storage import TEMP_SUFFIX, append_line, atomic_torch_save, atomic_write_text, writing
from .lock import LOCK_NAME, RunLock

__all__ = [
    "RunDir",
    "RUN_FORMAT",
    "INPUT_FILES",
    "LOG_FILE",
    "SEARCH_OUTPUTS",
    "PickledFileError",
    "atomic_write_text",
    "atomic_torch_save",
    "safe_torch_load",
]

RUN_FORMAT = "n2n_fx.run/1"
LOG_FILE = "run.log"  # the lines the package logs while the run is held (progress.log_file), whatever the console shows
# what a run needs to start; teacher.pt is written last, so all are there once it is
INPUT_FILES = ("run.json", "config.json", "data.json", "teacher.pt")
# what the search writes from its first checkpoint on (a restarted run drops them)
SEARCH_OUTPUTS = (
    "checkpoint.pt",
    "history.jsonl",
    "reward_cache.json",
    "policies",
    "timing.json",
    "supernet.pt",
    "supernet_shrink.pt",
)


class PickledFileError(CheckpointError):
    """A file holds pickled Python objects and was not allowed to unpickle them."""


def safe_torch_load(path: Path, *, allow_pickle: bool = False, pickle_hint: str | None = None) -> Any:
    """Load with ``weights_only=True``; a full unpickle only when ``allow_pickle`` says so.

    A file that needs a full unpickle raises ``PickledFileError``, whose message ends with
    ``pickle_hint`` (how to allow it) or, for files n2n_fx never unpickles, says so."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not allow_pickle and "Unsupported global" in str(e):  # a pickled object, not a damaged file
            hint = pickle_hint or "n2n_fx never unpickles this file, so it was not written by n2n_fx or was altered"
            raise PickledFileError(f"{path} holds pickled Python objects; {hint}") from None
        if isinstance(e, (AttributeError, ModuleNotFoundError)):  # a pickled class this process cannot import
            raise CheckpointError(
                f"{path} holds a model pickled with your own class, which cannot be imported here ({msg[:100]}); "
                "load it in Python after importing that class, or compress again: runs now store the traced graph"
            ) from None
        raise CheckpointError(f"{path} cannot be read ({msg[:120]}); it is damaged or not an n2n_fx file") from None


def _is_temp(name: str) -> bool:
    """A temp file of an interrupted write (".<name>.<random>.tmp", older ".<name>.<random>", "<name>.tmp")."""
    return name.endswith(TEMP_SUFFIX) or (name.startswith(".") and "." in name[1:])


class RunDir:
    """A run directory (created fresh, or opened to resume / report).

    A process that writes a run holds its lock (``create`` takes it, ``lock`` takes it for a
    resume); a second one gets a one-line ``RunDirError`` naming the holder.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock: RunLock | None = None
        self.stale_removed: list[str] = []  # temp files of cut writes that ``lock`` deleted
        self.created_folder = False  # ``create`` made the folder (``discard`` then removes it)

    # -- creation / checks -------------------------------------------------------------------------
    @staticmethod
    def ensure_new(path: str | Path) -> None:
        """Raise RunDirError unless ``path`` is free for a new run.

        Free: missing, empty (but for the leftovers of an interrupted creation), or a run that
        was stopped before its first checkpoint (it holds nothing but its inputs; a new run
        replaces them) and that no live process holds."""
        if _check_free(Path(path)) or (Path(path) / LOCK_NAME).is_file():
            RunLock(path).acquire().release()  # a run starting up in it: say whose

    @classmethod
    def create(cls, path: str | Path, config: dict[str, Any] | None = None) -> RunDir:
        """A new run directory at ``path``, locked by this process; a never-started run there is replaced.

        run.json, its first file, also records ``config``: a run cut before its config.json
        was written can still be resumed (``config()``)."""
        cls.ensure_new(path)
        p = Path(path)
        existed = p.exists()
        with writing(p):
            p.mkdir(parents=True, exist_ok=True)
        run = cls(p).lock()
        run.created_folder = not existed
        try:
            _check_free(p)  # again, under the lock: another process may have been faster
            run.clear()
            marker = {"format": RUN_FORMAT, "created": time.time(), "config": config}
            atomic_write_text(run.file("run.json"), json.dumps(marker, default=_json_default))
        except BaseException:  # any exit, Ctrl-C included, releases the lock first; re-raised
            run.release()
            raise
        return run

    @classmethod
    def open(cls, path: str | Path) -> RunDir:
        p = Path(path)
        marker = p / "run.json"
        if not marker.is_file():
            raise RunDirError(
                f"{p} is not an n2n-fx run directory (no run.json); give the folder `n2n-fx compress` wrote"
            )
        try:
            fmt = json.loads(marker.read_text()).get("format")
        except ValueError:
            fmt = None
        if fmt != RUN_FORMAT:
            raise RunDirError(f"{p}/run.json has format {fmt!r}, expected {RUN_FORMAT!r}")
        return cls(p)

    def config(self) -> dict[str, Any]:
        """The run's settings: config.json, or the copy in run.json when the run was cut before writing it."""
        if self.file("config.json").is_file():
            return self.read_json("config.json")
        config = self.read_json("run.json").get("config")
        if not isinstance(config, dict):
            raise RunDirError(f"{self.path} has no config.json; start the run again with the command that made it")
        return config

    # -- the lock and the state of the folder ------------------------------------------------------
    def lock(self) -> RunDir:
        """Take the run's lock (RunDirError if another process holds it) and drop stale temp files."""
        if self._lock is None:
            self._lock = RunLock(self.path).acquire()
            self.stale_removed = self.remove_stale_files()
        return self

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def started(self) -> bool:
        """True once the run has written its first checkpoint (before that, a resume starts over)."""
        return self.file("checkpoint.pt").is_file()

    def missing_inputs(self) -> list[str]:
        """The files of ``INPUT_FILES`` not written yet (a run killed while it was being created)."""
        return [n for n in INPUT_FILES if not self.file(n).is_file()]

    def remove_stale_files(self) -> list[str]:
        """Delete the temp files of writes cut by a crash; their names (the lock must be held)."""
        gone = []
        for folder in (self.path, self.path / "policies"):
            for f in sorted(folder.iterdir()) if folder.is_dir() else ():
                if f.is_file() and _is_temp(f.name):
                    with writing(f):
                        f.unlink()
                    gone.append(str(f.relative_to(self.path)))
        return gone

    def clear(self, keep: tuple[str, ...] = ()) -> None:
        """Delete everything in the folder but the lock and ``keep`` (the lock must be held)."""
        for f in _entries(self.path):
            if f.name not in keep:
                with writing(f):
                    shutil.rmtree(f) if f.is_dir() else f.unlink()

    def discard(self, remove_folder: bool) -> None:
        """Undo a run that failed before its search began: its files (and ``remove_folder``: the folder)."""
        self.clear()
        with writing(self.path):
            self.file(LOCK_NAME).unlink(missing_ok=True)  # the folder is left as it was found
        self.release()
        if remove_folder:
            with writing(self.path):
                shutil.rmtree(self.path)

    def file(self, name: str) -> Path:
        return self.path / name

    # -- json / history ------------------------------------------------------------------------------
    def write_json(self, name: str, data: Any) -> None:
        atomic_write_text(self.file(name), json.dumps(data, indent=1, default=_json_default))

    def read_json(self, name: str) -> Any:
        p = self.file(name)
        if not p.is_file():
            raise RunDirError(f"{p} is missing; the run is incomplete")
        try:
            return json.loads(p.read_text())
        except ValueError:
            raise RunDirError(f"{p} is not valid JSON") from None

    def append_history(self, row: dict[str, Any]) -> None:
        append_line(self.file("history.jsonl"), json.dumps(row, default=_json_default))

    def history(self) -> list[dict[str, Any]]:
        p = self.file("history.jsonl")
        if not p.is_file():
            return []
        rows = []
        for line in p.read_text().splitlines():
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    break  # a row cut by a crash: everything after it is dropped on resume
        return rows

    def truncate_history(self, keep) -> int:
        """Keep the rows for which ``keep(row)`` holds (drops a partly-run iteration)."""
        rows = [r for r in self.history() if keep(r)]
        atomic_write_text(
            self.file("history.jsonl"),
            "".join(json.dumps(r, default=_json_default) + "\n" for r in rows),
        )
        return len(rows)


def _check_free(p: Path) -> bool:
    """Raise RunDirError if ``p`` cannot take a new run; True if it holds a never-started one."""
    if p.exists() and not p.is_dir():
        raise RunDirError(f"{p} is a file; pick a new --run-dir")
    folder = next(a for a in (p, *p.absolute().parents) if a.exists())  # where the first write goes
    if not os.access(folder, os.W_OK):  # found before minutes of teacher training, not after
        raise DiskError(f"cannot write in {folder}: permission denied (or read-only); pick a writable --run-dir")
    if not p.exists() or not _entries(p):
        return False
    if not (p / "run.json").is_file():
        raise RunDirError(f"{p} exists and is not empty; pick a new --run-dir")
    if (p / "checkpoint.pt").is_file():
        raise RunDirError(f"{p} already holds a run; resume it with --resume {p} or pick a new --run-dir")
    return True


def _entries(p: Path) -> list[Path]:
    """The folder's entries that matter: not the lock, not the temp files of a cut write."""
    return [f for f in p.iterdir() if f.name != LOCK_NAME and not (f.is_file() and _is_temp(f.name))]


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
