"""Degenerate students: the fixed set of reasons a rewrite gives no usable model (paper appendix 11.2)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Reason", "Degenerate"]


class Reason(str, enum.Enum):
    """Why a student is degenerate. Its reward is -1."""

    EMPTY = "empty"  # every removable layer was removed
    NO_TRAINABLE = "no_trainable"  # no trainable parameter is left
    OVERSIZED_LINEAR = "oversized_linear"  # a Linear's input grew past the configured limit
    UNREPAIRABLE = "unrepairable"  # shapes could not be repaired after the change
    OUTPUT_MISMATCH = "output_mismatch"  # the output shape differs from the teacher's
    LARGER_THAN_TEACHER = "larger_than_teacher"  # more parameters than the teacher
    DIVERGED = "diverged"  # training produced NaN/inf (set by distillation)
    FAILED = "failed"  # evaluation failed (worker crash, out of memory), set by executors


@dataclass(frozen=True)
class Degenerate:
    """A degenerate outcome: the reason code and a one-line detail."""

    reason: Reason  # the category
    detail: str  # what exactly went wrong, one line

    def __str__(self) -> str:
        return f"{self.reason.value}: {self.detail}"
