"""The GPU check, in one go for a session with a lent CUDA GPU (device time is minutes).

1. the ``gpu``-marked tests (``tests/test_gpu.py``: placement, AMP, CUDA teacher with CPU
   data, one local worker per GPU);
2. students per second in each reward mode (``kd``, ``shared``, ``shared+kd``; ``kd`` also
   with ``--amp``) for conv4 and vgg13_small on MNIST-10k: the same random valid students
   scored by the search's evaluator settings, the supernet's training time reported apart;
3. a short ``n2n-fx compress --device cuda`` run on conv4 / MNIST-10k, timed.

Writes ``benchmarks/results/gpu_check.json`` and prints the rows for docs/benchmarks.md.

    python -m benchmarks.gpu_check                 # everything (about 5 minutes on one GPU)
    python -m benchmarks.gpu_check --students 10 --skip-compress
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import random
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
# MNIST's IDX files: beside the repository (../shared, as on the CPU machines) or inside it (shared/)
DATA_ROOTS = (ROOT.parent / "shared" / "data", ROOT / "shared" / "data")


def _data_root() -> Path:
    for root in DATA_ROOTS:
        if (root / "mnist" / "raw").is_dir():
            return root
    sys.exit(f"MNIST files not found under any of {', '.join(map(str, DATA_ROOTS))} (mnist/raw)")


def gpu_tests() -> dict:
    """Run ``pytest -m gpu``; its summary line and exit code."""
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-m", "gpu", "tests/test_gpu.py", "-q", "-p", "no:cacheprovider"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    lines = [line for line in proc.stdout.splitlines() if line.strip()]
    print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", flush=True)
    return {"returncode": proc.returncode, "summary": lines[-1] if lines else "", "wall_s": time.perf_counter() - t0}


def students_per_second(model: str, data_root: Path, students: int, supernet_steps: int | None) -> list[dict]:
    """One row per reward mode: seconds per student on the GPU, with the settings a search uses."""
    from n2n_fx.distill import DistillConfig, LogitCache, accuracy
    from n2n_fx.reward import RewardCache, RewardEvaluator
    from n2n_fx.search import SearchConfig
    from n2n_fx.search.teacher_setup import prepare
    from n2n_fx.supernet import Supernet, train_supernet
    from n2n_fx.supernet.train import sample_actions
    from n2n_fx.teacher.trace import trace

    epochs = {"conv4": 10, "vgg13_small": 4}[model]
    base = SearchConfig(model=model, dataset="mnist10k", data_root=str(data_root), teacher_epochs=epochs, device="cuda")
    prepared = prepare(base)
    splits = prepared.splits
    teacher = trace(prepared.model, input_size=splits.input_size).eval()
    on_gpu = trace(prepared.model, input_size=splits.input_size).eval().cuda()
    train = splits.train_plain
    t0 = time.perf_counter()
    cache = LogitCache.build(on_gpu, train, device="cuda")
    cache_s = time.perf_counter() - t0
    net = Supernet(teacher)
    rng = random.Random(0)
    archs, seen = [], set()
    while len(archs) < students:  # distinct valid students: no reward-cache hit hides a training
        acts = sample_actions(net, rng, 0.6)
        arch = net.arch(acts)
        key = json.dumps(acts, sort_keys=True)
        if arch.valid and key not in seen:
            seen.add(key)
            archs.append(arch)
    rows = []
    trained_net = None
    for mode, amp in (("kd", False), ("kd", True), ("shared", False), ("shared+kd", False)):
        cfg = base.replace(reward_mode=mode, amp=amp, supernet_steps=supernet_steps)  # None: the default
        supernet_s = 0.0
        if mode != "kd" and trained_net is None:
            t0 = time.perf_counter()
            train_supernet(net, train, cache, cfg.supernet_config(), device="cuda")
            torch.cuda.synchronize()
            supernet_s = time.perf_counter() - t0
            trained_net = net
        val = splits.val
        subset = cfg.resolved_reward_val_subset()
        if subset and subset < len(val):
            val = splits.subset(val=subset).val
        ev = RewardEvaluator(
            train,
            val,
            teacher_accuracy=max(1e-6, accuracy(on_gpu, val, device="cuda")),
            teacher_params=sum(p.numel() for p in teacher.parameters()),
            input_size=splits.input_size,
            config=DistillConfig(
                loss="l2",
                lr=cfg.resolved_reward_lr(),
                steps=cfg.reward_steps,
                batch_size=cfg.batch_size,
                device="cuda",
                amp=amp,
            ),
            logit_cache=cache,
            cache=RewardCache(),
            mode=mode,
            calib_batches=cfg.calib_batches,
            supernet_tag=None if mode == "kd" else "gpu-check",
        )
        made = [(net.extract(a) if mode != "kd" else net.extract(a, teacher_weights=True)) for a in archs]
        ev(made[0])  # warm-up: CUDA context, kernels, allocator (not counted)
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        accs = [ev(s).accuracy for s in made[1:]]
        torch.cuda.synchronize()
        wall = time.perf_counter() - t0
        row = {
            "model": model,
            "mode": mode + (" --amp" if amp else ""),
            "students": len(made) - 1,
            "students_per_s": (len(made) - 1) / wall,
            "s_per_student": wall / (len(made) - 1),
            "reward_steps": cfg.reward_steps if mode != "shared" else 0,
            "supernet_steps": cfg.supernet_steps if mode != "kd" else 0,
            "supernet_s": supernet_s,
            "logit_cache_s": cache_s,
            "mean_accuracy": sum(a for a in accs if a is not None) / max(1, sum(a is not None for a in accs)),
        }
        print(json.dumps(row), flush=True)
        rows.append(row)
    return rows


def short_compress(data_root: Path, run_dir: Path) -> dict:
    """A short ``n2n-fx compress --device cuda`` on conv4 / MNIST-10k."""
    cmd = [
        sys.executable, "-m", "n2n_fx", "compress", "--device", "cuda", "--model", "conv4",
        "--dataset", "mnist10k", "--data-root", str(data_root), "--teacher-epochs", "4",
        "--removal-iterations", "4", "--shrink-iterations", "2", "--final-epochs", "2",
        "--run-dir", str(run_dir), "--quiet",
    ]  # fmt: skip
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    print(proc.stdout[-3000:], proc.stderr[-3000:], sep="\n", flush=True)
    return {"command": " ".join(cmd[1:]), "returncode": proc.returncode, "wall_s": wall}


def main() -> None:
    logging.basicConfig(format="%(message)s")  # n2n_fx's progress lines on stderr
    logging.getLogger("n2n_fx").setLevel(logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--students", type=int, default=21, help="students scored per mode (the first is a warm-up)")
    ap.add_argument("--supernet-steps", type=int, default=None, help="supernet training steps (default: the search's)")
    ap.add_argument("--models", nargs="+", default=["conv4", "vgg13_small"])
    ap.add_argument("--skip-tests", action="store_true")
    ap.add_argument("--skip-compress", action="store_true")
    args = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("no CUDA GPU here: this check needs one (the CPU-side device tests are tests/test_devices.py)")
    data_root = _data_root()
    os.environ.setdefault("N2N_FX_CACHE", str(ROOT / "runs" / "gpu_check" / "cache"))
    out: dict = {
        "gpu": torch.cuda.get_device_name(0),
        "gpus": torch.cuda.device_count(),
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "host": platform.node(),
        "command": "python -m benchmarks.gpu_check " + " ".join(sys.argv[1:]),
    }
    print(f"GPU: {out['gpu']} x{out['gpus']}, torch {out['torch']}, CUDA {out['cuda']}", flush=True)
    if not args.skip_tests:
        out["gpu_tests"] = gpu_tests()
    out["throughput"] = [
        row for m in args.models for row in students_per_second(m, data_root, args.students, args.supernet_steps)
    ]
    if not args.skip_compress:
        out["compress"] = short_compress(data_root, ROOT / "runs" / "gpu_check" / time.strftime("compress-%H%M%S"))
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "gpu_check.json").write_text(json.dumps(out, indent=1))
    print("\n| model | reward mode | students/s | s/student | supernet (s) |\n|---|---|---|---|---|")
    for r in out["throughput"]:
        sn = f"{r['supernet_s']:.0f}" if r["supernet_s"] else "-"
        print(f"| {r['model']} | {r['mode']} | {r['students_per_s']:.2f} | {r['s_per_student']:.3f} | {sn} |")
    print(f"\nwritten: {RESULTS / 'gpu_check.json'}")


if __name__ == "__main__":
    main()
