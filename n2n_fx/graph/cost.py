"""Parameter and FLOP counts per node, from the meta values left by ``trace``.

FLOPs are counted as 2 x multiply-accumulates of convs and linears (biases, norms,
activations, pools and joins are not counted, as is customary); the same convention as
``n2n_fx.reward.count_flops``. Counts are per sample (the traced batch size is divided out).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import fx, nn

from .kinds import module_at
from .shapes import META_KEY

__all__ = ["Cost", "node_params", "node_flops", "model_cost"]


@dataclass(frozen=True)
class Cost:
    """Size and compute of a model for one input sample."""

    params: int  # number of parameters (trainable or not; buffers excluded)
    flops: int  # FLOPs per sample: 2 x MACs of conv and linear layers


def _numel_per_sample(val) -> int:
    if not isinstance(val, torch.Tensor) or val.dim() == 0:
        return 0
    return val.numel() // max(1, int(val.shape[0]))


def node_params(gm: fx.GraphModule, node: fx.Node) -> int:
    """Parameters owned by the node: its module's, or the get_attr tensors it reads."""
    if node.op == "call_module":
        return sum(p.numel() for p in module_at(gm, node.target).parameters())
    n = 0
    for a in node.all_input_nodes:
        if a.op == "get_attr":
            v = a.meta.get(META_KEY)
            if isinstance(v, torch.Tensor):
                n += v.numel()
    return n


def node_flops(gm: fx.GraphModule, node: fx.Node) -> int:
    """FLOPs of one node for one sample: 2 x MACs of a conv or linear, 0 for everything else."""
    if node.op != "call_module":
        return 0
    out = node.meta.get(META_KEY)
    n_out = _numel_per_sample(out)
    mod = module_at(gm, node.target)
    if isinstance(mod, nn.modules.conv._ConvNd):
        return 2 * n_out * math.prod(mod.kernel_size) * (mod.in_channels // mod.groups)
    if isinstance(mod, nn.Linear):
        return 2 * n_out * mod.in_features
    return 0


def model_cost(gm: fx.GraphModule) -> Cost:
    """Total parameters and per-sample FLOPs of a traced GraphModule."""
    params = sum(p.numel() for p in gm.parameters())
    flops = sum(node_flops(gm, n) for n in gm.graph.nodes)
    return Cost(params=params, flops=flops)
