"""How many updates the removal policy needs before it beats random search (surrogate reward).

    python -m benchmarks.paper.removal_learning            # ~3 min on one core, after table1 / random_vs_n2n

Real rewards cost seconds each, so the learning speed of the removal stage is measured on a
cheap surrogate fitted to real ones: every removal-stage student logged by the conv4 runs
under ``runs/paper/`` (its removed layers and its accuracy after KD) fits a log-linear model
of accuracy, log A = a0 + sum_l a_l [layer l removed]; a student's compression C comes from
its exact parameter count (``apply_actions``). The surrogate reward is the paper's
R = C(2 - C) A / A_teacher (-1 for degenerate students) with Gaussian noise of std
``--noise`` on A (default: 0.1, and the fit's residual std, which also holds the interactions
the additive model misses). It has the real action
space, the real policy input and the real rewrite; only the students' training is modelled.

Each learner setting runs ``--seeds`` searches of ``--updates`` updates of m = 5 rollouts
against random search (P(remove) = 1/2, the fresh policy); the table gives, at each
checkpoint, the mean surrogate reward of the last 4 updates and the noise-free reward of the
greedy policy, averaged over seeds.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from n2n_fx import apply_actions
from n2n_fx.features import FEATURE_DIM, policy_input
from n2n_fx.policy import Learner, LearnerConfig, RemovalPolicy, RemovalPolicyConfig

from .common import RUNS, conv4_analysis, parser, save, setup

SETTINGS: dict[str, dict[str, Any] | None] = {
    "random": None,  # no learning: the fresh policy, P(remove) = 1/2 everywhere
    "paper (lr 0.003, ema)": {"lr": 0.003, "baseline": "ema"},
    "lr 0.03, ema": {"lr": 0.03, "baseline": "ema"},
    "lr 0.03, batch": {"lr": 0.03, "baseline": "batch"},
}


class Surrogate:
    """Reward model of conv4 removal students fitted to logged (actions, accuracy) rows."""

    def __init__(self, histories: list[Path], teacher_accuracy: float) -> None:
        self.analysis = conv4_analysis()
        layers = self.analysis.layers
        self.names = [lay.node for lay in layers]
        self.x = policy_input(layers)  # (L, F)
        self.removable = torch.tensor([lay.removable for lay in layers])  # (L,)
        rows = []
        for path in histories:
            for line in path.read_text().splitlines():
                r = json.loads(line)
                if r["stage"] == "removal" and r["degenerate"] is None:
                    rows.append(([n in r["actions"] for n in self.names], r["accuracy"]))
        if len(rows) < 2 * len(self.names):
            raise SystemExit(f"only {len(rows)} logged removal students; run table1 and random_vs_n2n first")
        X = np.c_[np.ones(len(rows)), np.array([a for a, _ in rows], float)]  # (n, 1 + L)
        y = np.array([acc for _, acc in rows])  # (n,)
        self.coef, *_ = np.linalg.lstsq(X, np.log(y), rcond=None)  # (1 + L,)
        fit = np.minimum(0.99, np.exp(X @ self.coef))
        self.rows, self.residual = len(rows), float(np.std(y - fit))
        self.correlation = float(np.corrcoef(fit, y)[0, 1])
        self.teacher_accuracy = teacher_accuracy
        self.teacher_params = sum(p.numel() for p in self.analysis.gm.parameters())
        self._params: dict[tuple[int, ...], int | None] = {}

    def params(self, action: tuple[int, ...]) -> int | None:
        if action not in self._params:
            rw = apply_actions(
                self.analysis, remove=[n for n, a in zip(self.names, action, strict=True) if a], strict=False
            )
            self._params[action] = rw.student_cost.params if rw.valid else None
        return self._params[action]

    def reward(self, actions: torch.Tensor, rng: np.random.Generator | None, noise: float) -> torch.Tensor:
        """Rewards of ``actions  # (m, L)``; noise-free when ``rng`` is None."""
        out = []
        for action in actions.tolist():
            p = self.params(tuple(action))
            if p is None:
                out.append(-1.0)
                continue
            acc = min(0.99, float(np.exp(self.coef[0] + np.dot(self.coef[1:], action))))
            if rng is not None:
                acc = float(np.clip(acc + rng.normal(0.0, noise), 0.0, 1.0))
            c = 1.0 - p / self.teacher_params
            out.append(c * (2.0 - c) * acc / self.teacher_accuracy)
        return torch.tensor(out)  # (m,)


def search(sur: Surrogate, setting: dict[str, Any] | None, seed: int, updates: int, noise: float, checkpoints):
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    policy = RemovalPolicy(RemovalPolicyConfig(feature_dim=FEATURE_DIM))
    learner = Learner(policy, LearnerConfig(seed=seed, rollouts=5, **(setting or {})))
    inputs = {"x": sur.x, "removable": sur.removable}
    means, at = [], {}
    for u in range(1, updates + 1):
        ro = learner.sample(**inputs)
        r = sur.reward(ro.actions, rng, noise)
        means.append(float(r.mean()))
        if setting is not None:
            learner.update(ro, r, **inputs)
        if u in checkpoints:
            greedy = sur.reward(learner.greedy(**inputs).unsqueeze(0), None, noise)
            at[u] = {"last4_mean": float(np.mean(means[-4:])), "greedy": float(greedy[0])}
    return means, at


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--history", type=Path, nargs="+", default=None, help="history.jsonl files of conv4 runs")
    ap.add_argument("--updates", type=int, nargs="+", default=[12, 30, 60, 100], help="checkpoints (updates)")
    ap.add_argument("--seeds", type=int, default=10, help="searches per setting")
    ap.add_argument(
        "--noise",
        type=float,
        nargs="+",
        default=None,
        help="std(s) of the accuracy noise (default: 0.1 and the fit's residual)",
    )
    args = ap.parse_args()
    setup(args)
    t0 = time.perf_counter()
    histories = args.history or sorted(
        p for p in RUNS.glob("*/history.jsonl") if p.parent.name.startswith(("table1-conv4", "random-vs-n2n"))
    )
    summary = json.loads((RUNS / "table1-conv4" / "summary.json").read_text())
    sur = Surrogate(histories, summary["teacher"]["val_accuracy"])
    print(f"surrogate: {sur.rows} students, residual std {sur.residual:.3f}, correlation {sur.correlation:.2f}")
    checkpoints = sorted(set(args.updates))
    noises = args.noise or [0.1, round(sur.residual, 3)]
    results: dict[str, dict[str, Any]] = {}
    for noise in noises:
        results[str(noise)] = by_setting = {}
        for name, setting in SETTINGS.items():
            runs = [search(sur, setting, s, checkpoints[-1], noise, set(checkpoints)) for s in range(args.seeds)]
            by_setting[name] = {
                "setting": setting,
                "mean_reward": np.mean([m for m, _ in runs], axis=0).round(4).tolist(),
                "at": {
                    str(u): {k: float(np.mean([at[u][k] for _, at in runs])) for k in ("last4_mean", "greedy")}
                    for u in checkpoints
                },
            }
            print(noise, name, {u: round(v["last4_mean"], 3) for u, v in by_setting[name]["at"].items()}, flush=True)
    save(
        "removal-learning",
        {
            "experiment": "removal_learning",
            "seeds": list(range(args.seeds)),
            "noise": noises,
            "histories": [str(p.relative_to(RUNS.parent.parent)) for p in histories],
            "surrogate": {"students": sur.rows, "residual_std": sur.residual, "correlation": sur.correlation},
            "checkpoints": checkpoints,
            "results": results,
        },
        t0,
    )


if __name__ == "__main__":
    main()
