"""`n2n-fx report RUN_DIR`: print (and re-render) a run's report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..search.rundir import RunDir


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help="print the report of a run directory")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--markdown", action="store_true", help="print report.md instead of report.txt")
    return p


def run(args: argparse.Namespace) -> int:
    run = RunDir.open(args.run_dir)
    name = "report.md" if args.markdown else "report.txt"
    path = run.file(name)
    if not path.is_file():
        from ..errors import RunDirError

        raise RunDirError(f"{run.path} has no {name} yet; finish it with `n2n-fx compress --resume {run.path}`")
    print(path.read_text())
    return 0
