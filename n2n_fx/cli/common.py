"""Arguments and helpers shared by subcommands."""

from __future__ import annotations

import argparse

from torch import fx

from ..teacher.trace import parse_input_size, trace

__all__ = ["add_model_args", "load_model_arg"]


def add_model_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "model",
        help="torchvision classifier name (e.g. resnet18) or project model (conv4, vgg13_small)",
    )
    p.add_argument(
        "--input-size",
        default=None,
        help="C x H x W of one input, e.g. 3x32x32 (default 3x224x224)",
    )
    p.add_argument("--num-classes", type=int, default=10, help="classifier outputs (default 10)")


def load_model_arg(args: argparse.Namespace) -> fx.GraphModule:
    size = parse_input_size(args.input_size) if args.input_size else None
    return trace(args.model, input_size=size, num_classes=args.num_classes)
