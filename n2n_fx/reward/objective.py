"""What the reward's compression C is measured on: parameters (the paper's), FLOPs or latency.

The N2N reward is ``R = C(2 − C) · A / A_teacher``. The paper takes
``C = 1 − params_student / params_teacher``; users who compress to run faster can take ``C``
on FLOPs per sample or on batch-1 latency instead. Whatever the objective, every student's
parameters, FLOPs and latency are measured and recorded; the objective only chooses which of
them prices the student. A student heavier than its teacher in the objective's quantity gets
``C < 0`` and a negative reward (floored at −1): removals that add FLOPs (a pooling layer, a
stride) stay legal, the objective prices them.

Example:
    >>> obj = Objective("flops", teacher=1000.0)
    >>> obj.compression({"params": 10.0, "flops": 250.0})
    0.75
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from ..errors import ConfigError

__all__ = ["OBJECTIVES", "Objective"]

# objective name -> the measured quantity C is computed on (names of ``Constraints``' quantities)
OBJECTIVES: dict[str, str] = {
    "params": "params",  # trainable parameters (the paper's)
    "flops": "flops",  # FLOPs per sample, 2 x MACs (n2n_fx.graph.cost)
    "latency": "latency_ms",  # median batch-1 forward time on the run's device
}


@dataclass(frozen=True)
class Objective:
    """``C = 1 − student / teacher`` on the quantity ``OBJECTIVES[name]``."""

    name: str  # "params", "flops" or "latency"
    teacher: float  # the teacher's value of that quantity (its parameters, FLOPs or latency in ms)

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ConfigError(f"objective {self.name!r} must be one of {', '.join(OBJECTIVES)}")
        if not self.teacher > 0:
            raise ConfigError(f"the teacher's {self.quantity} is {self.teacher!r}; the objective needs it positive")

    @classmethod
    def of(cls, name: str, teacher: Mapping[str, float]) -> Objective:
        """The objective ``name`` normalised by the teacher's measured quantities (a dict by quantity).

        Example:
            >>> Objective.of("latency", {"params": 5e4, "flops": 2e6, "latency_ms": 1.5}).teacher
            1.5
        """
        if name not in OBJECTIVES:
            raise ConfigError(f"objective {name!r} must be one of {', '.join(OBJECTIVES)}")
        value = teacher.get(OBJECTIVES[name])
        if value is None:
            raise ConfigError(f"objective {name!r} needs the teacher's {OBJECTIVES[name]}, which was not measured")
        return cls(name, float(value))

    @property
    def quantity(self) -> str:
        """The measured quantity C is computed on (``params``, ``flops`` or ``latency_ms``)."""
        return OBJECTIVES[self.name]

    def compression(self, quantities: Mapping[str, float]) -> float:
        """``1 − student / teacher`` on this objective's quantity of ``quantities`` (the student's)."""
        value = quantities.get(self.quantity)
        if value is None:
            raise ConfigError(f"objective {self.name!r} needs the student's {self.quantity}, which was not measured")
        if value < 0:
            raise ConfigError(f"the student's {self.quantity} is {value!r}; it must be >= 0")
        return 1.0 - float(value) / self.teacher
