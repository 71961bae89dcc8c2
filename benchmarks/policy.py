"""Policy step cost: sampling m = 5 rollouts + one learner update, on resnet152's layer sequence.

Run from the repository root::

    /work/venv/bin/python -m benchmarks.policy            # prints a table, updates docs/benchmarks.md
    /work/venv/bin/python -m benchmarks.policy --no-write --repeats 5

Both the removal policy (BiLSTM over all L layers) and the shrink policy (autoregressive
LSTM over the T configurable variables of those layers) are timed at 1 and 2 intra-op threads.
If the features API is missing, a synthetic input of resnet152's length is used (and said).
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

from n2n_fx.policy import Learner, LearnerConfig, RemovalPolicy, ShrinkPolicy

DOC = Path(__file__).resolve().parents[1] / "docs" / "benchmarks.md"
START, END = "<!-- policy-benchmark:start -->", "<!-- policy-benchmark:end -->"
COMMAND = "/work/venv/bin/python -m benchmarks.policy"


def teacher_inputs(name: str) -> tuple[dict, dict, str]:
    """Removal and shrink policy inputs for a zoo teacher (or synthetic stand-ins)."""
    try:
        from n2n_fx.features import policy_input, shrink_input, shrink_steps
        from n2n_fx.graph.layers import find_layers
        from n2n_fx.teacher.trace import trace
    except ImportError as err:
        L, T, F = 464, 156, 22  # resnet152 at 3x32x32: layers, shrink steps, feature width
        x = torch.rand(L, F)
        removal = {"x": x, "removable": torch.ones(L, dtype=torch.bool)}
        shrink = {
            "x": x[:T],
            "variable": torch.arange(T) % 2,
            "legal": torch.ones(T, 10, dtype=torch.bool),
        }
        return removal, shrink, f"synthetic (features API unavailable: {err})"
    layers = find_layers(trace(name, input_size=(3, 32, 32)))
    removal = {
        "x": policy_input(layers),
        "removable": torch.tensor([lay.removable for lay in layers]),
    }
    xs, variable, legal = shrink_input(layers, shrink_steps(layers))
    return removal, {"x": xs, "variable": variable, "legal": legal}, f"{name} traced at 3x32x32"


def time_step(learner: Learner, inputs: dict, repeats: int) -> tuple[float, float]:
    """Median milliseconds of (sample m rollouts, one update on them)."""
    samples, updates = [], []
    for i in range(repeats + 2):  # two warm-up rounds
        t0 = time.perf_counter()
        ro = learner.sample(**inputs)
        t1 = time.perf_counter()
        learner.update(ro, torch.rand(ro.m), **inputs)
        t2 = time.perf_counter()
        if i >= 2:
            samples.append(t1 - t0)
            updates.append(t2 - t1)
    med = lambda v: sorted(v)[len(v) // 2] * 1e3  # noqa: E731
    return med(samples), med(updates)


def run(teacher: str, repeats: int, threads: list[int]) -> tuple[list[list], str]:
    removal_in, shrink_in, source = teacher_inputs(teacher)
    f = removal_in["x"].shape[1]
    rows = []
    before = torch.get_num_threads()
    try:
        for n in threads:
            torch.set_num_threads(n)
            for kind, make, inputs, lr in (
                ("removal (BiLSTM 2x30)", lambda: RemovalPolicy(feature_dim=f), removal_in, 0.003),
                ("shrink (LSTM 2x50)", lambda: ShrinkPolicy(feature_dim=f), shrink_in, 0.01),
            ):
                torch.manual_seed(0)
                learner = Learner(make(), LearnerConfig(lr=lr, rollouts=5))
                sample_ms, update_ms = time_step(learner, inputs, repeats)
                steps = inputs["x"].shape[0]
                rows.append(
                    [
                        kind,
                        steps,
                        n,
                        f"{sample_ms:.1f}",
                        f"{update_ms:.1f}",
                        f"{sample_ms + update_ms:.1f}",
                    ]
                )
    finally:
        torch.set_num_threads(before)
    return rows, source


HEADERS = ["policy", "T (steps)", "threads", "sample 5 (ms)", "update (ms)", "total (ms)"]


def write_doc(rows: list[list], source: str, teacher: str, repeats: int) -> None:
    table = tabulate(rows, headers=HEADERS, tablefmt="github")
    cpu = platform.processor() or platform.machine()
    section = "\n".join(
        [
            START,
            "## Policy step cost (sample 5 rollouts + one update)",
            "",
            f"Command: `{COMMAND}` (repository root). Teacher: {source}.",
            f"Machine: {os.cpu_count()}-core CPU ({cpu}), torch {torch.__version__}, "
            f"median of {repeats} rounds after 2 warm-up rounds; load average at the end "
            f"{os.getloadavg()[0]:.1f} (a shared machine: other jobs inflate the 2-thread rows).",
            "",
            table,
            "",
            "Sampling uses no autograd graph; the update re-scores the stored actions "
            "(teacher-forced, one LSTM pass) and takes one Adam step.",
            END,
        ]
    )
    DOC.parent.mkdir(parents=True, exist_ok=True)
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern = re.compile(re.escape(START) + ".*?" + re.escape(END), re.S)
    text = pattern.sub(lambda _: section, text) if pattern.search(text) else text.rstrip() + "\n\n" + section + "\n"
    DOC.write_text(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--teacher", default="resnet152", help="zoo teacher whose layers are used")
    ap.add_argument("--repeats", type=int, default=10, help="timed rounds per row")
    ap.add_argument("--threads", type=int, nargs="+", default=[1, 2], help="intra-op thread counts")
    ap.add_argument("--no-write", action="store_true", help="do not update docs/benchmarks.md")
    args = ap.parse_args()
    rows, source = run(args.teacher, args.repeats, args.threads)
    print(f"teacher: {source}")
    print(tabulate(rows, headers=HEADERS))
    if not args.no_write:
        write_doc(rows, source, args.teacher, args.repeats)
        print(f"wrote section to {DOC}")


if __name__ == "__main__":
    main()
