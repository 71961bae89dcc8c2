"""Table 3 in kind: hand-designed students (VGG-small, FitNet-style) trained with KD vs the N2N student.

    python -m benchmarks.paper.table3_handmade [--reference runs/paper/table1-conv4]   # ~10 min

Each hand-made architecture is scaled to the N2N student's parameter count and trained from
scratch with CE + λ·KD against the same teacher (paper §4.4.2). They start from scratch, so
they get ``--epochs`` (default 3× the N2N student's final-training epochs).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from n2n_fx.baselines import build_handmade, train_handmade
from n2n_fx.distill import DistillConfig, accuracy

from .common import RUNS, parser, reference_run, save, setup


def main() -> None:
    ap = parser(__doc__)
    ap.add_argument("--reference", type=Path, default=RUNS / "table1-conv4", help="finished N2N run directory")
    ap.add_argument("--epochs", type=int, default=None, help="KD epochs per hand-made student")
    args = ap.parse_args()
    setup(args)
    t0 = time.perf_counter()
    ref, splits = reference_run(args.reference)
    cfg = ref.config
    epochs = args.epochs or 3 * cfg.final_epochs
    rows = []
    for arch in ("vgg_small", "fitnet"):
        torch.manual_seed(cfg.seed)
        model = build_handmade(
            arch, splits.num_classes, splits.in_channels, target_params=ref.params, input_size=splits.input_size
        )
        dcfg = DistillConfig(
            loss="ce+l2",
            lam=cfg.final_lambda,
            lr=cfg.final_lr,
            epochs=epochs,
            batch_size=cfg.batch_size,
            seed=cfg.seed,
        )
        t1 = time.perf_counter()
        res = train_handmade(arch, model, splits, ref.teacher, dcfg)
        rows.append(
            {
                "arch": arch,
                "params": res.params,
                "test_accuracy": res.test_accuracy,
                "val_accuracy": res.val_accuracy,
                "epochs": epochs,
                "train_s": round(time.perf_counter() - t1, 1),
            }
        )
        print(rows[-1], flush=True)
    save(
        "table3-handmade",
        {
            "experiment": "table3",
            "reference_run": str(args.reference),
            "seed": cfg.seed,
            "teacher": {"test_accuracy": accuracy(ref.teacher, splits.test), "params": ref.teacher_params},
            "n2n": {"test_accuracy": ref.test_accuracy, "params": ref.params, "epochs": cfg.final_epochs},
            "handmade": rows,
        },
        t0,
    )


if __name__ == "__main__":
    main()
