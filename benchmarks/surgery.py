"""Surgery speed: n2n_fx vs Torch-Pruning on the same models and channel fraction.

Usage: python benchmarks/surgery.py [--models resnet18,resnet50,...] [--ratio 0.5] [--repeat 3] [--out docs/benchmarks.md]

n2n_fx: trace (once, reported separately) + analyze + remove every 4th removable layer +
shrink every shrinkable channel space to ``ratio`` + repair + recompile, teacher untouched.
Torch-Pruning (bench-only dependency, ``pip install torch-pruning``): build the dependency
graph + prune the same channel fraction with L1 magnitude importance (in place); reported
with and without the deepcopy a user needs to keep the teacher.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

from n2n_fx import analyze, apply_actions, build_model, trace


def _median_time(fn, repeat: int) -> float:
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def bench_n2n(model, size, ratio, repeat):
    t0 = time.perf_counter()
    gm = trace(model, input_size=size)
    t_trace = time.perf_counter() - t0

    def once():
        a = analyze(gm)
        removable = [lay.node for lay in a.layers if lay.removable][::4]
        shrink = {lay.node: ratio for lay in a.layers if "out" in lay.shrinkable}
        r = apply_actions(a, remove=removable, shrink=shrink)
        assert r.valid, r.degenerate
        return r

    t = _median_time(once, repeat)
    return t_trace, t, len(gm.graph.nodes)


def bench_tp(model, size, ratio, repeat, deepcopy):
    import torch_pruning as tp

    x = torch.randn(1, *size)

    def once():
        m = copy.deepcopy(model) if deepcopy else model_fresh()
        ignored = [mod for mod in m.modules() if isinstance(mod, torch.nn.Linear) and mod.out_features == 10]
        pruner = tp.pruner.MagnitudePruner(
            m,
            x,
            importance=tp.importance.MagnitudeImportance(p=1),
            pruning_ratio=1 - ratio,
            ignored_layers=ignored,
        )
        pruner.step()

    fresh = []

    def model_fresh():
        return fresh.pop()

    if not deepcopy:
        fresh.extend(copy.deepcopy(model) for _ in range(repeat))
    return _median_time(once, repeat)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet18,resnet50,resnet152,densenet121,mobilenet_v2,vgg16_bn")
    ap.add_argument("--size", default="3x224x224")
    ap.add_argument("--ratio", type=float, default=0.5)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    size = tuple(int(v) for v in args.size.split("x"))
    torch.set_num_threads(2)
    rows = []
    for name in args.models.split(","):
        torch.manual_seed(0)
        model = build_model(name, num_classes=10).eval()
        t_trace, t_ours, n_nodes = bench_n2n(model, size, args.ratio, args.repeat)
        try:
            t_tp = bench_tp(model, size, args.ratio, args.repeat, deepcopy=False)
            t_tp_copy = bench_tp(model, size, args.ratio, args.repeat, deepcopy=True)
        except Exception as e:  # report, do not hide
            t_tp = t_tp_copy = float("nan")
            print(f"torch-pruning failed on {name}: {e}", file=sys.stderr)
        rows.append(
            [
                name,
                n_nodes,
                f"{t_trace:.2f}",
                f"{t_ours:.2f}",
                f"{t_tp:.2f}",
                f"{t_tp_copy:.2f}",
                f"{t_ours / t_tp:.2f}",
            ]
        )
        print(rows[-1], flush=True)
    headers = [
        "model",
        "fx nodes",
        "n2n trace (s, once)",
        "n2n rewrite (s)",
        "TP build+prune (s)",
        "TP incl. deepcopy (s)",
        "n2n / TP",
    ]
    table = tabulate(rows, headers=headers, tablefmt="github")
    print(table)
    if args.out:
        cmd = "python benchmarks/surgery.py " + " ".join(sys.argv[1:])
        text = f"\n## Surgery speed vs Torch-Pruning\n\nCommand: `{cmd}` (2-core CPU, torch {torch.__version__}).\n\n{table}\n"
        with args.out.open("a") as f:
            f.write(text)


if __name__ == "__main__":
    main()
