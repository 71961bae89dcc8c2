"""Valid fraction of random students per torchvision classifier (docs/surgery.md).

Usage: python benchmarks/zoo_validity.py [--models a,b] [--n 20] [--p-remove 0.3] [--out docs/zoo_validity.md]

Every rollout removes each removable layer with probability p and shrinks half the shrink
variables by a random legal ratio; a student counts as valid when the rewrite succeeds and
a forward + backward pass on the example input runs with the teacher's output shape.
"""

from __future__ import annotations

import argparse
import collections
import random
import sys
import time
from pathlib import Path

import torch
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from _zoo import input_size_for  # noqa: E402

from n2n_fx import analyze, apply_actions, trace  # noqa: E402
from n2n_fx.rewrite.sample import random_actions  # noqa: E402
from n2n_fx.teacher.zoo import classification_models  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="all")
    ap.add_argument("--n", type=int, default=20)
    ap.add_argument("--p-remove", type=float, default=0.3)
    ap.add_argument("--p-shrink", type=float, default=0.0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    names = classification_models() if args.models == "all" else args.models.split(",")
    rows = []
    for name in names:
        t0 = time.time()
        size = input_size_for(name)
        gm = trace(name, input_size=size)
        a = analyze(gm)
        valid, reasons, rw = 0, collections.Counter(), []
        for seed in range(args.n):
            remove, shrink = random_actions(a, random.Random(seed), args.p_remove, args.p_shrink)
            r = apply_actions(a, remove=remove, shrink=shrink)
            rw.append(r.seconds)
            if r.valid:
                try:
                    out = r.student(torch.randn(2, *size))
                    out.sum().backward()
                    valid += out.shape == (2, 10)
                except Exception as e:  # counted, never hidden
                    reasons[f"runtime: {str(e)[:60]}"] += 1
            else:
                reasons[r.degenerate.reason.value] += 1
        rows.append(
            [
                name,
                f"{valid}/{args.n}",
                f"{100 * valid / args.n:.0f}%",
                f"{1000 * sum(rw) / len(rw):.0f}",
                ", ".join(f"{k} {v}" for k, v in reasons.items()),
            ]
        )
        print(*rows[-1], f"({time.time() - t0:.0f}s)", flush=True)
        del gm, a
    table = tabulate(
        rows, headers=["model", "valid", "%", "ms/rewrite", "degenerate reasons"], tablefmt="github"
    )
    print(table)
    if args.out:
        cmd = "python benchmarks/zoo_validity.py " + " ".join(sys.argv[1:])
        args.out.write_text(
            f"# Random-surgery validity over the zoo\n\nCommand: `{cmd}`\n\n{table}\n"
        )


if __name__ == "__main__":
    main()
