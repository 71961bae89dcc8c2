"""Arguments and helpers shared by subcommands."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from torch import fx

from ..errors import ConfigError
from ..storage import atomic_write_bytes
from ..teacher.trace import parse_input_size, trace

__all__ = [
    "add_verbosity_args",
    "log_level",
    "add_model_args",
    "load_model_arg",
    "add_data_option_arg",
    "add_split_dir_args",
    "split_dirs_of",
    "parse_data_options",
    "positive_int",
    "count_or_fraction",
    "write_output",
    "data_options_of",
    "dataset_of",
]


def add_verbosity_args(p: argparse.ArgumentParser) -> None:
    """``-v/--verbose`` and ``-q/--quiet``: what the progress lines on stderr show (``log_level``).

    Given to the main parser and to every subcommand, so either place works; an absent flag
    sets nothing (``SUPPRESS``), so a subcommand does not undo the main parser's."""
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="also show debug lines on stderr"
    )
    group.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        default=argparse.SUPPRESS,
        help="nothing on stderr but errors: no progress lines, warnings or bars (a run's run.log keeps them; "
        "a weak teacher is still named in the printed result)",
    )


def log_level(args: argparse.Namespace) -> int:
    """The level of the lines shown on stderr: INFO, DEBUG with ``-v``, ERROR with ``-q``.

    ``-q`` keeps the meaning ``--quiet`` always had: only the command's result (stdout) and its
    one-line error, if any; the warnings that matter are part of the result (the teacher's)."""
    verbose, quiet = getattr(args, "verbose", False), getattr(args, "quiet", False)
    if verbose and quiet:
        raise ConfigError("-v/--verbose and -q/--quiet contradict each other; give one")
    return logging.DEBUG if verbose else logging.ERROR if quiet else logging.INFO


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"{n} must be at least 1")
    return n


def count_or_fraction(text: str) -> int | float:
    """argparse type of a subset size: ``300`` is a count (int), ``0.25`` a fraction (float)."""
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a count (300) or a fraction (0.25)") from None


def write_output(path: Path, data: str | bytes) -> None:
    """Write a file named on the command line, atomically; a missing folder or a disk fault is a one-line DiskError."""
    atomic_write_bytes(path, data.encode() if isinstance(data, str) else data, parents=False)


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
    p.add_argument("--num-classes", type=positive_int, default=10, help="classifier outputs (default 10)")


def load_model_arg(args: argparse.Namespace) -> fx.GraphModule:
    size = parse_input_size(args.input_size) if args.input_size else None
    return trace(args.model, input_size=size, num_classes=args.num_classes)


def add_data_option_arg(p: argparse.ArgumentParser) -> None:
    """The repeatable ``--data-option KEY=VALUE`` of every subcommand that loads a data set."""
    p.add_argument(
        "--data-option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="data-set option, e.g. augment=crop, image_size=32, val_size=0.1 (repeatable; `n2n-fx datasets` "
        "lists each data set's)",
    )
    add_split_dir_args(p)


def add_split_dir_args(p: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    """``--train-dir/--val-dir/--test-dir``: image folders, read as data-set options (``split_dirs_of``)."""
    for split in ("train", "val", "test"):
        p.add_argument(
            f"--{split}-dir",
            default=None,
            metavar="DIR",
            help=f"image folder of the {split} split, one sub-folder per class (implies --dataset imagefolder)",
        )


def data_options_of(args: argparse.Namespace) -> dict[str, Any]:
    """``--data-option`` items plus ``--train-dir/--val-dir/--test-dir`` as data-set options."""
    return {**parse_data_options(args.data_option), **split_dirs_of(args)}


def split_dirs_of(args: argparse.Namespace) -> dict[str, str]:
    """``--train-dir/--val-dir/--test-dir`` as data-set options (``train_dir`` ...)."""
    folders = {split: getattr(args, f"{split}_dir", None) for split in ("train", "val", "test")}
    return {f"{split}_dir": str(folder) for split, folder in folders.items() if folder is not None}


def dataset_of(dataset: str | None, options: dict[str, Any]) -> str | None:
    """The data set to load: ``imagefolder`` when only split folders are given; ConfigError on a clash."""
    if any(f"{k}_dir" in options for k in ("train", "val", "test")):
        if dataset is None:
            return "imagefolder"
        if dataset.partition(":")[0] != "imagefolder":
            raise ConfigError(f"--train-dir/--val-dir/--test-dir are image folders; drop --dataset {dataset}")
    return dataset


def parse_data_options(items: list[str]) -> dict[str, Any]:
    """``["num_samples=2000", "name=x"]`` -> ``{"num_samples": 2000, "name": "x"}`` (ints, floats, else text)."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--data-option {item!r} is not KEY=VALUE")
        value: Any = text
        for cast in (int, float):
            try:
                value = cast(text)
                break
            except ValueError:
                continue
        out[key.strip()] = value
    return out
