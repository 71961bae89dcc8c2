"""Executors: who trains the m students of an iteration (in this process, in local worker
processes, or on a Ray cluster).

An executor's ``evaluate(evaluator, jobs)`` returns one ``RewardRecord`` per ``Job``, in
order, exactly as evaluating them one after the other in this process would
(``SequentialExecutor``). The parallel executors keep that promise this way:

* the main process decides which jobs need training: a degenerate job (a ``Degenerate``), a
  student without trainable parameters, a student whose architecture hash is already in
  ``evaluator.cache`` or repeats an earlier job's of the same batch are all scored in the
  main process, after the trained ones, in job order, so they are cache hits exactly where
  sequential evaluation has them;
* every other student travels as a *packet*: its weights by name (a state_dict that also
  holds non-persistent buffers) and a weightless pickle of the module that refers to them
  (the rebuild spec); a worker rebuilds it, sets ``torch.manual_seed(job.seed)`` and calls
  its copy of the evaluator, which got the data sets, the teacher-logit cache and the
  configuration once, when the worker started;
* the worker returns the record, the unscored cache entry and the trained weights; the
  main process stores the entries in ``evaluator.cache`` in job order, loads the weights
  into ``job.student`` and sets ``job.trained``.

An exception raised while a worker evaluates a student propagates exactly as under
``SequentialExecutor``: the main process re-raises it (the same type, the worker's
traceback in its notes) at that job, after storing the results of the jobs before it. Only
a worker *process* that dies (killed, e.g. by the out-of-memory killer, or lost with its
node) fails its own job alone: that record is degenerate, ``Degenerate(Reason.FAILED, why)``
(reward −1), the worker is replaced, and the other jobs of the batch keep their results.

Modules: ``base`` (``Job``, the ``Executor`` protocol, sequential and the parallel plan/merge),
``packets`` (students as weights + weightless pickle), ``worker`` (what runs in a worker),
``local`` (the process pool), ``ray`` (Ray actors).
"""

from __future__ import annotations

from typing import Any

from ...errors import ConfigError
from .base import Executor, Job, ParallelExecutor, SequentialExecutor
from .local import LocalExecutor
from .ray import RAY_HINT, RayExecutor
from .worker import WorkerError

__all__ = [
    "Job",
    "Executor",
    "SequentialExecutor",
    "ParallelExecutor",
    "LocalExecutor",
    "RayExecutor",
    "WorkerError",
    "make_executor",
    "EXECUTORS",
    "RAY_HINT",
]

EXECUTORS = {"sequential": SequentialExecutor, "local": LocalExecutor, "ray": RayExecutor}


def make_executor(cfg: Any) -> Executor:
    """The executor a SearchConfig asks for (``executor`` field, default sequential)."""
    name = getattr(cfg, "executor", "sequential")
    cls = EXECUTORS.get(name)
    if cls is None:
        raise ConfigError(f"unknown executor {name!r}; use one of {', '.join(sorted(EXECUTORS))}")
    return cls(cfg)
