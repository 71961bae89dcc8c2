"""A parameter budget (paper §3.3.1, Table 4): students over 20K parameters are penalised.

    python examples/constraints.py [--max-params 20000]

The penalty anneals: early violations cost little (exploration), later ones cost the full -1.
"""

import argparse

from n2n_fx.search import SearchConfig, run_compress

ap = argparse.ArgumentParser()
ap.add_argument("--max-params", type=float, default=20_000)
ap.add_argument("--run-dir", default="runs/constrained")
args = ap.parse_args()

cfg = SearchConfig(max_params=args.max_params, penalty="anneal", removal_iterations=8, shrink_iterations=6)
result = run_compress(cfg, args.run_dir)
print(result.tables["summary"])
final = result.summary.get(result.summary["winner"], {})
print(
    f"student params {final.get('params')} (limit {args.max_params:g}): {'met' if final.get('params', 1e18) <= args.max_params else 'NOT met'}"
)
