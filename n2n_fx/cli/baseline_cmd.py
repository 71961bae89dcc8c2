"""``n2n-fx baseline {random,prune,handmade}``: the paper's baselines (§4.4) and the random control.

With ``--ref-run RUN_DIR`` a baseline uses that N2N run's config, data and very teacher,
and compares with its student (pruning stops by it; hand-made students are sized to it).
Without it, the defaults run on synthetic data in about a minute on a CPU.

Example::

    n2n-fx baseline random --ref-run runs/vgg_tiny-synthetic-20261121-101500
    n2n-fx baseline prune --ref-run RUN --repeats 5
    n2n-fx baseline handmade --target-params 20K --arch vgg_small fitnet
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import time
from pathlib import Path
from typing import Any

from ..baselines.handmade import build_handmade, count_model_params, train_handmade
from ..baselines.pruning import PruneConfig, Reference, prune
from ..baselines.random_search import run_random_search
from ..baselines.reference import load_reference
from ..distill import DistillConfig, accuracy
from ..errors import ConfigError
from ..search import SearchConfig, load_config_file
from ..search.teacher_setup import load_data, prepare
from ..storage import atomic_torch_save, atomic_write_text
from ..teacher.trace import trace
from .common import add_data_option_arg, add_verbosity_args, data_options_of, dataset_of
from .compress_cmd import READERS, _size
from .config_args import add_config_args, given_config

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)

# SearchConfig fields that are flags of every method (help and choices from the config, cli/config_args.py)
_COMMON = ("model", "dataset", "data_root", "teacher_checkpoint", "teacher_epochs", "batch_size", "seed", "device")
# extra SearchConfig fields of `baseline random` (the search budget, as `n2n-fx compress`)
_RANDOM = (
    "stage",
    "reward_mode",
    "reward_accuracy",
    "remove_prior",
    "supernet_steps",
    "supernet_shrink_steps",
    "calib_batches",
    "max_flops_ratio",
    "max_params",
    "remove_passive",
    "shrink_kernels",
    "removal_iterations",
    "shrink_iterations",
    "rollouts",
    "reward_steps",
    "reward_epochs",
    "reward_subset",
    "reward_val_subset",
    "final_epochs",
    "final_lambda",
    "final_loss",
    "final_lr",
)

# PruneConfig fields of `baseline prune`, as flags: (field, type, help)
_PRUNE = (
    ("step_fraction", float, "share of the teacher's prunable channels removed per step"),
    ("score_batches", int, "batches the Taylor criterion is averaged over"),
    ("finetune_steps", int, "fine-tuning steps after each pruning step"),
    ("finetune_lr", float, "Adam lr of the fine-tuning"),
    ("kd_lambda", float, "λ of KD in fine-tuning (0: plain CE)"),
    ("max_steps", int, "cap on pruning steps"),
)


def _add_flags(p: argparse.ArgumentParser, flags: tuple[str, ...]) -> None:
    add_config_args(p, SearchConfig, types_=READERS, only=flags)


def _add_common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, help="TOML or JSON file of `n2n-fx compress` settings")
    p.add_argument(
        "--ref-run",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="finished N2N run: use its config, data and teacher, and compare with its student",
    )
    add_data_option_arg(p)
    add_verbosity_args(p)
    p.add_argument("--allow-pickle", action="store_true", help="allow a --ref-run whose teacher is pickled")


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    """Register ``baseline`` and its three methods on ``subparsers``."""
    p = subparsers.add_parser(
        name,
        help="run a baseline: random search, Taylor filter pruning or hand-made KD students",
        description="Baselines of the paper (§4.4) and the random-search control of the RL search.",
    )
    methods = p.add_subparsers(dest="method", metavar="METHOD", required=True)

    r = methods.add_parser(
        "random",
        help="random search with N2N's action spaces, rollout budget and rewards",
        description="Two-stage random search: random removal masks (p=0.5), then random shrink "
        "ratios on the best stage-1 student; KD rewards, history and report as `compress`.",
    )
    _add_common(r)
    _add_flags(r, _COMMON + _RANDOM)
    r.add_argument("--run-dir", type=Path, default=None, help="default runs/random-<model>-<time>")
    r.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a run")
    r.add_argument(
        "--p-remove",
        type=float,
        default=None,
        help="P(remove) per layer (default: the run's remove_prior, what a fresh removal policy starts at)",
    )

    pr = methods.add_parser(
        "prune",
        help="greedy filter pruning with the Taylor criterion (Molchanov et al. 2016)",
        description="Prune the lowest-ranked channels, fine-tune, repeat; stop when accuracy is "
        "more than --tolerance below the reference or params fall below the reference's.",
    )
    _add_common(pr)
    _add_flags(pr, _COMMON)
    pr.add_argument("--ref-accuracy", type=float, default=None, help="reference val accuracy")
    pr.add_argument("--ref-params", type=_size, default=None, help="reference params, e.g. 20K")
    pr.add_argument("--tolerance", type=float, default=0.01, help="accuracy drop allowed (0.01)")
    pd = PruneConfig()
    for flag, typ, what in _PRUNE:
        default = getattr(pd, flag)
        pr.add_argument("--" + flag.replace("_", "-"), type=typ, default=default, help=f"{what} ({default})")
    pr.add_argument("--repeats", type=int, default=1, help="runs with seeds seed.. (paper: 5)")
    pr.add_argument("--out", type=Path, default=None, help="folder for the result and student")

    h = methods.add_parser(
        "handmade",
        help="VGG-small / FitNet-style students sized to a parameter count, trained with KD",
        description="Hand-designed students at a width giving --target-params (default: the "
        "reference student's params, else teacher/10), trained from scratch with CE + λ·KD.",
    )
    _add_common(h)
    _add_flags(h, _COMMON)
    h.add_argument("--arch", nargs="+", default=["vgg_small", "fitnet"], help="vgg_small and/or fitnet")
    h.add_argument("--target-params", type=_size, default=None, help="e.g. 20K or 1M")
    h.add_argument("--width", type=float, default=None, help="width multiplier instead of target")
    h.add_argument(
        "--epochs",
        type=int,
        default=10,
        help="epochs from scratch (default 10; the paper trains to convergence)",
    )
    h.add_argument("--lam", type=float, default=None, help="λ of CE + λ·KD (default final_lambda)")
    h.add_argument("--lr", type=float, default=None, help="Adam lr (default final_lr)")
    h.add_argument("--out", type=Path, default=None, help="folder for the results and students")
    return p


# -- shared setup -------------------------------------------------------------------------------


def _config(args: argparse.Namespace, ref) -> Any:
    return SearchConfig.from_dict(_settings(args, ref.config.to_dict() if ref is not None else {}))


def _settings(args: argparse.Namespace, base: dict[str, Any]) -> dict[str, Any]:
    """``base`` settings, then the ``--config`` file's, then the flags given."""
    data = load_config_file(args.config) if args.config else {}
    cli = given_config(args, SearchConfig)
    merged = {**base, **data, **cli}
    options = data_options_of(args)
    if options:
        merged["dataset_options"] = {**(merged.get("dataset_options") or {}), **options}
        dataset = dataset_of(merged.get("dataset"), options)
        if dataset is not None:
            merged["dataset"] = dataset
    return merged


