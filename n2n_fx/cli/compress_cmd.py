"""`n2n-fx compress`: the main job. With no arguments, a complete run on synthetic data.

Every SearchConfig field is a flag (``--reward-lr``), generated from the dataclass with its
comment as help (cli/config_args.py); precedence: defaults < ``--config`` file < flags.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..rundir import RunDir
from ..search import SearchConfig, load_config_file, run_compress
from ..search.resume import EXTENSIONS, RELOCATABLE, resumed_config
from .common import add_split_dir_args, count_or_fraction, dataset_of, split_dirs_of
from .config_args import add_config_args, given_config


def _size(text: str) -> float:
    """1M, 20K, 3.5e6 -> float."""
    t = text.strip().upper()
    mult = {"K": 1e3, "M": 1e6, "G": 1e9}.get(t[-1:], 1.0)
    try:
        return float(t[:-1] if t[-1:] in "KMG" else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number like 20K or 1.5M") from None


# how the text of some fields is read (the others: by their annotation)
READERS = {
    "max_params": _size,
    "max_flops": _size,
    "reward_subset": count_or_fraction,
    "reward_val_subset": count_or_fraction,
}
_ALIASES = {"dataset_options": ["--data-option"]}  # the flag name every other subcommand uses


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="run a full compression (no arguments: synthetic data, small teacher, a few minutes)",
        description="Two-stage N2N search: removal policy, then shrink policy, then final training. "
        "Every setting below is a SearchConfig field; precedence: defaults < --config < flags.",
    )
    run = p.add_argument_group("run directory and output")
    run.add_argument("--config", type=Path, help="TOML or JSON file with any of the settings below")
    run.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="where to write the run (default runs/<model>-<dataset>-<time>)",
    )
    run.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run with its recorded settings; a flag that differs from them is refused, "
        f"but {', '.join(EXTENSIONS)} can be raised before they are spent and {', '.join(RELOCATABLE)} changed",
    )
    run.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved settings as JSON (a --config file) and exit",
    )
    run.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow loading a run whose teacher is a pickled custom model",
    )
    add_split_dir_args(run)
    add_config_args(p, SearchConfig, types_=READERS, aliases=_ALIASES)
    return p


def asked_settings(args: argparse.Namespace) -> dict[str, Any]:
    """The settings asked for: the ``--config`` file's, overridden by the flags given."""
    data = load_config_file(args.config) if args.config else {}
    cli = given_config(args, SearchConfig)
    options = {**(cli.pop("dataset_options", None) or {}), **split_dirs_of(args)}
    if options:
        cli["dataset_options"] = options
        dataset = dataset_of(cli.get("dataset", data.get("dataset")), options)
        if dataset is not None:
            cli["dataset"] = dataset
    return {**data, **cli}


def run(args: argparse.Namespace) -> int:
    asked = asked_settings(args)
    if args.resume:
        if args.run_dir is not None and args.run_dir.resolve() != args.resume.resolve():
            raise ConfigError(f"--run-dir {args.run_dir} with --resume {args.resume}: a run resumes in its own folder")
        if args.print_config:
            cfg, _ = resumed_config(RunDir.open(args.resume), asked)
            print(json.dumps(cfg.to_dict(), indent=1))
            return 0
        result = run_compress(SearchConfig(), args.resume, resume=True, allow_pickle=args.allow_pickle, changes=asked)
    else:
        cfg = SearchConfig.from_dict(asked)
        if cfg.stage == "shrink" and cfg.removal_iterations and not cfg.shrink_iterations:
            raise ConfigError("stage shrink needs --shrink-iterations > 0")
        if args.print_config:
            print(json.dumps(cfg.to_dict(), indent=1))
            return 0
        run_dir = args.run_dir or Path("runs") / f"{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        result = run_compress(cfg, run_dir, allow_pickle=args.allow_pickle)
    print(result.tables["summary"])
    if result.tables.get("learning"):
        print("\n" + result.tables["learning"])
    teacher = result.run_dir / "teacher.json"
    warning = json.loads(teacher.read_text()).get("warning") if teacher.is_file() else None
    if warning:
        print(f"\nwarning: {warning}")
    print(f"\nrun directory: {result.run_dir}  (report.md, student.pt, history.jsonl, run.log)")
    return 0
