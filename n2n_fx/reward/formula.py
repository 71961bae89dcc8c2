"""The N2N reward (paper §3.3): R = C(2 − C) · A / A_teacher, and −1 for degenerate students.

``chance`` (the accuracy of always answering the most common class) makes the accuracy term
count only what a student knows beyond guessing: ``R_a = (A − chance) / (A_teacher − chance)``.
With the paper's plain ratio a student at chance level still earns ``0.1 · C(2 − C)`` on ten
classes, and the more layers it loses the more it earns: with cheap rewards most students of a
fresh policy are near chance, and a removal policy learned to remove 18 of 24 layers for a
reliable 0.08 (the default run, docs/usage.md). Above chance, such students are worth 0.
``chance=0`` is the paper's formula. It is the reward function ``paper`` (``registry``), the default.
"""

from __future__ import annotations

import math

from ..errors import ConfigError
from .registry import register_reward

__all__ = ["DEGENERATE_REWARD", "check_chance", "compression", "n2n_reward"]

DEGENERATE_REWARD = -1.0  # reward of a degenerate student (appendix 11.2) and the floor of all rewards


def compression(student_params: int, teacher_params: int) -> float:
    """Relative compression ``C = 1 − params_student / params_teacher`` (always vs the original teacher).

    Example:
        >>> compression(250, 1000)
        0.75
    """
    if teacher_params <= 0:
        raise ConfigError(f"teacher_params={teacher_params} must be positive")
    if student_params < 0:
        raise ConfigError(f"student_params={student_params} must be >= 0")
    return 1.0 - student_params / teacher_params


def check_chance(teacher_accuracy: float, chance: float) -> None:
    """Refuse a chance level the teacher does not beat: then no student can earn accuracy."""
    if not 0 <= chance < teacher_accuracy:
        raise ConfigError(
            f"teacher accuracy {teacher_accuracy:.4f} is not above chance ({chance:.4f}); "
            "train a better teacher before compressing it (or score students with --reward-accuracy ratio)"
        )


@register_reward("paper")
def n2n_reward(accuracy: float, teacher_accuracy: float, compression_ratio: float, chance: float = 0.0) -> float:
    """``R = R_c · R_a = C(2 − C) · (A − chance) / (A_teacher − chance)``, floored at −1.

    ``R_c = C(2 − C)`` rewards compression with diminishing returns, so a small accurate
    student beats a tiny inaccurate one (appendix 11.1). A student larger than its
    teacher (C < 0) gets a negative R_c; the floor keeps it no worse than degenerate.
    ``chance`` 0 is the paper's ``A / A_teacher``; above it, ``R_a`` counts accuracy beyond
    guessing, and a student no better than chance gets ``R_a = 0``.

    Example:
        >>> n2n_reward(0.9, 0.9, 0.25)  # appendix 11.1 case 1: 0.25 * 1.75 * 1
        0.4375
        >>> n2n_reward(0.225, 0.9, 1.0)  # case 2: relative accuracy 0.25, C = 1
        0.25
        >>> round(n2n_reward(0.55, 1.0, 0.5, chance=0.1), 6)  # 0.75 * (0.45 / 0.9)
        0.375
    """
    check_chance(teacher_accuracy, chance)
    if not (math.isfinite(accuracy) and math.isfinite(compression_ratio)):
        return DEGENERATE_REWARD
    c = compression_ratio
    relative = max(0.0, accuracy - chance) / (teacher_accuracy - chance)
    return max(DEGENERATE_REWARD, c * (2.0 - c) * relative)
