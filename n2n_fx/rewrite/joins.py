"""Join repair: operands of add / mul / cat restored to the sizes the join expects.

Each operand of a join is padded (zeros, or ones for a product) or narrowed to the channel
count of the join's channel space, and larger operands are pooled (adaptive average) to the
smallest spatial size, so residual blocks stay valid after a shrink or a removal. Channel
``cat`` operands are fitted segment by segment. The 1-d parameters of a functional norm are
resized to the channels it now receives.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..graph.channels import pad_value
from ..graph.shapes import META_KEY, meta_like
from ..layers import gather
from .state import Prov, WalkState

__all__ = ["JoinRepair"]

ADAPTIVE_POOL = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


class JoinRepair(WalkState):
    """The walk's repairs of joins and of functional norms' parameters."""

    def _insert(self, anchor: fx.Node, fn: Any, args: tuple, why: str) -> fx.Node:
        name = f"{anchor.name}_fix"
        n = self.graph.create_node("call_function", fn, args, {}, name=name)
        self.result.inserted[n.name] = why
        v = fn(*fx.node.map_arg(args, lambda x: self.val[x]))
        self.val[n] = v
        n.meta[META_KEY] = v
        return n

    def fit_channels(self, anchor: fx.Node, op: fx.Node, dim: int, want: int, fill: float, root: int | None) -> fx.Node:
        v = self.val[op]
        have = int(v.shape[dim])
        if have == want:
            return op
        if have > want:
            n = self._insert(
                anchor,
                torch.narrow,
                (op, dim, 0, want),
                f"narrow {op.name} {have}->{want} channels",
            )
        else:
            pad = [0, 0] * (v.dim() - 1 - dim) + [0, want - have]
            n = self._insert(
                anchor,
                F.pad,
                (op, pad, "constant", fill),
                f"pad {op.name} {have}->{want} channels with {fill:g}",
            )
        idx = torch.arange(want)
        self.prov[n] = Prov(root, dim, torch.where(idx < have, idx, -1))
        return n

    def fit_spatial(
        self, anchor: fx.Node, ops: list[fx.Node], cdim: int, broadcast: bool = True
    ) -> dict[fx.Node, fx.Node]:
        """Pool larger operands down to the smallest spatial size (size-1 dims broadcast in joins, not in cat)."""
        vals = [self.val[o] for o in ops]
        if cdim != 1 or any(v.dim() not in (3, 4, 5) for v in vals) or len({v.dim() for v in vals}) != 1:
            return {}
        sizes = [tuple(int(s) for s in v.shape[2:]) for v in vals]
        if broadcast:
            target = tuple(
                min(s[d] for s in sizes if s[d] != 1) if any(s[d] != 1 for s in sizes) else 1
                for d in range(len(sizes[0]))
            )
        else:
            target = tuple(min(s[d] for s in sizes) for d in range(len(sizes[0])))
        out = {}
        for o, s in zip(ops, sizes, strict=True):
            if all(a == 1 or a == b for a, b in zip(s, target, strict=True)) or s == target:
                continue
            fn = ADAPTIVE_POOL[len(target)]
            n = self._insert(anchor, fn, (o, target), f"pool {o.name} {s}->{target}")
            self.prov[n] = self.prov.get(o)
            out[o] = n
        return out

    def coerce_join(self, t: fx.Node, args: tuple) -> tuple:
        ti = self.tinfo(t)
        fill = pad_value(t)
        s_args = list(args)
        if ti is not None and ti.dim is not None:
            want = self.expected(ti.root, ti.size).numel()
            out_nd = t.meta[META_KEY].dim()
            for i, a in enumerate(t.args):
                if not isinstance(a, fx.Node) or not isinstance(self.val.get(s_args[i]), torch.Tensor):
                    continue
                tv = a.meta[META_KEY]
                d = ti.dim - (out_nd - tv.dim())
                if d < 0 or int(tv.shape[d]) == 1:
                    continue  # broadcast operand
                sv = self.val[s_args[i]]
                if sv.dim() != tv.dim():
                    continue
                s_args[i] = self.fit_channels(t, s_args[i], d, want, fill, ti.root)
            tensor_ops = [x for x in s_args if isinstance(x, fx.Node) and isinstance(self.val.get(x), torch.Tensor)]
            fixed = self.fit_spatial(t, tensor_ops, ti.dim)
            s_args = [fixed.get(x, x) if isinstance(x, fx.Node) else x for x in s_args]
            for x in s_args:
                if isinstance(x, fx.Node) and x in fixed.values():
                    self.note(t.name, self.result.inserted[x.name])
            for x, a in zip(s_args, args, strict=True):
                if x is not a and x.name in self.result.inserted and x not in fixed.values():
                    self.note(t.name, self.result.inserted[x.name])
        return tuple(s_args)

    def coerce_cat(self, t: fx.Node, args: tuple, kwargs: dict) -> tuple:
        ti = self.tinfo(t)
        tensors_t = t.args[0]
        tensors_s = list(args[0])
        dim = kwargs.get("dim", args[1] if len(args) > 1 else 0)
        out_nd = t.meta[META_KEY].dim()
        dim = dim % out_nd
        if ti is None or ti.dim != dim:
            return args
        for i, a in enumerate(tensors_t):
            ta = self.tinfo(a)
            if ta is None or ta.dim != dim:
                continue
            want = self.expected(ta.root, ta.size).numel()
            tensors_s[i] = self.fit_channels(t, tensors_s[i], dim, want, 0.0, ta.root)
        fixed = self.fit_spatial(t, tensors_s, dim, broadcast=False)
        tensors_s = [fixed.get(x, x) for x in tensors_s]
        for x in tensors_s:
            if x.name in self.result.inserted:
                self.note(t.name, self.result.inserted[x.name])
        # provenance of the concatenation: teacher offset + kept index per segment
        return (tensors_s, *args[1:])

    def fit_attr(self, a: Any, size: int, fill: float) -> None:
        """Make a 1-d parameter read by a functional norm match its input's channel count."""
        if not isinstance(a, fx.Node) or a.op != "get_attr":
            return
        old = self.attrs.get(a.target)
        if not isinstance(old, torch.Tensor) or old.dim() != 1 or old.numel() == size:
            return
        idx = torch.arange(size)
        data = gather(old.detach(), torch.where(idx < old.numel(), idx, -1), 0, fill)
        self.attrs[a.target] = nn.Parameter(data, old.requires_grad) if isinstance(old, nn.Parameter) else data
        self.val[a] = meta_like(data)
        a.meta[META_KEY] = self.val[a]
        self.note(a.name, f"resized {old.numel()}->{size} (positional)")
