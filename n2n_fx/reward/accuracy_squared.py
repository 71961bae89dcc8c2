"""``accuracy_squared``: the paper's reward with the accuracy term squared, ``R = C(2 − C) · R_a²``.

For users who cannot give up accuracy. Under the paper's ``C(2 − C) · R_a`` a point of relative
accuracy and a point of ``R_c`` are worth the same, so the search gladly trades accuracy for
compression: at ``C = 0.9`` (``R_c = 0.99``) a student at 97 % of the teacher's accuracy ties with a
student at ``C = 0.8`` (``R_c = 0.96``) that keeps all of it (0.960 vs 0.960). Squared, each point
of relative accuracy costs about two points of reward (0.931 vs 0.960), so the search stops
compressing where accuracy starts to fall. Compression still has diminishing returns (``R_c``),
a student at chance still earns 0 (``R_a`` above chance), and rankings among students of equal
accuracy are the paper's.
"""

from __future__ import annotations

import math

from .formula import DEGENERATE_REWARD, check_chance
from .registry import register_reward

__all__ = ["accuracy_squared"]


@register_reward("accuracy_squared")
def accuracy_squared(accuracy: float, teacher_accuracy: float, compression: float, chance: float = 0.0) -> float:
    """``C(2 − C) · ((A − chance) / (A_teacher − chance))²``, floored at −1.

    Example:
        >>> round(accuracy_squared(0.873, 0.9, 0.9), 4)  # 0.99 * 0.97 ** 2
        0.9315
        >>> accuracy_squared(0.9, 0.9, 0.8)  # all of the teacher's accuracy: the paper's reward
        0.96
    """
    check_chance(teacher_accuracy, chance)
    if not (math.isfinite(accuracy) and math.isfinite(compression)):
        return DEGENERATE_REWARD
    relative = max(0.0, accuracy - chance) / (teacher_accuracy - chance)
    return max(DEGENERATE_REWARD, compression * (2.0 - compression) * relative**2)
