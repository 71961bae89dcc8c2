"""Parameters and FLOPs per node: the one FLOP counter of n2n_fx.

FLOPs follow ``torch.utils.flop_counter.FlopCounterMode``: 2 x multiply-accumulates of
convolutions (transposed ones included), linears, matrix products and attention; biases,
norms, activations, pools and joins cost nothing. A module's FLOPs come from its
``LayerSpec`` (``n2n_fx.layers``); functional matrix products and convolutions
(``matmul``, ``bmm``, ``einsum``, ``F.linear``, ``F.conv2d``, scaled-dot-product attention)
are counted by FlopCounterMode on their meta inputs. Counts are per sample: the traced
batch size is divided out. ``n2n_fx.reward.count_flops`` uses this counter too.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx
from torch.utils.flop_counter import FlopCounterMode

from ..layers import spec_for
from .kinds import module_at
from .shapes import META_KEY, run_node_meta

__all__ = ["Cost", "node_params", "node_flops", "model_cost", "graph_flops"]

# functions and methods whose FLOPs FlopCounterMode counts (the rest cost nothing)
_COUNTED_FUNCTIONS: set[Any] = {
    torch.matmul,
    operator.matmul,
    torch.bmm,
    torch.mm,
    torch.baddbmm,
    torch.addmm,
    torch.einsum,
    F.linear,
    F.bilinear,
    F.conv1d,
    F.conv2d,
    F.conv3d,
    F.conv_transpose1d,
    F.conv_transpose2d,
    F.conv_transpose3d,
    F.scaled_dot_product_attention,
}
_COUNTED_METHODS = {"matmul", "bmm", "mm", "baddbmm", "addmm"}


@dataclass(frozen=True)
class Cost:
    """Size and compute of a model for one input sample."""

    params: int  # number of parameters (trainable or not; buffers excluded)
    flops: int  # FLOPs per sample: 2 x MACs of convs, linears, matrix products and attention


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


def _batch(gm: fx.GraphModule, value: Callable[[fx.Node], Any]) -> int:
    """The batch size the graph's values were computed with (first input's leading size)."""
    for p in gm.graph.find_nodes(op="placeholder"):
        v = value(p)
        if isinstance(v, torch.Tensor) and v.dim() > 0:
            return max(1, int(v.shape[0]))
    return 1


def _call_flops(gm: fx.GraphModule, node: fx.Node, value: Callable[[fx.Node], Any]) -> int:
    """FLOPs of one node on the whole batch, from the values of its inputs and output."""
    if node.op == "call_module":
        mod = module_at(gm, node.target)
        args = fx.node.map_arg(node.args, value)
        return int(spec_for(mod).flops(mod, args, value(node)))
    counted = (node.op == "call_function" and node.target in _COUNTED_FUNCTIONS) or (
        node.op == "call_method" and node.target in _COUNTED_METHODS
    )
    if not counted:
        return 0
    args = fx.node.map_arg(node.args, value)
    kwargs = fx.node.map_arg(node.kwargs, value)
    with FlopCounterMode(display=False) as counter:
        if node.op == "call_method":
            getattr(args[0], node.target)(*args[1:], **kwargs)
        else:
            node.target(*args, **kwargs)
    return int(counter.get_total_flops())


def node_flops(gm: fx.GraphModule, node: fx.Node) -> int:
    """FLOPs of one node for one sample (from the meta values ``trace`` left on the graph)."""
    value = lambda n: n.meta.get(META_KEY)  # noqa: E731
    return _call_flops(gm, node, value) // _batch(gm, value)


def model_cost(gm: fx.GraphModule) -> Cost:
    """Total parameters and per-sample FLOPs of a traced GraphModule."""
    params = sum(p.numel() for p in gm.parameters())
    value = lambda n: n.meta.get(META_KEY)  # noqa: E731
    flops = sum(_call_flops(gm, n, value) for n in gm.graph.nodes) // _batch(gm, value)
    return Cost(params=params, flops=flops)


def graph_flops(gm: fx.GraphModule, x: torch.Tensor) -> int:
    """Per-sample FLOPs of ``gm`` on an input like ``x`` (evaluated on meta; ``gm`` is not changed)."""
    env: dict[fx.Node, Any] = {}
    inputs = iter([torch.empty(x.shape, dtype=x.dtype, device="meta")])
    total = 0
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            env[node] = next(inputs, node.args[0] if node.args else None)
            continue
        env[node] = run_node_meta(gm, node, env)
        total += _call_flops(gm, node, env.get)
    return total // _batch(gm, env.get)
