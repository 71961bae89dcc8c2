"""Turn actions (layers to remove, ratios to shrink) into a concrete, checked rewrite plan."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

import torch
from torch import fx

from ..errors import ConfigError
from ..graph.kinds import Kind, module_at
from ..graph.layers import VARIABLES, Analysis
from ..layers import kernel_after, spec_for
from .importance import Importance, keep_indices, l1_importance

__all__ = ["Plan", "make_plan", "ShrinkSpec"]

# a ratio for output channels, or a ratio per variable: {"out": 0.5, "kernel": 0.6}
ShrinkSpec = float | Mapping[str, float]


@dataclass
class Plan:
    """What the rebuild walk does: every decision made, nothing left to infer."""

    removed: frozenset[str] = frozenset()  # layer node names to bypass
    kept: dict[int, torch.Tensor] = field(default_factory=dict)  # channel space -> kept indices
    kernels: dict[str, tuple[tuple[int, ...], tuple[int, ...]]] = field(
        default_factory=dict
    )  # conv -> (kernel, padding)
    strides: dict[str, tuple[str, int]] = field(default_factory=dict)  # conv -> (removed layer, stride moved onto it)
    shrunk_out: dict[str, tuple[int, int]] = field(default_factory=dict)  # owner layer -> (old, new) channels
    # removed channel-reducing layer -> the input channels it passes on. Left empty, the walk
    # picks them by L1 of the removed layer's weights and records them in ``RebuildResult``;
    # given, it replays them (the same student from another weight set, e.g. a supernet's).
    selections: dict[str, torch.Tensor] = field(default_factory=dict)
    # removed layer -> the residual add its whole branch no longer feeds (``Layer.branch``)
    branches: dict[str, str] = field(default_factory=dict)
    heads: dict[str, torch.Tensor] = field(default_factory=dict)  # attention -> kept head indices (sorted)
    restored: dict[str, str] = field(default_factory=dict)  # layer asked to be removed but kept -> why

    @property
    def is_noop(self) -> bool:
        return not (self.removed or self.kept or self.kernels or self.strides or self.heads)


def _resolve(analysis: Analysis, name: str) -> str:
    try:
        return analysis.layer(name).node
    except KeyError:
        close = [lay.node for lay in analysis.layers if name in lay.node or name in lay.target][:4]
        hint = f" (did you mean {', '.join(close)}?)" if close else "; run `n2n-fx inspect MODEL` for the layer names"
        raise ConfigError(f"no layer named {name!r}{hint}") from None


def _next_conv(gm: fx.GraphModule, node: fx.Node, removed: frozenset[str], kinds: dict[str, Kind]) -> fx.Node | None:
    """The next kept conv on the same single path after ``node`` (no fork or join in between)."""
    cur = node
    for _ in range(16):
        users = list(cur.users)
        if len(users) != 1:
            return None
        u = users[0]
        kind = kinds.get(u.name)
        if kind is None:
            return None
        if kind in (Kind.CONV, Kind.CONV_DW, Kind.CONV_GROUPED) and u.name not in removed:
            mod = module_at(gm, u.target)
            if getattr(mod, "transposed", False):
                return None  # a transposed conv's stride upsamples: it cannot take a stride over
            return u if all(s == 1 for s in mod.stride) else None
        cur = u
    return None


def _keep_one_operand(analysis: Analysis, removed: set[str]) -> dict[str, str]:
    """A residual add whose every operand is a removed branch keeps its cheapest branch.

    Each branch layer ends one operand of its add (``Layer.branch``); removing all of them
    would leave the sum with nothing to pass on. The layer with the fewest parameters (the
    earliest among equals) stays, and is dropped from ``removed``.
    """
    by_add: dict[str, list[str]] = {}
    for name in removed:
        if analysis.by_node[name].branch:
            by_add.setdefault(analysis.by_node[name].branch, []).append(name)
    restored = {}
    for add, names in by_add.items():
        if len(names) < 2:
            continue
        keep = min(names, key=lambda n: (analysis.by_node[n].params, analysis.by_node[n].index))
        removed.discard(keep)
        restored[keep] = f"kept: every operand of {add} was removed, the sum needs one"
    return restored


def make_plan(
    analysis: Analysis,
    remove: Iterable[str] = (),
    shrink: Mapping[str, ShrinkSpec] | None = None,
    importance: Importance = l1_importance,
) -> Plan:
    """Check the actions against the layers' legal actions and fix every detail of the rewrite.

    ``remove`` names layers (node names or module paths). ``shrink`` maps a layer to a ratio
    of its output channels, or to ``{"out": r, "kernel": r, "heads": r}``. A ratio on any layer of a
    coupled channel space applies to the whole space (the first ratio given wins).
    """
    gm = analysis.gm
    removed = set()
    for name in remove:
        node = _resolve(analysis, name)
        lay = analysis.by_node[node]
        if not lay.removable:
            raise ConfigError(f"layer {node} cannot be removed: {lay.fixed_reason}")
        removed.add(node)
    restored = _keep_one_operand(analysis, removed)
    plan = Plan(removed=frozenset(removed), restored=restored)
    plan.branches = {n: analysis.by_node[n].branch for n in removed if analysis.by_node[n].branch}
    nodes = {n.name: n for n in gm.graph.nodes}
    kinds = {lay.node: lay.kind for lay in analysis.layers}

    for name in sorted(removed, key=lambda n: analysis.by_node[n].index):
        lay = analysis.by_node[name]
        transposed = (
            getattr(module_at(gm, lay.target), "transposed", False) if nodes[name].op == "call_module" else False
        )
        if lay.kind in (Kind.CONV, Kind.CONV_DW, Kind.CONV_GROUPED) and lay.stride > 1 and not transposed:
            nxt = _next_conv(gm, nodes[name], plan.removed, kinds)
            if nxt is not None and nxt.name not in plan.strides:
                plan.strides[nxt.name] = (name, lay.stride)

    for name, spec in (shrink or {}).items():
        node = _resolve(analysis, name)
        if node in removed:
            continue
        lay = analysis.by_node[node]
        ratios = {"out": float(spec)} if isinstance(spec, (int, float)) else {k: float(v) for k, v in spec.items()}
        for var, r in ratios.items():
            if var not in VARIABLES:
                raise ConfigError(f"unknown shrink variable {var!r} for {node}; use one of {', '.join(VARIABLES)}")
            if not 0.0 < r <= 1.0:
                raise ConfigError(f"shrink ratio {r} for {node}.{var} must be in (0, 1]")
            if r == 1.0:
                continue
            if var == "out":
                cls = analysis.spaces.class_of(node)
                if cls is None or node not in cls.producers:
                    raise ConfigError(f"layer {node} ({lay.kind.value}) has no output channels to shrink")
                if not cls.shrinkable:
                    why = cls.pinned[0] if cls.pinned else "nothing to shrink"
                    raise ConfigError(f"output channels of {node} cannot shrink: {why}")
                if cls.root in plan.kept:
                    continue
                kept = keep_indices(importance(gm, cls), r, cls.groups)
                if kept.numel() < cls.size:
                    plan.kept[cls.root] = kept
                    plan.shrunk_out[lay.out_owner] = (cls.size, int(kept.numel()))
            elif var == "heads":
                mod = module_at(gm, nodes[node].target) if nodes[node].op == "call_module" else None
                if "heads" not in lay.shrinkable or mod is None:
                    raise ConfigError(f"layer {node} ({lay.kind.value}) has no attention heads to shrink")
                kept = keep_indices(spec_for(mod).head_importance(mod), r)
                if kept.numel() < lay.heads:
                    plan.heads[node] = kept
            else:
                mod = module_at(gm, nodes[node].target) if nodes[node].op == "call_module" else None
                if "kernel" not in lay.shrinkable or mod is None or "kernel" not in spec_for(mod).variables(mod):
                    raise ConfigError(f"layer {node} has no kernel to shrink (only convs with kernel > 1)")
                ks, ps = [], []
                for k, p, d in zip(mod.kernel_size, mod.padding, mod.dilation, strict=False):
                    new = kernel_after(k, p, d, r)
                    ks.append(new[0] if new else k)
                    ps.append(new[1] if new else p)
                if tuple(ks) != tuple(mod.kernel_size):
                    plan.kernels[node] = (tuple(ks), tuple(ps))
    return plan
