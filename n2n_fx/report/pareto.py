"""Every student a search evaluated, as a point of accuracy vs parameters, FLOPs and latency, with its fronts.

A search records, for every rollout (``history.jsonl``), the student's reward accuracy
(validation split, before final training), parameters, FLOPs per sample and batch-1
latency, whatever the objective it rewarded. This module renders those records; it does
not rebuild or measure a model. A student is on the Pareto front of a cost (params, FLOPs
or latency) when no other student is at least as accurate and at most as costly, and
strictly better in one of the two. Students with more FLOPs than the teacher, or slower
than it, are flagged: surgery may remove a pooling layer or a stride, which makes the
layers after it run on larger maps.

Files written into the run directory: ``pareto.md`` (the students on a front and the
flags), ``pareto.csv`` and ``pareto.json`` (every student), ``pareto.png`` (matplotlib).
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from tabulate import tabulate

from ..errors import RunDirError
from ..rundir import RunDir, safe_torch_load
from ..storage import atomic_write_text
from .figures import MISSING, new_figure, save_png

__all__ = ["COSTS", "pareto_front", "student_points", "heavier_than_teacher", "ParetoReport", "write_pareto"]

# costs a student is plotted against (lower is better), with their labels
COSTS: dict[str, str] = {"params": "parameters", "flops": "FLOPs per sample", "latency_ms": "batch-1 latency (ms)"}
COLUMNS = [
    "stage",
    "iteration",
    "rollout",
    "accuracy",
    "params",
    "flops",
    "latency_ms",
    "reward",
    "front_params",
    "front_flops",
    "front_latency_ms",
    "chosen",
    "flags",
    "arch",
]


def _value(point: Mapping[str, Any], key: str) -> float | None:
    v = point.get(key)
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def pareto_front(points: Sequence[Mapping[str, Any]], costs: Sequence[str], gain: str = "accuracy") -> list[bool]:
    """Whether each point is on the front: no other point has ``gain`` >= and every cost <=, one strictly.

    A point missing ``gain`` or a cost is neither on the front nor dominates another.
    Equal points are all on the front.

    Example:
        >>> pts = [{"accuracy": 0.9, "params": 10}, {"accuracy": 0.8, "params": 20}, {"accuracy": 0.95, "params": 30}]
        >>> pareto_front(pts, ["params"])
        [True, False, True]
    """
    keys = [gain, *costs]
    vecs = []
    for p in points:
        vals = [_value(p, k) for k in keys]
        # as "larger is better" on every axis
        vecs.append(None if any(v is None for v in vals) else (vals[0], *(-v for v in vals[1:])))
    out = []
    for i, a in enumerate(vecs):
        if a is None:
            out.append(False)
            continue
        dominated = any(
            b is not None and j != i and all(x >= y for x, y in zip(b, a, strict=True)) and b != a
            for j, b in enumerate(vecs)
        )
        out.append(not dominated)
    return out


def student_points(history: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One point per distinct student architecture in ``history`` rows (the first row of each).

    Degenerate students and students without an accuracy are left out. Rows name their
    architecture (``arch``); rows of runs made before they did are told apart by their actions.
    """
    seen: set[str] = set()
    points = []
    for r in history:
        if r.get("degenerate") or r.get("accuracy") is None:
            continue
        key = r.get("arch") or json.dumps([r.get("stage"), r.get("actions")], sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        points.append({c: r.get(c) for c in COLUMNS if c in r} | {"arch": r.get("arch")})
    return points


def heavier_than_teacher(point: Mapping[str, Any], teacher: Mapping[str, Any]) -> list[str]:
    """Flags of a student with more FLOPs than the teacher, or a higher latency (e.g. ``"FLOPs 2.60x"``).

    Example:
        >>> heavier_than_teacher({"flops": 260, "latency_ms": 0.5}, {"flops": 100, "latency_ms": 1.0})
        ['FLOPs 2.60x the teacher']
    """
    flags = []
    for key, label in (("flops", "FLOPs"), ("latency_ms", "latency")):
        s, t = _value(point, key), _value(teacher, key)
        if s is not None and t is not None and t > 0 and s > t:
            flags.append(f"{label} {s / t:.2f}x the teacher")
    return flags


@dataclass(frozen=True)
class ParetoReport:
    """What ``write_pareto`` rendered."""

    points: list[dict[str, Any]]  # every distinct student, with its fronts and flags
    teacher: dict[str, Any]  # the teacher's accuracy, params, FLOPs, latency
    markdown: str  # pareto.md
    plot_hint: str | None  # None: pareto.png was written; else why not and how to get it


def _fmt(v: Any, digits: int = 4) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, bool):
        return "x" if v else ""
    if isinstance(v, float):
        return f"{v:.{digits}g}" if v < 1000 else f"{v:,.0f}"
    return f"{v:,}" if isinstance(v, int) else str(v)


def _teacher(run: RunDir) -> dict[str, Any]:
    path = run.file("checkpoint.pt")
    if not path.is_file():
        raise RunDirError(f"{run.path} has no checkpoint.pt yet: its search has not evaluated a student")
    ck = safe_torch_load(path)
    t = dict(ck.get("teacher") or {})
    t["accuracy"] = t.get("reward_accuracy", t.get("val_accuracy"))
    chosen = {}
    for stage, best in (ck.get("best") or {}).items():
        if best and best.get("record", {}).get("arch"):
            chosen[best["record"]["arch"]] = "stage 1" if stage == "removal" else "stage 2"
    t["chosen"] = chosen
    return t


