"""`n2n-fx export RUN_DIR --format onnx|torchscript|fx`: the trained student for deployment."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import torch

from ..export import export_onnx
from ..search.api import load_run
from ..storage import writing
from ..teacher.trace import example_input_of
from .common import write_output


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help="export a run's student as ONNX, TorchScript or fx (code + weights)")
    p.add_argument("run_dir", type=Path)
    p.add_argument("--format", choices=["onnx", "torchscript", "fx"], default="torchscript")
    p.add_argument("--out", type=Path, default=None, help="output path (default RUN_DIR/student.<ext>)")
    p.add_argument("--allow-pickle", action="store_true", help="allow a pickled custom teacher")
    return p


def run(args: argparse.Namespace) -> int:
    student, _ = load_run(args.run_dir, allow_pickle=args.allow_pickle)
    student.eval()
    x = example_input_of(student, batch=1)
    buf = io.BytesIO()  # written to ``out`` at the end: a bad path is one line, not a torch error
    if args.format == "torchscript":
        out = args.out or args.run_dir / "student.torchscript.pt"
        torch.jit.save(torch.jit.trace(student, x), buf)
    elif args.format == "onnx":
        out = args.out or args.run_dir / "student.onnx"
        export_onnx(student, buf, x)  # adaptive pools fixed, batch axis dynamic
    else:
        out = args.out or args.run_dir / "student_fx"
        with writing(out):
            student.to_folder(str(out), "Student")
    if args.format != "fx":
        write_output(out, buf.getvalue())
    print(f"wrote {out}")
    return 0
