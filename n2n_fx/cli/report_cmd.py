"""`n2n-fx report RUN_DIR`: print a run's report; `--pareto` renders and prints its Pareto report."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError, RunDirError
from ..report.pareto import write_pareto
from ..rundir import RunDir


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help="print the report of a run directory")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--markdown", action="store_true", help="print report.md instead of report.txt")
    p.add_argument(
        "--pareto",
        action="store_true",
        help="every evaluated student (accuracy vs params, FLOPs, latency) with its Pareto fronts: write "
        "pareto.md/.csv/.json/.png into the run directory (also of a run in progress) and print pareto.md",
    )
    p.add_argument(
        "--format",
        choices=["text", "json"],
        default="text",
        help="text (default) or JSON on stdout: the run's summary.json (with --pareto: pareto.json)",
    )
    return p


def run(args: argparse.Namespace) -> int:
    run = RunDir.open(args.run_dir)
    if args.pareto:
        report = write_pareto(run)
        if args.format == "json":
            print(run.file("pareto.json").read_text())
            return 0
        print(report.markdown)
        print(
            f"written: {', '.join(str(run.file(n)) for n in ('pareto.md', 'pareto.csv', 'pareto.json'))}"
            + ("" if report.plot_hint else f", {run.file('pareto.png')}")
        )
        return 0
    if args.format == "json" and args.markdown:
        raise ConfigError("--markdown and --format json ask for two outputs; give one")
    name = "summary.json" if args.format == "json" else "report.md" if args.markdown else "report.txt"
    path = run.file(name)
    if not path.is_file():
        raise RunDirError(f"{run.path} has no {name} yet; finish it with `n2n-fx compress --resume {run.path}`")
    print(path.read_text())
    return 0
