"""Public rewrite passes: remove layers, shrink layers, or both — teacher in, new student out."""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace

from torch import fx

from ..degenerate import Degenerate, Reason
from ..errors import ConfigError
from ..graph.cost import Cost, model_cost
from ..graph.kinds import module_at
from ..graph.layers import Analysis, analyze
from .diff import Diff
from .importance import Importance, l1_importance
from .plan import Plan, ShrinkSpec, make_plan
from .rebuild import rebuild

__all__ = ["Rewrite", "apply_actions", "apply_plan", "remove_layers", "shrink"]


@dataclass
class Rewrite:
    """The outcome of a rewrite: a valid student, or a degenerate one with its reason."""

    student: fx.GraphModule | None  # recompiled, linted GraphModule (None when degenerate)
    diff: Diff  # what changed
    degenerate: Degenerate | None  # why the student is unusable, or None
    teacher_cost: Cost  # params / FLOPs of the input model
    student_cost: Cost | None  # params / FLOPs of the student (None when degenerate)
    seconds: float  # wall time of plan + rebuild + recompile
    plan: Plan | None = None  # every decision made (kept channels, selections); replayable on equal graphs

    @property
    def valid(self) -> bool:
        return self.degenerate is None and self.student is not None


def _as_analysis(gm: fx.GraphModule | Analysis) -> Analysis:
    return gm if isinstance(gm, Analysis) else analyze(gm)


def apply_actions(
    gm: fx.GraphModule | Analysis,
    remove: Iterable[str] = (),
    shrink: Mapping[str, ShrinkSpec] | None = None,
    *,
    importance: Importance = l1_importance,
    max_linear_growth: float = 8.0,
    strict: bool = True,
) -> Rewrite:
    """Remove and shrink layers of ``gm`` in one pass; the input is never modified.

    ``remove``: layer node names or module paths. ``shrink``: layer -> ratio of its output
    channels, or layer -> {"out": r, "kernel": r}. With ``strict=False``, actions that are
    illegal for a layer are ignored instead of raising ``ConfigError`` (for policies).
    Degenerate students never raise: ``Rewrite.degenerate`` says why. ``Rewrite.plan`` holds
    every decision made; ``apply_plan`` replays it on a graph of equal structure.

    Example:
        >>> from n2n_fx import trace
        >>> gm = trace("resnet18", input_size=(3, 32, 32))
        >>> r = apply_actions(gm, remove=["layer1.0.relu"], shrink={"layer2.0.conv1": 0.5})
        >>> r.valid, r.diff.removed
        (True, ('layer1_0_relu',))
    """
    t0 = time.perf_counter()
    analysis = _as_analysis(gm)
    remove = list(remove)
    if not strict:
        remove = [n for n in remove if _legal_remove(analysis, n)]
        shrink = {k: v for k, v in (shrink or {}).items() if _legal_shrink(analysis, k)}
    plan = make_plan(analysis, remove, shrink, importance)
    r = apply_plan(analysis, plan, max_linear_growth=max_linear_growth)
    r.seconds = time.perf_counter() - t0
    return r


def apply_plan(gm: fx.GraphModule | Analysis, plan: Plan, *, max_linear_growth: float = 8.0) -> Rewrite:
    """Carry out a ``Plan`` (from ``make_plan`` or an earlier ``Rewrite.plan``) on ``gm``.

    Replaying the plan of a rewrite of one graph on a graph of equal structure but other
    weights gives the same student architecture, with weights gathered from ``gm``: the
    weight-dependent decisions (kept channels, selections) are all in the plan.
    """
    t0 = time.perf_counter()
    analysis = _as_analysis(gm)
    teacher_cost = model_cost(analysis.gm)
    plan = replace(plan, selections=dict(plan.selections))  # the caller's plan stays as it was
    removable = [lay.node for lay in analysis.layers if lay.removable]
    if removable and set(removable) <= plan.removed:
        diff = Diff(removed=tuple(sorted(plan.removed, key=lambda n: analysis.by_node[n].index)))
        deg = Degenerate(Reason.EMPTY, f"all {len(removable)} removable layers removed")
        return Rewrite(None, diff, deg, teacher_cost, None, time.perf_counter() - t0, plan)
    res = rebuild(analysis, plan, max_linear_growth=max_linear_growth)
    plan.selections = dict(res.selections)
    shrunk: dict[str, dict[str, tuple]] = {k: {"out": v} for k, v in plan.shrunk_out.items()}
    for node, (k, _) in plan.kernels.items():
        old = module_at(analysis.gm, analysis.by_node[node].target).kernel_size
        shrunk.setdefault(node, {})["kernel"] = (tuple(old), tuple(k))
    for node, kept in plan.heads.items():
        shrunk.setdefault(node, {})["heads"] = (analysis.by_node[node].heads, int(kept.numel()))
    repaired = {k: tuple(v) for k, v in res.repaired.items() if k not in plan.removed}
    for k, why in plan.restored.items():  # a removal the plan had to drop is said, not hidden
        repaired[k] = (why, *repaired.get(k, ()))
    diff = Diff(
        removed=tuple(sorted(plan.removed, key=lambda n: analysis.by_node[n].index)),
        shrunk=shrunk,
        repaired=repaired,
        inserted=dict(res.inserted),
        collapsed=tuple(res.collapsed),
    )
    deg = res.degenerate
    if deg is None and res.cost is not None and res.cost.params > teacher_cost.params:
        deg = Degenerate(
            Reason.LARGER_THAN_TEACHER,
            f"{res.cost.params} parameters > teacher's {teacher_cost.params}",
        )
    student = res.student if deg is None else None
    cost = res.cost if deg is None else None
    return Rewrite(student, diff, deg, teacher_cost, cost, time.perf_counter() - t0, plan)


def _legal_remove(analysis: Analysis, name: str) -> bool:
    try:
        return analysis.layer(name).removable
    except KeyError:
        return False


def _legal_shrink(analysis: Analysis, name: str) -> bool:
    try:
        return bool(analysis.layer(name).shrinkable)
    except KeyError:
        return False


def remove_layers(gm: fx.GraphModule | Analysis, names: Iterable[str], **kw) -> Rewrite:
    """Bypass each named layer and repair the channels and sizes it changed.

    The input graph is not modified; a new GraphModule is returned in ``Rewrite.student``.

    Example:
        >>> from n2n_fx import trace
        >>> r = remove_layers(trace("resnet18", input_size=(3, 32, 32)), ["layer1.0.conv2"])
        >>> r.diff.removed
        ('layer1_0_conv2',)
    """
    if isinstance(names, str):
        raise ConfigError(f"pass a list of layer names, not the string {names!r}")
    return apply_actions(gm, remove=names, **kw)


def shrink(gm: fx.GraphModule | Analysis, ratios: Mapping[str, ShrinkSpec], **kw) -> Rewrite:
    """Shrink layers by ratio (output channels, kernel size), consistently across coupled layers.

    Example:
        >>> from n2n_fx import trace
        >>> r = shrink(trace("vgg11", input_size=(3, 32, 32)), {"features.0": 0.5})
        >>> r.diff.shrunk["features_0"]["out"]
        (64, 32)
    """
    return apply_actions(gm, shrink=ratios, **kw)
