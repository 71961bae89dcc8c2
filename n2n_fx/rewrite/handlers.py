"""Per-layer-type rebuild handlers: make a module fit its new input, inheriting kept weights.

Each handler is registered once for a module type (a second registration raises). It
receives the teacher module and a ``RebuildContext`` saying which teacher channel each
student input channel corresponds to (or -1 for a channel with no teacher counterpart),
which output channels to keep, and any kernel or stride change; it returns the new
module and the output channel map. Missing weights are zero (inputs) or identity
(norm scales), so that inherited behaviour is preserved as far as possible.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import ConfigError, RepairError

__all__ = ["RebuildContext", "Rebuilt", "RepairError", "register_handler", "handler_for", "gather"]


@dataclass
class RebuildContext:
    """What a handler needs to rebuild one module."""

    in_idx: torch.Tensor  # (C_in',) teacher input channel per student input channel, -1 = none
    in_size: int  # student input channels (or features)
    out_idx: torch.Tensor | None  # (C_out',) teacher output channels to keep; None = decided by input
    coupled: bool  # output channels are the input channels (depthwise / grouped with in == out)
    kernel: tuple[tuple[int, ...], tuple[int, ...]] | None = None  # new (kernel_size, padding)
    stride: int | None = None  # new stride (moved from a removed layer)
    notes: list[str] = field(default_factory=list)  # what the handler changed, for the diff


@dataclass
class Rebuilt:
    module: nn.Module  # the student's module
    out_idx: torch.Tensor | None  # teacher index per output channel (-1 = none); None = same as input


_HANDLERS: dict[type, Callable[[nn.Module, RebuildContext], Rebuilt]] = {}


def register_handler(*types: type):
    """Register ``fn(module, ctx) -> Rebuilt`` for module types. Registering a type twice raises."""

    def deco(fn):
        for t in types:
            if t in _HANDLERS:
                raise ConfigError(f"a rebuild handler for {t.__name__} is already registered")
            _HANDLERS[t] = fn
        return fn

    return deco


def handler_for(module: nn.Module) -> Callable[[nn.Module, RebuildContext], Rebuilt]:
    fn = _HANDLERS.get(type(module))
    if fn is None:
        for t, f in _HANDLERS.items():
            if isinstance(module, t):
                return f
        return _generic
    return fn


def gather(t: torch.Tensor, idx: torch.Tensor, dim: int, fill: float = 0.0) -> torch.Tensor:
    """``t.index_select(dim, idx)`` where idx == -1 (or out of range) gives ``fill``."""
    idx = idx.to(torch.long)
    bad = (idx < 0) | (idx >= t.shape[dim])
    if not bool(bad.any()):
        return t.index_select(dim, idx)
    shape = list(t.shape)
    shape[dim] = 1
    padded = torch.cat([t, torch.full(shape, fill, dtype=t.dtype)], dim)
    return padded.index_select(dim, torch.where(bad, torch.full_like(idx, t.shape[dim]), idx))


def _shell(m: nn.Module) -> nn.Module:
    """A copy of ``m`` that shares nothing with it and holds none of its tensors yet.

    Made without running ``__init__`` (that allocates and initialises weights the caller
    replaces anyway): the instance dict is copied, its per-module dicts (parameters,
    buffers, submodules, hooks) are copied too, and the tensor entries are emptied. The
    caller sets every parameter and buffer of the new module (``_set``, ``_set_buffer``).
    """
    new = m.__class__.__new__(m.__class__)
    state = {k: (v.copy() if isinstance(v, dict) else v) for k, v in m.__dict__.items()}
    state["_parameters"] = dict.fromkeys(m._parameters)
    state["_buffers"] = dict.fromkeys(m._buffers)
    new.__dict__ = state
    return new


def _owned(value: torch.Tensor) -> torch.Tensor:
    """``value``, or a contiguous copy when it is a view (it may share the teacher's storage)."""
    if value._base is not None or not value.is_contiguous():
        return value.clone(memory_format=torch.contiguous_format)
    return value


def _set_buffer(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Give ``module`` its real buffer ``name``."""
    module._buffers[name] = _owned(value)


def _on_meta(cls: type, *args) -> nn.Module:
    """A module whose tensors live on meta until the caller sets each with ``_set``."""
    return cls(*args, device="meta")


def _set(module: nn.Module, name: str, value: torch.Tensor) -> None:
    """Give ``module`` its real parameter ``name`` (no allocation besides ``value`` itself)."""
    setattr(module, name, nn.Parameter(_owned(value), requires_grad=True))


def gather2(t: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
    """``t[rows][:, cols]`` in one gather (identity sides skipped); -1 entries give zeros."""
    if bool(((rows < 0) | (rows >= t.shape[0])).any()) or bool(((cols < 0) | (cols >= t.shape[1])).any()):
        return gather(gather(t, rows, 0), cols, 1)
    if _identity(rows, t.shape[0]):
        return t if _identity(cols, t.shape[1]) else t.index_select(1, cols)
    if _identity(cols, t.shape[1]):
        return t.index_select(0, rows)
    return t[rows[:, None], cols[None, :]]


def _identity(idx: torch.Tensor, n: int) -> bool:
    return idx.numel() == n and bool((idx == torch.arange(n)).all())


def _generic(module: nn.Module, ctx: RebuildContext) -> Rebuilt:
    has_params = any(True for _ in module.parameters())
    if has_params and not _identity(ctx.in_idx, _in_features(module, ctx)):
        raise RepairError(f"{type(module).__name__} has weights and no rebuild handler; its input changed")
    if _stateless_builtin(module):
        return Rebuilt(_shell(module), None)  # ReLU, pools, dropout, flatten: nothing to deep-copy
    return Rebuilt(copy.deepcopy(module), None)


def _stateless_builtin(m: nn.Module) -> bool:
    """A torch.nn module without tensors or children (its attributes are plain settings)."""
    return (
        type(m).__module__.startswith("torch.nn.modules.") and not m._parameters and not m._buffers and not m._modules
    )


def _in_features(module: nn.Module, ctx: RebuildContext) -> int:
    for attr in ("in_channels", "in_features", "num_features", "num_parameters"):
        if hasattr(module, attr):
            return int(getattr(module, attr))
    return ctx.in_size


def _per_group(idx: torch.Tensor, size: int, groups: int) -> list[torch.Tensor] | None:
    """Split sorted teacher indices into equal-size groups, or None if they are not even."""
    if bool((idx < 0).any()) or idx.numel() % groups:
        return None
    per = size // groups
    parts = [idx[(idx >= g * per) & (idx < (g + 1) * per)] for g in range(groups)]
    if any(p.numel() != idx.numel() // groups for p in parts):
        return None
    return parts


def _conv_shell(
    m: nn.modules.conv._ConvNd, cin: int, cout: int, kernel: tuple, stride: tuple, padding: tuple, groups: int
) -> nn.modules.conv._ConvNd:
    """``m`` with new sizes, made like ``_ConvNd.__init__`` would make it (tensors set by the caller)."""
    new = _shell(m)
    new.in_channels, new.out_channels, new.groups = cin, cout, groups
    new.kernel_size, new.stride, new.padding = kernel, stride, padding
    new._reversed_padding_repeated_twice = tuple(p for p in reversed(padding) for _ in range(2))
    return new


@register_handler(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _conv(m: nn.modules.conv._ConvNd, ctx: RebuildContext) -> Rebuilt:
    g, cin, cout = m.groups, m.in_channels, m.out_channels
    in_idx = ctx.in_idx
    cin2 = ctx.in_size
    kernel, padding = m.kernel_size, m.padding
    if ctx.kernel is not None:
        kernel, padding = ctx.kernel
    stride = m.stride if ctx.stride is None else (ctx.stride,) * len(m.stride)
    w = m.weight.detach()
    b = m.bias.detach() if m.bias is not None else None
    reinit = False
    if g == 1:
        out_idx = ctx.out_idx if ctx.out_idx is not None else torch.arange(cout)
        if (
            cin2 == cin
            and _identity(out_idx, cout)
            and _identity(in_idx, cin)
            and ctx.kernel is None
            and ctx.stride is None
        ):
            return Rebuilt(copy.deepcopy(m), out_idx)
        groups2 = 1
        neww = gather2(w, out_idx, in_idx)
    elif ctx.coupled and g == cin:  # depthwise: one filter per input channel
        mult = cout // cin
        out_idx = in_idx if mult == 1 else torch.stack([in_idx * mult + j for j in range(mult)], 1).flatten()
        out_idx = torch.where(in_idx.repeat_interleave(mult) < 0, -1, out_idx)
        groups2 = cin2
        neww = gather(w, out_idx, 0)
    else:  # grouped: keep weights when channels were kept evenly per group, else re-initialise
        out_idx = in_idx if ctx.coupled else (ctx.out_idx if ctx.out_idx is not None else torch.arange(cout))
        pin = _per_group(in_idx, cin, g)
        pout = _per_group(out_idx, cout, g)
        if pin is not None and pout is not None:
            groups2 = g
            per_in = cin // g
            blocks = [
                w.index_select(0, po).index_select(1, pi - k * per_in)
                for k, (pi, po) in enumerate(zip(pin, pout, strict=True))
            ]
            neww = torch.cat(blocks, 0)
        else:
            groups2 = math.gcd(g, cin2, out_idx.numel())
            neww = None
            reinit = True
    cout2 = out_idx.numel()
    if (
        groups2 == g
        and cin2 == cin
        and _identity(out_idx, cout)
        and _identity(in_idx, cin)
        and ctx.kernel is None
        and ctx.stride is None
    ):
        return Rebuilt(copy.deepcopy(m), out_idx)
    if reinit or isinstance(padding, str):
        new = _on_meta(
            type(m), cin2, cout2, kernel, stride, padding, m.dilation, groups2, b is not None, m.padding_mode
        )
        if reinit:
            new = new.to_empty(device="cpu")
            new.reset_parameters()
        new.train(m.training)
    else:
        new = _conv_shell(m, cin2, cout2, tuple(kernel), tuple(stride), tuple(padding), groups2)
    with torch.no_grad():
        if neww is not None:
            if tuple(kernel) != tuple(m.kernel_size):
                for d, (k_old, k_new) in enumerate(zip(m.kernel_size, kernel, strict=True)):
                    start = (k_old - k_new) // 2
                    neww = neww.narrow(2 + d, start, k_new)
            _set(new, "weight", neww.clone() if neww is w else neww)
        if b is not None and not reinit:
            _set(new, "bias", gather(b, out_idx, 0))
    if reinit:
        ctx.notes.append(f"groups {g}->{groups2}, weights re-initialised")
    if groups2 != g and not reinit:
        ctx.notes.append(f"groups {g}->{groups2}")
    if ctx.stride is not None:
        ctx.notes.append(f"stride {tuple(m.stride)}->{tuple(stride)}")
    return Rebuilt(new, out_idx)


@register_handler(nn.Linear)
def _linear(m: nn.Linear, ctx: RebuildContext) -> Rebuilt:
    out_idx = ctx.out_idx if ctx.out_idx is not None else torch.arange(m.out_features)
    if _identity(out_idx, m.out_features) and _identity(ctx.in_idx, m.in_features):
        return Rebuilt(copy.deepcopy(m), out_idx)
    new = _shell(m)
    new.in_features, new.out_features = ctx.in_size, out_idx.numel()
    with torch.no_grad():
        w = m.weight.detach()
        neww = gather2(w, out_idx, ctx.in_idx)
        _set(new, "weight", neww.clone() if neww is w else neww)
        if m.bias is not None:
            _set(new, "bias", gather(m.bias.detach(), out_idx, 0))
    return Rebuilt(new, out_idx)


@register_handler(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)
def _batchnorm(m: nn.modules.batchnorm._BatchNorm, ctx: RebuildContext) -> Rebuilt:
    if _identity(ctx.in_idx, m.num_features):
        return Rebuilt(copy.deepcopy(m), None)
    new = _shell(m)
    new.num_features = ctx.in_size
    with torch.no_grad():
        if m.weight is not None:
            _set(new, "weight", gather(m.weight.detach(), ctx.in_idx, 0, 1.0))
        if m.bias is not None:
            _set(new, "bias", gather(m.bias.detach(), ctx.in_idx, 0, 0.0))
        if m.running_mean is not None:
            _set_buffer(new, "running_mean", gather(m.running_mean, ctx.in_idx, 0, 0.0))
        if m.running_var is not None:
            _set_buffer(new, "running_var", gather(m.running_var, ctx.in_idx, 0, 1.0))
        if m.num_batches_tracked is not None:
            _set_buffer(new, "num_batches_tracked", m.num_batches_tracked.clone())
    return Rebuilt(new, None)


@register_handler(nn.LayerNorm)
def _layernorm(m: nn.LayerNorm, ctx: RebuildContext) -> Rebuilt:
    if len(m.normalized_shape) != 1:
        return _generic(m, ctx)
    if _identity(ctx.in_idx, m.normalized_shape[0]):
        return Rebuilt(copy.deepcopy(m), None)
    new = nn.LayerNorm(ctx.in_size, m.eps, m.elementwise_affine, bias=m.bias is not None)
    with torch.no_grad():
        if m.weight is not None:
            new.weight.copy_(gather(m.weight.detach(), ctx.in_idx, 0, 1.0))
        if m.bias is not None:
            new.bias.copy_(gather(m.bias.detach(), ctx.in_idx, 0, 0.0))
    return Rebuilt(new, None)


@register_handler(nn.GroupNorm)
def _groupnorm(m: nn.GroupNorm, ctx: RebuildContext) -> Rebuilt:
    if _identity(ctx.in_idx, m.num_channels):
        return Rebuilt(copy.deepcopy(m), None)
    groups = math.gcd(m.num_groups, ctx.in_size)
    new = nn.GroupNorm(groups, ctx.in_size, m.eps, m.affine)
    with torch.no_grad():
        if m.affine:
            new.weight.copy_(gather(m.weight.detach(), ctx.in_idx, 0, 1.0))
            new.bias.copy_(gather(m.bias.detach(), ctx.in_idx, 0, 0.0))
    if groups != m.num_groups:
        ctx.notes.append(f"num_groups {m.num_groups}->{groups}")
    return Rebuilt(new, None)


@register_handler(nn.PReLU)
def _prelu(m: nn.PReLU, ctx: RebuildContext) -> Rebuilt:
    if m.num_parameters == 1 or _identity(ctx.in_idx, m.num_parameters):
        return Rebuilt(copy.deepcopy(m), None)
    new = nn.PReLU(ctx.in_size)
    with torch.no_grad():
        new.weight.copy_(gather(m.weight.detach(), ctx.in_idx, 0, 0.25))
    return Rebuilt(new, None)
