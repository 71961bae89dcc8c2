"""Feature matrices for the policies.

``raw_features`` is the paper's x_t = (l, k, s, p, n, s_start, s_end) per layer (§3.2.1).
``policy_input`` normalises it so that it does not depend on which teacher it came from:
a one-hot layer type over the fixed ``Kind`` vocabulary, scaled kernel/stride/padding,
log-scaled outputs and skip positions, the relative depth, whether the layer is fixed, and
(beyond the paper) the layer's share of the network's parameters and of its FLOPs. The shares
tell a policy which layers the compression term of the reward depends on: on vgg_tiny the last
conv holds 48 % of the parameters but its row was otherwise its neighbour's with another depth,
and 40 updates of 5 students did not teach a removal policy to tell them apart (docs/usage.md).
A policy trained on one teacher therefore runs on any other (transfer, paper §4.6).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..graph.layers import VARIABLES, Layer, kernel_after
from ..layers import KINDS

__all__ = [
    "RAW_COLUMNS",
    "FEATURE_DIM",
    "N_SCALARS",
    "RATIOS",
    "ShrinkStep",
    "raw_features",
    "policy_input",
    "removal_mask",
    "shrink_steps",
    "shrink_input",
]

RAW_COLUMNS = ("type", "kernel", "stride", "padding", "outputs", "s_start", "s_end")
# k, s, p, log n, log s_start, log s_end, relative depth, fixed flag, params share, FLOPs share;
# scalars are only ever appended (a saved policy gets zero weights on new ones: n2n_fx.policy.vocabulary)
N_SCALARS = 10
FEATURE_DIM = len(KINDS) + N_SCALARS
RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 11))  # shrink action grid (paper §3.2.2)


def raw_features(layers: list[Layer]) -> np.ndarray:
    """The paper's state matrix: one row (type code, k, s, p, n, s_start, s_end) per layer.

    Example:
        >>> from n2n_fx import find_layers, trace
        >>> raw_features(find_layers(trace("resnet18", input_size=(3, 32, 32)))).shape
        (60, 7)
    """
    rows = [(lay.kind.code, lay.kernel, lay.stride, lay.padding, lay.out, lay.s_start, lay.s_end) for lay in layers]
    return np.asarray(rows, dtype=np.int64).reshape(len(layers), len(RAW_COLUMNS))


def _log_scaled(v: int, top: float) -> float:
    return math.log2(1 + max(0, v)) / top


def policy_input(layers: list[Layer]) -> torch.Tensor:
    """Normalised policy input ``x  # (L, FEATURE_DIM)`` (float32)."""
    x = torch.zeros(len(layers), FEATURE_DIM)
    n = max(1, len(layers) - 1)
    params = max(1, sum(lay.params for lay in layers))
    flops = max(1, sum(lay.flops for lay in layers))
    for i, lay in enumerate(layers):
        x[i, lay.kind.code] = 1.0
        c = len(KINDS)
        x[i, c + 0] = min(lay.kernel, 11) / 7.0
        x[i, c + 1] = min(lay.stride, 8) / 4.0
        x[i, c + 2] = min(lay.padding, 8) / 3.0
        x[i, c + 3] = _log_scaled(lay.out, 12.0)
        x[i, c + 4] = _log_scaled(lay.s_start, 6.0)
        x[i, c + 5] = _log_scaled(lay.s_end, 6.0)
        x[i, c + 6] = i / n
        x[i, c + 7] = 0.0 if lay.removable else 1.0
        x[i, c + 8] = lay.params / params
        x[i, c + 9] = lay.flops / flops
    return x


def removal_mask(layers: list[Layer], passive: bool = False) -> torch.Tensor:
    """The layers the removal policy decides, ``(L,)`` bool: the removable ones, without the passive
    ones (norms, activations, gates, dropout: ``Kind.passive``) unless ``passive``.

    Passive layers cost (next to) nothing, so removing one alone earns no compression; deciding
    them anyway gave vgg_tiny's policy 22 noisy decisions instead of 9, and 40 updates of 5
    students did not learn which mattered (docs/usage.md).

    Example:
        >>> from n2n_fx import find_layers, trace
        >>> layers = find_layers(trace("resnet18", input_size=(3, 32, 32)))
        >>> int(removal_mask(layers).sum()), int(removal_mask(layers, passive=True).sum())
        (21, 58)
    """
    return torch.tensor([lay.removable and (passive or not lay.kind.passive) for lay in layers], dtype=torch.bool)


