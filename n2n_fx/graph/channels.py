"""Channel spaces: which tensors share channel indices, so shrinking stays consistent.

Every tensor node gets a ``ChannelInfo`` (its channel axis and the id of its channel
space). Ops that keep channel identity (norms, activations, pools, depthwise convs,
residual adds, multiplies, permutes) join their inputs' and output's spaces with a
union-find; convs and linears start new spaces; a ``cat`` along channels starts a space
made of segments. A space is *shrinkable* when it has a producer (conv/linear output)
and nothing pins its size (the model input or output, a reshape or op that depends on
the exact channel count, a module whose ``LayerSpec`` pins its channels: attention, and
every unknown module with weights).
"""

from __future__ import annotations

import math
import operator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..layers import spec_for
from .kinds import Kind, kind_of, module_at
from .shapes import META_KEY

__all__ = [
    "ChannelInfo",
    "ChannelClass",
    "ChannelSpaces",
    "analyze_channels",
    "JOIN_OPS",
    "is_join",
]

_ADDLIKE = {operator.add, operator.iadd, operator.sub, operator.isub, torch.add, torch.sub}
_MULLIKE = {operator.mul, operator.imul, operator.truediv, operator.itruediv, torch.mul, torch.div}
JOIN_OPS = _ADDLIKE | _MULLIKE
_JOIN_METHODS = {"add", "add_", "sub", "sub_", "mul", "mul_", "div", "div_"}
_CAT = {torch.cat, torch.concat, torch.concatenate}
_FLATTEN_FN = {torch.flatten}
_PERMUTE = {"permute", "transpose", torch.permute, torch.transpose}
_FUNCTIONAL_NORMS = {F.layer_norm: 1, F.group_norm: 2}  # function -> index of its weight argument
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
    return sum(isinstance(a, fx.Node) and _is_tensor(a) for a in node.args) >= 2


def is_cat(node: fx.Node) -> bool:
    return node.op == "call_function" and node.target in _CAT


def pad_value(node: fx.Node) -> float:
    """The neutral element used to pad a missing channel of a join operand (0 for +, 1 for *)."""
    if node.target in _MULLIKE or node.target in {"mul", "mul_", "div", "div_"}:
        return 1.0
    return 0.0


def _is_tensor(node: fx.Node) -> bool:
    return isinstance(node.meta.get(META_KEY), torch.Tensor)


@dataclass(frozen=True)
class ChannelInfo:
    """Where the channels of one tensor live."""

    root: int  # id of the channel space (union-find root after analysis)
    dim: int | None  # channel axis of this tensor (non-negative); None if not known yet
    size: int  # number of channels along ``dim`` (0 if dim is None)
    expand: int = 1  # features per channel after a flatten (C*H*W: expand = H*W)


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
        elif node.op == "call_function" and node.target in _FUNCTIONAL_NORMS and first is not None:
            ci = same(first, val)
            if node.target is F.layer_norm and (first.dim != val.dim() - 1 or len(node.args[1]) != 1):
                pin(first, f"normalized over by {node.name}")
            params = list(node.args[_FUNCTIONAL_NORMS[node.target] + 1 :]) + list(node.kwargs.values())
            for a in params:
                if isinstance(a, fx.Node) and a in attr_roots and ci.dim is not None:
                    attr_dims[a] = 0
                    ci = ChannelInfo(uf.union(ci.root, info[a].root), ci.dim, ci.size, ci.expand)
        elif kind is not None and first is not None and node.op == "call_module" and _pins(gm, node):
            mod = module_at(gm, node.target)
            for a in ins:
                pin(info[a], f"input of {type(mod).__name__} '{node.target}'")
            axis = spec_for(mod).in_axis(mod, val.dim())  # its features' axis (channels last for attention)
            ci = new(val, axis if axis is not None else (1 if val.dim() >= 2 else None))
            pin(ci, f"output of {type(mod).__name__} '{node.target}'")
        elif kind is not None and first is not None:
            ci = _layer_info(gm, node, kind, val, first, uf, new, same, pin, producers, groups)
        elif node.op == "call_module":
            mod = module_at(gm, node.target)
            if isinstance(mod, nn.Flatten) and first is not None:
                ci = _flatten(first, val, mod.start_dim, node.args[0], same, new, pin)
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
            ci = _join(node, val, info, uf, attr_roots, attr_dims, new, pin)
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
            ci = _other(node, val, first, ins, info, same, new, pin)
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


def _pins(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Does the module's spec forbid changing its channels (unknown weighted modules, attention)?"""
    mod = module_at(gm, node.target)
    spec = spec_for(mod)
    return spec.pins_channels or spec.layer_kind(mod) is Kind.OTHER


def _layer_info(gm, node, kind, val, first, uf, new, same, pin, producers, groups) -> ChannelInfo:
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


def _flatten(first: ChannelInfo, val, start_dim: int, src: fx.Node, same, new, pin) -> ChannelInfo:
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


def _join(node, val, info, uf, attr_roots, attr_dims, new, pin) -> ChannelInfo:
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


def _other(node, val, first, ins, info, same, new, pin) -> ChannelInfo:
    target = node.target
    name = target if isinstance(target, str) else getattr(target, "__name__", str(target))
    src = node.args[0] if node.args and isinstance(node.args[0], fx.Node) else None
    in_val = src.meta.get(META_KEY) if src is not None else None
    if first is not None and (target in _FLATTEN_FN or (node.op == "call_method" and target == "flatten")):
        start = node.kwargs.get("start_dim", node.args[1] if len(node.args) > 1 else 0)
        return _flatten(first, val, start, src, same, new, pin)
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
        return _flatten(first, val, 1, src, same, new, pin)
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
    out, todo, seen = [], [a for a in node.all_input_nodes if not _is_tensor(a)], set()
    while todo and len(seen) < 64:
        cur = todo.pop()
        if cur in seen:
            continue
        seen.add(cur)
        for a in cur.all_input_nodes:
            (out if _is_tensor(a) else todo).append(a)
    return out
