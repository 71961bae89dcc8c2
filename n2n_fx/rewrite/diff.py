"""Graph diffs: what a rewrite removed, shrank, repaired and inserted, as data, text and DOT."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

import torch
from tabulate import tabulate
from torch import fx

from ..graph.cost import node_flops, node_params
from ..graph.shapes import META_KEY

__all__ = ["Diff", "compare", "to_dot"]


@dataclass(frozen=True)
class Diff:
    """Teacher -> student changes, by fx node name."""

    removed: tuple[str, ...] = ()  # layers bypassed
    shrunk: dict[str, dict[str, tuple]] = field(default_factory=dict)  # layer -> {variable: (old, new)}
    repaired: dict[str, tuple[str, ...]] = field(default_factory=dict)  # node -> what was changed to fit
    inserted: dict[str, str] = field(default_factory=dict)  # new node -> why (pad, narrow, pool)
    collapsed: tuple[str, ...] = ()  # joins whose branches merged into one (now identity)

    @property
    def is_empty(self) -> bool:
        return not (self.removed or self.shrunk or self.repaired or self.inserted or self.collapsed)

    def rows(self) -> list[tuple[str, str, str]]:
        """(node, change, detail) rows, removed first."""
        out = [(n, "removed", "") for n in self.removed]
        for n, vs in self.shrunk.items():
            out.append((n, "shrunk", ", ".join(f"{k} {a}->{b}" for k, (a, b) in vs.items())))
        for n, what in self.repaired.items():
            out.append((n, "repaired", "; ".join(what)))
        for n, why in self.inserted.items():
            out.append((n, "inserted", why))
        out += [(n, "identity", "branch emptied") for n in self.collapsed]
        return out

    def table(self, fmt: str = "simple") -> str:
        """The diff as a table (tabulate format name)."""
        if self.is_empty:
            return "no change"
        return tabulate(self.rows(), headers=["node", "change", "detail"], tablefmt=fmt)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1, default=list)

    @classmethod
    def from_json(cls, text: str) -> Diff:
        d = json.loads(text)
        return cls(
            removed=tuple(d["removed"]),
            shrunk={k: {v: tuple(x) for v, x in vs.items()} for k, vs in d["shrunk"].items()},
            repaired={k: tuple(v) for k, v in d["repaired"].items()},
            inserted=dict(d["inserted"]),
            collapsed=tuple(d.get("collapsed", ())),
        )

    def then(self, later: Diff) -> Diff:
        """This diff followed by ``later`` (e.g. removal stage, then shrink stage)."""
        shrunk = {k: dict(v) for k, v in self.shrunk.items()}
        for k, vs in later.shrunk.items():
            for var, (a, b) in vs.items():
                old = shrunk.get(k, {}).get(var, (a, b))[0]
                shrunk.setdefault(k, {})[var] = (old, b)
        repaired = dict(self.repaired)
        for k, v in later.repaired.items():
            repaired[k] = repaired.get(k, ()) + v
        return Diff(
            removed=self.removed + tuple(n for n in later.removed if n not in self.removed),
            shrunk=shrunk,
            repaired=repaired,
            inserted={**self.inserted, **later.inserted},
            collapsed=self.collapsed + later.collapsed,
        )


def _shape(node: fx.Node) -> tuple | None:
    v = node.meta.get(META_KEY)
    return tuple(v.shape) if isinstance(v, torch.Tensor) else None


def compare(teacher: fx.GraphModule, student: fx.GraphModule) -> list[tuple[str, str, int, int, int, int]]:
    """Per teacher node: (node, status, params before, after, FLOPs before, after).

    Status is "removed" when the node is gone from the student, "changed" when its
    parameter count or output shape differs, else "kept". Nodes match by name.
    """
    s_nodes = {n.name: n for n in student.graph.nodes}
    rows = []
    for n in teacher.graph.nodes:
        if n.op in ("placeholder", "output"):
            continue
        p0, f0 = node_params(teacher, n), node_flops(teacher, n)
        s = s_nodes.get(n.name)
        if s is None:
            rows.append((n.name, "removed", p0, 0, f0, 0))
            continue
        p1, f1 = node_params(student, s), node_flops(student, s)
        status = "changed" if (p0, _shape(n)) != (p1, _shape(s)) else "kept"
        rows.append((n.name, status, p0, p1, f0, f1))
    return rows


def to_dot(student: fx.GraphModule, diff: Diff, teacher: fx.GraphModule | None = None) -> str:
    """Graphviz DOT of the student graph: shrunk nodes orange, repaired yellow, inserted green.

    Removed teacher layers are drawn dashed red, attached to where they used to read from.
    """
    lines = [
        "digraph student {",
        "  rankdir=TB; node [shape=box, fontsize=10, style=filled, fillcolor=white];",
    ]
    for n in student.graph.nodes:
        color = "white"
        if n.name in diff.inserted:
            color = "palegreen"
        elif n.name in diff.shrunk:
            color = "orange"
        elif n.name in diff.repaired:
            color = "lightyellow"
        shape = _shape(n)
        label = f"{n.name}\\n{n.op}: {str(n.target)[:40]}" + (f"\\n{list(shape)}" if shape else "")
        lines.append(f'  "{n.name}" [label="{label}", fillcolor={color}];')
        for a in n.all_input_nodes:
            lines.append(f'  "{a.name}" -> "{n.name}";')
    if teacher is not None:
        t_nodes = {n.name: n for n in teacher.graph.nodes}
        for r in diff.removed:
            lines.append(f'  "{r}" [label="{r}\\n(removed)", style="dashed", color=red, fontcolor=red];')
            src = t_nodes.get(r)
            if (
                src is not None
                and src.all_input_nodes
                and src.all_input_nodes[0].name in {m.name for m in student.graph.nodes}
            ):
                lines.append(f'  "{src.all_input_nodes[0].name}" -> "{r}" [style=dashed, color=red];')
    lines.append("}")
    return "\n".join(lines)
