"""MNIST (real data: the official t10k files, carved into 7000/1000/2000) with a VGG-13-style teacher.

    python examples/mnist_vgg.py --data-root ../shared/data [--run-dir runs/mnist-vgg]

The teacher is trained first (`cpu` preset) unless --teacher-checkpoint is given; then the
two-stage search runs with the paper's policy settings at a CPU-sized budget.
"""

import argparse
from pathlib import Path

from n2n_fx.data import load_splits
from n2n_fx.search import SearchConfig, run_compress
from n2n_fx.teacher.train import save_teacher, train_teacher
from n2n_fx.teacher.zoo import build_model

ap = argparse.ArgumentParser()
ap.add_argument("--data-root", default="../shared/data")
ap.add_argument("--run-dir", default="runs/mnist-vgg")
ap.add_argument("--teacher-checkpoint", default=None)
ap.add_argument("--model", default="vgg13_small")
args = ap.parse_args()

ckpt = args.teacher_checkpoint
if ckpt is None:
    splits = load_splits("mnist10k", args.data_root)
    model = build_model(args.model, num_classes=10, in_channels=1)
    model, metrics = train_teacher(model, splits, "cpu", epochs=3, log=print)
    ckpt = str(Path(args.run_dir).with_suffix(".teacher.pt"))
    save_teacher(
        ckpt,
        model,
        model_name=args.model,
        num_classes=10,
        in_channels=1,
        input_size=splits.input_size,
        metrics=metrics,
        dataset="mnist10k",
    )

cfg = SearchConfig(
    model=args.model,
    dataset="mnist10k",
    data_root=args.data_root,
    dataset_options={},
    teacher_checkpoint=ckpt,
    removal_iterations=20,
    shrink_iterations=10,
    reward_steps=60,
    final_epochs=5,
)
result = run_compress(cfg, args.run_dir)
print(result.tables["summary"])
