"""Degenerate students: the one type that says why a student is unusable (paper appendix 11.2).

Surgery (``Rewrite.degenerate``), training (``DistillResult.degenerate``), the reward
(``RewardRecord.degenerate``) and the executors all carry a ``Degenerate``: a ``Reason``
from a fixed set and a one-line detail. Files hold its text, ``"reason: detail"``
(history rows, the reward cache, summaries), and ``Degenerate.parse`` reads it back.

Example:
    >>> d = Degenerate(Reason.DIVERGED, "loss nan at step 3")
    >>> str(d)
    'diverged: loss nan at step 3'
    >>> Degenerate.parse(str(d)) == d
    True
    >>> Degenerate.parse("diverged").reason is Reason.DIVERGED  # text written before details were given
    True
"""

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
    FAILED = "failed"  # training or evaluation failed (a runtime error, a worker crash), set by training and executors


@dataclass(frozen=True)
class Degenerate:
    """A degenerate outcome: the reason code and a one-line detail."""

    reason: Reason  # the category
    detail: str = ""  # what exactly went wrong, one line

    def __str__(self) -> str:
        """The text files hold: ``"reason: detail"`` (``"reason"`` without a detail)."""
        return f"{self.reason.value}: {self.detail}" if self.detail else self.reason.value

    @classmethod
    def parse(cls, text: str) -> Degenerate:
        """The ``Degenerate`` whose text is ``text``; ValueError naming the reasons for another text."""
        code, _, detail = text.partition(": ")
        try:
            return cls(Reason(code.strip()), detail.strip())
        except ValueError:
            known = ", ".join(r.value for r in Reason)
            raise ValueError(f"{text[:80]!r} is not a degenerate reason; it starts with one of {known}") from None

    @classmethod
    def of(cls, value: Degenerate | str) -> Degenerate:
        """``value`` as a ``Degenerate``: itself, or parsed from its text."""
        if isinstance(value, Degenerate):
            return value
        if isinstance(value, str):
            return cls.parse(value)
        raise TypeError(f"a degenerate marker is a Degenerate or its text, got {type(value).__name__}")
