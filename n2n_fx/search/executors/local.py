"""The local executor: a pool of worker processes on this machine (a dead one is replaced)."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import pickle
import weakref
from collections import deque
from multiprocessing.connection import wait
from typing import Any

import torch

from ...errors import ConfigError
from ...reward import RewardEvaluator
from .base import ParallelExecutor, uses_cuda
from .worker import death, evaluator_payload, worker_main

__all__ = ["LocalExecutor", "auto_workers"]


def auto_workers(cuda: bool) -> int:
    if cuda:
        return max(1, torch.cuda.device_count())
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


class _Slot:
    """One local worker process and the job it is running."""

    def __init__(self, index: int, device: str | None) -> None:
        self.index = index
        self.device = device
        self.process: Any = None
        self.conn: Any = None
        self.job: int | None = None


class _ProcessPool:
    """Worker processes that started with one evaluator payload; a dead one is replaced."""

    def __init__(self, ctx: Any, size: int, payload: bytes, devices: list[str | None], threads: int) -> None:
        self.ctx = ctx
        self.payload = payload
        self.threads = threads
        self.slots = [_Slot(i, devices[i % len(devices)]) for i in range(size)]

    def _start(self, slot: _Slot) -> None:
        parent, child = self.ctx.Pipe(duplex=True)
        proc = self.ctx.Process(
            target=worker_main,
            args=(child, self.payload, slot.device, self.threads),
            name=f"n2n-fx-worker-{slot.index}",
            daemon=True,
        )
        proc.start()
        child.close()
        slot.process, slot.conn, slot.job = proc, parent, None

    def _stop(self, slot: _Slot) -> None:
        if slot.conn is not None:
            slot.conn.close()
        if slot.process is not None:
            slot.process.join(timeout=1)
            if slot.process.is_alive():
                slot.process.kill()
                slot.process.join(timeout=5)
        slot.process = slot.conn = slot.job = None

    def _dead(self, slot: _Slot, results: dict[int, tuple[str, Any]]) -> None:
        slot.process.join(timeout=5)
        if slot.job is not None:
            results[slot.job] = ("error", death(slot.process.exitcode))
        self._stop(slot)
        self._start(slot)

    def _read(self, slot: _Slot, results: dict[int, tuple[str, Any]]) -> None:
        """Take every message the slot's worker has sent; replace the worker if it died."""
        try:
            while slot.conn.poll():
                index, status, result = pickle.loads(slot.conn.recv_bytes())
                if status == "init":
                    self.close()
                    raise ConfigError(f"local executor workers cannot start ({result}); use --executor sequential")
                if status != "ready" and index == slot.job:
                    results[index] = (status, result)
                    slot.job = None
                    return
        except (EOFError, OSError):
            pass
        if not slot.process.is_alive():
            self._dead(slot, results)

    def run(self, tasks: dict[int, bytes]) -> dict[int, tuple[str, Any]]:
        results: dict[int, tuple[str, Any]] = {}
        queue = deque(tasks.items())
        while queue or any(s.job is not None for s in self.slots):
            for slot in self.slots:
                if not queue:
                    break
                if slot.job is not None:
                    continue
                if slot.process is None or not slot.process.is_alive():
                    self._stop(slot)
                    self._start(slot)
                index, task = queue.popleft()
                slot.job = index
                try:
                    slot.conn.send_bytes(pickle.dumps((index, task), protocol=pickle.HIGHEST_PROTOCOL))
                except (BrokenPipeError, OSError):
                    self._dead(slot, results)
            busy = {s.conn: s for s in self.slots if s.job is not None}
            busy.update({s.process.sentinel: s for s in self.slots if s.job is not None})
            if busy:
                for obj in wait(list(busy)):
                    slot = busy[obj]
                    if slot.job is not None:
                        self._read(slot, results)
        return results

    def close(self) -> None:
        for slot in self.slots:
            if slot.conn is not None:
                with contextlib.suppress(OSError):  # the worker is already gone
                    slot.conn.send_bytes(b"")
            self._stop(slot)


class LocalExecutor(ParallelExecutor):
    """Train the students of an iteration in a pool of local worker processes.

    ``cfg.workers`` processes (0 or less: one per CPU core, or one per GPU when the
    evaluator trains on CUDA; each worker then owns GPU ``k mod #GPUs``); each uses
    ``threads`` torch threads (default ``cfg.rollout_threads``, else ``cores // workers``, so
    the pool does not oversubscribe the CPU). Records, cache entries and trained weights are
    bit-identical to sequential evaluation run with the same number of torch threads (set
    ``rollout_threads`` in the config to get that for a whole search); with another count,
    float sums are reduced in another order, so weights may differ in the last bits (and,
    rarely, an accuracy by a sample). The evaluator reaches each worker once, when it starts;
    a new evaluator object restarts the pool (changes made to the same object later are not
    seen: call ``close()``). ``start_method``: ``forkserver`` (default where available: torch
    is imported once, restarts are fast, CUDA-safe) or ``spawn``; both re-import the main
    script in workers, so scripts need the ``if __name__ == "__main__":`` guard.
    """

    name = "local"

    def __init__(self, cfg: Any = None, *, threads: int | None = None, start_method: str | None = None) -> None:
        self.workers = int(getattr(cfg, "workers", 0) or 0)
        self.threads = threads if threads is not None else getattr(cfg, "rollout_threads", None)
        methods = mp.get_all_start_methods()
        self.start_method = start_method or ("forkserver" if "forkserver" in methods else "spawn")
        if self.start_method not in methods:
            raise ConfigError(f"start method {self.start_method!r} is not one of {', '.join(methods)}")
        self._pool: _ProcessPool | None = None
        self._owner: Any = None  # weak reference to the evaluator the pool was started with
        self._finalizer = weakref.finalize(self, LocalExecutor._close_pool, [None])

    @staticmethod
    def _close_pool(holder: list) -> None:
        if holder[0] is not None:
            holder[0].close()

    def _pool_for(self, evaluator: RewardEvaluator) -> _ProcessPool:
        if self._pool is not None and self._owner is not None and self._owner() is evaluator:
            return self._pool
        self.close()
        cuda = uses_cuda(evaluator)
        size = self.workers if self.workers > 0 else auto_workers(cuda)
        devices: list[str | None] = [f"cuda:{k}" for k in range(torch.cuda.device_count())] if cuda else [None]
        threads = self.threads or max(1, auto_workers(False) // size)
        ctx = mp.get_context(self.start_method)
        if self.start_method == "forkserver":
            ctx.set_forkserver_preload([__name__])  # torch is imported once, in the server
        self._pool = _ProcessPool(ctx, size, evaluator_payload(evaluator), devices, threads)
        self._owner = weakref.ref(evaluator)
        self._finalizer.detach()
        self._finalizer = weakref.finalize(self, LocalExecutor._close_pool, [self._pool])
        return self._pool

    def _train(self, evaluator: RewardEvaluator, tasks: dict[int, bytes]) -> dict[int, tuple[str, Any]]:
        try:
            return self._pool_for(evaluator).run(tasks)
        except BaseException:  # a worker could not start, or Ctrl-C: do not leave workers behind
            self.close()
            raise

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        self._pool = self._owner = None
