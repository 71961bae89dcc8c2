"""`n2n-fx surgery MODEL --remove ... --shrink ...`: hand-compression, shown as a graph diff."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from tabulate import tabulate

from ..errors import ConfigError
from ..rewrite import Rewrite, apply_actions, to_dot
from .common import add_model_args, load_model_arg, write_output


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help="remove / shrink layers by hand and print the graph diff")
    add_model_args(p)
    p.add_argument(
        "--remove",
        nargs="*",
        default=[],
        metavar="NAME",
        help="layers to remove (node names or module paths)",
    )
    p.add_argument(
        "--shrink",
        nargs="*",
        default=[],
        metavar="NAME=RATIO",
        help="shrink a layer: NAME=0.5 (output channels) or NAME:kernel=0.6",
    )
    p.add_argument("--dot", type=Path, default=None, help="write the student graph as Graphviz DOT here")
    p.add_argument("--code", action="store_true", help="print the student's generated forward()")
    p.add_argument(
        "--format",
        choices=["table", "json"],
        default="table",
        help="table (default) or one JSON object on stdout: diff, costs, compression, degenerate (and code)",
    )
    return p


def parse_shrink(items: list[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--shrink {item!r} is not NAME=RATIO (e.g. layer1.0.conv1=0.5)")
        key, value = item.rsplit("=", 1)
        name, _, var = key.partition(":")
        try:
            out.setdefault(name, {})[var or "out"] = float(value)
        except ValueError:
            raise ConfigError(f"--shrink {item!r}: ratio {value!r} is not a number") from None
    return out


def run(args: argparse.Namespace) -> int:
    gm = load_model_arg(args)
    r = apply_actions(gm, remove=args.remove, shrink=parse_shrink(args.shrink))
    if args.dot and r.degenerate is None:
        write_output(args.dot, to_dot(r.student, r.diff, gm))
    if args.format == "json":
        print(json.dumps(_as_json(args, r), indent=1))
        return 0 if r.degenerate is None else 1
    print(r.diff.table())
    if r.degenerate is not None:
        print(f"\ndegenerate student: {r.degenerate}")
        return 1
    t, s = r.teacher_cost, r.student_cost
    rows = [
        ["teacher", f"{t.params:,}", f"{t.flops:,}", "1.00x"],
        ["student", f"{s.params:,}", f"{s.flops:,}", f"{t.params / max(1, s.params):.2f}x"],
    ]
    print()
    print(tabulate(rows, headers=["model", "params", "FLOPs", "compression"]))
    print(f"\nrewrite took {r.seconds * 1000:.0f} ms")
    if args.code:
        print(r.student.code)
    if args.dot:
        print(f"wrote {args.dot}")
    return 0


def _as_json(args: argparse.Namespace, r: Rewrite) -> dict[str, Any]:
    """What the table output says, as one JSON object (the student's costs: None when it was not built)."""
    t, s = r.teacher_cost, r.student_cost
    out: dict[str, Any] = {
        "model": args.model,
        "diff": json.loads(r.diff.to_json()),
        "degenerate": None if r.degenerate is None else str(r.degenerate),  # why no valid student was made
        "teacher": {"params": t.params, "flops": t.flops},
        "student": {"params": s.params, "flops": s.flops} if s is not None else None,
        "compression": t.params / max(1, s.params) if s is not None else None,
        "seconds": r.seconds,
    }
    if args.code and r.degenerate is None:
        out["code"] = r.student.code
    if args.dot and r.degenerate is None:
        out["dot"] = str(args.dot)
    return out
