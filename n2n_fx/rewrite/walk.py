"""The walk over the teacher's nodes: each node emitted into the student, its module rebuilt.

Placeholders and tensors (``get_attr``, sliced to the kept channels) are copied; every layer
module is rebuilt by its spec to fit the channels it now receives (``RebuildContext``), a
module shared by several calls must rebuild identically; joins and ``cat`` are repaired
(``joins``), removed layers bypassed (``bypass``); every other op runs unchanged (in-place
ops made out-of-place). A ``RepairError`` becomes ``Fail`` (a degenerate student).
"""

from __future__ import annotations

import copy
import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from ..degenerate import Reason
from ..errors import RepairError
from ..graph.channels import is_cat, is_join
from ..graph.kinds import module_at
from ..graph.shapes import INPUT_SIZE_KEY, META_KEY, meta_like
from ..layers import RebuildContext, spec_for
from .bypass import NO_BRANCH, Bypass
from .joins import JoinRepair
from .state import INPLACE, Fail, Prov

__all__ = ["Walk"]


class Walk(Bypass, JoinRepair):
    """Emits the student graph node by node (``walk``); raises ``Fail`` for a degenerate student."""

    def placeholder(self, t: fx.Node) -> None:
        s = self.emit(t, "placeholder", t.target, t.args, t.kwargs)
        s.meta[INPUT_SIZE_KEY] = t.meta.get(INPUT_SIZE_KEY)
        v = t.meta[META_KEY]
        self.val[s] = v
        s.meta[META_KEY] = v
        ti = self.tinfo(t)
        if ti is not None:
            self.prov[s] = Prov(ti.root, ti.dim, torch.arange(ti.size) if ti.dim is not None else None)
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
                self.prov[s] = Prov(ti.root, dim, self.expected(ti.root, int(obj.shape[dim])))
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
                raise Fail(
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
                out_prov = Prov(ti_out.root, ti_out.dim, idx, 1)
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
                args = (args[0], math.gcd(args[1], int(x.shape[1])), *args[2:])
        target = t.target
        if t.op == "call_function":
            target = INPLACE.get(target, target)
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

    def walk(self) -> fx.Graph:
        for t in self.t.graph.nodes:
            if t.name in self.plan.branches:
                self.vmap[t] = NO_BRANCH  # its residual branch adds nothing any more
                continue
            if any(self.vmap.get(a) is NO_BRANCH for a in t.all_input_nodes):
                try:
                    self.through_removed_branch(t)
                except RepairError as e:
                    raise Fail(Reason.UNREPAIRABLE, f"{t.name}: {e}") from None
                continue
            if t.name in self.plan.removed:
                self.vmap[t] = self.vmap[t.args[0]]
                try:
                    self.narrow_removed(t)
                except RepairError as e:
                    raise Fail(Reason.UNREPAIRABLE, f"{t.name} (removed): {e}") from None
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
                raise Fail(Reason.UNREPAIRABLE, f"{t.name}: {e}") from None
        return self.graph


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
