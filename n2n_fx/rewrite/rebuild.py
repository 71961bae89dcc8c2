"""The rebuild walk: apply a ``Plan`` to a traced graph and repair every shape it changed.

The walk visits the teacher's nodes in order and emits the student's graph:

* a removed layer is bypassed (its users read its input); a removed layer that writes a
  fixed-size residual stream (``Layer.branch``: attention, a transformer MLP's output)
  removes its whole branch instead, and the residual add passes the stream on;
* every layer module is rebuilt by its handler to fit the channels it now receives,
  inheriting the teacher's weights through a per-channel index map (``Prov``);
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

Where each part lives: ``state`` (the student under construction), ``provenance`` (student
channel -> teacher channel), ``walk`` (the node loop, module rebuilds), ``joins`` (join and
cat repair), ``bypass`` (removed layers and branches); this module finalises the student.
"""

from __future__ import annotations

import torch
from torch import fx

from ..degenerate import Degenerate, Reason
from ..graph.cost import model_cost
from ..graph.layers import Analysis
from ..graph.shapes import META_KEY
from .plan import Plan
from .state import Fail, RebuildResult
from .walk import Walk

__all__ = ["rebuild", "RebuildResult"]


def rebuild(analysis: Analysis, plan: Plan, *, max_linear_growth: float = 8.0) -> RebuildResult:
    """Apply ``plan`` to ``analysis.gm``; a student that cannot be repaired is returned degenerate.

    Raises only on bugs (an exception other than ``RepairError``), never for a bad student.
    """
    w = Walk(analysis, plan, max_linear_growth)
    try:
        graph = w.walk()
    except Fail as f:
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
