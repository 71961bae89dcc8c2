"""Multi-head attention: ``nn.MultiheadAttention`` and its head-pruned student ``HeadAttention``.

Attention reads and writes the embedding axis (last); surgery keeps that size (the
residual stream fixes it) but may keep fewer heads. ``nn.MultiheadAttention`` requires
``num_heads · head_dim == embed_dim``, so a student with fewer heads is a
``HeadAttention``: the same computation with ``num_heads · head_dim`` inner features. Each
kept head inherits its q/k/v projection rows and its output-projection columns; the head
size, and so the softmax scale, stays the teacher's. Dropping heads equals the teacher with
those heads' contributions to the output projection set to zero (tested).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import RepairError
from .kind import Kind
from .linear import linear_columns
from .spec import LayerSpec, RebuildContext, Rebuilt, register_layer
from .tensors import identity, set_param

__all__ = ["HeadAttention", "MultiheadAttentionSpec", "HeadAttentionSpec", "head_importance"]


class HeadAttention(nn.Module):
    """Multi-head attention whose heads' total width may differ from the embedding size.

    Called like ``nn.MultiheadAttention`` (same arguments, ``(output, weights)`` result);
    built by surgery from a teacher's attention, not by users. Projections q, k, v: rows
    ``[0, inner)``, ``[inner, 2·inner)``, ``[2·inner, 3·inner)`` of ``in_proj_weight``,
    head ``h`` owning rows ``h·head_dim .. (h+1)·head_dim`` of each.
    """

    def __init__(
        self,
        embed_dim: int,
        num_heads: int,
        head_dim: int,
        bias: bool = True,
        dropout: float = 0.0,
        batch_first: bool = False,
    ) -> None:
        super().__init__()
        self.embed_dim = embed_dim  # model width: input and output features
        self.num_heads = num_heads  # heads kept
        self.head_dim = head_dim  # features per head (the teacher's)
        self.dropout = dropout  # dropout on the attention weights (training only)
        self.batch_first = batch_first  # (N, L, E) inputs instead of (L, N, E)
        inner = num_heads * head_dim
        self.in_proj_weight = nn.Parameter(torch.empty(3 * inner, embed_dim))  # (3·inner, E)
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * inner)) if bias else None  # (3·inner,)
        self.out_proj = nn.Linear(inner, embed_dim, bias=bias)  # (E, inner)
        nn.init.xavier_uniform_(self.in_proj_weight)

    def forward(
        self,
        query: torch.Tensor,
        key: torch.Tensor,
        value: torch.Tensor,
        key_padding_mask: torch.Tensor | None = None,
        need_weights: bool = True,
        attn_mask: torch.Tensor | None = None,
        average_attn_weights: bool = True,
        is_causal: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        unbatched = query.dim() == 2
        if unbatched:  # (L, E)
            query, key, value = query.unsqueeze(0), key.unsqueeze(0), value.unsqueeze(0)
            key_padding_mask = key_padding_mask.unsqueeze(0) if key_padding_mask is not None else None
        elif not self.batch_first:  # (L, N, E) -> (N, L, E)
            query, key, value = query.transpose(0, 1), key.transpose(0, 1), value.transpose(0, 1)
        n, tq, _ = query.shape
        ts = key.shape[1]
        h, d = self.num_heads, self.head_dim
        w = self.in_proj_weight.chunk(3)
        b = self.in_proj_bias.chunk(3) if self.in_proj_bias is not None else (None, None, None)
        q = F.linear(query, w[0], b[0]).reshape(n, tq, h, d).transpose(1, 2)  # (N, H, L, D)
        k = F.linear(key, w[1], b[1]).reshape(n, ts, h, d).transpose(1, 2)  # (N, H, S, D)
        v = F.linear(value, w[2], b[2]).reshape(n, ts, h, d).transpose(1, 2)  # (N, H, S, D)
        mask = _additive_mask(attn_mask, key_padding_mask, n, tq, ts, q, is_causal)  # (N|1, 1, L, S)
        p = self.dropout if self.training else 0.0
        if need_weights:
            scores = q @ k.transpose(-2, -1) / math.sqrt(d)  # (N, H, L, S)
            if mask is not None:
                scores = scores + mask
            weights = torch.softmax(scores, dim=-1)
            out = F.dropout(weights, p) @ v  # (N, H, L, D)
        else:
            weights = None
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=p)
        out = self.out_proj(out.transpose(1, 2).reshape(n, tq, h * d))  # (N, L, E)
        if weights is not None and average_attn_weights:
            weights = weights.mean(1)  # (N, L, S)
        if unbatched:
            out = out.squeeze(0)
            weights = weights.squeeze(0) if weights is not None else None
        elif not self.batch_first:
            out = out.transpose(0, 1)
        return out, weights


def _additive_mask(
    attn_mask: torch.Tensor | None,
    key_padding_mask: torch.Tensor | None,
    n: int,
    tq: int,
    ts: int,
    like: torch.Tensor,
    is_causal: bool,
) -> torch.Tensor | None:
    """One float mask ``(N|1, 1, L, S)`` from an ``(L, S)`` attention mask and an ``(N, S)`` padding mask."""
    if attn_mask is None and is_causal:
        attn_mask = torch.ones(tq, ts, dtype=torch.bool, device=like.device).triu(1)
    masks = []
    if attn_mask is not None:
        if attn_mask.dim() != 2:
            raise ValueError(
                f"a head-pruned attention takes a 2-D (L, S) attn_mask, got {tuple(attn_mask.shape)} "
                "(per-head masks name the teacher's heads)"
            )
        masks.append(attn_mask.reshape(1, 1, tq, ts))
    if key_padding_mask is not None:
        masks.append(key_padding_mask.reshape(n, 1, 1, ts))
    if not masks:
        return None
    total = None
    for m in masks:
        if m.dtype == torch.bool:
            m = torch.zeros(m.shape, dtype=like.dtype, device=like.device).masked_fill(m, float("-inf"))
        total = m if total is None else total + m
    return total


def _parts(m: nn.Module) -> tuple[int, int, int]:
    """(embed_dim, num_heads, head_dim) of an attention module."""
    if isinstance(m, HeadAttention):
        return m.embed_dim, m.num_heads, m.head_dim
    return m.embed_dim, m.num_heads, m.embed_dim // m.num_heads


def head_importance(m: nn.Module) -> torch.Tensor:
    """Score per head (higher = keep): L1 of its q/k/v rows plus its output-projection columns."""
    _, h, d = _parts(m)
    w_in = m.in_proj_weight.detach().abs().reshape(3, h, d, -1).sum((0, 2, 3))  # (H,)
    w_out = m.out_proj.weight.detach().abs().reshape(-1, h, d).sum((0, 2))  # (H,)
    return (w_in / w_in.mean().clamp_min(1e-12) + w_out / w_out.mean().clamp_min(1e-12)).float()


def _keep_heads(m: nn.Module, kept: torch.Tensor) -> HeadAttention:
    """A ``HeadAttention`` holding the teacher's heads ``kept`` (sorted head indices)."""
    e, h, d = _parts(m)
    dropout = float(m.dropout)
    new = HeadAttention.__new__(HeadAttention)
    nn.Module.__init__(new)
    new.embed_dim, new.num_heads, new.head_dim = e, int(kept.numel()), d
    new.dropout, new.batch_first = dropout, bool(m.batch_first)
    new.training = m.training
    rows = (kept[:, None] * d + torch.arange(d)[None, :]).flatten()  # (H'·D,) rows of one projection
    inner = h * d
    qkv_rows = torch.cat([rows, rows + inner, rows + 2 * inner])  # (3·H'·D,)
    with torch.no_grad():
        set_param(new, "in_proj_weight", m.in_proj_weight.detach().index_select(0, qkv_rows))
        new.register_parameter("in_proj_bias", None)
        if m.in_proj_bias is not None:
            set_param(new, "in_proj_bias", m.in_proj_bias.detach().index_select(0, qkv_rows))
        new.out_proj = linear_columns(m.out_proj, rows)
    return new


