"""``nn.Linear``: weights index the last axis of its input; starts a channel space."""

from __future__ import annotations

import copy

import torch
from torch import nn

from .kind import Kind
from .spec import LayerSpec, RebuildContext, Rebuilt, register_layer
from .tensors import gather, gather2, identity, set_param, shell

__all__ = ["LinearSpec", "linear_rows", "linear_columns"]


def linear_rows(m: nn.Linear, rows: torch.Tensor) -> nn.Linear:
    """A copy of ``m`` with only the output features ``rows`` (weights and bias gathered)."""
    new = shell(m)
    new.out_features = rows.numel()
    set_param(new, "weight", m.weight.detach().index_select(0, rows))
    if m.bias is not None:
        set_param(new, "bias", m.bias.detach().index_select(0, rows))
    return new


def linear_columns(m: nn.Linear, cols: torch.Tensor) -> nn.Linear:
    """A copy of ``m`` reading only the input features ``cols`` (bias kept)."""
    new = shell(m)
    new.in_features = cols.numel()
    set_param(new, "weight", m.weight.detach().index_select(1, cols))
    if m.bias is not None:
        set_param(new, "bias", m.bias.detach().clone())
    return new


@register_layer(nn.Linear)
class LinearSpec(LayerSpec):
    weight_axis = -1
    kind = Kind.LINEAR

    def out_shape(self, m: nn.Linear, x: torch.Tensor) -> torch.Size:
        if x.dim() < 1 or x.shape[-1] != m.in_features:
            raise RuntimeError(f"Linear expects {m.in_features} input features, got input {tuple(x.shape)}")
        return torch.Size((*x.shape[:-1], m.out_features))

    def flops(self, m: nn.Linear, args: tuple, out: torch.Tensor) -> int:
        return 2 * out.numel() * m.in_features

    def importance(self, m: nn.Linear) -> torch.Tensor:
        return m.weight.detach().abs().sum(1).float()

    def input_use(self, m: nn.Linear) -> torch.Tensor:
        return m.weight.detach().abs().sum(0)

    def rebuild(self, m: nn.Linear, ctx: RebuildContext) -> Rebuilt:
        out_idx = ctx.out_idx if ctx.out_idx is not None else torch.arange(m.out_features)
        if identity(out_idx, m.out_features) and identity(ctx.in_idx, m.in_features):
            return Rebuilt(copy.deepcopy(m), out_idx)
        new = shell(m)
        new.in_features, new.out_features = ctx.in_size, out_idx.numel()
        with torch.no_grad():
            w = m.weight.detach()
            neww = gather2(w, out_idx, ctx.in_idx)
            set_param(new, "weight", neww.clone() if neww is w else neww)
            if m.bias is not None:
                set_param(new, "bias", gather(m.bias.detach(), out_idx, 0))
        return Rebuilt(new, out_idx)