def _setup(args: argparse.Namespace):
    """(config, reference or None, teacher module, data splits)."""
    ref = load_reference(args.ref_run, allow_pickle=args.allow_pickle) if args.ref_run else None
    cfg = _config(args, ref)
    if ref is not None:
        return cfg, ref, ref.teacher.eval(), load_data(cfg)
    prepared = prepare(cfg)
    return cfg, None, prepared.model.eval(), prepared.splits


def _acc(model, data) -> float:
    return accuracy(model, data) if len(data) else math.nan


def _table(rows: list[tuple[str, float, int]], teacher_params: int) -> str:
    from tabulate import tabulate

    body = [
        [
            name,
            "n/a" if math.isnan(acc) else f"{100 * acc:.2f}%",
            f"{params:,}",
            f"{teacher_params / max(1, params):.2f}x",
        ]
        for name, acc, params in rows
    ]
    return tabulate(body, headers=["method", "accuracy", "#params", "compression"])


def _head_rows(ref, teacher, splits) -> list[tuple[str, float, int]]:
    rows = [("Teacher", _acc(teacher, splits.test), count_model_params(teacher))]
    if ref is not None:
        rows.append(("N2N (reference run)", ref.test_accuracy, ref.params))
    return rows


def _write(out: Path | None, name: str, data: dict[str, Any], student=None, code: str = "") -> None:
    if out is None:
        return

    atomic_write_text(out / f"{name}.json", json.dumps(data, indent=1, default=str))
    if student is not None:
        state = {"format": "n2n_fx.baseline-student/1", **data, "state_dict": student.state_dict()}
        atomic_torch_save(state, out / f"{name}.pt")
    if code:
        atomic_write_text(out / f"{name}.py", code)


# -- methods ------------------------------------------------------------------------------------


