"""Benchmark distillation on real data: MNIST-10k (8,000 train / 2,000 test carved from t10k).

Trains a teacher with the ``cpu`` preset, makes a half-width student (every conv keeps the
L1-top half of its filters, by surgery with ``n2n_fx.rewrite.shrink`` or, with
``--student manual``, by hand), and reports for that student the test accuracy and wall
time of one reward evaluation (``--reward-epochs`` of logit-L2 distillation):

* with and without the teacher-logit cache,
* with inherited teacher weights and from scratch (re-initialised),
* the paper's protocol (5 epochs from scratch, §4.2),
* and the overhead of ``n2n_fx.distill.distill`` over a bare hand-written PyTorch loop on
  the same student, batches and optimiser.

Accuracies here are on the carved test split (benchmark only; rewards use validation).

Usage:
    python benchmarks/distill.py --data-root ../shared/data --markdown docs/benchmarks.md
"""

from __future__ import annotations

import argparse
import copy
import datetime
import logging
import os
import platform
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate
from torch import nn

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from n2n_fx.data import load_splits, make_loader  # noqa: E402
from n2n_fx.distill import DistillConfig, IndexedDataset, LogitCache, accuracy, distill  # noqa: E402
from n2n_fx.reward import count_flops, count_params  # noqa: E402
from n2n_fx.teacher.train import load_teacher, save_teacher, train_teacher  # noqa: E402
from n2n_fx.teacher.zoo import build_model  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--data-root",
        default=str(REPO.parent / "shared" / "data"),
        help="folder holding mnist/raw/",
    )
    p.add_argument("--teacher", default="conv4", help="teacher model (conv4, vgg_tiny, vgg13_small)")
    p.add_argument("--teacher-epochs", type=int, default=None, help="override the cpu preset's epochs")
    p.add_argument(
        "--teacher-ckpt",
        default=None,
        help="reuse this teacher checkpoint if it exists, else write it",
    )
    p.add_argument(
        "--student",
        choices=("auto", "surgery", "manual"),
        default="auto",
        help="half-width student by n2n_fx.rewrite.shrink (surgery), by hand (manual, conv4 only), "
        "or surgery when n2n_fx.rewrite is importable (auto)",
    )
    p.add_argument("--reward-epochs", type=int, default=1, help="distillation budget of one reward evaluation")
    p.add_argument("--paper-epochs", type=int, default=5, help="epochs of the paper protocol (from scratch)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate of the students")
    p.add_argument(
        "--subset",
        type=float,
        default=None,
        help="use a fraction (<1) or count of the 8k training set",
    )
    p.add_argument(
        "--overhead-repeats",
        type=int,
        default=3,
        help="alternating runs of each loop (fastest counts)",
    )
    p.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--markdown", default=None, help="append the results as markdown to this file")
    return p.parse_args(argv)


# -- the half-width student ---------------------------------------------------------------------


def conv_names(model: nn.Module) -> list[str]:
    return [name for name, m in model.named_modules() if isinstance(m, nn.Conv2d)]


def half_width_by_surgery(teacher: nn.Module, input_size: tuple[int, ...]) -> nn.Module:
    """SWITCH (surgery): every conv keeps half its filters, chosen and copied by n2n_fx.rewrite."""
    from n2n_fx.rewrite import shrink
    from n2n_fx.teacher.trace import trace

    gm = trace(teacher, input_size=input_size)
    result = shrink(gm, {name: {"out": 0.5} for name in conv_names(teacher)})
    if not result.valid:
        raise SystemExit(f"surgery gave a degenerate student: {result.degenerate}")
    return result.student


