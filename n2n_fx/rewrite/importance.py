"""Channel importance: which channels of a coupled space to keep when shrinking."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import fx

from ..graph.channels import ChannelClass
from ..graph.kinds import module_at
from ..layers import spec_for

__all__ = ["Importance", "l1_importance", "keep_indices"]

# f(gm, channel class) -> score per channel (higher = keep), shape (class.size,)
Importance = Callable[[fx.GraphModule, ChannelClass], torch.Tensor]


def l1_importance(gm: fx.GraphModule, cls: ChannelClass) -> torch.Tensor:
    """Sum over the space's producers of each output filter's L1 norm (each producer normalised).

    A producer's per-filter score is its ``LayerSpec.importance``.

    Example:
        >>> from n2n_fx import analyze, trace
        >>> analysis = analyze(trace("conv4", input_size=(1, 16, 16)))
        >>> scores = l1_importance(analysis.gm, analysis.spaces.class_of("features_0"))
        >>> tuple(scores.shape), bool((scores > 0).all())  # one score per output channel of features.0
        ((32,), True)
    """
    score = torch.zeros(cls.size)
    nodes = {n.name: n for n in gm.graph.nodes}
    for name in cls.producers:
        node = nodes.get(name)
        if node is None or node.op != "call_module":
            continue
        mod = module_at(gm, node.target)
        s = spec_for(mod).importance(mod)  # (C_out,) per-filter L1, or None
        if s is None or s.numel() != cls.size:
            continue
        score += s / s.mean().clamp_min(1e-12)
    return score


def keep_indices(score: torch.Tensor, ratio: float, groups: int = 1) -> torch.Tensor:
    """Sorted indices of the channels to keep: the top ``ratio`` share of each group."""
    size = score.numel()
    per = size // groups
    n = max(1, round(ratio * per))
    kept = []
    for g in range(groups):
        part = score[g * per : (g + 1) * per]
        top = torch.topk(part, n, largest=True, sorted=False).indices + g * per
        kept.append(top)
    return torch.sort(torch.cat(kept)).values
