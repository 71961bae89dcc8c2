"""Channel rules per op: how one node's channel axis and channel space follow from its inputs.

The vocabulary of ops (joins, ``cat``, flatten, permutes, reductions, functional norms),
``ChannelInfo`` (a tensor's channel axis and space), and the rule ``analyze_channels``
applies to each kind of node: a layer starts, keeps or pins a space (its ``LayerSpec``
says which), a flatten multiplies features per channel, a join unites its operands'
spaces, any other op keeps its first input's space where its output still has that axis.
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..layers import spec_for
from .kinds import Kind, module_at
from .shapes import META_KEY

__all__ = [
    "ChannelInfo",
    "JOIN_OPS",
    "FUNCTIONAL_NORMS",
    "is_join",
    "is_cat",
    "pad_value",
    "is_tensor",
    "module_pins",
    "layer_info",
    "flatten_info",
    "join_info",
    "other_info",
]

_ADDLIKE = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub}
_MULLIKE = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul, torch.div}
JOIN_OPS = _ADDLIKE | _MULLIKE
_JOIN_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_FLATTEN_FN = {torch.flatten}
_PERMUTE = {"permute", "transpose", torch.permute, torch.transpose}
FUNCTIONAL_NORMS = {F.layer_norm: 1, F.group_norm: 2}  # function -> index of its weight argument
_REDUCE = {"mean", "sum", "amax", "amin"}


def is_join(node: fx.Node) -> bool:
    """True for elementwise ops with two or more tensor operands (residual add, SE multiply, ...)."""
    if (
        node.op == "call_function"
        and node.target in JOIN_OPS
        or node.op == "call_method"
        and node.target in _JOIN_METHODS
    ):
        pass
    else:
        return False
    return sum(isinstance(a, fx.Node) and is_tensor(a) for a in node.args) >= 2


def is_cat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _CAT


def pad_value(node: fx.Node) -> float:
    """The neutral element used to pad a missing channel of a join operand (0 for +, 1 for *)."""
    if node.target in _MULLIKE or node.target in {"mul", "mul_", "div", "div_"}:
        return 1.0
    return 0.0


def is_tensor(node: fx.Node) -> bool:
    return isinstance(node.meta.get(META_KEY), torch.Tensor)


@dataclass(frozen=True)
class ChannelInfo:
    """Where the channels of one tensor live."""

    root: int  # id of the channel space (union-find root after analysis)
    dim: int | None  # channel axis of this tensor (non-negative); None if not known yet
    size: int  # number of channels along ``dim`` (0 if dim is None)
    expand: int = 1  # features per channel after a flatten (C*H*W: expand = H*W)


def module_pins(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Does the module's spec forbid changing its channels (unknown weighted modules, attention)?"""
    mod = module_at(gm, node.target)
    spec = spec_for(mod)
    return spec.pins_channels or spec.layer_kind(mod) is Kind.OTHER


def layer_info(gm, node, kind, val, first, uf, new, same, pin, producers, groups) -> ChannelInfo:
    if kind in (Kind.CONV, Kind.LINEAR, Kind.CONV_GROUPED, Kind.CONV_DW):
        mod = module_at(gm, node.target) if node.op == "call_module" else None
        if mod is None:
            return new(val, 1)
        if kind is Kind.LINEAR:
            if first.dim is not None and first.dim != val.dim() - 1:
                # the Linear mixes another axis (tokens, time): the channels it carries along
                # cannot be followed through it, so their size is fixed
                pin(first, f"carried through '{node.target}', which acts on another axis")
            ci = new(val, val.dim() - 1)
            producers.setdefault(ci.root, []).append(node.name)
            return ci
        g, cin, cout = mod.groups, mod.in_channels, mod.out_channels
        if g > 1 and cin == cout:
            ci = same(first, val, 1)
            if g != cin:  # grouped conv, not depthwise: keep channels evenly per group
                groups[ci.root] = math.lcm(groups.get(ci.root, 1), g)
            return ci
        ci = new(val, 1)
        if g > 1:
            if g == cin:  # depthwise with a channel multiplier: output tied to input count
                pin(ci, f"depthwise multiplier of '{node.target}'")
                return ci
            groups[first.root] = math.lcm(groups.get(first.root, 1), g)
            groups[ci.root] = math.lcm(groups.get(ci.root, 1), g)
        producers.setdefault(ci.root, []).append(node.name)
        return ci
    if kind is Kind.NORM and node.op == "call_module":
        mod = module_at(gm, node.target)
        if isinstance(mod, nn.LayerNorm) and (first.dim != val.dim() - 1 or len(mod.normalized_shape) != 1):
            pin(first, f"normalized over by '{node.target}'")
    return same(first, val)


