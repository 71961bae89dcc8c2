"""Table 4 in kind: compression under a parameter-count constraint (paper §3.3.1, §4.5).

    python -m benchmarks.paper.table4_constraint [--teacher conv4] [--max-params 20000]   # ~20 min

The constraint enters the reward with the annealed penalty; the run reports whether the
final student meets it.
"""

from __future__ import annotations

import time

from n2n_fx.search import run_compress

from .common import mnist_config, parser, run_dir, save, search_result, setup
from .table1 import BUDGETS

# a smaller budget than Table 1's (fits beside the other experiments in one session)
CONSTRAINED = {"conv4": dict(BUDGETS["conv4"], removal_iterations=8, shrink_iterations=4, reward_steps=100)}


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--teacher", choices=sorted(BUDGETS), default="conv4")
    ap.add_argument("--max-params", type=float, default=20_000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    setup(args)
    t0 = time.perf_counter()
    name = f"table4-{args.teacher}-{int(args.max_params)}"
    cfg = mnist_config(  # shrink_kernels: the paper's stage-2 space
        args.teacher,
        seed=args.seed,
        max_params=args.max_params,
        shrink_kernels=True,
        **CONSTRAINED.get(args.teacher, BUDGETS[args.teacher]),
    )
    path = run_dir(name, args.fresh)
    res = run_compress(cfg, path, resume=path.joinpath("config.json").is_file())
    s = res.summary
    winner = s.get(s.get("winner") or "stage2") or s["stage1"]
    record = search_result(
        "table4",
        cfg,
        res,
        max_params=args.max_params,
        meets_constraint=winner["params"] <= args.max_params,
        violating_rollouts=sum(1 for r in res.history if r.get("violations")),
    )
    save(name, record, t0)


if __name__ == "__main__":
    main()
