"""A fingerprint of what surgery makes: run before and after a refactor, the hashes must match.

Usage: python -m benchmarks.surgery_fingerprint [--seeds 6] [--models resnet18,conv4]

For every model, seeded random legal actions (``random_actions``) at four removal/shrink
probabilities are applied with ``apply_actions``; the hash covers the actions, the
degenerate reason, the diff, the student's cost, the plan's selections, the generated
code and every state_dict tensor (bytes, dtype, shape). Same code and same torch version
-> same hashes; a refactor of the surgery that changes any student changes them.
Issue 16 checked its rewrite and graph/channels splits with it: same TOTAL before and after.
"""

from __future__ import annotations

import argparse
import hashlib
import random

import torch

from n2n_fx.graph.layers import analyze
from n2n_fx.rewrite import apply_actions
from n2n_fx.rewrite.sample import random_actions
from n2n_fx.teacher.trace import trace

MODELS = {
    "resnet18": (3, 64, 64),
    "mobilenet_v3_small": (3, 64, 64),
    "densenet121": (3, 64, 64),
    "vit_b_16": (3, 224, 224),
    "conv4": (3, 32, 32),
    "vgg_tiny": (3, 32, 32),
    "swin_t": (3, 224, 224),
}
PROBABILITIES = ((0.3, 0.5), (0.6, 0.3), (0.1, 0.9), (0.9, 0.5))  # (p_remove, p_shrink)


def fingerprint(name: str, size: tuple[int, int, int], seeds: int) -> tuple[str, int, int]:
    """(hash, valid students, degenerate students) of model ``name``."""
    torch.manual_seed(0)
    analysis = analyze(trace(name, input_size=size))
    h = hashlib.sha256()
    valid = degenerate = 0
    for seed in range(seeds):
        for p_remove, p_shrink in PROBABILITIES:
            rng = random.Random(seed * 100 + int(p_remove * 10))
            remove, shrink = random_actions(analysis, rng, p_remove=p_remove, p_shrink=p_shrink)
            r = apply_actions(analysis, remove, shrink)
            for part in (remove, shrink), r.degenerate, r.diff, r.student_cost:
                h.update(repr(part).encode())
            if r.plan is not None:
                h.update(repr(sorted((k, v.tolist()) for k, v in r.plan.selections.items())).encode())
            degenerate += r.degenerate is not None
            if r.student is None:
                continue
            valid += 1
            h.update(r.student.code.encode())
            for k, v in r.student.state_dict().items():
                h.update(f"{k} {v.dtype} {tuple(v.shape)}".encode())
                h.update(v.detach().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()[:16], valid, degenerate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=6, help="seeds per model and probability pair")
    ap.add_argument("--models", default=",".join(MODELS), help="comma-separated subset of " + ", ".join(MODELS))
    args = ap.parse_args()
    total = hashlib.sha256()
    for name in args.models.split(","):
        digest, valid, degenerate = fingerprint(name, MODELS[name], args.seeds)
        print(f"{name:20s} valid {valid:3d} degenerate {degenerate:3d}  {digest}", flush=True)
        total.update(bytes.fromhex(digest))
    print("TOTAL", total.hexdigest()[:16])


if __name__ == "__main__":
    main()
