"""`n2n-fx diff RUN_DIR`: the teacher -> student graph diff of a run."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..rewrite import to_dot
from ..search.api import load_run
from .common import write_output


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help="print the teacher -> student graph diff of a run")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--dot", type=Path, default=None, help="also write the student graph as Graphviz DOT")
    p.add_argument("--allow-pickle", action="store_true", help="allow a pickled custom teacher")
    p.add_argument(
        "--format", choices=["table", "json"], default="table", help="table (default) or the diff as JSON on stdout"
    )
    return p


def run(args: argparse.Namespace) -> int:
    student, diff = load_run(args.run_dir, allow_pickle=args.allow_pickle)
    if args.dot:
        write_output(args.dot, to_dot(student, diff))
    if args.format == "json":
        print(diff.to_json())
        return 0
    print(diff.table())
    if args.dot:
        print(f"wrote {args.dot}")
    return 0
