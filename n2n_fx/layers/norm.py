"""Normalisations and PReLU: per-channel weights, output shape = input shape, channels kept."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from .kind import Kind
from .spec import LayerSpec, RebuildContext, Rebuilt, register_layer
from .tensors import gather, identity, set_buffer, set_param, shell

__all__ = ["BatchNormSpec", "InstanceNormSpec", "LayerNormSpec", "GroupNormSpec", "PReLUSpec"]


def _norm_base_rebuild(m: nn.modules.batchnorm._NormBase, ctx: RebuildContext) -> Rebuilt:
    """BatchNorm / InstanceNorm: gather scales (missing: 1), shifts and running stats (0 / 1)."""
    if identity(ctx.in_idx, m.num_features):
        return Rebuilt(copy.deepcopy(m), None)
    new = shell(m)
    new.num_features = ctx.in_size
    with torch.no_grad():
        if m.weight is not None:
            set_param(new, "weight", gather(m.weight.detach(), ctx.in_idx, 0, 1.0))
        if m.bias is not None:
            set_param(new, "bias", gather(m.bias.detach(), ctx.in_idx, 0, 0.0))
        if m.running_mean is not None:
            set_buffer(new, "running_mean", gather(m.running_mean, ctx.in_idx, 0, 0.0))
        if m.running_var is not None:
            set_buffer(new, "running_var", gather(m.running_var, ctx.in_idx, 0, 1.0))
        if getattr(m, "num_batches_tracked", None) is not None:
            set_buffer(new, "num_batches_tracked", m.num_batches_tracked.clone())
    return Rebuilt(new, None)


@register_layer(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
class BatchNormSpec(LayerSpec):
    weight_axis = 1
    kind = Kind.BATCHNORM
    same_shape = True

    def check(self, m: nn.modules.batchnorm._NormBase, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != m.num_features:
            raise RuntimeError(f"{type(m).__name__} expects {m.num_features} channels, got input {tuple(x.shape)}")

    def rebuild(self, m: nn.modules.batchnorm._NormBase, ctx: RebuildContext) -> Rebuilt:
        return _norm_base_rebuild(m, ctx)


@register_layer(nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d)
class InstanceNormSpec(LayerSpec):
    weight_axis = 1
    kind = Kind.NORM
    same_shape = True

    def rebuild(self, m: nn.modules.batchnorm._NormBase, ctx: RebuildContext) -> Rebuilt:
        return _norm_base_rebuild(m, ctx)


@register_layer(nn.LocalResponseNorm)
class LocalResponseNormSpec(LayerSpec):
    kind = Kind.NORM
    same_shape = True


@register_layer(nn.LayerNorm)
class LayerNormSpec(LayerSpec):
    """LayerNorm over the last axis; over more axes it pins them (the walk then never changes them)."""

    weight_axis = -1
    kind = Kind.NORM
    same_shape = True

    def check(self, m: nn.LayerNorm, x: torch.Tensor) -> None:
        if tuple(x.shape[-len(m.normalized_shape) :]) != tuple(m.normalized_shape):
            raise RuntimeError(f"LayerNorm over {tuple(m.normalized_shape)} got input {tuple(x.shape)}")

    def rebuild(self, m: nn.LayerNorm, ctx: RebuildContext) -> Rebuilt:
        if len(m.normalized_shape) != 1:
            return super().rebuild(m, ctx)
        if identity(ctx.in_idx, m.normalized_shape[0]):
            return Rebuilt(copy.deepcopy(m), None)
        new = shell(m)
        new.normalized_shape = (ctx.in_size,)
        with torch.no_grad():
            if m.weight is not None:
                set_param(new, "weight", gather(m.weight.detach(), ctx.in_idx, 0, 1.0))
            if m.bias is not None:
                set_param(new, "bias", gather(m.bias.detach(), ctx.in_idx, 0, 0.0))
        return Rebuilt(new, None)


@register_layer(nn.GroupNorm)
class GroupNormSpec(LayerSpec):
    weight_axis = 1
    kind = Kind.NORM
    same_shape = True

    def check(self, m: nn.GroupNorm, x: torch.Tensor) -> None:
        if x.dim() < 2 or x.shape[1] != m.num_channels:
            raise RuntimeError(f"GroupNorm expects {m.num_channels} channels, got input {tuple(x.shape)}")

    def rebuild(self, m: nn.GroupNorm, ctx: RebuildContext) -> Rebuilt:
        if identity(ctx.in_idx, m.num_channels):
            return Rebuilt(copy.deepcopy(m), None)
        groups = math.gcd(m.num_groups, ctx.in_size)
        new = shell(m)
        new.num_groups, new.num_channels = groups, ctx.in_size
        with torch.no_grad():
            if m.affine:
                set_param(new, "weight", gather(m.weight.detach(), ctx.in_idx, 0, 1.0))
                set_param(new, "bias", gather(m.bias.detach(), ctx.in_idx, 0, 0.0))
        if groups != m.num_groups:
            ctx.notes.append(f"num_groups {m.num_groups}->{groups}")
        return Rebuilt(new, None)


@register_layer(nn.PReLU)
class PReLUSpec(LayerSpec):
    """PReLU: one slope per channel (or one shared slope)."""

    weight_axis = 1
    kind = Kind.RELU
    same_shape = True

    def check(self, m: nn.PReLU, x: torch.Tensor) -> None:
        if m.num_parameters > 1 and (x.dim() < 2 or x.shape[1] != m.num_parameters):
            raise RuntimeError(f"PReLU expects {m.num_parameters} channels, got input {tuple(x.shape)}")

    def rebuild(self, m: nn.PReLU, ctx: RebuildContext) -> Rebuilt:
        if m.num_parameters == 1 or identity(ctx.in_idx, m.num_parameters):
            return Rebuilt(copy.deepcopy(m), None)
        new = shell(m)
        new.num_parameters = ctx.in_size
        with torch.no_grad():
            set_param(new, "weight", gather(m.weight.detach(), ctx.in_idx, 0, 0.25))
        return Rebuilt(new, None)
