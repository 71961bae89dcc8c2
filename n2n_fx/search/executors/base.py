"""The executor protocol, ``Job``, sequential evaluation, and the parallel executors' plan and merge.

``ParallelExecutor.evaluate`` decides which jobs need training elsewhere (see the package
docstring), hands them to its subclass's ``_train`` as packets, and merges the answers into
records in job order, exactly as ``SequentialExecutor`` would have produced them.
"""

from __future__ import annotations

import contextlib
import pickle
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from ...degenerate import Degenerate, Reason
from ...reward import RewardEvaluator, RewardRecord, count_params
from .packets import pack

__all__ = ["Job", "Executor", "SequentialExecutor", "ParallelExecutor", "uses_cuda"]


@dataclass
class Job:
    """One student to score."""

    student: nn.Module | Degenerate  # the student, or why surgery gave none
    step: int  # search iteration t (anneals the constraint penalty)
    seed: int  # torch seed set before its training, so any worker reproduces it
    # weights after training (CPU state_dict), set by executors that train elsewhere
    trained: dict[str, torch.Tensor] | None = None


class Executor:
    """Scores jobs; subclasses may do so in parallel but must return what sequential would."""

    name = "base"
    on_done = None  # optional callback after each scored job (executors that can report it call it)

    def evaluate(self, evaluator: RewardEvaluator, jobs: list[Job]) -> list[RewardRecord]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (no-op for in-process executors)."""


@contextlib.contextmanager
def _torch_threads(n: int | None):
    """Run the block with ``n`` torch intra-op threads (None: leave the setting alone)."""
    before = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class SequentialExecutor(Executor):
    """Train the students one after the other in this process (the default).

    ``threads``: torch threads while training (None: this process's setting). Parallel
    executors given the same count return bit-identical results.
    """

    name = "sequential"

    def __init__(self, cfg: Any = None, *, threads: int | None = None) -> None:
        self.threads = threads if threads is not None else getattr(cfg, "rollout_threads", None)

    def evaluate(self, evaluator: RewardEvaluator, jobs: list[Job]) -> list[RewardRecord]:
        out = []
        with _torch_threads(self.threads):
            for job in jobs:
                torch.manual_seed(job.seed)
                out.append(evaluator(job.student, step=job.step))
                if self.on_done is not None:
                    self.on_done()  # one student scored (progress bars)
        return out


class ParallelExecutor(Executor):
    """Base of executors that train elsewhere: decides what to train, merges results in order.

    Subclasses implement ``_train(evaluator, tasks)``: ``tasks`` maps job positions to
    packed tasks; the answer maps each position to ``("ok", result)``, ``("raise", exception)``
    (re-raised in job order) or ``("error", why)`` (the worker process died: a failed job).
    """

    name = "parallel"

    def _train(self, evaluator: RewardEvaluator, tasks: dict[int, bytes]) -> dict[int, tuple[str, Any]]:
        raise NotImplementedError

    def evaluate(self, evaluator: RewardEvaluator, jobs: list[Job]) -> list[RewardRecord]:
        keys: list[str | None] = []
        tasks: dict[int, bytes] = {}
        first: set[str] = set()
        for i, job in enumerate(jobs):
            st = job.student
            if not isinstance(st, nn.Module) or count_params(st) == 0:
                keys.append(None)  # scored in this process, like sequential does
                continue
            key = evaluator.key(st)
            keys.append(key)
            if key in first or key in evaluator.cache:
                continue  # a cache hit once the earlier jobs are stored
            first.add(key)
            evaluator.cache.misses += 1  # the lookup sequential evaluation makes
            spec, weights = pack(st)
            tasks[i] = pickle.dumps((spec, weights, job.seed, job.step), protocol=pickle.HIGHEST_PROTOCOL)
        results = self._train(evaluator, tasks) if tasks else {}
        records: list[RewardRecord] = []
        failed: dict[str, Degenerate] = {}
        for i, job in enumerate(jobs):
            key = keys[i]
            if i in tasks:
                status, result = results.get(i, ("error", "no answer from the worker"))
                if status == "ok":
                    record, entry, trained, rng = result
                    if entry is not None:
                        entry["arch"] = key
                        evaluator.cache.put(key, entry)
                    job.student.load_state_dict(trained, strict=False)
                    job.trained = trained
                    torch.set_rng_state(rng)  # where sequential evaluation leaves the generator
                    records.append(replace(record, arch=key))
                    continue
                if status == "raise":  # where sequential evaluation would raise it
                    raise result
                failed[key] = Degenerate(Reason.FAILED, str(result))
            if key is not None and key in failed:  # the job, or a repeat of a job, that failed
                torch.manual_seed(job.seed)
                rec = evaluator(failed[key], step=job.step)
                records.append(replace(rec, params=count_params(job.student), arch=key))
                continue
            torch.manual_seed(job.seed)
            records.append(evaluator(job.student, step=job.step))
        return records


def uses_cuda(evaluator: RewardEvaluator) -> bool:
    return str(evaluator.config.device).startswith("cuda") and torch.cuda.is_available()