def _run_random(args: argparse.Namespace) -> int:
    if args.resume:
        for flag, value in (("--ref-run", args.ref_run), ("--p-remove", args.p_remove)):
            if value is not None:
                raise ConfigError(f"{flag} with --resume: a resumed random search keeps the one it was started with")
        changes = _settings(args, {})  # refused where they differ from the run's, but for raised budgets
        res = run_random_search(SearchConfig(), args.resume, resume=True, changes=changes)
        ref = None
    else:
        ref = load_reference(args.ref_run, allow_pickle=args.allow_pickle) if args.ref_run else None
        cfg = _config(args, ref)
        run_dir = args.run_dir or Path("runs") / (f"random-{cfg.model}-{cfg.dataset}-{time.strftime('%Y%m%d-%H%M%S')}")
        res = run_random_search(
            cfg,
            run_dir,
            p_remove=args.p_remove,
            teacher=ref.teacher if ref is not None else None,
        )
    s = res.summary
    t = s["teacher"]
    rows = [("Teacher", t["test_accuracy"], t["params"])]
    if ref is not None:
        rows.append(("N2N (reference run)", ref.test_accuracy, ref.params))
    for key, label in (("stage1", "Random search (stage 1)"), ("stage2", "Random search (1+2)")):
        if s.get(key):
            rows.append((label, s[key]["test_accuracy"], s[key]["params"]))
    print(_table(rows, t["params"]))
    print(f"\nrun directory: {res.run_dir}  (history.jsonl, report.md, student.pt)")
    return 0


def _run_prune(args: argparse.Namespace) -> int:
    if args.repeats < 1:
        raise ConfigError(f"--repeats {args.repeats} must be >= 1")
    if args.ref_params is not None and args.ref_accuracy is None and args.ref_run is None:
        raise ConfigError("--ref-params needs --ref-accuracy (or --ref-run)")
    cfg, ref, teacher, splits = _setup(args)
    gm = trace(teacher, input_size=splits.input_size).eval()
    reference = None
    if args.ref_accuracy is not None or ref is not None:
        acc = args.ref_accuracy if args.ref_accuracy is not None else ref.accuracy
        params = args.ref_params if args.ref_params is not None else (ref.params if ref else None)
        reference = Reference(acc, None if params is None else int(params), args.tolerance)
    best = None
    for k in range(args.repeats):
        pcfg = PruneConfig(
            **{flag: getattr(args, flag) for flag, _, _ in _PRUNE},
            batch_size=cfg.batch_size,
            device=cfg.resolved_device(),
            seed=cfg.seed + k,
        )
        if reference is None:  # the teacher's accuracy, within the tolerance
            reference = Reference(accuracy(gm, splits.val), None, args.tolerance)
        res = prune(gm, splits, pcfg, reference)
        logger.info(f"repeat {k + 1}/{args.repeats}: {res.params:,} params, val {res.accuracy:.4f}")
        if best is None or res.accuracy > best.accuracy:
            best = res
    assert best is not None
    test = _acc(best.student, splits.test)
    rows = _head_rows(ref, gm, splits) + [("Taylor pruning", test, best.params)]
    print(_table(rows, best.teacher_params))
    print(f"\nstopped: {best.stop} after step {best.step}; best of {args.repeats} repeat(s)")
    info = {
        "method": "taylor_pruning",
        "val_accuracy": best.accuracy,
        "test_accuracy": test,
        "params": best.params,
        "teacher_params": best.teacher_params,
        "stop": best.stop,
        "reference": dataclasses.asdict(reference) if reference else None,
        "log": best.log_rows(),
    }
    _write(args.out, "pruned", info, best.student, best.student.code)
    return 0


def _run_handmade(args: argparse.Namespace) -> int:
    if args.width is not None and not args.width > 0:
        raise ConfigError(f"--width {args.width} must be positive")
    cfg, ref, teacher, splits = _setup(args)
    teacher_params = count_model_params(teacher)
    target = args.target_params
    if target is None and args.width is None:
        target = ref.params if ref is not None else teacher_params / 10
    dcfg = DistillConfig(
        loss="ce+l2",
        lam=cfg.final_lambda if args.lam is None else args.lam,
        lr=cfg.final_lr if args.lr is None else args.lr,
        epochs=args.epochs,
        batch_size=cfg.batch_size,
        device=cfg.resolved_device(),
        seed=cfg.seed,
    )
    rows = _head_rows(ref, teacher, splits)
    import torch

    for arch in args.arch:
        torch.manual_seed(cfg.seed)
        student = build_handmade(
            arch,
            splits.num_classes,
            splits.in_channels,
            width=args.width,
            target_params=None if args.width is not None else target,
            input_size=splits.input_size,
        )
        logger.info(f"training {arch} ({count_model_params(student):,} params)")
        res = train_handmade(arch, student, splits, teacher, dcfg)
        rows.append((f"{arch} + KD", res.test_accuracy, res.params))
        info = {
            "method": f"handmade_{arch}",
            "val_accuracy": res.val_accuracy,
            "test_accuracy": res.test_accuracy,
            "params": res.params,
            "target_params": target,
            "diverged": None if res.training.degenerate is None else str(res.training.degenerate),
        }
        _write(args.out, arch, info, res.student)
    print(_table(rows, teacher_params))
    return 0


def run(args: argparse.Namespace) -> int:
    """Run the chosen baseline and print its table. Returns the exit status."""
    runners = {"random": _run_random, "prune": _run_prune, "handmade": _run_handmade}
    if args.method not in runners:
        raise ConfigError(f"unknown baseline {args.method!r}; use one of {sorted(runners)}")
    return runners[args.method](args)
