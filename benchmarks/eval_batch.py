"""Evaluation throughput against batch size on the CPU: milliseconds per image of each model in
eval mode at batches of 32, 64, 128 and 256 (random inputs; the best of 3 alternated rounds).

``n2n_fx.distill.evaluate.EVAL_BATCH`` (the evaluation batch of every accuracy read, and so the
whole cost of a shared-weight reward) is chosen from this.

    python -m benchmarks.eval_batch --threads 1
"""

from __future__ import annotations

import argparse
import json
import time

import torch

from n2n_fx.teacher.zoo import build_model

CASES = [  # (model, input size, images per round)
    ("conv4", (1, 28, 28), 640),
    ("vgg13_small", (1, 28, 28), 256),
    ("vgg_tiny", (3, 32, 32), 640),
    ("resnet18", (3, 32, 32), 256),
    ("mobilenet_v2", (3, 32, 32), 256),
]
BATCHES = (32, 64, 128, 256)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    results = {}
    for name, size, n in CASES:
        model = build_model(name, num_classes=10, in_channels=size[0]).eval()
        x = torch.randn(n, *size)
        ms: dict[int, list[float]] = {bs: [] for bs in BATCHES}
        with torch.inference_mode():
            model(x[:64])  # warm-up
            for _ in range(args.rounds):  # alternated, so load on the machine hits every batch size alike
                for bs in BATCHES:
                    t0 = time.perf_counter()
                    for i in range(0, n, bs):
                        model(x[i : i + bs])
                    ms[bs].append((time.perf_counter() - t0) / n * 1000)
        results[name] = {bs: round(min(v), 3) for bs, v in ms.items()}
        print(f"{name:14s} ms/image " + "  ".join(f"{bs}: {t:.3f}" for bs, t in results[name].items()), flush=True)
    print(json.dumps({"threads": args.threads, "ms_per_image": results}))


if __name__ == "__main__":
    main()
