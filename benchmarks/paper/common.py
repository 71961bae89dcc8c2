"""What every paper experiment shares: the data set, the teachers, the run folders, the result files.

Data: MNIST-10k, the official t10k files in ``../shared/data/mnist/raw/`` carved into
7000 train / 1000 val / 2000 test (the val split is carved from the training part; the
test split is never seen during search). Teachers are trained once per (model, epochs,
seed) and cached like ``n2n-fx compress`` caches them. Every experiment writes one JSON
file to ``benchmarks/paper/results/`` with its numbers, seed, command and wall time;
``python -m benchmarks.paper.report`` turns those files into ``docs/results.md``.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import platform
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch

from n2n_fx.search import SearchConfig

ROOT = Path(__file__).resolve().parents[2]
DATA_ROOT = ROOT.parent / "shared" / "data"
RESULTS = Path(__file__).resolve().parent / "results"
RUNS = ROOT / "runs" / "paper"

# teacher epochs at most (Adam, lr 1e-3, until validation accuracy plateaus): ~98-99 % on MNIST-10k's 7k
# images. vgg13_small had 4 until session 17: its teachers read 96.5-98.3 % test by data order and were still
# rising at the cap (the run's "may be undertrained" warning), a weak bar for the 127x row's accuracy line
TEACHER_EPOCHS = {"conv4": 10, "vgg_tiny": 8, "vgg13_small": 10}


def parser(doc: str) -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(description=doc.strip().splitlines()[0])
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1: two experiments can share 2 cores)")
    ap.add_argument("--fresh", action="store_true", help="delete this experiment's earlier run folders first")
    return ap


def setup(args: argparse.Namespace) -> None:
    if not (DATA_ROOT / "mnist" / "raw").is_dir():
        sys.exit(f"MNIST files not found under {DATA_ROOT}/mnist/raw; the experiments need ../shared beside the repo")
    torch.set_num_threads(args.threads)
    logging.basicConfig(format="%(message)s")  # n2n_fx's progress lines on stderr
    logging.getLogger("n2n_fx").setLevel(logging.INFO)
    os.environ.setdefault("N2N_FX_CACHE", str(RUNS / "cache"))  # teachers shared by all experiments
    RUNS.mkdir(parents=True, exist_ok=True)
    RESULTS.mkdir(parents=True, exist_ok=True)


def mnist_config(model: str, **changes: Any) -> SearchConfig:
    """The search settings every experiment starts from (paper values where the CPU allows)."""
    base = dict(
        model=model,
        dataset="mnist10k",
        data_root=str(DATA_ROOT),
        teacher_epochs=TEACHER_EPOCHS[model],
        rollouts=5,  # m = 5 (paper)
        reward_steps=60,  # KD steps of batch 64 per student (paper: 5 epochs of 60k images)
        final_epochs=8,
        final_students="both",  # the paper's tables report the stage-1 and the stage-1+2 student
        device="cpu",
        seed=0,
    )
    base.update(changes)
    return SearchConfig(**base)


@functools.cache
def conv4_analysis() -> Any:
    """The layer analysis of the MNIST conv4 teacher's graph (policy inputs, rewrites); traced once."""
    from n2n_fx import trace
    from n2n_fx.graph.layers import analyze

    return analyze(trace("conv4", input_size=(1, 28, 28), num_classes=10))


def run_dir(name: str, fresh: bool) -> Path:
    path = RUNS / name
    if fresh and path.exists():
        shutil.rmtree(path)
    return path


def save(name: str, result: dict[str, Any], t0: float) -> Path:
    """Write ``results/<name>.json`` with the command, seed(s), machine and wall time."""
    result = dict(result)
    result["command"] = "python -m benchmarks.paper." + " ".join([Path(sys.argv[0]).stem, *sys.argv[1:]])
    result["wall_s"] = round(time.perf_counter() - t0, 1)
    result["machine"] = f"{os.cpu_count()}-core CPU ({platform.machine()}), torch {torch.__version__}, " + (
        f"{torch.get_num_threads()} torch thread(s)"
    )
    result["finished"] = time.strftime("%Y-%m-%d %H:%M")
    path = RESULTS / f"{name}.json"
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    os.replace(tmp, path)
    print(f"wrote {path}", file=sys.stderr)
    return path


def student_row(summary: dict[str, Any], key: str) -> dict[str, Any] | None:
    s = summary.get(key)
    if not s:
        return None
    t = summary["teacher"]
    return {
        "test_accuracy": s["test_accuracy"],
        "params": s["params"],
        "delta_accuracy": s["test_accuracy"] - t["test_accuracy"],
        "compression": t["params"] / s["params"],
    }


def search_result(experiment: str, cfg: SearchConfig, res: Any, **extra: Any) -> dict[str, Any]:
    """The result record of a finished search (Tables 1 and 4): teacher, stage rows, curves."""
    s = res.summary
    return {
        "experiment": experiment,
        "teacher_model": cfg.model,
        "seed": cfg.seed,
        "config": cfg.to_dict(),
        "run_dir": str(res.run_dir),
        "teacher": {"test_accuracy": s["teacher"]["test_accuracy"], "params": s["teacher"]["params"]},
        "stage1": student_row(s, "stage1"),
        "stage2": student_row(s, "stage2"),
        "winner": s.get("winner"),
        "rollouts": len(res.history),
        "iterations": per_iteration(res.history),
        **extra,
    }


def reference_run(path: Path) -> tuple[Any, Any]:
    """(the finished N2N run a baseline is compared with, its data splits)."""
    from n2n_fx.baselines import load_reference
    from n2n_fx.search.teacher_setup import load_data

    ref = load_reference(path)
    return ref, load_data(ref.config)


def per_iteration(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean/best reward, mean compression and accuracy of each policy update (stage, iteration)."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in history:
        groups.setdefault((row["stage"], row["iteration"]), []).append(row)
    out = []
    for (stage, it), rows in groups.items():
        rewards = [r["reward"] for r in rows]
        valid = [r for r in rows if not r.get("degenerate")]
        out.append(
            {
                "stage": stage,
                "iteration": it,
                "mean_reward": sum(rewards) / len(rewards),
                "best_reward": max(rewards),
                "mean_compression": (sum(r["compression"] for r in valid) / len(valid)) if valid else None,
                "mean_accuracy": (sum(r["accuracy"] for r in valid) / len(valid)) if valid else None,
                "degenerate": len(rows) - len(valid),
            }
        )
    return out
