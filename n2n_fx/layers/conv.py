"""Convolutions: ``nn.Conv1d/2d/3d`` and ``nn.ConvTranspose1d/2d/3d``."""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from ..errors import RepairError
from .kind import Kind
from .spec import LayerSpec, RebuildContext, Rebuilt, register_layer
from .tensors import gather, gather2, identity, set_param, shell

__all__ = ["ConvSpec", "ConvTransposeSpec", "kernel_after"]


def kernel_after(kernel: int, padding: int, dilation: int, ratio: float) -> tuple[int, int] | None:
    """New (kernel, padding) side after shrinking by ``ratio``, keeping the output size.

    Kernels stay odd (the centre is kept); None when the padding cannot absorb the change.
    (Cropping 2d taps and d padding keeps the output size of a conv and of a transposed conv.)
    """
    if kernel <= 1:
        return (kernel, padding)
    k = max(1, round(kernel * ratio))
    if k % 2 == 0:
        k -= 1
    k = min(k, kernel)
    if (kernel - k) % 2:
        k -= 1  # even teacher kernels: keep the parity so the crop stays centred
        if k < 1:
            return None
    p = padding - dilation * (kernel - k) // 2
    if p < 0:
        return None
    return (k, p)


def _kernel_variables(m: nn.modules.conv._ConvNd) -> tuple[str, ...]:
    if isinstance(m.padding, str):
        return ()
    ok = any(
        k > 1 and (new := kernel_after(k, p, d, 0.1)) is not None and new[0] < k
        for k, p, d in zip(m.kernel_size, m.padding, m.dilation, strict=False)
    )
    return ("kernel",) if ok else ()


