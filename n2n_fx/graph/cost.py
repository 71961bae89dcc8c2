"""Parameter and FLOP counts per node, from the meta values left by ``trace``.

FLOPs are counted as 2 x multiply-accumulates for convs and linears (bias adds one per
output), one per element for norms, activations and joins, and the window size per
output element for pools. Counts are per sample (the traced batch size is divided out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import fx, nn

from .kinds import Kind, kind_of
from .shapes import META_KEY

__all__ = ["Cost", "node_params", "node_flops", "model_cost"]


@dataclass(frozen=True)
class Cost:
    """Size and compute of a model for one input sample."""

    params: int  # number of parameters (trainable or not; buffers excluded)
    flops: int  # floating-point operations per sample (2 x MACs for conv/linear)


def _numel_per_sample(val) -> int:
    if not isinstance(val, torch.Tensor) or val.dim() == 0:
        return 0
    return val.numel() // max(1, int(val.shape[0]))


def node_params(gm: fx.GraphModule, node: fx.Node) -> int:
    """Parameters owned by the node: its module's, or the get_attr tensors it reads."""
    if node.op == "call_module":
        return sum(p.numel() for p in gm.get_submodule(node.target).parameters())
    n = 0
    for a in node.all_input_nodes:
        if a.op == "get_attr":
            v = a.meta.get(META_KEY)
            if isinstance(v, torch.Tensor):
                n += v.numel()
    return n


def node_flops(gm: fx.GraphModule, node: fx.Node) -> int:
    """FLOPs of one node for one sample (0 for reshapes and bookkeeping)."""
    out = node.meta.get(META_KEY)
    n_out = _numel_per_sample(out)
    if n_out == 0:
        return 0
    kind = kind_of(gm, node)
    if node.op == "call_module":
        mod = gm.get_submodule(node.target)
        if isinstance(mod, nn.modules.conv._ConvNd):
            k = math.prod(mod.kernel_size) * (mod.in_channels // mod.groups)
            return n_out * (2 * k + (1 if mod.bias is not None else 0))
        if isinstance(mod, nn.Linear):
            return n_out * (2 * mod.in_features + (1 if mod.bias is not None else 0))
    if kind in (Kind.MAXPOOL, Kind.AVGPOOL, Kind.ADAPTIVEPOOL):
        src = node.all_input_nodes[0].meta.get(META_KEY) if node.all_input_nodes else None
        n_in = _numel_per_sample(src)
        return max(n_in, n_out)
    if kind in (Kind.BATCHNORM, Kind.NORM):
        return 2 * n_out
    if kind is not None:
        return 0 if kind is Kind.DROPOUT else n_out
    if node.op in ("call_function", "call_method") and len(node.all_input_nodes) >= 2:
        return n_out
    return 0


def model_cost(gm: fx.GraphModule) -> Cost:
    """Total parameters and per-sample FLOPs of a traced GraphModule."""
    params = sum(p.numel() for p in gm.parameters())
    flops = sum(node_flops(gm, n) for n in gm.graph.nodes)
    return Cost(params=params, flops=flops)
