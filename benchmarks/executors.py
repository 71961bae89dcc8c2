"""Rollout evaluation speed-up: the ``local`` executor with N workers against ``sequential``.

Run from the repository root::

    /work/venv/bin/python -m benchmarks.executors    # prints a table, updates docs/benchmarks.md
    /work/venv/bin/python -m benchmarks.executors --no-write --steps 10

One search iteration scores m = 4 students of ``vgg_tiny`` (each with other layers removed, so
no cache hits) on the synthetic data set, each trained for ``--steps`` KD steps. Sequential
evaluation is timed at the default torch thread count and at 1 thread; each of the N workers uses
cores // N threads. The first local iteration includes starting the worker processes (cold);
later ones reuse them (warm), as every iteration of a search after the first does.
"""

from __future__ import annotations

import argparse
import os
import platform
import re
import time
from pathlib import Path

import torch
from tabulate import tabulate

from n2n_fx import apply_actions, find_layers, trace
from n2n_fx.data import load_splits
from n2n_fx.distill import DistillConfig, LogitCache
from n2n_fx.reward import RewardCache, RewardEvaluator, count_params
from n2n_fx.search import SearchConfig
from n2n_fx.search.executors import Job, LocalExecutor, SequentialExecutor

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START, END = "<!-- executors-benchmark:start -->", "<!-- executors-benchmark:end -->"
COMMAND = "/work/venv/bin/python -m benchmarks.executors"
HEADERS = ["executor", "workers", "threads/worker", "iteration", "wall (s)", "speed-up"]


def setup(samples: int, steps: int):
    """(teacher, layer names, evaluator factory) for vgg_tiny on synthetic data."""
    splits = load_splits("synthetic", num_samples=samples, seed=0)
    torch.manual_seed(0)
    teacher = trace("vgg_tiny", input_size=splits.input_size).eval()
    cache = LogitCache.build(teacher, splits.train_plain)
    layers = [lay.node for lay in find_layers(teacher) if lay.removable]

    def evaluator() -> RewardEvaluator:
        return RewardEvaluator(
            splits.train_plain,
            splits.val,
            teacher_accuracy=0.5,
            teacher_params=count_params(teacher),
            input_size=splits.input_size,
            config=DistillConfig(loss="l2", steps=steps, batch_size=64, seed=0),
            logit_cache=cache,
            cache=RewardCache(),
        )

    return teacher, layers, evaluator


def batch(teacher, layers: list[str], iteration: int, m: int) -> list[Job]:
    """m students with distinct architectures (one removed layer each)."""
    jobs = []
    for k in range(m):
        r = apply_actions(teacher, remove=[layers[iteration * m + k]], strict=False)
        jobs.append(Job(r.student if r.valid else r.degenerate, iteration, 1000 * iteration + k))
    return jobs


def timed(executor, evaluator, jobs: list[Job]) -> float:
    t0 = time.perf_counter()
    records = executor.evaluate(evaluator, jobs)
    elapsed = time.perf_counter() - t0
    bad = [r.degenerate for r in records if r.is_degenerate]
    if bad:
        raise SystemExit(f"benchmark students should train; got degenerate: {bad}")
    return elapsed


def run(m: int, steps: int, workers: int, iterations: int, samples: int) -> tuple[list[list], str]:
    """The table rows and a one-line reading of them."""
    teacher, layers, make_evaluator = setup(samples, steps)
    cores = os.cpu_count() or 1
    rows = []
    default = torch.get_num_threads()
    medians = {}
    for threads in sorted({default, 1}, reverse=True):
        torch.set_num_threads(threads)
        ev = make_evaluator()
        seq = []
        for it in range(iterations):
            seq.append(timed(SequentialExecutor(), ev, batch(teacher, layers, it, m)))
            rows.append(["sequential", 1, threads, it + 1, f"{seq[-1]:.1f}", ""])
        medians[threads] = sorted(seq)[len(seq) // 2]
    torch.set_num_threads(default)
    for row in rows:
        row[5] = f"{medians[default] / float(row[4]):.2f}x"
    ex = LocalExecutor(SearchConfig(executor="local", workers=workers))
    warm = []
    try:
        ev = make_evaluator()
        for it in range(iterations):
            t = timed(ex, ev, batch(teacher, layers, it, m))
            warm += [t] if it else []
            label = f"{it + 1} (cold: starts workers)" if it == 0 else str(it + 1)
            per = max(1, cores // workers)
            rows.append(["local", workers, per, label, f"{t:.1f}", f"{medians[default] / t:.2f}x"])
    finally:
        ex.close()
    if not warm:
        return rows, ""
    mean = sum(warm) / len(warm)
    reading = (
        f"Warm local iterations (mean {mean:.1f} s) against sequential at the default "
        f"{default} threads (median {medians[default]:.1f} s): {medians[default] / mean:.2f}x; "
        f"against sequential at 1 thread (median {medians[1]:.1f} s): {medians[1] / mean:.2f}x."
    )
    return rows, reading


def write_doc(rows: list[list], reading: str, args: argparse.Namespace, load: tuple[float, float]) -> None:
    table = tabulate(rows, headers=HEADERS, tablefmt="github")
    cpu = platform.processor() or platform.machine()
    busy = (
        f" The machine was busy (load average {load[0]:.1f} before, {load[1]:.1f} after, on "
        f"{os.cpu_count()} cores): other jobs shared the cores, so the figures are noisy and "
        "a second worker may find no idle core; measure again on an idle machine for the "
        "speed-up parallelism alone gives."
        if max(load) > (os.cpu_count() or 1) * 0.75
        else ""
    )
    section = "\n".join(
        [
            START,
            f"## Parallel rollout evaluation (one iteration of m = {args.rollouts} rollouts)",
            "",
            f"Command: `{COMMAND}` (repository root). vgg_tiny on synthetic data "
            f"({args.samples} samples, 1x28x28), {args.steps} KD steps of batch 64 per student, "
            f"{args.iterations} iterations with new architectures each (no cache hits).",
            f"Machine: {os.cpu_count()}-core CPU ({cpu}), torch {torch.__version__}.{busy}",
            "",
            table,
            "",
            reading,
            "",
            "Speed-up: median sequential iteration at the default thread count / this "
            "iteration. The first local iteration "
            "includes starting the workers (forkserver: torch imported once) and sending them "
            "the data and logit cache; a search pays that once. On a loaded machine a process "
            "with several OpenMP threads loses much more than one with one thread (its threads "
            "wait for each other), so compare the local rows with both sequential rows.",
            END,
        ]
    )
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    if pattern.search(text):
        text = pattern.sub(lambda _: section, text)
    else:
        text = text.rstrip() + "\n\n" + section + "\n"
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rollouts", type=int, default=4, help="m: students per iteration")
    ap.add_argument("--steps", type=int, default=40, help="KD steps per student")
    ap.add_argument("--workers", type=int, default=2, help="local worker processes")
    ap.add_argument("--iterations", type=int, default=3, help="iterations timed per executor")
    ap.add_argument("--samples", type=int, default=2400, help="synthetic data set size")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args()
    load0 = os.getloadavg()[0]
    rows, reading = run(args.rollouts, args.steps, args.workers, args.iterations, args.samples)
    load1 = os.getloadavg()[0]
    print(tabulate(rows, headers=HEADERS))
    print(reading)
    print(f"load average: {load0:.1f} before, {load1:.1f} after ({os.cpu_count()} cores)")
    if not args.no_write:
        write_doc(rows, reading, args, (load0, load1))
        print(f"wrote section to {DOC}")


if __name__ == "__main__":
    main()