def _markdown(points: list[dict[str, Any]], teacher: dict[str, Any], cfg: dict[str, Any], hint: str | None) -> str:
    costs = [c for c in COSTS if any(p.get(c) is not None for p in points)]
    on_front = [p for p in points if any(p.get(f"front_{c}") for c in costs)]
    on_front.sort(key=lambda p: -(p["accuracy"] or 0.0))
    heavy_flops = [p for p in points if any(f.startswith("FLOPs") for f in p["flags"])]
    slow = [p for p in points if any(f.startswith("latency") for f in p["flags"])]
    dev = teacher.get("latency_device")
    latency = f"latency is the median batch-1 forward time on {dev}" if dev else "this run recorded no latency"
    headers = ["stage", "it.", "roll.", "acc.", "params", "FLOPs", "latency (ms)", "front", "chosen", "flags"]
    rows = [
        [
            p.get("stage"),
            p.get("iteration"),
            p.get("rollout"),
            _fmt(p.get("accuracy")),
            _fmt(p.get("params")),
            _fmt(p.get("flops")),
            _fmt(p.get("latency_ms"), 3),
            ", ".join(c.replace("_ms", "") for c in costs if p.get(f"front_{c}")),
            p.get("chosen") or "",
            "; ".join(p["flags"]),
        ]
        for p in on_front
    ]
    lines = [
        f"# Pareto report: {cfg.get('model')} on {cfg.get('dataset')} (objective {cfg.get('objective', 'params')})",
        "",
        f"{len(points)} distinct students evaluated (degenerate ones left out). Accuracy is the reward accuracy "
        f"(validation split, before final training); {latency}. Teacher: accuracy "
        f"{_fmt(teacher.get('accuracy'))}, {_fmt(teacher.get('params'))} params, "
        f"{_fmt(teacher.get('flops'))} FLOPs, {_fmt(teacher.get('latency_ms'), 3)} ms.",
        "",
        f"**Heavier than the teacher**: {len(heavy_flops)} student(s) have more FLOPs than the teacher, "
        f"{len(slow)} are slower (column `flags` of pareto.csv).",
        "",
        f"## Students on a front ({len(on_front)})",
        "",
        "A student is on the front of a cost when no other student is at least as accurate and at most "
        "as costly. `chosen`: the best-rewarded student of a stage.",
        "",
        tabulate(rows, headers=headers, tablefmt="github") if rows else "_no student has an accuracy yet_",
        "",
        "![pareto](pareto.png)" if hint is None else f"_{hint}_",
        "",
    ]
    return "\n".join(lines)


def _plot(points: list[dict[str, Any]], teacher: dict[str, Any], path) -> str | None:
    costs = [c for c in COSTS if any(p.get(c) is not None for p in points)]
    if not points or not costs:
        return "no evaluated student to plot"
    made = new_figure(1, len(costs), (4.6 * len(costs), 3.8))
    if made is None:
        return f"{MISSING}, then run `n2n-fx report RUN --pareto` to get pareto.png"
    fig, axes = made
    for ax, cost in zip(axes[0], costs, strict=True):
        pts = [p for p in points if p.get(cost) is not None]
        ax.scatter([p[cost] for p in pts], [p["accuracy"] for p in pts], s=12, color="0.6", label="student")
        front = sorted((p for p in pts if p.get(f"front_{cost}")), key=lambda p: p[cost])
        ax.plot(
            [p[cost] for p in front],
            [p["accuracy"] for p in front],
            "o-",
            color="tab:orange",
            ms=5,
            drawstyle="steps-post",
            label="Pareto front",
        )
        chosen = [p for p in pts if p.get("chosen")]
        ax.scatter(
            [p[cost] for p in chosen],
            [p["accuracy"] for p in chosen],
            s=60,
            marker="D",
            facecolors="none",
            edgecolors="tab:blue",
            label="chosen (stage best)",
        )
        t = teacher.get(cost)
        if t is not None and teacher.get("accuracy") is not None:
            ax.scatter([t], [teacher["accuracy"]], s=120, marker="*", color="black", label="teacher", zorder=3)
            ax.axvline(t, color="black", lw=0.6, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel(COSTS[cost] + " (log)")
        ax.set_ylabel("accuracy (validation, reward)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7, loc="lower right")
    save_png(fig, path)
    return None


def write_pareto(run: RunDir) -> ParetoReport:
    """Render the run's evaluated students: pareto.md, pareto.csv, pareto.json and pareto.png.

    Works on a finished run and on one in progress (from its last checkpoint and history)."""
    teacher = _teacher(run)
    chosen = teacher.pop("chosen")
    points = student_points(run.history())
    for cost in COSTS:
        for p, on in zip(points, pareto_front(points, [cost]), strict=True):
            p[f"front_{cost}"] = on
    for p in points:
        p["chosen"] = chosen.get(p.get("arch") or "", "")
        p["flags"] = heavier_than_teacher(p, teacher)
    cfg = run.read_json("config.json") if run.file("config.json").is_file() else {}
    hint = _plot(points, teacher, run.file("pareto.png"))
    md = _markdown(points, teacher, cfg, hint)
    atomic_write_text(run.file("pareto.md"), md)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    writer.writeheader()
    for p in points:
        writer.writerow({**p, "flags": "; ".join(p["flags"])})
    atomic_write_text(run.file("pareto.csv"), buf.getvalue())
    teacher_out = {k: v for k, v in teacher.items() if k in ("accuracy", *COSTS, "latency_device")}
    run.write_json("pareto.json", {"teacher": teacher_out, "students": points})
    return ParetoReport(points, teacher_out, md, hint)
