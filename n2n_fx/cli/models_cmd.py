"""``n2n-fx models``: every teacher architecture the zoo builds by name, as ``n2n-fx datasets`` lists data sets."""

from __future__ import annotations

import argparse
import json
import textwrap
from typing import Any

from ..errors import ConfigError
from ..teacher.zoo import local_models, model_help

__all__ = ["add_parser", "run"]


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        name,
        help="list the models --model takes (project models and torchvision classifiers)",
        description="List the architectures n2n-fx builds by name: the project's small teachers, then every "
        "torchvision classifier (built untrained; --num-classes and the data set's channels adapt them).",
    )
    p.add_argument("name", nargs="?", default=None, help="show only this model")
    p.add_argument("--format", choices=["table", "json"], default="table", help="table (default) or JSON on stdout")
    return p


def run(args: argparse.Namespace) -> int:
    about = model_help()
    project = set(local_models())
    if args.name is not None:
        if args.name not in about:
            raise ConfigError(f"unknown model {args.name!r}; `n2n-fx models` lists them")
        about = {args.name: about[args.name]}
    if args.format == "json":
        models = {n: {"about": a, "source": "project" if n in project else "torchvision"} for n, a in about.items()}
        print(json.dumps({"models": models}, indent=1))
        return 0
    lines = [f"{n}: {a}" for n, a in about.items() if n in project or args.name]
    vision = [n for n in about if n not in project]
    if vision and not args.name:
        lines += ["", f"torchvision classifiers ({len(vision)}, untrained):"]
        lines += textwrap.wrap(", ".join(vision), width=100, initial_indent="    ", subsequent_indent="    ")
    print("\n".join(lines))
    return 0