class _AttentionSpec(LayerSpec):
    """What both attention modules share: kind, axis, pinned embedding, heads variable, FLOPs."""

    weight_axis = -1
    kind = Kind.ATTENTION
    pins_channels = True

    def heads_shrinkable(self, m: nn.Module) -> bool:
        return m.num_heads >= 2

    def variables(self, m: nn.Module) -> tuple[str, ...]:
        return ("heads",) if self.heads_shrinkable(m) else ()

    def head_importance(self, m: nn.Module) -> torch.Tensor:
        return head_importance(m)

    def flops(self, m: nn.Module, args: tuple, out: object) -> int:
        """The q/k/v projections, the scores ``QKᵀ`` and the weighted sum ``AV`` (each
        ``2·N·L·S·inner``) and the output projection; softmax and masking are not counted."""
        q = args[0]
        k = args[1] if len(args) > 1 else q
        v = args[2] if len(args) > 2 else k
        if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
            return 0
        e, h, d = _parts(m)
        inner = h * d
        kdim, vdim = getattr(m, "kdim", e), getattr(m, "vdim", e)
        tokens_q = q.numel() // q.shape[-1]  # N·L
        tokens_k = k.numel() // k.shape[-1]  # N·S
        if k.dim() == 2:  # unbatched (S, E)
            s = k.shape[0]
        else:  # source length S of (N, S, E) or (S, N, E)
            s = k.shape[1] if m.batch_first else k.shape[0]
        proj = 2 * tokens_q * e * inner + 2 * tokens_k * kdim * inner + 2 * (v.numel() // v.shape[-1]) * vdim * inner
        attn = 2 * 2 * tokens_q * s * inner
        return proj + attn + 2 * tokens_q * inner * e

    def rebuild(self, m: nn.Module, ctx: RebuildContext) -> Rebuilt:
        kept = ctx.heads
        if kept is None or identity(kept, m.num_heads):
            return super().rebuild(m, ctx)  # its embedding is pinned: a copy
        if not self.heads_shrinkable(m):
            raise RepairError(f"{type(m).__name__} with separate k/v sizes, bias_k or zero attention keeps its heads")
        e, _, d = _parts(m)
        if not identity(ctx.in_idx, e):
            raise RepairError(f"{type(m).__name__} received {ctx.in_size} features, its embedding is {e}")
        ctx.notes.append(f"heads {m.num_heads}->{kept.numel()} (inner {m.num_heads * d}->{kept.numel() * d})")
        return Rebuilt(_keep_heads(m, kept), None)


@register_layer(nn.MultiheadAttention)
class MultiheadAttentionSpec(_AttentionSpec):
    """``nn.MultiheadAttention``: heads shrink when q, k and v share one input projection."""

    def heads_shrinkable(self, m: nn.MultiheadAttention) -> bool:
        return m.num_heads >= 2 and m._qkv_same_embed_dim and m.bias_k is None and not m.add_zero_attn


@register_layer(HeadAttention)
class HeadAttentionSpec(_AttentionSpec):
    """A student's head-pruned attention: may lose more heads."""
