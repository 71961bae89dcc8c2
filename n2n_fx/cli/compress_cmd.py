"""`n2n-fx compress`: the main job. With no arguments, a complete run on synthetic data."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from ..errors import ConfigError
from ..search import SearchConfig, load_config_file, run_compress
from .common import add_data_option_arg, count_or_fraction, data_options_of, dataset_of, lifted, ratio_or_none

# CLI flag -> SearchConfig field, for the flags that take a value
_FLAGS = {
    "model": str,
    "dataset": str,
    "data_root": str,
    "teacher_checkpoint": str,
    "teacher_epochs": int,
    "teacher_patience": int,
    "stage": str,
    "removal_iterations": int,
    "shrink_iterations": int,
    "rollouts": int,
    "removal_lr": float,
    "shrink_lr": float,
    "remove_prior": float,
    "algo": str,
    "reinforce_baseline": str,
    "entropy_coef": float,
    "removal_policy": str,
    "shrink_policy": str,
    "reward_mode": str,
    "objective": str,
    "reward_accuracy": str,
    "supernet_steps": int,
    "supernet_shrink_steps": int,
    "supernet_lr": float,
    "supernet_students": int,
    "calib_batches": int,
    "reward_steps": int,
    "reward_lr": float,
    "reward_epochs": int,
    "reward_subset": count_or_fraction,
    "reward_val_subset": count_or_fraction,
    "batch_size": int,
    "max_flops": float,
    "max_flops_ratio": ratio_or_none,
    "max_latency_ms": float,
    "penalty": str,
    "final_epochs": int,
    "final_lambda": float,
    "final_loss": str,
    "final_lr": float,
    "seed": int,
    "device": str,
    "executor": str,
    "workers": int,
    "ray_address": str,
    "rollout_threads": int,
}


def _size(text: str) -> float:
    """1M, 20K, 3.5e6 -> float."""
    t = text.strip().upper()
    mult = {"K": 1e3, "M": 1e6, "G": 1e9}.get(t[-1:], 1.0)
    try:
        return float(t[:-1] if t[-1:] in "KMG" else t) * mult
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number like 20K or 1.5M") from None


def add_parser(sub, name: str) -> argparse.ArgumentParser:
    p = sub.add_parser(
        name,
        help="run a full compression (no arguments: synthetic data, small teacher, a few minutes)",
        description="Two-stage N2N search: removal policy, then shrink policy, then final training.",
    )
    defaults = SearchConfig()
    p.add_argument("--config", type=Path, help="TOML or JSON file with any of the settings below")
    p.add_argument(
        "--run-dir",
        type=Path,
        default=None,
        help="where to write the run (default runs/<model>-<dataset>-<time>)",
    )
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue an interrupted run")
    p.add_argument("--max-params", type=_size, default=None, help="constraint on student parameters, e.g. 20K")
    p.add_argument("--download", action="store_true", help="let torchvision download the data set")
    p.add_argument("--amp", action="store_true", help="bfloat16 autocast for KD training on CUDA (ignored on the CPU)")
    p.add_argument(
        "--remove-passive",
        action="store_true",
        help="let the removal policy remove norms, activations and dropout too (the paper's action space)",
    )
    add_data_option_arg(p)
    p.add_argument("--quiet", action="store_true", help="print only the final report")
    p.add_argument(
        "--allow-pickle",
        action="store_true",
        help="allow loading a run whose teacher is a pickled custom model",
    )
    for flag, typ in _FLAGS.items():
        default = getattr(defaults, flag)
        conv = _size if flag == "max_flops" else typ
        p.add_argument("--" + flag.replace("_", "-"), type=conv, default=None, help=f"(default: {default})")
    return p


def run(args: argparse.Namespace) -> int:
    if args.resume:
        result = run_compress(
            SearchConfig(),
            args.resume,
            resume=True,
            quiet=args.quiet,
            allow_pickle=args.allow_pickle,
        )
    else:
        data = load_config_file(args.config) if args.config else {}
        cli = lifted({f: getattr(args, f) for f in _FLAGS if getattr(args, f) is not None}, _FLAGS)
        if args.max_params is not None:
            cli["max_params"] = args.max_params
        if args.download:
            cli["download"] = True
        if args.amp:
            cli["amp"] = True
        if args.remove_passive:
            cli["remove_passive"] = True
        options = data_options_of(args)
        if options:
            cli["dataset_options"] = options
            dataset = dataset_of(cli.get("dataset", data.get("dataset")), options)
            if dataset is not None:
                cli["dataset"] = dataset
        known = {f.name for f in dataclasses.fields(SearchConfig)}
        cfg = SearchConfig.from_dict(
            {k: v for k, v in {**data, **cli}.items() if k in known} | {k: v for k, v in data.items() if k not in known}
        )
        run_dir = args.run_dir or Path("runs") / f"{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}"
        if cfg.stage == "shrink" and cfg.removal_iterations and not cfg.shrink_iterations:
            raise ConfigError("stage shrink needs --shrink-iterations > 0")
        result = run_compress(cfg, run_dir, quiet=args.quiet, allow_pickle=args.allow_pickle)
    print(result.tables["summary"])
    if result.tables.get("learning"):
        print("\n" + result.tables["learning"])
    teacher = result.run_dir / "teacher.json"
    warning = json.loads(teacher.read_text()).get("warning") if teacher.is_file() else None
    if warning:
        print(f"\nwarning: {warning}")
    print(f"\nrun directory: {result.run_dir}  (report.md, student.pt, history.jsonl)")
    return 0
