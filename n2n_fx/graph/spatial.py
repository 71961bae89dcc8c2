"""Spatial sizes a graph hard-codes: reshapes traced with constant shapes (window partitions).

A windowed attention block reshapes ``(B, C, H, W)`` into ``(B, windows, tokens, C)`` with
sizes fx recorded as constants. Removing a layer that changes the spatial size before such
a reshape (a strided conv, a pool) cannot be repaired there, so ``analyze`` fixes those
layers with the reason given here.
"""

from __future__ import annotations

import math

import torch
from torch import fx

from .shapes import META_KEY

__all__ = ["hard_coded_reshapes", "upstream_of"]

_RESHAPE_METHODS = {"view", "reshape"}


def _shape_args(node: fx.Node) -> tuple | None:
    if node.op == "call_method" and node.target in _RESHAPE_METHODS:
        shape = node.args[1:]
    elif node.op == "call_function" and node.target is torch.reshape:
        shape = node.args[1:2]
    else:
        return None
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        shape = tuple(shape[0])
    return tuple(shape)


def hard_coded_reshapes(gm: fx.GraphModule, channel_size: dict[str, int]) -> list[fx.Node]:
    """Reshapes that fix a spatial size: constant sizes that do not split the channel axis.

    ``channel_size`` maps a tensor node to its channel count (tracked channel axis). A
    reshape to 3+ dims whose constant sizes (besides -1 and 1) multiply to a divisor of the
    channels splits channels (heads, groups: followed by the channel analysis); otherwise
    its constants are window or grid sizes traced from the teacher's spatial size.
    """
    out = []
    for node in gm.graph.nodes:
        shape = _shape_args(node)
        if shape is None or len(shape) < 3 or not isinstance(node.args[0], fx.Node):
            continue
        src = node.args[0].meta.get(META_KEY)
        consts = math.prod(s for s in shape if isinstance(s, int) and s not in (-1, 1))
        if not isinstance(src, torch.Tensor) or src.dim() < 3 or consts == 1:
            continue
        channels = channel_size.get(node.args[0].name, 0)
        if not channels or channels % consts:
            out.append(node)
    return out


def upstream_of(nodes: list[fx.Node]) -> dict[str, str]:
    """Node name -> the first of ``nodes`` (graph order) it feeds, for every ancestor of ``nodes``."""
    seen: dict[str, str] = {}
    for target in nodes:
        todo = list(target.all_input_nodes)
        while todo:
            cur = todo.pop()
            if cur.name in seen:
                continue
            seen[cur.name] = target.name
            todo.extend(cur.all_input_nodes)
    return seen
