"""The rebuild walk: apply a ``Plan`` to a traced graph and repair every shape it changed.

The walk visits the teacher's nodes in order and emits the student's graph:

* a removed layer is bypassed (its users read its input); a removed layer that writes a
  fixed-size residual stream (``Layer.branch``: attention, a transformer MLP's output)
  removes its whole branch instead, and the residual add passes the stream on;
* every layer module is rebuilt by its handler to fit the channels it now receives,
  inheriting the teacher's weights through a per-channel index map (``_Prov``);
* joins (add, mul, cat along channels) restore each operand to the channel count the
  join expects (zero- or one-padding, or narrowing) and to a common spatial size
  (adaptive average pooling of the larger operand), so residual blocks stay valid;
* a join whose operands collapsed into one node (an emptied branch) becomes identity;
* every other op runs unchanged; if it no longer fits (its own shape check raises), the
  student is degenerate.

Only ``RepairError`` (a handler that cannot rebuild, an op that rejects its new input)
makes a degenerate student; any other exception is a bug in the surgery and propagates.

Values are propagated on the meta device, so the walk costs no real compute. The teacher
is never modified.
"""

from __future__ import annotations

import copy
import operator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..errors import RepairError
from ..graph.branches import in_branch, is_residual_add
from ..graph.channels import ChannelInfo, is_cat, is_join, pad_value
from ..graph.cost import Cost, model_cost
from ..graph.kinds import module_at
from ..graph.layers import Analysis
from ..graph.shapes import META_KEY, call_function_meta, call_module_meta, meta_like
from ..layers import RebuildContext, gather, spec_for
from ..teacher.trace import INPUT_SIZE_KEY
from .degenerate import Degenerate, Reason
from .plan import Plan

__all__ = ["rebuild", "RebuildResult"]

_INPLACE = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}
# what a model's op raises when its shape check rejects an input (torch._assert raises AssertionError)
_OP_REJECTS = (RuntimeError, ValueError, IndexError, AssertionError)
_ADAPTIVE_POOL = {1: F.adaptive_avg_pool1d, 2: F.adaptive_avg_pool2d, 3: F.adaptive_avg_pool3d}


@dataclass
class _Prov:
    """Student tensor -> teacher channels: ``idx[j]`` is the teacher channel of student channel j."""

    root: int | None  # teacher channel space
    dim: int | None  # channel axis
    idx: torch.Tensor | None  # (C',) long, -1 where no teacher channel corresponds
    expand: int = 1  # features per channel after a flatten


@dataclass
class RebuildResult:
    """Output of the walk, before the public ``Rewrite`` record is made."""

    student: fx.GraphModule | None
    degenerate: Degenerate | None
    repaired: dict[str, list[str]] = field(default_factory=dict)  # node -> what changed
    inserted: dict[str, str] = field(default_factory=dict)  # new node -> why
    collapsed: list[str] = field(default_factory=list)  # joins that became identity
    selections: dict[str, torch.Tensor] = field(default_factory=dict)  # removed layer -> channels passed on
    cost: Cost | None = None


