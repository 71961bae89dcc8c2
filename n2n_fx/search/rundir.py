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
    report.md/.txt      the report; curves.png when matplotlib is installed
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError, RunDirError

__all__ = ["RunDir", "RUN_FORMAT", "atomic_write_text", "atomic_torch_save", "safe_torch_load"]

RUN_FORMAT = "n2n_fx.run/1"


def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def atomic_torch_save(obj: Any, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "wb") as f:
        torch.save(obj, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def safe_torch_load(path: Path, *, allow_pickle: bool = False) -> Any:
    """Load with ``weights_only=True``; a full unpickle only when ``allow_pickle`` says so."""
    if not path.is_file():
        raise CheckpointError(f"{path} is missing")
    try:
        return torch.load(path, map_location="cpu", weights_only=not allow_pickle)
    except Exception as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if not allow_pickle and "Unsupported global" in str(e):  # a pickled object, not a damaged file
            raise CheckpointError(
                f"{path} holds pickled Python objects; pass --allow-pickle (allow_pickle=True) only if you trust it"
            ) from None
        if isinstance(e, (AttributeError, ModuleNotFoundError)):  # a pickled class this process cannot import
            raise CheckpointError(
                f"{path} holds a model pickled with your own class, which cannot be imported here ({msg[:100]}); "
                "load it in Python after importing that class, or compress again: runs now store the traced graph"
            ) from None
        raise CheckpointError(f"{path} cannot be read ({msg[:120]}); it is damaged or not an n2n_fx file") from None


class RunDir:
    """A run directory (created fresh, or opened to resume / report)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    # -- creation / checks -------------------------------------------------------------------------
    @staticmethod
    def ensure_new(path: str | Path) -> None:
        """Raise RunDirError unless ``path`` is free for a new run (missing or empty)."""
        p = Path(path)
        if p.exists() and not p.is_dir():
            raise RunDirError(f"{p} is a file; pick a new --run-dir")
        if p.exists() and any(p.iterdir()):
            if (p / "run.json").is_file():
                raise RunDirError(f"{p} already holds a run; resume it with --resume {p} or pick a new --run-dir")
            raise RunDirError(f"{p} exists and is not empty; pick a new --run-dir")

    @classmethod
    def create(cls, path: str | Path) -> RunDir:
        cls.ensure_new(path)
        p = Path(path)
        p.mkdir(parents=True, exist_ok=True)
        run = cls(p)
        atomic_write_text(run.file("run.json"), json.dumps({"format": RUN_FORMAT, "created": time.time()}))
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
        with self.file("history.jsonl").open("a") as f:
            f.write(json.dumps(row, default=_json_default) + "\n")
            f.flush()
            os.fsync(f.fileno())

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


def _json_default(o: Any) -> Any:
    if isinstance(o, (set, frozenset, tuple)):
        return list(o)
    if isinstance(o, torch.Tensor):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    return str(o)
