"""N2N against random search: same action space, same rollout budget, same rewards; several seeds.

    python -m benchmarks.paper.random_vs_n2n [--seeds 0 1 2]   # ~30 min on one core (3 teachers, 6 searches)

For each seed: a conv4 teacher (trained on that seed's split), then a removal-stage N2N
search and a random search (each layer removed with probability 1/2, the fresh policy's
rate) with identical budgets. Reports best and mean reward per iteration.
"""

from __future__ import annotations

import time

from n2n_fx.baselines import run_random_search
from n2n_fx.search import run_compress

from .common import mnist_config, parser, per_iteration, run_dir, save, setup
from .table1 import BUDGETS


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=6, help="removal-stage updates per search")
    ap.add_argument("--reward-steps", type=int, default=40, help="KD steps per student")
    ap.add_argument("--removal-lr", type=float, default=None, help="N2N removal-policy lr (default: the paper's 0.003)")
    args = ap.parse_args()
    setup(args)
    t0 = time.perf_counter()
    runs = []
    tag = "" if args.removal_lr is None else f"-lr{args.removal_lr:g}"
    for seed in args.seeds:
        cfg = mnist_config(
            "conv4",
            seed=seed,
            stage="removal",
            removal_iterations=args.iterations,
            final_epochs=1,
            reward_steps=args.reward_steps,
            reward_lr=BUDGETS["conv4"]["reward_lr"],
        )
        for method in ("n2n", "random"):
            path = run_dir(f"random-vs-n2n-{method}{tag if method == 'n2n' else ''}-seed{seed}", args.fresh)
            resume = path.joinpath("config.json").is_file()  # random runs are shared by every --removal-lr
            if method == "n2n":
                res = run_compress(cfg.replace(removal_lr=args.removal_lr), path, resume=resume)
            else:
                res = run_random_search(cfg, path, resume=resume)
            its = per_iteration(res.history)
            best_so_far, best = [], -1.0
            for row in its:
                best = max(best, row["best_reward"])
                best_so_far.append(best)
            runs.append(
                {
                    "method": method,
                    "seed": seed,
                    "run_dir": str(res.run_dir),
                    "mean_reward": [r["mean_reward"] for r in its],
                    "best_reward": [r["best_reward"] for r in its],
                    "best_so_far": best_so_far,
                    "final_mean_reward": its[-1]["mean_reward"],
                }
            )
            print(method, seed, [round(r, 3) for r in runs[-1]["mean_reward"]], flush=True)
    save(
        f"random-vs-n2n{tag}",
        {
            "experiment": "random_vs_n2n",
            "seeds": args.seeds,
            "iterations": args.iterations,
            "removal_lr": args.removal_lr or cfg.removal_lr,
            "runs": runs,
        },
        t0,
    )


if __name__ == "__main__":
    main()
