"""The run's summary.json: what the search measured of the teacher and its final students.

Written once by the search when it finishes (``run_compress``); the report, the CLI and the
baselines only read it."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from torch import fx, nn

from ..report import learning
from ..reward.measure import latency_ms
from ..rundir import RunDir, safe_torch_load
from .state import FINAL_NAMES

__all__ = ["write_summary"]


def write_summary(run: RunDir, teacher: fx.GraphModule, stage_students: Mapping[str, nn.Module]) -> dict[str, Any]:
    """Build and write ``summary.json``: the teacher's and each final student's accuracy, size and
    batch-1 latency (measured here, on the CPU), the winner, rollout counts, learning and timing.

    ``stage_students``: the final student of each stage the run saved (``"removal"``, ``"shrink"``)."""
    ck = safe_torch_load(run.file("checkpoint.pt"))
    ck_final = ck.get("final", {})
    t = dict(ck["teacher"])
    size = tuple(teacher.graph.find_nodes(op="placeholder")[0].meta.get("n2n_input_size") or ())
    t["latency_ms"] = latency_ms(teacher, size, repeats=10) if size else math.nan
    summary: dict[str, Any] = {"teacher": t}
    for stage, key in FINAL_NAMES.items():
        f = ck_final.get(stage)
        if not f or not run.file(f"student_{key}.pt").is_file():
            continue
        summary[key] = dict(f)
        summary[key]["latency_ms"] = latency_ms(stage_students[stage], size, repeats=10) if size else math.nan
    summary["winner"] = FINAL_NAMES["shrink" if ck_final.get("winner") == "shrink" else "removal"]
    history = run.history()
    summary["rollouts"] = len(history)
    summary["degenerate_rollouts"] = sum(1 for r in history if r.get("degenerate"))
    summary["cache_hits"] = sum(1 for r in history if r.get("cache_hit"))
    summary["learning"] = learning(history)
    timing = dict(run.read_json("timing.json")) if run.file("timing.json").is_file() else {}
    teacher_info = run.read_json("teacher.json") if run.file("teacher.json").is_file() else {}
    if teacher_info.get("wall_s"):
        timing["teacher_s"] = float(teacher_info["wall_s"])  # its training, whether this run did it or a cache
    summary["timing"] = timing
    run.write_json("summary.json", summary)
    return summary
