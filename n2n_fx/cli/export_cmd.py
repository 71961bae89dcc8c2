"""`n2n-fx export RUN_DIR --format pt2|onnx|fx`: the trained student for deployment."""

from __future__ import annotations

import argparse
from pathlib import Path

from ..errors import ConfigError
from ..export import EXPORT_FORMATS, check_format, default_name, export_student
from ..search.api import load_run


def _format(text: str) -> str:
    try:
        return check_format(text)
    except ConfigError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help="export a run's student as a torch.export program (.pt2), ONNX or fx code")
    p.add_argument("run_dir", type=Path)
    p.add_argument(
        "--format",
        type=_format,
        default="pt2",
        metavar="{" + ",".join(EXPORT_FORMATS) + "}",
        help="pt2 (default): torch.export program, load with torch.export.load; onnx: needs the onnx extra; "
        "fx: a folder with the student's code and weights. pt2 and onnx keep the batch size dynamic",
    )
    p.add_argument("--out", type=Path, default=None, help="output path (default RUN_DIR/student.pt2, .onnx, _fx)")
    p.add_argument("--allow-pickle", action="store_true", help="allow a pickled custom teacher")
    return p


def run(args: argparse.Namespace) -> int:
    student, _ = load_run(args.run_dir, allow_pickle=args.allow_pickle)
    out = args.out or args.run_dir / default_name(args.format)
    export_student(student.eval(), out, args.format)
    print(f"wrote {out}")
    return 0
