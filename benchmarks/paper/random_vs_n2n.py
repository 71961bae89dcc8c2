"""N2N against random search: same action space, same rollout budget, same rewards; several seeds.

    python -m benchmarks.paper.random_vs_n2n [--seeds 0 1 2]   # ~30 min on one core (3 teachers, 6 searches)
    python -m benchmarks.paper.random_vs_n2n --seeds 0 --iterations 60 --removal-lr 0.03 --baseline batch
    python -m benchmarks.paper.random_vs_n2n --reward-mode shared --iterations 100 --removal-lr 0.03

For each seed: a conv4 teacher (trained on that seed's split), then a removal-stage N2N
search and a random search (each layer removed with probability 1/2, the fresh policy's
rate) with identical budgets. Reports best and mean reward per iteration.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from n2n_fx.baselines import run_random_search
from n2n_fx.features import policy_input, removal_mask
from n2n_fx.policy import BASELINES, load_policy
from n2n_fx.reward import REWARD_MODES
from n2n_fx.search import run_compress

from .common import conv4_analysis, mnist_config, parser, per_iteration, run_dir, save, setup
from .table1 import BUDGETS


def search_seconds(run: Path) -> float:
    """The run's search time from timing.json (0 when it was not recorded)."""
    path = Path(run) / "timing.json"
    return float(json.loads(path.read_text()).get("search_s", 0.0)) if path.is_file() else 0.0


def p_remove(run: Path) -> dict[str, float]:
    """P(remove) per conv4 layer the run's final removal policy decides."""
    layers = conv4_analysis().layers
    policy = load_policy(Path(run) / "policies" / "removal.pt")
    passive = bool(json.loads((Path(run) / "config.json").read_text()).get("remove_passive", False))
    mask = removal_mask(layers, passive=passive)
    p = policy(policy_input(layers), mask).detach()  # (L,)
    return {lay.node: round(float(q), 3) for lay, q, m in zip(layers, p, mask, strict=True) if m}


def _tail_mean(values: list[float], share: float) -> float:
    """Mean of the last ``share`` of ``values`` (at least one)."""
    k = max(1, round(len(values) * share))
    return sum(values[-k:]) / k


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--iterations", type=int, default=6, help="removal-stage updates per search")
    ap.add_argument("--reward-steps", type=int, default=40, help="KD steps per student")
    ap.add_argument("--removal-lr", type=float, default=None, help="N2N removal-policy lr (default: the paper's 0.003)")
    ap.add_argument("--baseline", choices=BASELINES, default=None, help="REINFORCE baseline (default: the paper's ema)")
    ap.add_argument("--reward-mode", choices=REWARD_MODES, default="kd", help="how students are scored")
    ap.add_argument("--supernet-steps", type=int, default=None, help="supernet training steps (shared modes)")
    ap.add_argument(
        "--methods",
        nargs="+",
        choices=("n2n", "random"),
        default=["n2n", "random"],
        help="searches to run now (two processes can share the cores); results are written when both ran",
    )
    args = ap.parse_args()
    setup(args)
    t0 = time.perf_counter()
    runs = []
    tag = "" if args.removal_lr is None else f"-lr{args.removal_lr:g}"
    tag += "" if args.baseline is None else f"-{args.baseline}"
    mode = "" if args.reward_mode == "kd" else f"-{args.reward_mode.replace('+', '')}"  # both methods' runs
    budget = "" if args.iterations == 6 else f"-it{args.iterations}"  # runs of one length share random runs
    for seed in args.seeds:
        cfg = mnist_config(
            "conv4",
            seed=seed,
            stage="removal",
            removal_iterations=args.iterations,
            final_epochs=1,
            reward_steps=args.reward_steps,
            reward_lr=BUDGETS["conv4"]["reward_lr"],
            reward_mode=args.reward_mode,
        ).replace(supernet_steps=args.supernet_steps)
        for method in args.methods:
            path = run_dir(
                f"random-vs-n2n-{method}{tag if method == 'n2n' else ''}{mode}{budget}-seed{seed}", args.fresh
            )
            resume = path.joinpath("config.json").is_file()  # random runs are shared by every --removal-lr
            if method == "n2n":
                res = run_compress(
                    cfg.replace(removal_lr=args.removal_lr, reinforce_baseline=args.baseline), path, resume=resume
                )
            else:  # the same teacher as the N2N search of this seed (teachers are re-trained when recipes change)
                n2n_teacher = Path(runs[-1]["run_dir"]) / "teacher.pt" if runs and runs[-1]["seed"] == seed else None
                rcfg = cfg.replace(teacher_checkpoint=str(n2n_teacher)) if n2n_teacher else cfg
                res = run_random_search(rcfg, path, resume=resume)
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
                    "last20_mean_reward": _tail_mean([r["mean_reward"] for r in its], 0.2),
                    "p_remove": p_remove(res.run_dir) if method == "n2n" else None,
                    "students_s": round(sum(row["wall_s"] for row in res.history), 1),  # KD + scoring time
                    "search_s": round(search_seconds(res.run_dir), 1),  # the whole search, all sessions
                }
            )
            print(method, seed, [round(r, 3) for r in runs[-1]["mean_reward"]], flush=True)
    if len(args.methods) < 2:
        print("one method only: run again without --methods (finished runs are reused) to write results")
        return
    save(
        f"random-vs-n2n{tag}{mode}{budget}",
        {
            "experiment": "random_vs_n2n",
            "seeds": args.seeds,
            "iterations": args.iterations,
            "removal_lr": args.removal_lr or cfg.removal_lr,
            "reinforce_baseline": args.baseline or cfg.reinforce_baseline,
            "reward_mode": args.reward_mode,
            "runs": runs,
        },
        t0,
    )


if __name__ == "__main__":
    main()
