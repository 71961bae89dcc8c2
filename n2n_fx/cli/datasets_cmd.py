"""``n2n-fx datasets``: every data set, what it reads, and the options it takes."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..data.registry import SPLIT_OPTIONS, dataset_help, dataset_options_help
from ..data.transforms import AUGMENTATIONS

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name,
        help="list the data sets and their options (--data-option KEY=VALUE)",
        description="List the data sets n2n-fx reads, their options and the split / augmentation options all take.",
    )
    p.add_argument("name", nargs="?", default=None, help="show only this data set")
    p.add_argument("--format", choices=["table", "json"], default="table", help="table (default) or JSON on stdout")
    return p


def run(args: argparse.Namespace) -> int:
    about = dataset_help()
    names = [args.name.partition(":")[0]] if args.name else list(about)
    if args.format == "json":
        sets = {name: {"about": about[name], "options": dataset_options_help(name)} for name in names}
        print(json.dumps({"datasets": sets, "split_options": SPLIT_OPTIONS, "augmentations": AUGMENTATIONS}, indent=1))
        return 0
    lines = []
    for name in names:
        options = dataset_options_help(name)  # ConfigError names the known ones
        lines.append(f"{name}: {about[name]}")
        lines += [f"    {key:<12} {text}" for key, text in options.items()]
    lines += ["", "every data set also takes (--data-option KEY=VALUE):"]
    lines += [f"    {key:<12} {text}" for key, text in SPLIT_OPTIONS.items()]
    lines += ["", "augmentation presets (training images only):"]
    lines += [f"    {key:<17} {text}" for key, text in AUGMENTATIONS.items()]
    print("\n".join(lines))
    return 0