def flatten_info(first: ChannelInfo, val, start_dim: int, src: fx.Node, same, new, pin) -> ChannelInfo:
    in_val = src.meta[META_KEY]
    start = start_dim % in_val.dim()
    if first.dim is None:
        return new(val, None)
    if first.dim < start:
        return same(first, val)
    if first.dim == start:
        expand = math.prod(int(s) for s in in_val.shape[start + 1 :]) * first.expand
        return ChannelInfo(first.root, start, int(val.shape[start]) if val.dim() > start else 0, expand)
    pin(first, f"flattened by {src.name}")
    return new(val, None)


def join_info(node, val, info, uf, attr_roots, attr_dims, new, pin) -> ChannelInfo:
    ops = [a for a in node.args if isinstance(a, fx.Node) and a in info]
    out_nd = val.dim()
    out_dim = None
    for a in ops:
        ci = info[a]
        if ci.dim is not None:
            out_dim = ci.dim + out_nd - a.meta[META_KEY].dim()
            break
    if out_dim is None:
        return new(val, None)
    root = None
    for a in ops:
        ci, aval = info[a], a.meta[META_KEY]
        d = out_dim - (out_nd - aval.dim())
        if ci.dim is not None and ci.dim != d:
            # its channels run along another axis of the sum (a Linear's features added to a
            # token stream): that axis must keep the size the other operand fixes
            pin(ci, f"added along another axis by {node.name}")
            continue
        if d < 0 or aval.shape[d] != val.shape[out_dim] or val.shape[out_dim] == 1:
            continue  # broadcast along channels: not coupled
        if ci.dim is None and a in attr_roots:
            attr_dims[a] = d
        elif ci.dim != d:
            continue
        root = ci.root if root is None else uf.union(root, ci.root)
    if root is None:
        return new(val, out_dim)
    return ChannelInfo(root, out_dim, int(val.shape[out_dim]))


def other_info(node, val, first, ins, info, same, new, pin) -> ChannelInfo:
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    in_val = src.meta.get(META_KEY) if src is not None else None
    if first is not None and (target in _FLATTEN_FN or (node.op == "call_method" and target == "flatten")):
        start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
        return flatten_info(first, val, start, src, same, new, pin)
    if first is not None and target in _PERMUTE and first.dim is not None:
        if target in ("permute", torch.permute):
            dims = node.kwargs.get("dims", node.args[1:] if len(node.args) > 1 else ())
            if len(dims) == 1 and isinstance(dims[0], (list, tuple)):
                dims = dims[0]
            dims = [d % val.dim() for d in dims]
        else:
            a, b = (d % val.dim() for d in node.args[1:3])
            dims = list(range(val.dim()))
            dims[a], dims[b] = dims[b], dims[a]
        return same(first, val, dims.index(first.dim))
    if (
        (first is not None and node.op == "call_method" and target in ("view", "reshape") and first.dim == 1)
        and val.dim() == 2
        and in_val is not None
        and val.shape[0] == in_val.shape[0]
    ):
        return flatten_info(first, val, 1, src, same, new, pin)
    if first is not None and node.op == "call_method" and target in _REDUCE and first.dim is not None:
        dims = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else None)
        keep = node.kwargs.get("keepdim", node.args[2] if len(node.args) > 2 else False)
        if dims is not None:
            dims = [d % in_val.dim() for d in ((dims,) if isinstance(dims, int) else dims)]
            if first.dim not in dims:
                shift = 0 if keep else sum(d < first.dim for d in dims)
                return same(first, val, first.dim - shift)
    if first is not None and len(ins) == 1 and in_val is not None and val.shape == in_val.shape:
        return same(first, val)  # elementwise on one tensor (contiguous, scale, softmax, ...)
    if node.op == "call_function" and target in (F.interpolate,) and first is not None:
        return same(first, val)
    for a in ins:
        pin(info[a], f"input of {name} ({node.name})")
    for a in _size_sources(node):  # x.reshape(*y.shape): y's channels fix x's
        if a in info:
            pin(info[a], f"its size is read by {name} ({node.name})")
    ci = new(val, 1 if val.dim() >= 2 else None)
    pin(ci, f"output of {name} ({node.name})")
    return ci


def _size_sources(node: fx.Node) -> list[fx.Node]:
    """Tensors whose sizes reach ``node`` through non-tensor arguments (``y.shape[0]``, ``y.size(1)``)."""
    out, todo, seen = [], [a for a in node.all_input_nodes if not is_tensor(a)], set()
    while todo and len(seen) < 64:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        for a in cur.all_input_nodes:
            (out if is_tensor(a) else todo).append(a)
    return out