def _crop_kernel(w: torch.Tensor, old: tuple[int, ...], new: tuple[int, ...]) -> torch.Tensor:
    """The centre ``new`` taps of each kernel dimension of ``w`` (kernel dims start at 2)."""
    for d, (k_old, k_new) in enumerate(zip(old, new, strict=True)):
        w = w.narrow(2 + d, (k_old - k_new) // 2, k_new)
    return w


def _conv_shell(
    m: nn.modules.conv._ConvNd, cin: int, cout: int, kernel: tuple, stride: tuple, padding: tuple, groups: int
) -> nn.modules.conv._ConvNd:
    """``m`` with new sizes, made like ``_ConvNd.__init__`` would make it (tensors set by the caller)."""
    new = shell(m)
    new.in_channels, new.out_channels, new.groups = cin, cout, groups
    new.kernel_size, new.stride, new.padding = kernel, stride, padding
    new._reversed_padding_repeated_twice = tuple(p for p in reversed(padding) for _ in range(2))
    return new


def _per_group(idx: torch.Tensor, size: int, groups: int) -> list[torch.Tensor] | None:
    """Split sorted teacher indices into equal-size groups, or None if they are not even."""
    if bool((idx < 0).any()) or idx.numel() % groups:
        return None
    per = size // groups
    parts = [idx[(idx >= g * per) & (idx < (g + 1) * per)] for g in range(groups)]
    if any(p.numel() != idx.numel() // groups for p in parts):
        return None
    return parts


def _unchanged(m: nn.modules.conv._ConvNd, ctx: RebuildContext, out_idx: torch.Tensor) -> bool:
    return (
        ctx.in_size == m.in_channels
        and identity(out_idx, m.out_channels)
        and identity(ctx.in_idx, m.in_channels)
        and ctx.kernel is None
        and ctx.stride is None
    )


@register_layer(nn.Conv1d, nn.Conv2d, nn.Conv3d)
class ConvSpec(LayerSpec):
    """A convolution: starts a channel space (depthwise and grouped convs with in == out keep it)."""

    weight_axis = 1
    kind = Kind.CONV

    def layer_kind(self, m: nn.modules.conv._ConvNd) -> Kind:
        if m.groups > 1:
            return Kind.CONV_DW if m.groups == m.in_channels else Kind.CONV_GROUPED
        return Kind.CONV

    def out_shape(self, m: nn.modules.conv._ConvNd, x: torch.Tensor) -> torch.Size:
        nd = len(m.kernel_size)
        if x.dim() not in (nd + 1, nd + 2) or x.shape[-nd - 1] != m.in_channels:
            raise RuntimeError(f"{type(m).__name__} expects {m.in_channels} input channels, got input {tuple(x.shape)}")
        pads = None if m.padding == "same" else [0] * nd if m.padding == "valid" else list(m.padding)
        sizes = []
        for d in range(nd):
            n = x.shape[x.dim() - nd + d]
            if pads is None:  # "same" (stride 1 only, checked by torch at construction)
                sizes.append(n)
                continue
            span = m.dilation[d] * (m.kernel_size[d] - 1) + 1
            out = (n + 2 * pads[d] - span) // m.stride[d] + 1
            if out < 1:
                raise RuntimeError(f"{type(m).__name__}: input {tuple(x.shape)} is smaller than its kernel")
            sizes.append(out)
        return torch.Size((*x.shape[: x.dim() - nd - 1], m.out_channels, *sizes))

    def flops(self, m: nn.modules.conv._ConvNd, args: tuple, out: torch.Tensor) -> int:
        return 2 * out.numel() * math.prod(m.kernel_size) * (m.in_channels // m.groups)

    def importance(self, m: nn.modules.conv._ConvNd) -> torch.Tensor:
        w = m.weight.detach()
        return w.reshape(w.shape[0], -1).abs().sum(1).float()  # per-filter L1 (2-3x faster than vector_norm)

    def input_use(self, m: nn.modules.conv._ConvNd) -> torch.Tensor | None:
        if m.groups > 1:
            return None
        return torch.linalg.vector_norm(m.weight.detach(), ord=1, dim=(0, *range(2, m.weight.dim())))

    def variables(self, m: nn.modules.conv._ConvNd) -> tuple[str, ...]:
        return _kernel_variables(m)

    def rebuild(self, m: nn.modules.conv._ConvNd, ctx: RebuildContext) -> Rebuilt:
        g, cin, cout = m.groups, m.in_channels, m.out_channels
        in_idx, cin2 = ctx.in_idx, ctx.in_size
        kernel, padding = ctx.kernel if ctx.kernel is not None else (m.kernel_size, m.padding)
        stride = m.stride if ctx.stride is None else (ctx.stride,) * len(m.stride)
        w = m.weight.detach()
        b = m.bias.detach() if m.bias is not None else None
        reinit = False
        if g == 1:
            out_idx = ctx.out_idx if ctx.out_idx is not None else torch.arange(cout)
            if _unchanged(m, ctx, out_idx):
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
        if groups2 == g and _unchanged(m, ctx, out_idx):
            return Rebuilt(copy.deepcopy(m), out_idx)
        if reinit or isinstance(padding, str):
            new = type(m)(
                cin2, cout2, kernel, stride, padding, m.dilation, groups2, b is not None, m.padding_mode, device="meta"
            )
            if reinit:
                new = new.to_empty(device="cpu")
                new.reset_parameters()
            new.train(m.training)
        else:
            new = _conv_shell(m, cin2, cout2, tuple(kernel), tuple(stride), tuple(padding), groups2)
        with torch.no_grad():
            if neww is not None:
                neww = _crop_kernel(neww, tuple(m.kernel_size), tuple(kernel))
                set_param(new, "weight", neww.clone() if neww is w else neww)
            if b is not None and not reinit:
                set_param(new, "bias", gather(b, out_idx, 0))
        if reinit:
            ctx.notes.append(f"groups {g}->{groups2}, weights re-initialised")
        if groups2 != g and not reinit:
            ctx.notes.append(f"groups {g}->{groups2}")
        if ctx.stride is not None:
            ctx.notes.append(f"stride {tuple(m.stride)}->{tuple(stride)}")
        return Rebuilt(new, out_idx)


@register_layer(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
class ConvTransposeSpec(LayerSpec):
    """A transposed convolution (weight ``(C_in, C_out / groups, *kernel)``): starts a channel
    space; grouped ones are pinned (their channels cannot change)."""

    weight_axis = 1
    kind = Kind.CONV

    def layer_kind(self, m: nn.modules.conv._ConvTransposeNd) -> Kind:
        return Kind.CONV if m.groups == 1 else Kind.OTHER

    def out_shape(self, m: nn.modules.conv._ConvTransposeNd, x: torch.Tensor) -> torch.Size:
        nd = len(m.kernel_size)
        if x.dim() not in (nd + 1, nd + 2) or x.shape[-nd - 1] != m.in_channels:
            raise RuntimeError(f"{type(m).__name__} expects {m.in_channels} input channels, got input {tuple(x.shape)}")
        sizes = []
        for d in range(nd):
            n = x.shape[x.dim() - nd + d]
            span = m.dilation[d] * (m.kernel_size[d] - 1) + 1
            sizes.append((n - 1) * m.stride[d] - 2 * m.padding[d] + span + m.output_padding[d])
        return torch.Size((*x.shape[: x.dim() - nd - 1], m.out_channels, *sizes))

    def flops(self, m: nn.modules.conv._ConvTransposeNd, args: tuple, out: torch.Tensor) -> int:
        # every input position scatters into C_out / groups filters of prod(kernel) taps
        return 2 * args[0].numel() * math.prod(m.kernel_size) * (m.out_channels // m.groups)

    def importance(self, m: nn.modules.conv._ConvTransposeNd) -> torch.Tensor | None:
        if m.groups > 1:
            return None
        w = m.weight.detach()
        return w.transpose(0, 1).reshape(w.shape[1], -1).abs().sum(1).float()

    def input_use(self, m: nn.modules.conv._ConvTransposeNd) -> torch.Tensor | None:
        if m.groups > 1:
            return None
        w = m.weight.detach()
        return w.reshape(w.shape[0], -1).abs().sum(1).float()

    def variables(self, m: nn.modules.conv._ConvTransposeNd) -> tuple[str, ...]:
        return _kernel_variables(m) if m.groups == 1 else ()

    def rebuild(self, m: nn.modules.conv._ConvTransposeNd, ctx: RebuildContext) -> Rebuilt:
        out_idx = ctx.out_idx if ctx.out_idx is not None else torch.arange(m.out_channels)
        if _unchanged(m, ctx, out_idx):
            return Rebuilt(copy.deepcopy(m), out_idx)
        if m.groups != 1:
            raise RepairError(f"grouped {type(m).__name__} cannot change its channels")
        kernel, padding = ctx.kernel if ctx.kernel is not None else (m.kernel_size, m.padding)
        stride = m.stride if ctx.stride is None else (ctx.stride,) * len(m.stride)
        w = m.weight.detach()  # (C_in, C_out, *kernel)
        new = _conv_shell(m, ctx.in_size, out_idx.numel(), tuple(kernel), tuple(stride), tuple(padding), 1)
        with torch.no_grad():
            neww = _crop_kernel(gather2(w, ctx.in_idx, out_idx), tuple(m.kernel_size), tuple(kernel))
            set_param(new, "weight", neww.clone() if neww is w else neww)
            if m.bias is not None:
                set_param(new, "bias", gather(m.bias.detach(), out_idx, 0))
        if ctx.stride is not None:
            ctx.notes.append(f"stride {tuple(m.stride)}->{tuple(stride)}")
        return Rebuilt(new, out_idx)
