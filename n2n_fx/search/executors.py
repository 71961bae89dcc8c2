"""Executors: who trains the m students of an iteration (sequential here; parallel ones plug in).

An executor's ``evaluate(evaluator, jobs)`` returns one ``RewardRecord`` per ``Job``, in
order, exactly as evaluating them one after the other in this process would.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from ..errors import ConfigError
from ..reward import RewardEvaluator, RewardRecord

__all__ = ["Job", "Executor", "SequentialExecutor", "make_executor", "EXECUTORS"]


@dataclass
class Job:
    """One student to score."""

    student: Any  # the student nn.Module, or a degenerate reason (str)
    step: int  # search iteration t (anneals the constraint penalty)
    seed: int  # torch seed set before its training, so any worker reproduces it
    trained: dict[str, torch.Tensor] | None = None  # weights after training, set by executors that train elsewhere


class Executor:
    """Scores jobs; subclasses may do so in parallel but must return what sequential would."""

    name = "base"

    def evaluate(self, evaluator: RewardEvaluator, jobs: list[Job]) -> list[RewardRecord]:
        raise NotImplementedError

    def close(self) -> None:
        """Release workers (no-op for in-process executors)."""


class SequentialExecutor(Executor):
    """Train the students one after the other in this process (the default)."""

    name = "sequential"

    def evaluate(self, evaluator: RewardEvaluator, jobs: list[Job]) -> list[RewardRecord]:
        out = []
        for job in jobs:
            torch.manual_seed(job.seed)
            out.append(evaluator(job.student, step=job.step))
        return out


EXECUTORS = {"sequential": SequentialExecutor}


def make_executor(cfg: Any) -> Executor:
    """The executor a SearchConfig asks for (``executor`` field, default sequential)."""
    name = getattr(cfg, "executor", "sequential")
    cls = EXECUTORS.get(name)
    if cls is None:
        raise ConfigError(f"unknown executor {name!r}; use one of {', '.join(sorted(EXECUTORS))}")
    return cls() if name == "sequential" else cls(cfg)
