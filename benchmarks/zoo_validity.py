"""Valid fraction of random students per torchvision classifier (docs/surgery.md).

Usage: python benchmarks/zoo_validity.py [--models a,b] [--n 20] [--p-remove 0.3] [--p-shrink 1.0] [--batch 2]
       [--out docs/zoo_validity.md]

Every rollout removes each removable layer with probability ``--p-remove`` and shrinks each
remaining shrink variable (output channels, kernel, attention heads) with probability
``--p-shrink`` by a random legal ratio; a student counts as valid when the rewrite succeeds
and a forward + backward pass on a batch of ``--batch`` example inputs runs with the
teacher's output shape. Each model runs in its own process (memory stays bounded); with
``--out`` the table is rewritten after every model, so a sweep cut short keeps its rows.
"""

from __future__ import annotations

import argparse
import collections
import gc
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
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    names = classification_models() if args.models == "all" else args.models.split(",")
    if args.one is None and len(names) > 1:  # one subprocess per model keeps memory bounded
        import json
        import subprocess

        rows = []
        for name in names:
            cmd = [
                sys.executable,
                __file__,
                "--models",
                name,
                "--n",
                str(args.n),
                "--p-remove",
                str(args.p_remove),
                "--p-shrink",
                str(args.p_shrink),
                "--batch",
                str(args.batch),
                "--one",
                "json",
            ]
            out = subprocess.run(cmd, capture_output=True, text=True)
            if out.returncode != 0:
                rows.append(
                    [
                        name,
                        "error",
                        "",
                        "",
                        out.stderr.strip().splitlines()[-1][:100] if out.stderr.strip() else f"exit {out.returncode}",
                    ]
                )
            else:
                rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(*rows[-1], flush=True)
            if args.out:  # written after every model: a long sweep cut short keeps what it measured
                _emit(rows, args, quiet=True)
        _emit(rows, args)
        return
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
                    out = r.student(torch.randn(args.batch, *size))
                    out.sum().backward()
                    valid += out.shape == (args.batch, 10)
                except Exception as e:  # counted, never hidden
                    reasons[f"runtime: {str(e)[:60]}"] += 1
            else:
                reasons[r.degenerate.reason.value] += 1
            del r
            gc.collect()  # big models: keep one student alive at a time
        rows.append(
            [
                name,
                f"{valid}/{args.n}",
                f"{100 * valid / args.n:.0f}%",
                f"{1000 * sum(rw) / len(rw):.0f}",
                ", ".join(f"{k} {v}" for k, v in reasons.items()),
            ]
        )
        if args.one == "json":
            import json

            print(json.dumps(rows[-1]))
            return
        print(*rows[-1], f"({time.time() - t0:.0f}s)", flush=True)
        del gm, a
    _emit(rows, args)


def _emit(rows, args, quiet: bool = False) -> None:
    table = tabulate(rows, headers=["model", "valid", "%", "ms/rewrite", "degenerate reasons"], tablefmt="github")
    counted = [(row[0], *map(int, row[1].split("/"))) for row in rows if "/" in row[1]]
    summary = ""
    if counted:
        worst = min(counted, key=lambda c: c[1] / c[2])
        done, total = sum(c[1] for c in counted), sum(c[2] for c in counted)
        summary = (
            f"Legal actions gave a valid student in {done}/{total} rollouts ({100 * done / total:.1f} %); "
            f"worst model {worst[0]} {worst[1]}/{worst[2]}; models that did not finish: "
            f"{len(rows) - len(counted)}."
        )
    if not quiet:
        print(table, summary, sep="\n\n")
    if args.out:
        cmd = "python benchmarks/zoo_validity.py " + " ".join(a if len(a) < 80 else "<models>" for a in sys.argv[1:])
        args.out.write_text(f"# Random-surgery validity over the zoo\n\nCommand: `{cmd}`\n\n{table}\n\n{summary}\n")


if __name__ == "__main__":
    main()
