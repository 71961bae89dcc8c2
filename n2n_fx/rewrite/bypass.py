"""Around removed layers: keep downstream sizes, drop removed residual branches.

A removed layer is bypassed (its users read its input). When it reduced channels (a
squeeze, a bottleneck) and a weighted layer follows, the input channels it relied on most
are selected in its place, so the following layers keep their size (``narrow_removed``).
A removed layer that writes a fixed-size residual stream removes its whole branch: nodes
reading the branch stay empty and the residual add passes the stream on
(``through_removed_branch``).
"""

from __future__ import annotations

import torch
from torch import fx

from ..errors import RepairError
from ..graph.branches import in_branch, is_residual_add
from ..graph.kinds import module_at
from ..graph.shapes import META_KEY, meta_like
from ..layers import spec_for
from .provenance import Provenance
from .state import Prov, describe

__all__ = ["Bypass", "NO_BRANCH"]

NO_BRANCH = object()  # stands for the output of a removed residual branch (it adds nothing)


class Bypass(Provenance):
    """The walk's handling of removed layers and removed branches."""

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
            self.prov[n] = Prov(sp.root, dim, sp.idx[keep], sp.expand)
        self.result.inserted[n.name] = f"select {want} of {have} channels in place of removed {t.name}"
        self.vmap[t] = n

    def through_removed_branch(self, t: fx.Node) -> None:
        """A node reading a removed branch: zero-preserving ops stay empty, the residual add
        passes its stream on (the add becomes identity), anything else cannot be repaired."""
        src = next(a for a in t.all_input_nodes if self.vmap.get(a) is NO_BRANCH)
        if is_residual_add(t):
            rest = [self.vmap[a] for a in t.args[:2] if isinstance(a, fx.Node) and self.vmap[a] is not NO_BRANCH]
            if len(rest) != 1:
                raise RepairError("both operands of the residual add were removed")
            self.vmap[t] = rest[0]
            self.result.collapsed.append(t.name)
            self.note(t.name, f"branch removed with {src.name}: the stream passes unchanged")
        elif in_branch(self.t, t, src) or not t.users:  # (an unused read is dropped)
            self.vmap[t] = NO_BRANCH
        else:
            raise RepairError(f"the output of a removed branch reaches {describe(t)}")