@dataclass(frozen=True)
class ShrinkStep:
    """One action of the shrink policy: a ratio for one variable of one layer."""

    layer: int  # index into the layer list
    node: str  # the layer's node name
    variable: str  # "out", "kernel" or "heads"
    legal: tuple[bool, ...]  # which ratios in ``ratios`` may be chosen (1.0 always)


def _distinct(ratios: tuple[float, ...], full: int, outcome) -> tuple[bool, ...]:
    """One legal ratio per distinct result: ``outcome(r)`` (a size, or None where ``r`` is impossible)
    is what ratio ``r`` gives; of the ratios giving the same size, only the one nearest the size's
    true ratio ``size / full`` is legal (ties: the larger), and 1.0 always is.

    Without this a 3x3 kernel would read 8 of the 10 ratios as "make it 1x1" (0.1-0.8 all round to
    1): a fresh shrink policy then destroyed some conv's kernel in almost every student (5 convs:
    all kept in 2 % of draws), and random search drew mostly such students. Equivalent actions
    are one action; each legal ratio says what it does."""
    best: dict[int, float] = {}
    for r in sorted(ratios):  # ascending: on a tie the later, larger ratio wins
        size = full if r == 1.0 else outcome(r)
        if size is None:
            continue
        true = size / max(1, full)
        cur = best.get(size)
        if cur is None or abs(r - true) <= abs(cur - true) + 1e-9:
            best[size] = r
    chosen = set(best.values())
    return tuple(r == 1.0 or r in chosen for r in ratios)


def _kept_of(n: int):
    """``r -> round(r * n)``, the count a ratio keeps of ``n`` (channels, heads); None where that is 0."""
    return lambda r: round(r * n) or None


def _legal_out(lay: Layer, ratios: tuple[float, ...], groups: int) -> tuple[bool, ...]:
    per_group = lay.out // max(1, groups)  # the surgery keeps max(1, round(r * per_group)) per group
    return _distinct(ratios, per_group, _kept_of(per_group))


def _legal_heads(lay: Layer, ratios: tuple[float, ...]) -> tuple[bool, ...]:
    return _distinct(ratios, lay.heads, _kept_of(lay.heads))


def _legal_kernel(lay: Layer, ratios: tuple[float, ...]) -> tuple[bool, ...]:
    def side(r: float) -> int | None:
        new = kernel_after(lay.kernel, lay.padding, 1, r)
        return None if new is None else new[0]

    return _distinct(ratios, lay.kernel, side)


def shrink_steps(
    layers: list[Layer],
    ratios: tuple[float, ...] = RATIOS,
    groups: dict[str, int] | None = None,
    *,
    kernels: bool = True,
) -> list[ShrinkStep]:
    """The shrink trajectory: one step per configurable variable of each layer (paper T = Σ H_l);
    ``kernels=False`` leaves kernel sizes out (a channels-and-heads-only space)."""
    groups = groups or {}
    steps = []
    for lay in layers:
        for var in lay.shrinkable:
            if var == "kernel" and not kernels:
                continue
            if var == "out":
                legal = _legal_out(lay, ratios, groups.get(lay.node, 1))
            elif var == "heads":
                legal = _legal_heads(lay, ratios)
            else:
                legal = _legal_kernel(lay, ratios)
            steps.append(ShrinkStep(lay.index, lay.node, var, legal))
    return steps


def shrink_input(layers: list[Layer], steps: list[ShrinkStep]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tensors for the shrink policy: features ``(T, F)``, variable ids ``(T,)``, legal mask ``(T, R)``."""
    x = policy_input(layers)
    if not steps:
        return (
            x[:0],
            torch.zeros(0, dtype=torch.long),
            torch.zeros(0, len(RATIOS), dtype=torch.bool),
        )
    idx = torch.tensor([s.layer for s in steps])
    var = torch.tensor([VARIABLES.index(s.variable) for s in steps])
    legal = torch.tensor([s.legal for s in steps], dtype=torch.bool)
    return x[idx], var, legal
