"""The N2N reward (paper §3.3): R = C(2 − C) · A / A_teacher, and −1 for degenerate students."""

from __future__ import annotations

import math

from ..errors import ConfigError

__all__ = ["DEGENERATE_REWARD", "compression", "n2n_reward"]

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


def n2n_reward(accuracy: float, teacher_accuracy: float, compression_ratio: float) -> float:
    """``R = R_c · R_a = C(2 − C) · A / A_teacher``, floored at −1.

    ``R_c = C(2 − C)`` rewards compression with diminishing returns, so a small accurate
    student beats a tiny inaccurate one (appendix 11.1). A student larger than its
    teacher (C < 0) gets a negative R_c; the floor keeps it no worse than degenerate.

    Example:
        >>> n2n_reward(0.9, 0.9, 0.25)  # appendix 11.1 case 1: 0.25 * 1.75 * 1
        0.4375
        >>> n2n_reward(0.225, 0.9, 1.0)  # case 2: relative accuracy 0.25, C = 1
        0.25
    """
    if teacher_accuracy <= 0:
        raise ConfigError(f"teacher_accuracy={teacher_accuracy} must be positive")
    if not (math.isfinite(accuracy) and math.isfinite(compression_ratio)):
        return DEGENERATE_REWARD
    c = compression_ratio
    return max(DEGENERATE_REWARD, c * (2.0 - c) * accuracy / teacher_accuracy)
