"""The worker side: the evaluator copy a worker holds, one packed student trained per task.

``Trainer`` runs in a local worker process (``worker_main``) or as a Ray actor. An exception
the evaluator raises goes back to the main process (``portable``), which re-raises it where
sequential evaluation would; a worker process that dies is described by ``death``.
"""

from __future__ import annotations

import contextlib
import copy
import pickle
import signal
import traceback
from dataclasses import replace
from typing import Any

import torch

from ...errors import ConfigError, first_line
from ...reward import RewardCache, RewardEvaluator
from .packets import unpack

__all__ = ["Trainer", "WorkerError", "evaluator_payload", "worker_main", "death"]


def evaluator_payload(evaluator: RewardEvaluator) -> bytes:
    """The evaluator as workers get it: no reward cache (the main process owns it), no
    DataLoader worker processes (the workers are the parallelism)."""
    ev = copy.copy(evaluator)
    ev.cache = RewardCache()
    ev.config = replace(ev.config, num_workers=0)
    try:
        return pickle.dumps(ev, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as e:  # e.g. a data set holding a lambda or an open file
        raise ConfigError(
            f"the reward evaluator cannot be sent to workers ({first_line(e, with_type=True)}); use --executor sequential"
        ) from None


class Trainer:
    """Lives in a worker: holds the evaluator copy and trains one packed student per call."""

    def __init__(self, payload: bytes, device: str | None, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        with contextlib.suppress(RuntimeError):  # already set in this process
            torch.set_num_interop_threads(1)
        self.evaluator: RewardEvaluator = pickle.loads(payload)
        if device is not None:  # "cuda:k": the pool's GPU k, or the one GPU Ray made visible
            torch.cuda.set_device(torch.device(device))
            self.evaluator.config = replace(self.evaluator.config, device=device)

    def run(self, task: bytes) -> tuple[str, Any]:
        """("ok", (record, cache entry, trained weights, rng state)) or ("raise", exception).

        The evaluator's exceptions are not turned into degenerate records: they go back to the
        main process, which raises them where sequential evaluation would have raised them.
        """
        try:
            spec, weights, seed, step = pickle.loads(task)
            student = unpack(spec, weights)
            self.evaluator.cache = RewardCache()  # never a hit: the main process decided
            torch.manual_seed(seed)
            record = self.evaluator(student, step=step)
        except Exception as e:  # sent back and re-raised by the main process (not swallowed)
            return "raise", _portable(e)
        entry = self.evaluator.cache.get(record.arch) if record.arch else None
        trained = {k: v.detach().cpu() for k, v in student.state_dict().items()}
        return "ok", (record, entry, trained, torch.get_rng_state())


class WorkerError(RuntimeError):
    """An exception a worker raised that could not be sent back as itself (its text and traceback)."""


def _portable(e: BaseException) -> BaseException:
    """``e`` if it survives pickling, else a ``WorkerError`` carrying its type, message and traceback."""
    tb = "".join(traceback.format_exception(e))
    try:
        pickle.loads(pickle.dumps(e))
    except Exception:  # any pickling failure: send its text instead
        return WorkerError(f"{type(e).__name__}: {e}\n{tb}")
    e.__notes__ = [*getattr(e, "__notes__", []), f"raised in an executor worker:\n{tb}"]
    return e


def worker_main(conn, payload: bytes, device: str | None, threads: int) -> None:
    """Local worker process: start a ``Trainer``, then answer tasks until told to stop."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is for the search; it stops the pool
    try:
        trainer = Trainer(payload, device, threads)
    except Exception as e:  # reported to the main process, which raises it (a worker that cannot start)
        conn.send_bytes(pickle.dumps((None, "init", first_line(e, with_type=True))))
        return
    conn.send_bytes(pickle.dumps((None, "ready", None)))
    while True:
        try:
            msg = conn.recv_bytes()
        except (EOFError, OSError):  # the main process went away
            return
        if not msg:
            return
        index, task = pickle.loads(msg)
        status, result = trainer.run(task)
        conn.send_bytes(pickle.dumps((index, status, result), protocol=pickle.HIGHEST_PROTOCOL))


def death(exitcode: int | None) -> str:
    """Why a worker process ended, in words."""
    if exitcode is None:
        return "worker process stopped answering"
    if exitcode < 0:
        try:
            name = signal.Signals(-exitcode).name
        except ValueError:
            name = f"signal {-exitcode}"
        hint = ", e.g. out of memory" if -exitcode == signal.SIGKILL else ""
        return f"worker process killed by {name}{hint}"
    return f"worker process exited with code {exitcode}"
