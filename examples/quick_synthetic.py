"""Quick start: a complete N2N compression on the built-in synthetic data set (a few minutes on CPU).

python examples/quick_synthetic.py [--run-dir runs/quick]
"""

import argparse

from n2n_fx.search import SearchConfig, run_compress

ap = argparse.ArgumentParser()
ap.add_argument("--run-dir", default="runs/quick")
args = ap.parse_args()

cfg = SearchConfig()  # vgg_tiny teacher on synthetic data, 6 + 4 policy updates of 5 rollouts
result = run_compress(cfg, args.run_dir)
print(result.tables["summary"])
print(result.diff.table())
