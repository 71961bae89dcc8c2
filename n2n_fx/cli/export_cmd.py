"""`n2n-fx export RUN_DIR --format onnx|torchscript|fx`: the trained student for deployment."""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from ..export import export_onnx
from ..search.api import load_run
from ..teacher.trace import example_input_of


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
    if args.format == "torchscript":
        out = args.out or args.run_dir / "student.torchscript.pt"
        torch.jit.save(torch.jit.trace(student, x), str(out))
    elif args.format == "onnx":
        out = export_onnx(student, args.out or args.run_dir / "student.onnx", x)
    else:
        out = args.out or args.run_dir / "student_fx"
        student.to_folder(str(out), "Student")
    print(f"wrote {out}")
    return 0
