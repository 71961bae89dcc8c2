"""Channel spaces: which tensors share channel indices, so shrinking stays consistent.

Every tensor node gets a ``ChannelInfo`` (its channel axis and the id of its channel
space). Ops that keep channel identity (norms, activations, pools, depthwise convs,
residual adds, multiplies, permutes) join their inputs' and output's spaces with a
union-find; convs and linears start new spaces; a ``cat`` along channels starts a space
made of segments. A space is *shrinkable* when it has a producer (conv/linear output)
and nothing pins its size (the model input or output, a reshape or op that depends on
the exact channel count, a module whose ``LayerSpec`` pins its channels: attention, and
every unknown module with weights).
The per-op rules live in ``channel_ops``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..layers import spec_for
from .channel_ops import (
    FUNCTIONAL_NORMS,
    JOIN_OPS,
    ChannelInfo,
    flatten_info,
    is_cat,
    is_join,
    join_info,
    layer_info,
    module_pins,
    other_info,
    pad_value,
)
from .kinds import kind_of, module_at
from .shapes import META_KEY

__all__ = [
    "ChannelInfo",
    "ChannelClass",
    "ChannelSpaces",
    "analyze_channels",
    "JOIN_OPS",
    "is_join",
    "is_cat",
    "pad_value",
]


@dataclass
class ChannelClass:
    """A set of tensors whose channels are coupled: shrinking one shrinks all."""

    root: int  # space id
    size: int  # channel count
    members: list[str] = field(default_factory=list)  # tensor node names in this space
    producers: list[str] = field(default_factory=list)  # conv/linear nodes whose output starts it
    pinned: list[str] = field(default_factory=list)  # reasons its size cannot change
    groups: int = 1  # channels must be kept evenly in this many groups (grouped convs)
    attrs: dict[str, int] = field(default_factory=dict)  # get_attr node -> channel axis of that tensor
    segments: list[str] = field(default_factory=list)  # for a channel cat: its operand nodes, in order

    @property
    def shrinkable(self) -> bool:
        return bool(self.producers) and not self.pinned and self.size >= 2 * self.groups


class _UnionFind:
    def __init__(self) -> None:
        self.parent: list[int] = []

    def make(self) -> int:
        self.parent.append(len(self.parent))
        return len(self.parent) - 1

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: int, b: int) -> int:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)
        return min(ra, rb)


@dataclass
class ChannelSpaces:
    """The result of ``analyze_channels``: per-node info and the coupled classes."""

    info: dict[str, ChannelInfo]  # tensor node name -> its channels (root already resolved)
    classes: dict[int, ChannelClass]  # root -> class

    def class_of(self, node_name: str) -> ChannelClass | None:
        ci = self.info.get(node_name)
        return self.classes.get(ci.root) if ci else None


def analyze_channels(gm: fx.GraphModule) -> ChannelSpaces:
    """Compute channel spaces of a GraphModule whose nodes carry meta values (see ``trace``)."""
    uf = _UnionFind()
    info: dict[fx.Node, ChannelInfo] = {}
    pins: dict[int, list[str]] = {}
    producers: dict[int, list[str]] = {}
    groups: dict[int, int] = {}
    attr_roots: dict[fx.Node, int] = {}
    attr_dims: dict[fx.Node, int] = {}
    cat_roots: dict[int, list[fx.Node]] = {}

    def new(val: torch.Tensor, dim: int | None) -> ChannelInfo:
        size = int(val.shape[dim]) if dim is not None and val.dim() > dim else 0
        return ChannelInfo(uf.make(), dim if size else None, size)

    def pin(ci: ChannelInfo | None, why: str) -> None:
        if ci is not None:
            pins.setdefault(ci.root, []).append(why)

    def same(ci: ChannelInfo, val: torch.Tensor, dim: int | None = None) -> ChannelInfo:
        d = ci.dim if dim is None else dim
        if d is None or val.dim() <= d:
            return ChannelInfo(ci.root, None, 0)
        return ChannelInfo(ci.root, d, int(val.shape[d]), ci.expand)

    def tensor_inputs(node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if a in info]

    for node in gm.graph.nodes:
        val = node.meta.get(META_KEY)
        if node.op == "output":
            for a in node.all_input_nodes:
                pin(info.get(a), "model output")
            continue
        if not isinstance(val, torch.Tensor):
            # several tensors out (attention's (output, weights), chunk, split): their channels
            # are not followed, so the inputs' sizes are fixed
            if node.op == "call_module" or (
                isinstance(val, (tuple, list)) and any(isinstance(v, torch.Tensor) for v in val)
            ):
                for a in tensor_inputs(node):
                    pin(info[a], f"split into several tensors by {node.name}")
            continue
        ins = tensor_inputs(node)
        first = info.get(node.args[0]) if node.args and isinstance(node.args[0], fx.Node) else None
        kind = kind_of(gm, node)
        if node.op == "placeholder":
            ci = new(val, 1 if val.dim() >= 2 else None)
            pin(ci, "model input")
        elif node.op == "get_attr":
            ci = ChannelInfo(uf.make(), None, 0)
            attr_roots[node] = ci.root
        elif node.op == "call_function" and node.target in FUNCTIONAL_NORMS and first is not None:
            ci = same(first, val)
            if node.target is F.layer_norm and (first.dim != val.dim() - 1 or len(node.args[1]) != 1):
                pin(first, f"normalized over by {node.name}")
            params = list(node.args[FUNCTIONAL_NORMS[node.target] + 1 :]) + list(node.kwargs.values())
            for a in params:
                if isinstance(a, fx.Node) and a in attr_roots and ci.dim is not None:
                    attr_dims[a] = 0
                    ci = ChannelInfo(uf.union(ci.root, info[a].root), ci.dim, ci.size, ci.expand)
        elif kind is not None and first is not None and node.op == "call_module" and module_pins(gm, node):
            mod = module_at(gm, node.target)
            for a in ins:
                pin(info[a], f"input of {type(mod).__name__} '{node.target}'")
            axis = spec_for(mod).in_axis(mod, val.dim())  # its features' axis (channels last for attention)
            ci = new(val, axis if axis is not None else (1 if val.dim() >= 2 else None))
            pin(ci, f"output of {type(mod).__name__} '{node.target}'")
        elif kind is not None and first is not None:
            ci = layer_info(gm, node, kind, val, first, uf, new, same, pin, producers, groups)
        elif node.op == "call_module":
            mod = module_at(gm, node.target)
            if isinstance(mod, nn.Flatten) and first is not None:
                ci = flatten_info(first, val, mod.start_dim, node.args[0], same, new, pin)
            elif (
                isinstance(mod, nn.Identity)
                and first is not None
                or first is not None
                and not any(True for _ in mod.parameters())
                and val.shape == node.args[0].meta[META_KEY].shape
            ):
                ci = same(first, val)
            else:
                for a in ins:
                    pin(info[a], f"input of {type(mod).__name__} '{node.target}'")
                ci = new(val, 1 if val.dim() >= 2 else None)
                pin(ci, f"output of {type(mod).__name__} '{node.target}'")
        elif is_join(node):
            ci = join_info(node, val, info, uf, attr_roots, attr_dims, new, pin)
        elif is_cat(node):
            tensors = node.args[0]
            dim = node.kwargs.get("dim", node.args[1] if len(node.args) > 1 else 0)
            dim = dim % val.dim()
            ops = [t for t in tensors if isinstance(t, fx.Node) and t in info]
            if ops and all(info[t].dim == dim for t in ops):
                ci = new(val, dim)
                cat_roots[ci.root] = ops
            else:
                ci = new(val, None)
                known = [info[t] for t in ops if info[t].dim is not None]
                if known and all(k.dim != dim for k in known):
                    root = known[0].root
                    for k in known[1:]:
                        root = uf.union(root, k.root)
                    ci = same(ChannelInfo(root, known[0].dim, known[0].size), val)
                else:
                    for t in ops:
                        pin(info[t], f"input of {node.name}")
        else:
            ci = other_info(node, val, first, ins, info, same, new, pin)
        info[node] = ci

    # a cat whose size is pinned pins the spaces it is made of
    changed = True
    while changed:
        changed = False
        for root, ops in cat_roots.items():
            if pins.get(uf.find(root)) or pins.get(root):
                for t in ops:
                    r = uf.find(info[t].root)
                    if not pins.get(r):
                        pins.setdefault(r, []).append("concatenated into a pinned tensor")
                        changed = True

    resolved: dict[str, ChannelInfo] = {}
    classes: dict[int, ChannelClass] = {}
    for node, ci in info.items():
        r = uf.find(ci.root)
        ci = ChannelInfo(r, ci.dim, ci.size, ci.expand)
        resolved[node.name] = ci
        cls = classes.get(r)
        if cls is None and ci.dim is not None:
            cls = classes[r] = ChannelClass(root=r, size=ci.size)
        if cls is not None:
            cls.members.append(node.name)
            if node in attr_dims:
                cls.attrs[node.name] = attr_dims[node]
    for r0, why in pins.items():
        cls = classes.get(uf.find(r0))
        if cls is not None:
            cls.pinned.extend(w for w in why if w not in cls.pinned)
    for r0, names in producers.items():
        cls = classes.get(uf.find(r0))
        if cls is not None:
            cls.producers.extend(names)
    for r0, g in groups.items():
        cls = classes.get(uf.find(r0))
        if cls is not None:
            cls.groups = math.lcm(cls.groups, g)
    for r0, ops in cat_roots.items():
        cls = classes.get(uf.find(r0))
        if cls is not None:
            cls.segments = [t.name for t in ops]
    for cls in classes.values():
        if cls.size % cls.groups:
            cls.pinned.append(f"{cls.size} channels not divisible into {cls.groups} groups")
    return ChannelSpaces(resolved, classes)
