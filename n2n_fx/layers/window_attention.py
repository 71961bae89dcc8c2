"""Swin's shifted-window attention as a layer: removable as its branch, heads shrinkable.

torchvision's ``ShiftedWindowAttention`` (and ``V2``) keep q/k/v in one Linear (``qkv``,
rows ``[q | k | v]``, each ``num_heads × head_dim``), an output Linear (``proj``) and a
relative position bias with one column per head (v1: ``relative_position_bias_table``,
v2: the last Linear of ``cpb_mlp`` plus a per-head ``logit_scale``). Registered here, the
module is traced as one leaf of kind "attention" (before, its weights were loose
``get_attr`` reads of an opaque function and no action could touch it).

The attention function hard-codes ``head_dim = C // num_heads``, so a student with fewer
heads is a ``HeadWindowAttention`` (``V2``): the same module with ``head_dim`` kept as an
attribute, running ``window_attention``, this module's own implementation of the same
computation with ``num_heads · head_dim`` inner features. Each kept head inherits its
q/k/v rows, its ``proj`` columns and its bias column (v2: its ``cpb_mlp`` output row and
logit scale). Dropping heads equals the teacher with those heads' ``proj`` columns set to
zero (tested).
"""

from __future__ import annotations

import copy
import math

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models.swin_transformer import ShiftedWindowAttention, ShiftedWindowAttentionV2

from ..errors import RepairError
from .attention import _AttentionSpec
from .kind import Kind
from .linear import linear_columns, linear_rows
from .spec import RebuildContext, Rebuilt, register_layer
from .tensors import identity, set_param, shell

__all__ = ["HeadWindowAttention", "HeadWindowAttentionV2", "window_attention", "WindowAttentionSpec"]


def window_attention(
    x: torch.Tensor,  # (B, H, W, C)
    qkv: nn.Linear,  # C -> 3·heads·head_dim
    proj: nn.Linear,  # heads·head_dim -> C
    bias: torch.Tensor,  # (1, heads, N, N) relative position bias, N = window area
    window: list[int],
    shift: list[int],
    heads: int,
    head_dim: int,
    attention_dropout: float = 0.0,
    dropout: float = 0.0,
    logit_scale: torch.Tensor | None = None,  # (heads, 1, 1): cosine attention (Swin v2)
    training: bool = False,
) -> torch.Tensor:
    """Multi-head self-attention inside each (cyclically shifted) window; ``(B, H, W, C)`` out."""
    b, h, w, c = x.shape
    wh, ww = window
    hp, wp = h + (-h % wh), w + (-w % ww)  # padded to whole windows
    x = F.pad(x, (0, 0, 0, wp - w, 0, hp - h))
    sh = shift[0] if wh < hp else 0  # a window covering the map needs no shift
    sw = shift[1] if ww < wp else 0
    if sh or sw:
        x = torch.roll(x, (-sh, -sw), (1, 2))
    nh, nw, n = hp // wh, wp // ww, wh * ww
    tokens = x.reshape(b, nh, wh, nw, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b * nh * nw, n, c)  # (B·nW, N, C)
    inner = heads * head_dim
    qkv_bias = qkv.bias
    if logit_scale is not None and qkv_bias is not None:  # v2: keys carry no bias
        qkv_bias = torch.cat([qkv_bias[:inner], torch.zeros_like(qkv_bias[inner : 2 * inner]), qkv_bias[2 * inner :]])
    q, k, v = F.linear(tokens, qkv.weight, qkv_bias).reshape(-1, n, 3, heads, head_dim).permute(2, 0, 3, 1, 4)
    if logit_scale is not None:  # (B·nW, heads, N, D) each
        scores = F.normalize(q, dim=-1) @ F.normalize(k, dim=-1).transpose(-2, -1)
        scores = scores * torch.clamp(logit_scale, max=math.log(100.0)).exp()
    else:
        scores = (q * head_dim**-0.5) @ k.transpose(-2, -1)
    scores = scores + bias  # (B·nW, heads, N, N)
    if sh or sw:
        mask = _shift_mask(hp, wp, (wh, ww), (sh, sw), x)  # (nW, N, N)
        scores = (scores.view(b, nh * nw, heads, n, n) + mask[None, :, None]).view(-1, heads, n, n)
    attn = F.dropout(F.softmax(scores, dim=-1), attention_dropout, training)
    out = (attn @ v).transpose(1, 2).reshape(-1, n, inner)  # (B·nW, N, inner)
    out = F.dropout(proj(out), dropout, training)  # (B·nW, N, C)
    out = out.view(b, nh, nw, wh, ww, c).permute(0, 1, 3, 2, 4, 5).reshape(b, hp, wp, c)
    if sh or sw:
        out = torch.roll(out, (sh, sw), (1, 2))
    return out[:, :h, :w].contiguous()


def _shift_mask(hp: int, wp: int, window: tuple[int, int], shift: tuple[int, int], like: torch.Tensor) -> torch.Tensor:
    """-100 between tokens of one window that the cyclic shift brought from different regions."""

    def regions(size: int, win: int, s: int) -> torch.Tensor:  # 0 | 1 | 2 along one axis
        pos = torch.arange(size, device=like.device)
        return (pos >= size - win).long() + (pos >= size - s).long() if s else torch.zeros_like(pos)

    label = regions(hp, window[0], shift[0])[:, None] * 3 + regions(wp, window[1], shift[1])[None, :]  # (Hp, Wp)
    wh, ww = window
    label = label.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)  # (nW, N)
    differ = label[:, None, :] != label[:, :, None]
    return torch.zeros(differ.shape, dtype=like.dtype, device=like.device).masked_fill(differ, -100.0)