def half_width_by_hand(teacher: nn.Module, in_channels: int, num_classes: int) -> nn.Module:
    """SWITCH (manual): a fresh Conv4 of half width with the L1-top half of each conv's filters."""
    from n2n_fx.teacher.small import Conv4

    old_width = teacher.features[0].out_channels
    student = Conv4(num_classes, in_channels, width=old_width // 2)
    t_convs = [m for m in teacher.features if isinstance(m, nn.Conv2d)]
    t_bns = [m for m in teacher.features if isinstance(m, nn.BatchNorm2d)]
    s_convs = [m for m in student.features if isinstance(m, nn.Conv2d)]
    s_bns = [m for m in student.features if isinstance(m, nn.BatchNorm2d)]
    keep_in = torch.arange(in_channels)
    with torch.no_grad():
        for tc, tb, sc, sb in zip(t_convs, t_bns, s_convs, s_bns, strict=True):
            l1 = tc.weight.abs().sum(dim=(1, 2, 3))  # (C_out,)
            keep = l1.topk(sc.out_channels).indices.sort().values
            sc.weight.copy_(tc.weight[keep][:, keep_in])
            sc.bias.copy_(tc.bias[keep])
            for name in ("weight", "bias", "running_mean", "running_var"):
                getattr(sb, name).copy_(getattr(tb, name)[keep])
            keep_in = keep
        # the first linear reads (C, 2, 2) flattened: keep the columns of the kept channels
        cols = (keep_in.view(-1, 1) * 4 + torch.arange(4).view(1, -1)).flatten()
        student.classifier[1].weight.copy_(teacher.classifier[1].weight[:, cols])
        student.classifier[1].bias.copy_(teacher.classifier[1].bias)
        student.classifier[4].load_state_dict(teacher.classifier[4].state_dict())
    return student


def reinitialised(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every layer freshly initialised (training from scratch)."""
    torch.manual_seed(seed)
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters") and m is not fresh:
            m.reset_parameters()
    return fresh


# -- the bare loop --------------------------------------------------------------------------------


def bare_loop(student: nn.Module, train_data, logits: torch.Tensor, batch_size: int, lr: float, seed: int) -> int:
    """One epoch of logit-L2 training written directly in PyTorch, on distill()'s batches."""
    loader = make_loader(IndexedDataset(train_data), batch_size, shuffle=True, seed=seed)
    optimizer = torch.optim.Adam(student.parameters(), lr=lr)
    student.train()
    steps = 0
    for x, _, idx in loader:
        out = student(x)  # (batch, n_classes)
        loss = (out - logits[idx]).pow(2).sum(1).mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    return steps


# -- main ----------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(format="%(message)s")  # n2n_fx's progress lines on stderr
    logging.getLogger("n2n_fx").setLevel(logging.INFO)
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    subset = int(args.subset) if args.subset and args.subset > 1 else args.subset
    splits = load_splits("mnist10k", args.data_root, val_size=0, test_size=2000, subset=subset, seed=args.seed)
    train, test = splits.train_plain, splits.test
    print(f"data: {splits}")

    # teacher
    ckpt = Path(args.teacher_ckpt) if args.teacher_ckpt else None
    if ckpt is not None and ckpt.is_file():
        loaded = load_teacher(ckpt)
        teacher, teacher_train_s = loaded.model, float(loaded.metrics.get("wall_s", float("nan")))
        print(f"teacher: loaded {ckpt}")
    else:
        teacher = build_model(args.teacher, num_classes=splits.num_classes, in_channels=splits.in_channels)
        teacher, metrics = train_teacher(teacher, splits, "cpu", epochs=args.teacher_epochs, seed=args.seed)
        teacher_train_s = metrics["wall_s"]
        if ckpt is not None:
            save_teacher(
                ckpt,
                teacher,
                model_name=args.teacher,
                num_classes=splits.num_classes,
                in_channels=splits.in_channels,
                input_size=splits.input_size,
                metrics=metrics,
                dataset=splits.info.name,
            )
    teacher.eval()
    teacher_acc = accuracy(teacher, test)
    t0 = time.perf_counter()
    cache = LogitCache.build(teacher, train)
    cache_s = time.perf_counter() - t0

    # student
    mode = args.student
    if mode == "auto":
        try:
            import n2n_fx.rewrite  # noqa: F401

            mode = "surgery"
        except ImportError:
            mode = "manual"
    if mode == "surgery":
        inherited = half_width_by_surgery(teacher, splits.input_size)
    else:
        if args.teacher != "conv4":
            raise SystemExit("--student manual builds conv4 students only; use --teacher conv4")
        inherited = half_width_by_hand(teacher, splits.in_channels, splits.num_classes)
    inherited_acc = accuracy(inherited, test)
    t_params, s_params = count_params(teacher), count_params(inherited)
    t_flops, s_flops = (
        count_flops(teacher, splits.input_size),
        count_flops(inherited, splits.input_size),
    )
    print(
        f"student ({mode}): {s_params:,} params vs teacher {t_params:,}; test acc before training {inherited_acc:.4f}"
    )

    def run(label: str, epochs: int, student: nn.Module, use_cache: bool) -> list:
        cfg = DistillConfig(epochs=epochs, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
        torch.manual_seed(args.seed)  # same dropout draws in every run
        r = distill(
            student,
            train,
            cfg,
            teacher=None if use_cache else teacher,
            logit_cache=cache if use_cache else None,
        )
        acc = accuracy(r.student, test) if r.ok else float("nan")
        print(f"  {label}: test acc {acc:.4f}, {r.wall_s:.1f} s")
        return [label, epochs, "yes" if use_cache else "no", f"{acc:.4f}", f"{r.wall_s:.1f}"]

    rows = [
        [
            "teacher " + args.teacher,
            "-",
            "-",
            f"{teacher_acc:.4f}",
            f"{teacher_train_s:.1f} (training)",
        ],
        ["student, inherited, before training", 0, "-", f"{inherited_acc:.4f}", "-"],
    ]
    e = args.reward_epochs
    rows.append(run("student, inherited weights", e, copy.deepcopy(inherited), use_cache=True))
    rows.append(run("student, inherited weights", e, copy.deepcopy(inherited), use_cache=False))
    rows.append(run("student, from scratch", e, reinitialised(inherited, args.seed), use_cache=True))
    rows.append(run("student, from scratch", e, reinitialised(inherited, args.seed), use_cache=False))
    rows.append(
        run(
            "paper protocol: from scratch",
            args.paper_epochs,
            reinitialised(inherited, args.seed),
            True,
        )
    )

    # KD loop overhead: distill() vs a bare loop, same init, batches, dropout draws and optimiser;
    # one epoch each, alternated --overhead-repeats times; the fastest run of each counts
    bare_times, kd_times = [], []
    for _ in range(args.overhead_repeats):
        a, b = copy.deepcopy(inherited), copy.deepcopy(inherited)
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        steps = bare_loop(a, train, cache.logits, args.batch_size, args.lr, args.seed)
        bare_times.append(time.perf_counter() - t0)
        torch.manual_seed(args.seed)
        t0 = time.perf_counter()
        cfg = DistillConfig(epochs=1, lr=args.lr, batch_size=args.batch_size, seed=args.seed)
        r = distill(b, train, cfg, logit_cache=cache)
        kd_times.append(time.perf_counter() - t0)
    bare_s, kd_s = min(bare_times), min(kd_times)
    max_diff = max((pa - pb).abs().max().item() for pa, pb in zip(a.parameters(), b.parameters(), strict=True))
    overhead = [
        ["bare PyTorch loop", steps, f"{bare_s:.2f}", f"{1000 * bare_s / steps:.1f}"],
        ["n2n_fx.distill.distill", r.steps, f"{kd_s:.2f}", f"{1000 * kd_s / r.steps:.1f}"],
    ]

    headers = ["run", "epochs", "logit cache", "test acc", "wall s"]
    table = tabulate(rows, headers=headers, tablefmt="github")
    o_table = tabulate(
        overhead,
        headers=["loop (1 epoch, cached logits)", "steps", "wall s", "ms/step"],
        tablefmt="github",
    )
    notes = [
        f"- data: MNIST-10k carved from t10k (seed {args.seed}): {len(train)} train / {len(test)} test",
        f"- teacher {args.teacher} (cpu preset: Adam 1e-3, {args.teacher_epochs or 3} epochs): "
        f"{t_params:,} params, {t_flops / 1e6:.1f} MFLOPs/sample",
        f"- student: half-width by {mode} (every conv keeps its L1-top half of filters): {s_params:,} params "
        f"({100 * s_params / t_params:.0f}%), {s_flops / 1e6:.1f} MFLOPs/sample",
        f"- students: logit-L2 distillation (paper §3.5), Adam lr {args.lr}, batch {args.batch_size}",
        f"- logit cache build: {cache_s:.2f} s (once per data set)",
        f"- distill() vs bare loop (fastest of {args.overhead_repeats} alternating epochs each): overhead "
        f"{100 * (kd_s / bare_s - 1):+.1f}%; max |weight difference| after one epoch {max_diff:.1e}",
        f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"{torch.get_num_threads()} torch threads, torch {torch.__version__}",
    ]
    print()
    print(table)
    print()
    print(o_table)
    print()
    print("\n".join(notes))
    if args.markdown:
        path = Path(args.markdown)
        path.parent.mkdir(parents=True, exist_ok=True)
        stamp = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        with path.open("a") as f:
            f.write(f"\n## Distillation on MNIST-10k ({stamp}, `benchmarks/distill.py`)\n\n")
            f.write("\n".join(notes) + "\n\n" + table + "\n\n" + o_table + "\n")
        print(f"appended to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