class _Walk:
    def __init__(self, analysis: Analysis, plan: Plan, max_linear_growth: float) -> None:
        self.max_linear_growth = max_linear_growth
        self.a = analysis
        self.t = analysis.gm
        self.plan = plan
        self.info = analysis.spaces.info
        self.classes = analysis.spaces.classes
        self.graph = fx.Graph()
        self.vmap: dict[fx.Node, fx.Node] = {}
        self.val: dict[fx.Node, Any] = {}  # student node -> meta value
        self.prov: dict[fx.Node, _Prov] = {}
        self.attrs: dict[str, Any] = {}  # student attribute path -> module / tensor
        self.result = RebuildResult(None, None)

    # ---- helpers -------------------------------------------------------------------------
    def expected(self, root: int | None, size: int) -> torch.Tensor:
        if root is not None and root in self.plan.kept:
            return self.plan.kept[root]
        return torch.arange(size)

    def note(self, node: str, what: str) -> None:
        self.result.repaired.setdefault(node, []).append(what)

    def tinfo(self, node: fx.Node) -> ChannelInfo | None:
        return self.info.get(node.name)

    def in_map(self, tnode_in: fx.Node, snode_in: fx.Node, dim: int | None = None) -> tuple[torch.Tensor, int, bool]:
        """Teacher channel per student input channel of a layer, student size, and whether positional."""
        ti = self.tinfo(tnode_in)
        sp = self.prov.get(snode_in)
        sval = self.val[snode_in]
        d = dim if dim is not None else (ti.dim if ti and ti.dim is not None else sval.dim() - 1)
        size = int(sval.shape[d])
        if ti is not None and sp is not None and sp.root == ti.root and sp.idx is not None and ti.dim == d:
            idx = sp.idx
            if ti.expand > 1 or sp.expand > 1:
                if sp.expand == ti.expand and idx.numel() * sp.expand == size:
                    e = ti.expand
                    full = (idx[:, None] * e + torch.arange(e)[None, :]).flatten()
                    return torch.where(idx.repeat_interleave(e) < 0, -1, full), size, False
            elif idx.numel() == size:
                return idx, size, False
        teacher_size = (
            int(tnode_in.meta[META_KEY].shape[d]) if isinstance(tnode_in.meta.get(META_KEY), torch.Tensor) else size
        )
        idx = torch.arange(size)
        return torch.where(idx < teacher_size, idx, -1), size, True

    def emit(
        self,
        tnode: fx.Node,
        op: str,
        target: Any,
        args: tuple,
        kwargs: dict,
        name: str | None = None,
    ) -> fx.Node:
        n = self.graph.create_node(op, target, args, kwargs, name=name or tnode.name)
        n.meta = {k: v for k, v in tnode.meta.items() if k != META_KEY} if name is None else {}
        return n

    def run(self, snode: fx.Node) -> Any:
        """Evaluate the student's op on meta values; an op that rejects its new input is a ``RepairError``."""
        args = fx.node.map_arg(snode.args, lambda n: self.val[n])
        kwargs = fx.node.map_arg(snode.kwargs, lambda n: self.val[n])
        try:
            if snode.op == "call_module":
                out = call_module_meta(self.attrs[snode.target], args, kwargs)
            elif snode.op == "call_function":
                out = call_function_meta(_INPLACE.get(snode.target, snode.target), args, kwargs)
            else:
                out = getattr(args[0], snode.target)(*args[1:], **kwargs)
        except _OP_REJECTS as e:  # the model's own shape check (torch, torch._assert) refused the input
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RepairError(f"({_describe(snode)}) {msg[:200]}") from e
        self.val[snode] = out
        snode.meta[META_KEY] = out
        return out

    def default_prov(self, tnode: fx.Node, snode: fx.Node) -> _Prov | None:
        """Provenance of a non-layer op: follow its first input when the op keeps channel identity."""
        ti = self.tinfo(tnode)
        out = self.val.get(snode)
        if ti is None or ti.dim is None or not isinstance(out, torch.Tensor) or out.dim() <= ti.dim:
            return None
        size = int(out.shape[ti.dim])
        first_t = tnode.args[0] if tnode.args and isinstance(tnode.args[0], fx.Node) else None
        first_s = snode.args[0] if snode.args and isinstance(snode.args[0], fx.Node) else None
        if first_t is not None and first_s is not None:
            ti_in = self.tinfo(first_t)
            sp = self.prov.get(first_s)
            if (
                ti_in is not None
                and ti_in.root == ti.root
                and sp is not None
                and sp.root == ti.root
                and sp.idx is not None
            ):
                expand = max(1, size // max(1, sp.idx.numel()))
                if sp.idx.numel() * expand == size:
                    return _Prov(ti.root, ti.dim, sp.idx, expand)
        exp = self.expected(ti.root, ti.size)
        if exp.numel() * ti.expand == size:
            return _Prov(ti.root, ti.dim, exp, ti.expand)
        idx = torch.arange(size)
        return _Prov(ti.root, ti.dim, torch.where(idx < ti.size, idx, -1), 1)

    # ---- node kinds ----------------------------------------------------------------------
    def placeholder(self, t: fx.Node) -> None:
        s = self.emit(t, "placeholder", t.target, t.args, t.kwargs)
        s.meta[INPUT_SIZE_KEY] = t.meta.get(INPUT_SIZE_KEY)
        v = t.meta[META_KEY]
        self.val[s] = v
        s.meta[META_KEY] = v
        ti = self.tinfo(t)
        if ti is not None:
            self.prov[s] = _Prov(ti.root, ti.dim, torch.arange(ti.size) if ti.dim is not None else None)
        self.vmap[t] = s

    def get_attr(self, t: fx.Node) -> None:
        obj: Any = self.t
        for atom in t.target.split("."):
            obj = getattr(obj, atom)
        ti = self.tinfo(t)
        new = obj
        if isinstance(obj, torch.Tensor):
            cls = self.classes.get(ti.root) if ti else None
            dim = cls.attrs.get(t.name) if cls else None
            if cls is not None and dim is not None and cls.root in self.plan.kept:
                data = obj.detach().index_select(dim, self.plan.kept[cls.root])
                new = nn.Parameter(data.clone(), obj.requires_grad) if isinstance(obj, nn.Parameter) else data.clone()
                self.note(t.name, f"sliced {tuple(obj.shape)}->{tuple(new.shape)}")
            else:
                new = (
                    nn.Parameter(obj.detach().clone(), obj.requires_grad)
                    if isinstance(obj, nn.Parameter)
                    else obj.clone()
                )
        else:
            new = copy.deepcopy(obj)
        self.attrs[t.target] = new
        s = self.emit(t, "get_attr", t.target, (), {})
        v = meta_like(new) if isinstance(new, torch.Tensor) else new
        self.val[s] = v
        s.meta[META_KEY] = v
        if ti is not None and ti.dim is None and isinstance(new, torch.Tensor):
            cls = self.classes.get(ti.root)
            dim = cls.attrs.get(t.name) if cls else None
            if dim is not None:
                self.prov[s] = _Prov(ti.root, dim, self.expected(ti.root, int(obj.shape[dim])))
        self.vmap[t] = s

    def call_module(self, t: fx.Node) -> None:
        mod = module_at(self.t, t.target)
        args = fx.node.map_arg(t.args, lambda n: self.vmap[n])
        kwargs = fx.node.map_arg(t.kwargs, lambda n: self.vmap[n])
        first_t = t.args[0] if t.args and isinstance(t.args[0], fx.Node) else None
        out_prov = None
        if first_t is not None and t.name in self.a.by_node:
            first_s = args[0]
            ti_out = self.tinfo(t)
            ti_in = self.tinfo(first_t)
            in_idx, in_size, positional = self.in_map(first_t, first_s, _feature_dim(mod, self.val[first_s]))
            coupled = ti_out is not None and ti_in is not None and ti_out.root == ti_in.root
            out_idx = None
            if ti_out is not None and not coupled and ti_out.dim is not None:
                out_idx = self.expected(ti_out.root, ti_out.size)
            if isinstance(mod, nn.Linear) and in_size > self.max_linear_growth * mod.in_features:
                raise _Fail(
                    Reason.OVERSIZED_LINEAR,
                    f"{t.name} would take {in_size} inputs, over {self.max_linear_growth:g}x the teacher's {mod.in_features}",
                )
            ctx = RebuildContext(
                in_idx=in_idx,
                in_size=in_size,
                out_idx=out_idx,
                coupled=coupled,
                kernel=self.plan.kernels.get(t.name),
                stride=self.plan.strides[t.name][1] if t.name in self.plan.strides else None,
                heads=self.plan.heads.get(t.name),
            )
            built = spec_for(mod).rebuild(mod, ctx)
            new_mod = built.module
            changed = _shape_sig(new_mod) != _shape_sig(mod)
            if changed and _in_sig(mod) != in_size:
                ctx.notes.insert(
                    0, f"input {_in_sig(mod)}->{in_size}" + (" (positional weights)" if positional else "")
                )
            elif changed and not any(t.name in d for d in (self.plan.kernels, self.plan.shrunk_out, self.plan.heads)):
                ctx.notes.insert(0, "output channels follow a coupled shrink")
            if t.name in self.plan.strides:
                ctx.notes.append(f"stride moved from removed {self.plan.strides[t.name][0]}")
            for n in ctx.notes:
                self.note(t.name, n)
            if ti_out is not None and ti_out.dim is not None:
                idx = built.out_idx if built.out_idx is not None else in_idx
                out_prov = _Prov(ti_out.root, ti_out.dim, idx, 1)
        else:
            new_mod = copy.deepcopy(mod)
        if getattr(new_mod, "inplace", False):
            new_mod.inplace = False  # bypassed layers can make an in-place op overwrite a tensor still needed
        path = t.target
        if path in self.attrs and not _same_module(self.attrs[path], new_mod):
            # a module called twice whose calls now need different weights: untying them would
            # silently change the model, so the rewrite is refused
            raise RepairError(f"module {t.target} is shared by several calls that now need different weights")
        if path not in self.attrs:
            self.attrs[path] = new_mod  # else: reuse, so weight sharing is kept
        s = self.emit(t, "call_module", path, args, kwargs)
        self.run(s)
        self.prov[s] = out_prov if out_prov is not None else self.default_prov(t, s)
        self.vmap[t] = s

    def call_other(self, t: fx.Node) -> None:
        args = fx.node.map_arg(t.args, lambda n: self.vmap[n])
        kwargs = fx.node.map_arg(t.kwargs, lambda n: self.vmap[n])
        if is_join(t):
            t_ops = [a for a in t.args if isinstance(a, fx.Node)]
            s_ops = [self.vmap[a] for a in t_ops]
            if len(set(s_ops)) == 1 and len(set(t_ops)) > 1:  # an emptied branch: the join is identity
                self.vmap[t] = s_ops[0]
                self.result.collapsed.append(t.name)
                return
            args = self.coerce_join(t, args)
        elif is_cat(t):
            args = self.coerce_cat(t, args, kwargs)
        elif t.op == "call_function" and t.target is F.layer_norm:
            x = self.val[args[0]]
            if isinstance(x, torch.Tensor) and len(args) > 1 and len(args[1]) == 1:
                args = (args[0], (int(x.shape[-1]),), *args[2:])
                params = list(zip(args[2:4], (1.0, 0.0), strict=False))
                params += [(kwargs.get(k), f) for k, f in (("weight", 1.0), ("bias", 0.0))]
                for a, fill in params:
                    self.fit_attr(a, int(x.shape[-1]), fill)
        elif t.op == "call_function" and t.target is F.group_norm:
            x = self.val[args[0]]
            if isinstance(x, torch.Tensor) and len(args) > 1 and isinstance(args[1], int):
                import math

                args = (args[0], math.gcd(args[1], int(x.shape[1])), *args[2:])
        target = t.target
        if t.op == "call_function":
            target = _INPLACE.get(target, target)
        elif (
            t.op == "call_method" and target.endswith("_") and not target.startswith("_") and target != "requires_grad_"
        ):
            target = target[:-1]
        if kwargs.get("inplace"):
            kwargs = {**kwargs, "inplace": False}
        s = self.emit(t, t.op, target, args, kwargs)
        self.run(s)
        self.prov[s] = self.default_prov(t, s)
        self.vmap[t] = s

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

    def feeds_kept_weights(self, t: fx.Node) -> bool:
        """Does some path from ``t`` reach a kept layer with weights before a join, reshape or output?

        Removed layers and parameter-free layers (activations, pools) are passed through. Such a
        layer would grow if it received the removed layer's input unchanged; paths that end in a
        join instead are repaired there (padding), so one weighted consumer is enough."""
        todo, seen = [t], set()
        while todo and len(seen) <= 64:
            cur = todo.pop()
            for u in cur.users:
                if u in seen:
                    continue
                seen.add(u)
                if u.op == "call_module" and u.name not in self.plan.removed:
                    if any(True for _ in module_at(self.t, u.target).parameters()):
                        return True
                    todo.append(u)
                elif u.name in self.plan.removed or u.name in self.a.by_node:
                    todo.append(u)
        return False

    def narrow_removed(self, t: fx.Node) -> None:
        """A removed layer that reduced channels (a squeeze, a bottleneck): keep downstream sizes.

        Its users would otherwise receive more channels than before and grow. Instead the
        input channels the removed layer relied on most (L1 of its weights per input
        channel) are selected, so the following layers keep their size.
        """
        ti_out, ti_in = self.tinfo(t), self.tinfo(t.args[0])
        if ti_out is None or ti_in is None or ti_out.dim is None or ti_in.dim is None or ti_out.root == ti_in.root:
            return
        if t.op != "call_module":
            return
        mod = module_at(self.t, t.target)
        use = spec_for(mod).input_use(mod)  # (C_in,) L1 of the weights per input channel; None: no rule
        if use is None:
            return
        s_in = self.vmap[t]
        want = self.expected(ti_out.root, ti_out.size).numel() * ti_out.expand
        dim = ti_in.dim
        have = int(self.val[s_in].shape[dim])
        if have <= want:
            return
        if not self.feeds_kept_weights(t):
            return  # a join or the output comes first: the join's own repair is cheaper
        keep = self.plan.selections.get(t.name)
        if keep is None:
            in_idx, _, _ = self.in_map(t.args[0], s_in)
            score = torch.where(in_idx >= 0, use[in_idx.clamp(0, use.numel() - 1)], torch.zeros(()))
            keep = torch.sort(torch.topk(score, want, sorted=False).indices).values
        elif keep.numel() != want or int(keep.max()) >= have:
            raise RepairError(f"replayed selection of {keep.numel()} channels does not fit")
        self.result.selections[t.name] = keep
        buf = f"{t.target.replace('.', '_')}_keep"
        self.attrs[buf] = keep
        g = self.graph.create_node("get_attr", buf, (), {}, name=f"{t.name}_keep")
        self.val[g] = meta_like(keep)
        g.meta[META_KEY] = self.val[g]
        n = self.graph.create_node("call_function", torch.index_select, (s_in, dim, g), {}, name=f"{t.name}_select")
        v = torch.index_select(self.val[s_in], dim, self.val[g])
        self.val[n] = v
        n.meta[META_KEY] = v
        sp = self.prov.get(s_in)
        if sp is not None and sp.idx is not None and sp.idx.numel() == have:
            self.prov[n] = _Prov(sp.root, dim, sp.idx[keep], sp.expand)
        self.result.inserted[n.name] = f"select {want} of {have} channels in place of removed {t.name}"
        self.vmap[t] = n

    def through_removed_branch(self, t: fx.Node) -> None:
        """A node reading a removed branch: zero-preserving ops stay empty, the residual add
        passes its stream on (the add becomes identity), anything else cannot be repaired."""
        src = next(a for a in t.all_input_nodes if self.vmap.get(a) is _NO_BRANCH)
        if is_residual_add(t):
            rest = [self.vmap[a] for a in t.args[:2] if isinstance(a, fx.Node) and self.vmap[a] is not _NO_BRANCH]
            if len(rest) != 1:
                raise RepairError("both operands of the residual add were removed")
            self.vmap[t] = rest[0]
            self.result.collapsed.append(t.name)
            self.note(t.name, f"branch removed with {src.name}: the stream passes unchanged")
        elif in_branch(self.t, t, src) or not t.users:  # (an unused read is dropped)
            self.vmap[t] = _NO_BRANCH
        else:
            raise RepairError(f"the output of a removed branch reaches {_describe(t)}")

    # ---- joins ---------------------------------------------------------------------------
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
        self.prov[n] = _Prov(root, dim, torch.where(idx < have, idx, -1))
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
            fn = _ADAPTIVE_POOL[len(target)]
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

    def cat_prov(self, t: fx.Node, s: fx.Node) -> _Prov | None:
        ti = self.tinfo(t)
        if ti is None or ti.dim is None:
            return None
        parts, off = [], 0
        for a, sa in zip(t.args[0], s.args[0], strict=True):
            ta = self.tinfo(a)
            sp = self.prov.get(sa)
            n = int(self.val[sa].shape[ti.dim])
            if ta is not None and sp is not None and sp.root == ta.root and sp.idx is not None and sp.idx.numel() == n:
                parts.append(torch.where(sp.idx < 0, -1, sp.idx + off))
            else:
                idx = torch.arange(n)
                parts.append(torch.where(idx < (ta.size if ta else 0), idx + off, -1))
            off += ta.size if ta is not None else int(a.meta[META_KEY].shape[ti.dim])
        return _Prov(ti.root, ti.dim, torch.cat(parts))

    # ---- main ----------------------------------------------------------------------------
    def walk(self) -> fx.Graph:
        for t in self.t.graph.nodes:
            if t.name in self.plan.branches:
                self.vmap[t] = _NO_BRANCH  # its residual branch adds nothing any more
                continue
            if any(self.vmap.get(a) is _NO_BRANCH for a in t.all_input_nodes):
                try:
                    self.through_removed_branch(t)
                except RepairError as e:
                    raise _Fail(Reason.UNREPAIRABLE, f"{t.name}: {e}") from None
                continue
            if t.name in self.plan.removed:
                self.vmap[t] = self.vmap[t.args[0]]
                try:
                    self.narrow_removed(t)
                except RepairError as e:
                    raise _Fail(Reason.UNREPAIRABLE, f"{t.name} (removed): {e}") from None
                continue
            try:
                if t.op == "placeholder":
                    self.placeholder(t)
                elif t.op == "get_attr":
                    self.get_attr(t)
                elif t.op == "call_module":
                    self.call_module(t)
                elif t.op == "output":
                    s = self.emit(t, "output", "output", fx.node.map_arg(t.args, lambda n: self.vmap[n]), {})
                    self.vmap[t] = s
                else:
                    self.call_other(t)
                    if is_cat(t) and t in self.vmap:
                        s = self.vmap[t]
                        p = self.cat_prov(t, s)
                        if p is not None:
                            self.prov[s] = p
            except RepairError as e:  # the only expected failure; any other exception is a bug
                raise _Fail(Reason.UNREPAIRABLE, f"{t.name}: {e}") from None
        return self.graph


_NO_BRANCH = object()  # stands for the output of a removed residual branch (it adds nothing)


class _Fail(Exception):
    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def _feature_dim(mod: nn.Module, x: Any) -> int | None:
    """The axis of ``x`` that the module's weights index (its spec's ``in_axis``)."""
    if not isinstance(x, torch.Tensor) or x.dim() == 0:
        return None
    return spec_for(mod).in_axis(mod, x.dim())


def _same_module(a: nn.Module, b: nn.Module) -> bool:
    """Do two rebuilds of one shared module agree (same settings and shapes, equal tensors)?"""
    if _shape_sig(a) != _shape_sig(b):
        return False
    sa, sb = a.state_dict(), b.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


def _shape_sig(m: Any) -> tuple:
    if isinstance(m, nn.Module):
        sig = tuple((k, tuple(v.shape)) for k, v in m.state_dict().items())
        for attr in ("stride", "padding", "groups", "kernel_size"):
            if hasattr(m, attr):
                sig += ((attr, getattr(m, attr)),)
        return sig
    return ()


def _in_sig(m: nn.Module) -> int | str:
    for attr in ("in_channels", "in_features", "num_features", "num_channels", "embed_dim"):
        if hasattr(m, attr):
            return int(getattr(m, attr))
    if isinstance(m, nn.LayerNorm):
        return int(m.normalized_shape[-1])
    return "?"


def _describe(t: fx.Node) -> str:
    if t.op == "call_module":
        return f"module {t.target}"
    return getattr(t.target, "__name__", str(t.target))


def rebuild(analysis: Analysis, plan: Plan, *, max_linear_growth: float = 8.0) -> RebuildResult:
    """Apply ``plan`` to ``analysis.gm``; a student that cannot be repaired is returned degenerate.

    Raises only on bugs (an exception other than ``RepairError``), never for a bad student.
    """
    w = _Walk(analysis, plan, max_linear_growth)
    try:
        graph = w.walk()
    except _Fail as f:
        w.result.degenerate = Degenerate(f.reason, f.detail)
        return w.result
    used = {n.target for n in graph.nodes if n.op in ("call_module", "get_attr")}
    root = {k: v for k, v in w.attrs.items() if k in used}
    student = fx.GraphModule(root, graph, class_name="Student")  # compiles the code once
    if graph.eliminate_dead_code():
        student.delete_all_unused_submodules()
        student.recompile()  # only when dead code went away
    graph.lint()
    student.train(analysis.gm.training)
    w.result.student = student
    t_out = analysis.gm.graph.find_nodes(op="output")[0].meta.get(META_KEY)
    s_out = graph.find_nodes(op="output")[0]
    s_val = fx.node.map_arg(s_out.args[0], lambda n: w.val.get(n))
    s_out.meta[META_KEY] = s_val
    if isinstance(t_out, torch.Tensor) and (not isinstance(s_val, torch.Tensor) or s_val.shape != t_out.shape):
        got = tuple(s_val.shape) if isinstance(s_val, torch.Tensor) else type(s_val).__name__
        w.result.degenerate = Degenerate(Reason.OUTPUT_MISMATCH, f"output {got}, teacher {tuple(t_out.shape)}")
        return w.result
    w.result.cost = model_cost(student)
    if w.result.cost.params == 0 or not any(p.requires_grad for p in student.parameters()):
        w.result.degenerate = Degenerate(Reason.NO_TRAINABLE, "the student has no trainable parameter")
    return w.result
