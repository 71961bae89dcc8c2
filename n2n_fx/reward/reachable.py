"""What stage 2 can still make of a stage-1 student: the size of its narrowest shrink.

A size limit removals alone cannot meet (VGG-13 asked for 127× fewer parameters: removing
layers down to 76 K parameters leaves an empty network) made every good stage-1 student
illegal, and stage 1 settled on a near-empty one that stage 2 could not repair (93.25 %, 5
points below the teacher). In a two-stage run stage 1 only chooses what stage 2 narrows, so a
stage-1 student is within a parameter or FLOPs limit when its narrowest shrink is: every
shrinkable variable at its smallest legal ratio (``supernet.smallest_actions``, the student
the shrink supernet trains as its narrowest).

Only parameter limits are judged so (``FLOOR_QUANTITIES``): FLOPs limits stay on the student
itself, since the default one (``max_flops_ratio``) exists to keep stage 1 from removing pooling
layers, which stage 2 cannot undo.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import fx

from ..features import RATIOS
from ..graph.layers import analyze
from ..rewrite import apply_actions
from ..supernet import smallest_actions
from .measure import count_flops, count_params

__all__ = ["FLOOR_QUANTITIES", "narrowest_cost"]

# the limits stage 1 judges on its students' narrowest shrinks
FLOOR_QUANTITIES = ("params",)


def narrowest_cost(
    student: fx.GraphModule,
    input_size: Sequence[int],
    *,
    ratios: Sequence[float] = RATIOS,
    max_linear_growth: float = 8.0,
    kernels: bool = True,
) -> dict[str, float]:
    """Parameters and per-sample FLOPs of ``student`` with every shrinkable variable at its smallest
    legal ratio (the student's own when nothing shrinks to a valid student); ``kernels=False``: kernel
    sizes kept, as a channels-only stage 2 keeps them.

    Example:
        >>> import torch
        >>> from torch import nn
        >>> from n2n_fx import trace
        >>> m = nn.Sequential(nn.Conv2d(1, 20, 3), nn.ReLU(), nn.Flatten(), nn.Linear(20 * 6 * 6, 10))
        >>> cost = narrowest_cost(trace(m, input_size=(1, 8, 8)), (1, 8, 8))
        >>> cost["params"] < sum(p.numel() for p in m.parameters())
        True
    """
    analysis = analyze(student)
    shrink = smallest_actions(analysis, ratios, kernels=kernels)["shrink"]
    narrow = student
    if shrink:
        r = apply_actions(analysis, shrink=shrink, strict=False, max_linear_growth=max_linear_growth)
        if r.valid:
            narrow = r.student
    return {"params": float(count_params(narrow)), "flops": float(count_flops(narrow, input_size))}
