"""The rebuild walk's state: the student graph under construction and what it knows of it.

``WalkState`` holds, for the walk over the teacher's nodes, the student graph being emitted,
the map teacher node -> student node, each student node's meta value and channel provenance
(``Prov``), the student's modules and tensors, and the ``RebuildResult`` being filled. Its
helpers emit student nodes and evaluate them on meta values; an op that rejects its new input
raises ``RepairError``.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from ..degenerate import Degenerate, Reason
from ..errors import RepairError
from ..graph.channels import ChannelInfo
from ..graph.cost import Cost
from ..graph.layers import Analysis
from ..graph.shapes import META_KEY, call_function_meta, call_module_meta
from .plan import Plan

__all__ = ["WalkState", "Prov", "RebuildResult", "Fail", "describe", "INPLACE"]

INPLACE = {
    operator.iadd: operator.add,
    operator.isub: operator.sub,
    operator.imul: operator.mul,
    operator.itruediv: operator.truediv,
}
# what a model's op raises when its shape check rejects an input (torch._assert raises AssertionError)
OP_REJECTS = (RuntimeError, ValueError, IndexError, AssertionError)


@dataclass
class Prov:
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


class Fail(Exception):
    """The walk cannot make a valid student: ``rebuild`` returns it degenerate with this reason."""

    def __init__(self, reason: Reason, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


def describe(t: fx.Node) -> str:
    """A node's op in words, for repair messages."""
    if t.op == "call_module":
        return f"module {t.target}"
    return getattr(t.target, "__name__", str(t.target))


class WalkState:
    """What the walk has built so far; the concept modules (provenance, joins, bypass) extend it."""

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
        self.prov: dict[fx.Node, Prov] = {}
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
                out = call_function_meta(INPLACE.get(snode.target, snode.target), args, kwargs)
            else:
                out = getattr(args[0], snode.target)(*args[1:], **kwargs)
        except OP_REJECTS as e:  # the model's own shape check (torch, torch._assert) refused the input
            msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise RepairError(f"({describe(snode)}) {msg[:200]}") from e
        self.val[snode] = out
        snode.meta[META_KEY] = out
        return out
