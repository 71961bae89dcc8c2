"""``nn.MultiheadAttention``: a layer of kind "attention" whose embedding size is pinned."""

from __future__ import annotations

import torch
from torch import nn

from .kind import Kind
from .spec import LayerSpec, register_layer

__all__ = ["MultiheadAttentionSpec"]


@register_layer(nn.MultiheadAttention)
class MultiheadAttentionSpec(LayerSpec):
    """Attention reads and writes the embedding axis (last); surgery keeps its size.

    FLOPs: the q/k/v projections, the scores ``QKᵀ`` and the weighted sum ``AV`` (each
    ``2·N·L·S·E``), and the output projection; softmax and masking are not counted.
    """

    weight_axis = -1
    kind = Kind.ATTENTION
    pins_channels = True

    def flops(self, m: nn.MultiheadAttention, args: tuple, out: object) -> int:
        q = args[0]
        k = args[1] if len(args) > 1 else q
        v = args[2] if len(args) > 2 else k
        if not all(isinstance(t, torch.Tensor) for t in (q, k, v)):
            return 0
        e = m.embed_dim
        tokens_q = q.numel() // q.shape[-1]  # N·L
        tokens_k = k.numel() // k.shape[-1]  # N·S
        if k.dim() == 2:  # unbatched (S, E)
            s = k.shape[0]
        else:  # source length S of (N, S, E) or (S, N, E)
            s = k.shape[1] if m.batch_first else k.shape[0]
        proj = 2 * tokens_q * e * e + 2 * tokens_k * m.kdim * e + 2 * (v.numel() // v.shape[-1]) * m.vdim * e
        attn = 2 * 2 * tokens_q * s * e
        return proj + attn + 2 * tokens_q * e * e