class _HeadWindow:
    """The forward of a head-pruned window attention (v1 and v2: v2 has a ``logit_scale``)."""

    def __init__(self, *args, **kwargs) -> None:
        """The teacher class's arguments; every head kept (surgery builds smaller ones)."""
        super().__init__(*args, **kwargs)
        self.head_dim = self.proj.in_features // self.num_heads  # features per head (the teacher's)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return window_attention(
            x,
            self.qkv,
            self.proj,
            self.get_relative_position_bias(),
            self.window_size,
            self.shift_size,
            self.num_heads,
            self.head_dim,
            self.attention_dropout,
            self.dropout,
            getattr(self, "logit_scale", None),
            self.training,
        )


class HeadWindowAttention(_HeadWindow, ShiftedWindowAttention):
    """A ``ShiftedWindowAttention`` with ``num_heads · head_dim`` inner features (surgery's student)."""


class HeadWindowAttentionV2(_HeadWindow, ShiftedWindowAttentionV2):
    """A ``ShiftedWindowAttentionV2`` with ``num_heads · head_dim`` inner features (surgery's student)."""


_STUDENT = {
    ShiftedWindowAttention: HeadWindowAttention,
    ShiftedWindowAttentionV2: HeadWindowAttentionV2,
    HeadWindowAttention: HeadWindowAttention,
    HeadWindowAttentionV2: HeadWindowAttentionV2,
}


def _head_dim(m: ShiftedWindowAttention) -> int:
    return getattr(m, "head_dim", m.proj.in_features // m.num_heads)


@register_layer(ShiftedWindowAttention, ShiftedWindowAttentionV2, HeadWindowAttention, HeadWindowAttentionV2)
class WindowAttentionSpec(_AttentionSpec):
    """Swin's window attention on ``(B, H, W, C)``: channels last, size pinned, heads shrink."""

    kind = Kind.ATTENTION

    def head_importance(self, m: ShiftedWindowAttention) -> torch.Tensor:
        h, d = m.num_heads, _head_dim(m)
        w_in = m.qkv.weight.detach().abs().reshape(3, h, d, -1).sum((0, 2, 3))  # (H,)
        w_out = m.proj.weight.detach().abs().reshape(-1, h, d).sum((0, 2))  # (H,)
        return (w_in / w_in.mean().clamp_min(1e-12) + w_out / w_out.mean().clamp_min(1e-12)).float()

    def flops(self, m: ShiftedWindowAttention, args: tuple, out: object) -> int:
        """qkv and proj Linears on the padded windows, ``QKᵀ`` and ``AV`` per window (each
        ``2·tokens·N·inner``); v2's bias MLP runs once per call on the coordinate table."""
        x = args[0]
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            return 0
        b, h, w, c = x.shape
        wh, ww = m.window_size
        tokens = b * (h + (-h % wh)) * (w + (-w % ww))  # padded positions
        inner = m.num_heads * _head_dim(m)
        total = 2 * tokens * c * 3 * inner + 2 * 2 * tokens * wh * ww * inner + 2 * tokens * inner * c
        if isinstance(m, ShiftedWindowAttentionV2):
            table = m.relative_coords_table.numel() // 2
            total += sum(
                2 * table * lin.in_features * lin.out_features for lin in m.cpb_mlp if isinstance(lin, nn.Linear)
            )
        return total

    def rebuild(self, m: ShiftedWindowAttention, ctx: RebuildContext) -> Rebuilt:
        kept = ctx.heads
        if kept is None or identity(kept, m.num_heads):
            return super().rebuild(m, ctx)  # its channels are pinned: a copy
        c = m.proj.out_features
        if not identity(ctx.in_idx, c):
            raise RepairError(f"{type(m).__name__} received {ctx.in_size} features, its embedding is {c}")
        h, d = m.num_heads, _head_dim(m)
        rows = (kept[:, None] * d + torch.arange(d)[None, :]).flatten()  # (H'·D,) features of the kept heads
        new = shell(m)
        new.__class__ = _STUDENT[type(m)]
        new._modules = dict(m._modules)
        with torch.no_grad():
            new.qkv = linear_rows(m.qkv, torch.cat([rows, rows + h * d, rows + 2 * h * d]))
            new.proj = linear_columns(m.proj, rows)
            for name, buf in m._buffers.items():
                new._buffers[name] = buf.clone()
            if isinstance(m, ShiftedWindowAttentionV2):
                set_param(new, "logit_scale", m.logit_scale.detach().index_select(0, kept))
                mlp = shell(m.cpb_mlp)
                mlp._modules = {k: copy.deepcopy(v) for k, v in m.cpb_mlp._modules.items()}
                last = [k for k, v in mlp._modules.items() if isinstance(v, nn.Linear)][-1]  # one row per head
                mlp._modules[last] = linear_rows(m.cpb_mlp._modules[last], kept)
                new.cpb_mlp = mlp
            else:
                set_param(new, "relative_position_bias_table", m.relative_position_bias_table.detach()[:, kept])
        new.num_heads, new.head_dim = int(kept.numel()), d
        ctx.notes.append(f"heads {h}->{kept.numel()} (inner {h * d}->{kept.numel() * d})")
        return Rebuilt(new, None)
