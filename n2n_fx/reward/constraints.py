"""Resource constraints ``A x ≤ b`` over measured quantities, and the penalty for breaking them (§3.3.1).

``x`` holds a student's measured quantities, in the order of ``QUANTITIES``: trainable
parameters, FLOPs per sample, batch-1 CPU latency in milliseconds and peak activation
bytes (see ``n2n_fx.reward.measure``). A violated constraint changes the reward by mode:
``anneal`` gives ``ε_t (R + 1) − 1`` with ``ε_0 = 1`` decreasing in the search iteration
``t``, ``hard`` gives −1 and ``none`` ignores the constraints.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ..errors import ConfigError
from .formula import DEGENERATE_REWARD

__all__ = ["QUANTITIES", "LinearConstraint", "Constraints", "Penalty", "PENALTY_MODES", "SCHEDULES"]

QUANTITIES = ("params", "flops", "latency_ms", "activation_bytes")  # columns of A

# mode -> what a violated constraint does to the reward R
PENALTY_MODES = {
    "anneal": "eps_t * (R + 1) - 1, eps_0 = 1 decreasing with t (paper §3.3.1)",
    "hard": "-1",
    "none": "R (constraints ignored)",
}
# schedule -> eps_t for t = 0, 1, ... with horizon N
SCHEDULES = {
    "linear": "max(0, 1 - t / N)",
    "exponential": "final ** (t / N): 1 at t = 0, `final` at t = N",
}


def _fmt(v: float) -> str:
    return f"{v:g}"


@dataclass(frozen=True)
class LinearConstraint:
    """One row of ``A x ≤ b``."""

    coeffs: tuple[float, ...]  # row of A, one coefficient per entry of QUANTITIES
    bound: float  # b: the row holds when sum(coeffs * x) <= bound
    label: str = ""  # readable form for reports, e.g. "params <= 1e+06"

    def __post_init__(self) -> None:
        if len(self.coeffs) != len(QUANTITIES):
            raise ConfigError(f"a constraint row needs {len(QUANTITIES)} coefficients ({', '.join(QUANTITIES)})")
        if not all(math.isfinite(c) for c in self.coeffs) or not math.isfinite(self.bound):
            raise ConfigError(f"constraint {self.describe()} has a non-finite coefficient or bound")
        if all(c == 0 for c in self.coeffs):
            raise ConfigError(f"constraint row {self.describe()} has no nonzero coefficient; remove it")
        if all(c >= 0 for c in self.coeffs) and self.bound <= 0:
            raise ConfigError(
                f"constraint {self.describe()} is impossible (every quantity is positive); raise its bound above 0"
            )

    @property
    def quantities(self) -> tuple[str, ...]:
        """Quantities with a nonzero coefficient."""
        return tuple(q for q, c in zip(QUANTITIES, self.coeffs, strict=True) if c != 0)

    def describe(self) -> str:
        if self.label:
            return self.label
        terms = [(q if c == 1 else f"{_fmt(c)}*{q}") for q, c in zip(QUANTITIES, self.coeffs, strict=True) if c != 0]
        return f"{' + '.join(terms) or '0'} <= {_fmt(self.bound)}"

    def value(self, x: Mapping[str, float]) -> float:
        """``A_row · x``; ConfigError if a needed quantity was not measured."""
        missing = [q for q in self.quantities if x.get(q) is None]
        if missing:
            raise ConfigError(f"constraint {self.describe()} needs {missing}, which were not measured")
        return sum(c * float(x[q]) for q, c in zip(QUANTITIES, self.coeffs, strict=True) if c != 0)

    def holds(self, x: Mapping[str, float]) -> bool:
        return self.value(x) <= self.bound


@dataclass(frozen=True)
class Constraints:
    """A set of rows ``A x ≤ b``; empty means unconstrained.

    Example:
        >>> c = Constraints.from_limits(max_params=1e6, max_flops=2e8)
        >>> c.violations({"params": 2e6, "flops": 1e8})
        ['params <= 1e+06']
    """

    rows: tuple[LinearConstraint, ...] = ()  # every row must hold

    @classmethod
    def from_limits(
        cls,
        *,
        max_params: float | None = None,
        max_flops: float | None = None,
        max_latency_ms: float | None = None,
        max_activation_bytes: float | None = None,
        rows: Sequence[tuple[Mapping[str, float] | Sequence[float], float]] = (),
    ) -> Constraints:
        """Upper limits on single quantities plus general rows ``(A_row, b)``.

        A row's ``A_row`` is a mapping quantity -> coefficient or a sequence in
        ``QUANTITIES`` order. A limit ``<= 0`` is impossible and raises ConfigError.
        """
        out: list[LinearConstraint] = []
        limits = {
            "params": max_params,
            "flops": max_flops,
            "latency_ms": max_latency_ms,
            "activation_bytes": max_activation_bytes,
        }
        for q, limit in limits.items():
            if limit is None:
                continue
            if not math.isfinite(limit) or limit <= 0:
                raise ConfigError(f"max_{q}={limit} is impossible; give a positive limit")
            coeffs = tuple(1.0 if name == q else 0.0 for name in QUANTITIES)
            out.append(LinearConstraint(coeffs, float(limit), f"{q} <= {_fmt(float(limit))}"))
        for row, bound in rows:
            out.append(LinearConstraint(_row(row), float(bound)))
        return cls(tuple(out))

    @classmethod
    def from_matrix(cls, A: Sequence[Sequence[float]], b: Sequence[float]) -> Constraints:
        """Rows of ``A`` (columns in ``QUANTITIES`` order) with bounds ``b``."""
        if len(A) != len(b):
            raise ConfigError(f"A has {len(A)} rows but b has {len(b)} entries; give one bound per row")
        return cls(tuple(LinearConstraint(_row(row), float(v)) for row, v in zip(A, b, strict=True)))

    def __bool__(self) -> bool:
        return bool(self.rows)

    @property
    def quantities(self) -> frozenset[str]:
        """Quantities some row depends on (what must be measured)."""
        return frozenset(q for row in self.rows for q in row.quantities)

    def violations(self, x: Mapping[str, float]) -> list[str]:
        """Descriptions of the rows that ``x`` breaks."""
        return [row.describe() for row in self.rows if not row.holds(x)]

    def satisfied(self, x: Mapping[str, float]) -> bool:
        return not self.violations(x)

    def describe(self) -> list[str]:
        return [row.describe() for row in self.rows]


def _row(row: Mapping[str, float] | Sequence[float]) -> tuple[float, ...]:
    if isinstance(row, Mapping):
        unknown = set(row) - set(QUANTITIES)
        if unknown:
            raise ConfigError(f"unknown constrained quantities {sorted(unknown)}; use {', '.join(QUANTITIES)}")
        return tuple(float(row.get(q, 0.0)) for q in QUANTITIES)
    values = tuple(float(v) for v in row)
    if len(values) != len(QUANTITIES):
        raise ConfigError(f"a constraint row needs {len(QUANTITIES)} coefficients ({', '.join(QUANTITIES)})")
    return values


@dataclass(frozen=True)
class Penalty:
    """What a violated constraint does to the reward, and how ``ε_t`` decays.

    Example:
        >>> p = Penalty("anneal", "linear", horizon=10)
        >>> p.epsilon(0), p.epsilon(5), p.apply(0.5, satisfied=False, t=5)
        (1.0, 0.5, -0.25)
    """

    mode: str = "anneal"  # "anneal", "hard" or "none" (see PENALTY_MODES)
    schedule: str = "linear"  # how ε_t falls from 1: "linear" or "exponential" (see SCHEDULES)
    horizon: int = 100  # N: search iterations over which ε_t decays
    final: float = 0.01  # ε_N of the exponential schedule (0 < final < 1)

    def __post_init__(self) -> None:
        if self.mode not in PENALTY_MODES:
            raise ConfigError(f"unknown penalty mode {self.mode!r}; use one of {sorted(PENALTY_MODES)}")
        if self.schedule not in SCHEDULES:
            raise ConfigError(f"unknown penalty schedule {self.schedule!r}; use one of {sorted(SCHEDULES)}")
        if self.horizon <= 0:
            raise ConfigError(f"penalty horizon={self.horizon} must be a positive number of iterations")
        if not 0 < self.final < 1:
            raise ConfigError(f"penalty final={self.final} must be in (0, 1)")

    def epsilon(self, t: int) -> float:
        """``ε_t``: 1 at t = 0, non-increasing in t, within [0, 1]."""
        t = max(int(t), 0)
        if self.schedule == "linear":
            return max(0.0, 1.0 - t / self.horizon)
        return self.final ** (t / self.horizon)

    def apply(self, reward: float, satisfied: bool, t: int) -> float:
        """The reward after the constraint penalty at search iteration ``t``."""
        if satisfied or self.mode == "none":
            return reward
        if self.mode == "hard":
            return DEGENERATE_REWARD
        return self.epsilon(t) * (reward + 1.0) - 1.0
