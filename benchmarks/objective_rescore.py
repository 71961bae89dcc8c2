"""Re-score a finished run's students under each objective, and train one objective's pick to the end.

The reward cache holds accuracies and measurements, not rewards, so a run's students can be
re-scored under another objective without training anything: this prints, for every objective
the run recorded the quantity of, the student its reward ranks first. With ``--final OBJ`` that
student (shared reward modes: its supernet weights, batch norms recalibrated as the search did)
gets the run's own final training (``final_distill_config``) and its test accuracy is printed.
This is not a search under that objective (whose policy would sample other students); it
answers "which of the students this search saw would the objective have shipped?".

    python -m benchmarks.objective_rescore runs/objective/conv4-params-main --final flops
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from n2n_fx.distill import accuracy, distill
from n2n_fx.distill.calibrate import recalibrate_bn
from n2n_fx.report.pareto import student_points
from n2n_fx.reward import OBJECTIVES, Objective, n2n_reward
from n2n_fx.rundir import RunDir, safe_torch_load
from n2n_fx.search import SearchConfig
from n2n_fx.search.api import load_teacher_file
from n2n_fx.search.search import final_distill_config
from n2n_fx.search.teacher_setup import load_data
from n2n_fx.supernet import Supernet
from n2n_fx.teacher.trace import trace


def _teacher_reward_accuracy(teacher: dict, history: list[dict]) -> float:
    """The teacher accuracy rewards were normalised by (recorded by newer runs; else solved from a reward)."""
    if teacher.get("reward_accuracy"):
        return float(teacher["reward_accuracy"])
    for r in history:
        c = r.get("objective_compression", r.get("compression"))
        if not r.get("degenerate") and r.get("raw_reward", 0) > 0.05 and c is not None:
            return c * (2 - c) * r["accuracy"] / r["raw_reward"]
    raise SystemExit("no positive reward in the history to recover the teacher's reward accuracy from")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", help="a finished run directory")
    ap.add_argument("--final", choices=tuple(OBJECTIVES), help="train this objective's pick with the final training")
    ap.add_argument("--out", help="write the figures as JSON here")
    args = ap.parse_args()
    run = RunDir.open(args.run)
    cfg = SearchConfig.from_dict(run.config())
    ck = safe_torch_load(run.file("checkpoint.pt"))
    teacher, history = dict(ck["teacher"]), run.history()
    a_t = _teacher_reward_accuracy(teacher, history)
    points = student_points(history)
    picks = {}
    for name, q in OBJECTIVES.items():
        if teacher.get(q) is None:
            continue
        obj = Objective.of(name, teacher)
        best = max(
            (p for p in points if p.get(q) is not None),
            key=lambda p: n2n_reward(p["accuracy"], a_t, obj.compression(p)),
        )
        reward = n2n_reward(best["accuracy"], a_t, obj.compression(best))
        picks[name] = {**best, "reward": reward, "ratio": {k: best[k] / teacher[k] for k in ("params", "flops")}}
        print(
            f"{name:8s} pick: {best['stage']} {best['iteration']}/{best['rollout']}: reward acc {best['accuracy']:.4f}, "
            f"{best['params']:,} params ({best['params'] / teacher['params']:.3f}x), {best['flops']:,} FLOPs "
            f"({best['flops'] / teacher['flops']:.3f}x), reward {reward:.3f}"
        )
    out = {"run": str(run.path), "teacher": teacher, "teacher_reward_accuracy": a_t, "students": len(points)}
    out["picks"] = picks
    if args.final:
        pick = picks[args.final]
        row = next(
            r
            for r in history
            if r["stage"] == pick["stage"] and r["iteration"] == pick["iteration"] and r["rollout"] == pick["rollout"]
        )
        if row["stage"] == "removal":
            actions = {"remove": list(row["actions"])}
        else:
            actions = {"remove": list(ck["best"]["removal"]["actions"]["remove"]), "shrink": row["actions"]}
        if cfg.reward_mode == "kd":
            raise SystemExit(
                "--final needs a run with a shared reward mode (its supernet.pt holds the students' weights)"
            )
        model, _ = load_teacher_file(run, allow_pickle=False)
        splits = load_data(cfg)
        gm = trace(model, input_size=splits.input_size).eval()
        net = Supernet(gm, max_linear_growth=cfg.max_linear_growth)
        # stage 2's own shared weights when the run trained them (supernet_shrink.pt), else stage 1's
        name = (
            "supernet_shrink.pt"
            if row["stage"] == "shrink" and run.file("supernet_shrink.pt").is_file()
            else "supernet.pt"
        )
        net.load_flat(safe_torch_load(run.file(name))["flat"])
        student = net.extract(net.arch(actions))
        torch.manual_seed(cfg.seed)
        recalibrate_bn(student, splits.train_plain, batches=cfg.calib_batches, batch_size=cfg.batch_size, seed=cfg.seed)
        t0 = time.perf_counter()
        res = distill(student, splits.train, final_distill_config(cfg, "cpu"), teacher=gm, val_data=splits.val)
        test = accuracy(student.eval(), splits.test)
        print(
            f"{args.final} pick after final training ({res.epochs} epochs, kept {res.best_epoch}, "
            f"{time.perf_counter() - t0:.0f} s): test accuracy {test:.4f} vs the teacher's "
            f"{teacher['test_accuracy']:.4f} ({100 * (test - teacher['test_accuracy']):+.2f} points)"
        )
        out["final"] = {"objective": args.final, "test_accuracy": test, "best_epoch": res.best_epoch}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=1, default=str)


if __name__ == "__main__":
    main()
