"""Table 5 in kind: a removal policy learnt on one teacher starts the search on a deeper one.

    python -m benchmarks.paper.table5_transfer [--source runs/paper/table1-conv4-shared]   # shared rewards
    python -m benchmarks.paper.table5_transfer --reward-mode kd [--source runs/paper/table1-conv4]   # ~25 min
    python -m benchmarks.paper.table5_transfer --source runs/paper/random-vs-n2n-n2n-lr0.03-batch-it60-seed0 \
        --removal-lr 0.03 --baseline batch --tag long-source

Source: the removal policy of the conv4 run (4 convs, 2 linears). Target: a vgg_tiny teacher
(6 convs, 2 linears) trained on the same data. Two removal-stage searches of ``--updates``
policy updates on the target, one starting from the source's policy and one from scratch,
same seed, same rollout budget; the table reports reward, compression and accuracy averaged
over those first updates (as the paper's Table 5).
"""

from __future__ import annotations

import time
from pathlib import Path

from n2n_fx.policy import BASELINES
from n2n_fx.search import run_compress

from .common import RUNS, mnist_config, parser, per_iteration, run_dir, save, setup
from .table1 import BUDGETS


def _mean(rows, key):
    vals = [r[key] for r in rows if r[key] is not None]
    return sum(vals) / len(vals) if vals else None


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument(
        "--source", type=Path, default=None, help="finished N2N run (its removal policy; default: Table 1's conv4 run)"
    )
    ap.add_argument("--reward-mode", choices=("shared", "kd"), default="shared", help="how students are scored")
    ap.add_argument("--target", default="vgg_tiny", help="teacher of the target search")
    ap.add_argument("--updates", type=int, default=10, help="policy updates compared (paper: 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--removal-lr", type=float, default=None, help="removal-policy lr of both searches (0.003)")
    ap.add_argument("--baseline", choices=BASELINES, default=None, help="REINFORCE baseline (ema)")
    ap.add_argument("--tag", default="", help="suffix of the run folders and result file (keeps earlier runs)")
    args = ap.parse_args()
    setup(args)
    t0 = time.perf_counter()
    shared = args.reward_mode == "shared"
    source = args.source or RUNS / ("table1-conv4-shared" if shared else "table1-conv4")
    policy = source / "policies" / "removal.pt"
    if not policy.is_file():
        mode = "" if shared else " --reward-mode kd"
        raise SystemExit(f"{policy} not found; run python -m benchmarks.paper.table1 --teacher conv4{mode} first")
    budget = (
        {"reward_mode": "shared"} if shared else {k: v for k, v in BUDGETS["conv4"].items() if k.startswith("reward")}
    )
    tag = ("-shared" if shared else "") + (f"-{args.tag}" if args.tag else "")
    out = {}
    for label, start in (("pretrained", str(policy)), ("scratch", None)):
        cfg = mnist_config(
            args.target,
            seed=args.seed,
            stage="removal",
            removal_iterations=args.updates,
            removal_policy=start,
            final_epochs=1,
            **budget,
        ).replace(removal_lr=args.removal_lr, reinforce_baseline=args.baseline)
        path = run_dir(f"table5-{args.target}{tag}-{label}", args.fresh)
        res = run_compress(cfg, path, resume=path.joinpath("config.json").is_file())
        its = per_iteration(res.history)
        out[label] = {
            "run_dir": str(res.run_dir),
            "mean_reward": _mean(its, "mean_reward"),
            "mean_compression": _mean(its, "mean_compression"),
            "mean_accuracy": _mean(its, "mean_accuracy"),
            "degenerate": sum(r["degenerate"] for r in its),
            "iterations": its,
            "teacher": res.summary["teacher"]["test_accuracy"],
        }
        print(label, {k: v for k, v in out[label].items() if k != "iterations"}, flush=True)
    save(
        f"table5-{args.target}{tag}",
        {
            "experiment": "table5",
            "source_run": str(source),
            "reward_mode": args.reward_mode,
            "target": args.target,
            "seed": args.seed,
            "removal_lr": cfg.removal_lr,
            "reinforce_baseline": cfg.reinforce_baseline,
            **out,
        },
        t0,
    )


if __name__ == "__main__":
    main()
