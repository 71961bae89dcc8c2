"""`n2n-fx inspect MODEL`: the per-layer table a policy sees, with params and FLOPs."""

from __future__ import annotations

import argparse
import csv
import io
import json

from tabulate import tabulate

from ..features.features import RAW_COLUMNS
from ..graph.cost import model_cost
from ..graph.layers import analyze
from .common import add_model_args, load_model_arg

COLUMNS = [
    "#",
    "name",
    "type",
    "k",
    "s",
    "p",
    "out",
    "s_start",
    "s_end",
    "params",
    "FLOPs",
    "removable",
    "shrinkable",
]


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help="show the layers, features and legal actions of a model")
    add_model_args(p)
    p.add_argument("--format", choices=["table", "json", "csv"], default="table")
    return p


def run(args: argparse.Namespace) -> int:
    gm = load_model_arg(args)
    a = analyze(gm)
    cost = model_cost(gm)
    rows = [
        [
            lay.index,
            lay.target if lay.target else lay.node,
            lay.kind.value,
            lay.kernel,
            lay.stride,
            lay.padding,
            lay.out,
            lay.s_start,
            lay.s_end,
            lay.params,
            lay.flops,
            "yes" if lay.removable else "no",
            ",".join(lay.shrinkable) or "-",
        ]
        for lay in a.layers
    ]
    summary = {
        "model": args.model,
        "layers": len(a.layers),
        "blocks": len(a.blocks),
        "params": cost.params,
        "flops": cost.flops,
        "removable": sum(lay.removable for lay in a.layers),
        "shrink_variables": sum(len(lay.shrinkable) for lay in a.layers),
    }
    if args.format == "json":
        layers = [
            {
                **dict(zip(COLUMNS, r, strict=True)),
                "node": lay.node,
                "fixed_reason": lay.fixed_reason,
                "raw": dict(
                    zip(
                        RAW_COLUMNS,
                        (
                            lay.kind.code,
                            lay.kernel,
                            lay.stride,
                            lay.padding,
                            lay.out,
                            lay.s_start,
                            lay.s_end,
                        ),
                        strict=True,
                    )
                ),
            }
            for r, lay in zip(rows, a.layers, strict=True)
        ]
        print(json.dumps({"summary": summary, "layers": layers}, indent=1))
    elif args.format == "csv":
        buf = io.StringIO()
        w = csv.writer(buf)
        w.writerow(COLUMNS)
        w.writerows(rows)
        print(buf.getvalue(), end="")
    else:
        print(tabulate(rows, headers=COLUMNS, intfmt=","))
        print(
            f"\n{summary['layers']} layers ({summary['removable']} removable, {summary['shrink_variables']} shrink variables), "
            f"{summary['blocks']} blocks, {cost.params:,} params, {cost.flops:,} FLOPs per sample"
        )
    return 0
