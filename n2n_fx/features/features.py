"""Feature matrices for the policies.

``raw_features`` is the paper's x_t = (l, k, s, p, n, s_start, s_end) per layer (§3.2.1).
``policy_input`` normalises it so that it does not depend on which teacher it came from:
a one-hot layer type over the fixed ``Kind`` vocabulary, scaled kernel/stride/padding,
log-scaled outputs and skip positions, the relative depth, and whether the layer is fixed.
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
    "shrink_steps",
    "shrink_input",
]

RAW_COLUMNS = ("type", "kernel", "stride", "padding", "outputs", "s_start", "s_end")
N_SCALARS = 8  # k, s, p, log n, log s_start, log s_end, relative depth, fixed flag
FEATURE_DIM = len(KINDS) + N_SCALARS
RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 11))  # shrink action grid (paper §3.2.2)


def raw_features(layers: list[Layer]) -> np.ndarray:
    """The paper's state matrix: one row (type code, k, s, p, n, s_start, s_end) per layer.

    Example:
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
    return x


@dataclass(frozen=True)
class ShrinkStep:
    """One action of the shrink policy: a ratio for one variable of one layer."""

    layer: int  # index into the layer list
    node: str  # the layer's node name
    variable: str  # "out", "kernel" or "heads"
    legal: tuple[bool, ...]  # which ratios in ``ratios`` may be chosen (1.0 always)


def _legal_out(lay: Layer, ratios: tuple[float, ...], groups: int) -> tuple[bool, ...]:
    per_group = lay.out // max(1, groups)
    return tuple(r == 1.0 or round(r * per_group) >= 1 for r in ratios)


def _legal_heads(lay: Layer, ratios: tuple[float, ...]) -> tuple[bool, ...]:
    return tuple(r == 1.0 or round(r * lay.heads) >= 1 for r in ratios)


def _legal_kernel(lay: Layer, ratios: tuple[float, ...]) -> tuple[bool, ...]:
    return tuple(r == 1.0 or kernel_after(lay.kernel, lay.padding, 1, r) is not None for r in ratios)


def shrink_steps(
    layers: list[Layer], ratios: tuple[float, ...] = RATIOS, groups: dict[str, int] | None = None
) -> list[ShrinkStep]:
    """The shrink trajectory: one step per configurable variable of each layer (paper T = Σ H_l)."""
    groups = groups or {}
    steps = []
    for lay in layers:
        for var in lay.shrinkable:
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
