"""Table 2 in kind: greedy Taylor filter pruning (Molchanov et al. 2016) vs the N2N student.

    python -m benchmarks.paper.table2_pruning [--reference runs/paper/table1-conv4]   # ~10 min

Prunes the N2N run's own teacher, a share of its channels per step, fine-tuning with CE + KD
after each step, and stops by the paper's rule (§4.4.1): accuracy more than 1 % below the
N2N student's validation accuracy, or fewer parameters than the N2N student. The kept
pruned model then gets the same final training as the N2N student (CE + λ·KD, same epochs)
before its test accuracy is measured.
"""

from __future__ import annotations

import time
from pathlib import Path

from n2n_fx import trace
from n2n_fx.baselines import PruneConfig, Reference, prune
from n2n_fx.distill import DistillConfig, accuracy, distill

from .common import RUNS, parser, reference_run, save, setup


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--reference", type=Path, default=RUNS / "table1-conv4", help="finished N2N run directory")
    ap.add_argument("--step-fraction", type=float, default=0.05, help="share of channels pruned per step")
    ap.add_argument("--finetune-steps", type=int, default=60, help="fine-tuning steps after each pruning step")
    args = ap.parse_args()
    setup(args)
    t0 = time.perf_counter()
    ref, splits = reference_run(args.reference)
    cfg = ref.config
    gm = trace(ref.teacher, input_size=splits.input_size).eval()
    pcfg = PruneConfig(
        step_fraction=args.step_fraction, finetune_steps=args.finetune_steps, kd_lambda=1.0, seed=cfg.seed
    )
    res = prune(gm, splits, pcfg, Reference(ref.accuracy, params=ref.params))
    student = res.student
    final = DistillConfig(
        loss="ce+l2",
        lam=cfg.final_lambda,
        lr=cfg.final_lr,
        epochs=cfg.final_epochs,
        batch_size=cfg.batch_size,
        seed=cfg.seed,
    )
    distill(student, splits.train, final, teacher=gm, val_data=splits.val)
    student.eval()
    test = accuracy(student, splits.test)
    teacher_test = accuracy(gm, splits.test)
    save(
        "table2-pruning",
        {
            "experiment": "table2",
            "reference_run": str(args.reference),
            "seed": cfg.seed,
            "prune_config": {
                k: getattr(pcfg, k) for k in ("step_fraction", "finetune_steps", "kd_lambda", "finetune_lr")
            },
            "final_training": {"epochs": cfg.final_epochs, "lambda": cfg.final_lambda, "lr": cfg.final_lr},
            "teacher": {"test_accuracy": teacher_test, "params": res.teacher_params},
            "n2n": {
                "test_accuracy": ref.test_accuracy,
                "val_accuracy": ref.accuracy,
                "params": ref.params,
                "compression": res.teacher_params / ref.params,
            },
            "pruning": {
                "test_accuracy": test,
                "val_accuracy_before_final": res.accuracy,
                "params": res.params,
                "compression": res.compression,
                "steps": res.step,
                "stop": res.stop,
            },
            "log": [{"step": s.step, "params": s.params, "accuracy": s.accuracy, "stop": s.stop} for s in res.log],
        },
        t0,
    )


if __name__ == "__main__":
    main()
