"""``n2n-fx train-teacher MODEL --dataset D``: train a teacher, print its accuracy, save a checkpoint."""

from __future__ import annotations

import argparse
import logging
import re
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..data.splits import load_splits
from ..teacher.quality import teacher_warning
from ..teacher.train import PRESETS, data_identity, preset_for, save_teacher, train_teacher
from ..teacher.zoo import build_model
from .common import add_data_option_arg, data_options_of, dataset_of

__all__ = ["add_parser", "run"]

logger = logging.getLogger(__name__)


def add_parser(subparsers: Any, name: str) -> argparse.ArgumentParser:
    """Register the subcommand on ``subparsers`` under ``name``."""
    p = subparsers.add_parser(
        name,
        help="train a teacher model on a data set and save a checkpoint",
        description=(
            "Train MODEL (conv4, vgg13_small, vgg_tiny or a torchvision classifier) on a data set "
            "(synthetic, mnist, mnist10k, cifar10, cifar100, svhn, caltech256, imagefolder:PATH) "
            "and save a checkpoint for `n2n-fx compress`. Presets: plateau (Adam until validation accuracy "
            "plateaus, best epoch kept; the default), paper (appendix 10.2; SGD momentum 0.9) or cpu "
            "(3 epochs of Adam)."
        ),
    )
    p.add_argument("model", help="model name, e.g. conv4 or resnet18")
    p.add_argument("--dataset", default=None, help="data set name (default: synthetic; imagefolder with --train-dir)")
    p.add_argument(
        "--data-root",
        default=None,
        help="folder holding the data set files (default: $N2N_FX_DATA or ./data)",
    )
    p.add_argument("--download", action="store_true", help="download the data set if it is missing")
    add_data_option_arg(p)
    p.add_argument(
        "--preset", choices=("plateau", "paper", "cpu"), default="plateau", help="training recipe (default: plateau)"
    )
    p.add_argument("--epochs", type=int, default=None, help="override the preset's epochs (plateau: the cap)")
    p.add_argument(
        "--patience",
        type=int,
        default=None,
        help="early stopping: epochs without a better val accuracy before lr/10, then before stopping (0: off)",
    )
    p.add_argument("--lr", type=float, default=None, help="override the preset's learning rate")
    p.add_argument("--batch-size", type=int, default=None, help="override the preset's batch size")
    p.add_argument(
        "--subset",
        type=float,
        default=None,
        help="train on this fraction (<1) or count of the training split",
    )
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--out", default=None, help="checkpoint path (default: MODEL-DATASET.pt)")
    p.add_argument("--seed", type=int, default=0, help="seed of splits, initialisation and shuffling")
    return p


def _default_out(model: str, dataset: str) -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", dataset.replace("imagefolder:", "folder-")).strip("_")
    return Path(f"{model}-{safe}.pt")


def run(args: argparse.Namespace) -> int:
    """Train, print a one-line summary, write the checkpoint. Returns the exit status."""
    import torch

    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.manual_seed(args.seed)
    subset: int | float | None = args.subset
    if subset is not None and subset > 1:
        subset = int(subset)
    options = data_options_of(args)
    dataset = dataset_of(args.dataset, options) or "synthetic"
    splits = load_splits(dataset, args.data_root, args.download, subset=subset, seed=args.seed, **options)
    logger.info(f"data: {splits.describe()}")
    model = build_model(args.model, num_classes=splits.num_classes, in_channels=splits.in_channels)
    preset = preset_for(splits.info.name) if args.preset == "paper" else PRESETS[args.preset]
    if args.patience is not None:
        preset = replace(preset, patience=args.patience)
    logger.info(f"training {args.model} with preset {preset.name} on {device}")
    model, metrics = train_teacher(
        model,
        splits,
        preset,
        epochs=args.epochs,
        lr=args.lr,
        batch_size=args.batch_size,
        device=device,
        seed=args.seed,
    )
    out = Path(args.out) if args.out else _default_out(args.model, dataset)
    save_teacher(
        out,
        model,
        model_name=args.model,
        num_classes=splits.num_classes,
        in_channels=splits.in_channels,
        input_size=splits.input_size,
        metrics=metrics,
        dataset=splits.info.name,
        data=data_identity(splits),
    )
    print(
        f"{args.model} on {splits.info.name}: val accuracy {metrics['val_accuracy']:.4f}, "
        f"test accuracy {metrics['test_accuracy']:.4f}, {metrics['params']:,} params, "
        f"{metrics['epochs']} epochs (best {metrics['best_epoch']}) in {metrics['wall_s']:.1f} s -> {out}"
    )
    warning = teacher_warning(metrics)
    if warning:
        print(f"warning: {warning}")
    return 0
