"""Channel provenance: which teacher channel each student channel carries.

Every student tensor with a channel axis gets a ``Prov`` record (``idx[j]``: the teacher
channel of student channel j, -1 where none). Rebuilt layers inherit the teacher's weights
through it (``in_map``); ops that keep channel identity pass it on (``default_prov``); a
channel ``cat`` concatenates its operands' records at their teacher offsets (``cat_prov``).
"""

from __future__ import annotations

import torch
from torch import fx

from ..graph.shapes import META_KEY
from .state import Prov, WalkState

__all__ = ["Provenance"]


class Provenance(WalkState):
    """The provenance rules of the walk."""

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

    def default_prov(self, tnode: fx.Node, snode: fx.Node) -> Prov | None:
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
                    return Prov(ti.root, ti.dim, sp.idx, expand)
        exp = self.expected(ti.root, ti.size)
        if exp.numel() * ti.expand == size:
            return Prov(ti.root, ti.dim, exp, ti.expand)
        idx = torch.arange(size)
        return Prov(ti.root, ti.dim, torch.where(idx < ti.size, idx, -1), 1)

    def cat_prov(self, t: fx.Node, s: fx.Node) -> Prov | None:
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
        return Prov(ti.root, ti.dim, torch.cat(parts))
