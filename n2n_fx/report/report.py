"""Render a run directory into tables (tabulate), report.md / report.txt and curves.png."""

from __future__ import annotations

import json
import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tabulate import tabulate
from torch import fx

from ..graph.cost import model_cost
from ..graph.layers import analyze
from ..policy.registry import DEFAULT_POLICIES
from ..reward.registry import DEFAULT_REWARD
from ..rewrite import Diff
from ..rundir import RunDir
from ..storage import atomic_write_text
from .figures import MISSING, new_figure, save_png
from .pareto import heavier_than_teacher, write_pareto

__all__ = ["summary_rows", "heavier_lines", "layer_table", "curves", "tolerance_lines", "gap_words", "write_report"]

SUMMARY_HEADERS = ["model", "acc.", "#params", "Δ acc.", "compr.", "FLOPs", "CPU latency (ms)"]


def _fmt_acc(a: float | None) -> str:
    return "n/a" if a is None or (isinstance(a, float) and math.isnan(a)) else f"{100 * a:.2f}%"


def _fmt_n(n: float | None) -> str:
    if n is None:
        return "n/a"
    for unit, div in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= div:
            return f"{n / div:.2f}{unit}"
    return str(int(n))


def summary_rows(summary: dict[str, Any]) -> list[list[str]]:
    """Rows in the layout of the paper's Table 1 (teacher, stage 1, stage 1+2; "Stage2" for a student that
    removed no layer, as `--stage shrink` gives)."""
    t = summary["teacher"]
    rows = [
        [
            "Teacher",
            _fmt_acc(t["test_accuracy"]),
            _fmt_n(t["params"]),
            "—",
            "1x",
            _fmt_n(t["flops"]),
            f"{t.get('latency_ms', float('nan')):.2f}",
        ]
    ]
    for key, label in (("stage1", "Student (Stage1)"), ("stage2", "Student (Stage1+Stage2)")):
        s = summary.get(key)
        if not s:
            continue
        if key == "stage2" and s.get("layers_removed") == 0:
            label = "Student (Stage2)"  # narrowed only: --stage shrink, or stage 2 on the teacher's full depth
        if summary.get("winner") == key:
            label += " *"
        d = s["test_accuracy"] - t["test_accuracy"]
        rows.append(
            [
                label,
                _fmt_acc(s["test_accuracy"]),
                _fmt_n(s["params"]),
                f"{100 * d:+.2f}%",
                f"{t['params'] / max(1, s['params']):.2f}x",
                _fmt_n(s["flops"]),
                f"{s.get('latency_ms', float('nan')):.2f}",
            ]
        )
    return rows


def heavier_lines(summary: dict[str, Any]) -> list[str]:
    """One line per final student with more FLOPs than the teacher or a higher latency.

    Example:
        >>> heavier_lines({"teacher": {"flops": 100, "latency_ms": 1.0}, "stage1": {"flops": 260, "latency_ms": 0.5}})
        ['the stage 1 student: FLOPs 2.60x the teacher']
    """
    lines = []
    for key, label in (("stage1", "stage 1"), ("stage2", "stage 2")):
        flags = heavier_than_teacher(summary[key], summary["teacher"]) if summary.get(key) else []
        if flags:
            lines.append(f"the {label} student: {', '.join(flags)}")
    return lines


def gap_words(teacher_accuracy: float, student_accuracy: float) -> str:
    """A student's accuracy against its teacher's, in points and words.

    Example:
        >>> gap_words(0.98, 0.9665), gap_words(0.98, 0.9883), gap_words(0.98, 0.98)
        ('1.35 points below', '0.83 points above', 'level with')
    """
    points = round(100 * (teacher_accuracy - student_accuracy), 2)
    if points == 0:
        return "level with"
    return f"{abs(points):.2f} points {'below' if points > 0 else 'above'}"


def tolerance_lines(summary: dict[str, Any], max_drop: float | None) -> list[str]:
    """What ``max_accuracy_drop`` did to the run's result: the students trained to find one within
    it (search/tolerance.py), on the validation split the pick was made on.

    Example:
        >>> s = {"teacher": {"val_accuracy": 0.98}, "winner": "stage2", "stage2": {"within_tolerance": True,
        ...      "try_index": 1, "tries": [{"params": 8800, "val_accuracy": 0.965}, {"params": 11500, "val_accuracy": 0.976}]}}
        >>> tolerance_lines(s, 1.0)
        ["max_accuracy_drop 1.0 point (validation): the search's best (8,800 params) trained to 1.50 points below the teacher; shipped try 2 of 2 (11,500 params, 0.40 points below it)"]
    """
    s = summary.get(summary.get("winner", ""))
    if max_drop is None or not isinstance(s, dict) or not s.get("tries"):
        return []
    tval = summary["teacher"]["val_accuracy"]
    tries, k = s["tries"], int(s.get("try_index", 0))
    head = f"max_accuracy_drop {max_drop} point (validation): "
    first = f"the search's best ({tries[0]['params']:,} params) trained to {gap_words(tval, tries[0]['val_accuracy'])} the teacher"
    if len(tries) == 1:
        return [head + first + (" (within it)" if s.get("within_tolerance") else "; no more accurate student to try")]
    chosen = f"{tries[k]['params']:,} params, {gap_words(tval, tries[k]['val_accuracy'])} it"
    if s.get("within_tolerance"):
        return [head + first + f"; shipped try {k + 1} of {len(tries)} ({chosen})"]
    return [
        head + first + f"; none of {len(tries)} tried is within it: shipped the most accurate, try {k + 1} ({chosen})"
    ]


def layer_table(teacher: fx.GraphModule, student: fx.GraphModule, diff: Diff) -> list[list[Any]]:
    """Per teacher layer: kept/removed, old->new channels and kernel, params before/after, repairs."""
    t_layers = analyze(teacher).layers
    s_an = analyze(student)
    rows = []
    for lay in t_layers:
        s = s_an.by_node.get(lay.node)
        status = "removed" if lay.node in diff.removed else ("kept" if s is not None else "gone")
        out = f"{lay.out}" if s is None or s.out == lay.out else f"{lay.out}->{s.out}"
        k = f"{lay.kernel}" if s is None or s.kernel == lay.kernel else f"{lay.kernel}->{s.kernel}"
        repairs = "; ".join(diff.repaired.get(lay.node, ()))
        rows.append(
            [
                lay.node,
                lay.kind.value,
                status,
                out,
                k,
                lay.params,
                s.params if s else 0,
                repairs[:80],
            ]
        )
    return rows


LAYER_HEADERS = [
    "layer",
    "type",
    "status",
    "out",
    "kernel",
    "params before",
    "params after",
    "repairs",
]


def _by_iteration(history: list[dict[str, Any]]) -> dict[str, list[dict[str, float]]]:
    agg: dict[tuple[str, int], list[dict[str, Any]]] = defaultdict(list)
    for r in history:
        agg[(r["stage"], r["iteration"])].append(r)
    out: dict[str, list[dict[str, float]]] = defaultdict(list)
    for (stage, it), rows in sorted(agg.items(), key=lambda kv: (kv[0][0] != "removal", kv[0][1])):
        ok = [r for r in rows if not r.get("degenerate")]
        out[stage].append(
            {
                "iteration": it,
                "reward": sum(r["reward"] for r in rows) / len(rows),
                "best_reward": max(r["reward"] for r in rows),
                "accuracy": sum(r["accuracy"] for r in ok) / len(ok) if ok else math.nan,
                "compression": sum(r["compression"] for r in ok) / len(ok) if ok else math.nan,
                "degenerate": (len(rows) - len(ok)) / len(rows),
            }
        )
    return out


def learning(history: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Per stage, the mean reward of its first and of its last quarter of updates (at least one each):
    whether the policy learned, in two numbers."""
    out: dict[str, dict[str, float]] = {}
    for stage, its in _by_iteration(history).items():
        q = max(1, len(its) // 4)
        first, last = its[:q], its[-q:]
        out[stage] = {
            "updates": len(its),
            "quarter": q,
            "first_quarter_reward": sum(i["reward"] for i in first) / q,
            "last_quarter_reward": sum(i["reward"] for i in last) / q,
        }
    return out


def _plugins(cfg: Mapping[str, Any]) -> str:
    """The run's reward function and policies where they are not the paper's, as "; reward function x; ..."."""
    chosen = [
        ("reward function", cfg.get("reward_fn", DEFAULT_REWARD), DEFAULT_REWARD),
        ("removal policy", cfg.get("removal_policy_type", DEFAULT_POLICIES["removal"]), DEFAULT_POLICIES["removal"]),
        ("shrink policy", cfg.get("shrink_policy_type", DEFAULT_POLICIES["shrink"]), DEFAULT_POLICIES["shrink"]),
    ]
    return "".join(f"; {what} {name}" for what, name, default in chosen if name != default)


def learning_lines(summary: dict[str, Any]) -> list[str]:
    """One line per stage on how its mean reward moved, and one on the time the search took."""
    lines = [
        f"{stage} policy: mean reward {v['first_quarter_reward']:.3f} over its first {v['quarter']} of "
        f"{v['updates']} updates, {v['last_quarter_reward']:.3f} over its last {v['quarter']}"
        for stage, v in summary.get("learning", {}).items()
    ]
    t = summary.get("timing") or {}
    if t.get("search_s"):
        shared = f" (shared weights {t['supernet_s']:.0f} s)" if t.get("supernet_s") else ""
        teacher = f"; the teacher's training {t['teacher_s']:.0f} s (once, then cached)" if t.get("teacher_s") else ""
        lines.append(f"search and final training {t['search_s']:.0f} s{shared}{teacher}")
    return lines


def curves(history: list[dict[str, Any]], path: Path) -> str | None:
    """Reward / accuracy / compression vs iteration per stage (paper Figures 3-5) as PNG.

    Returns None when written, else a one-line hint (no history; matplotlib missing)."""
    stages = _by_iteration(history)
    if not stages:
        return "no history to plot"
    made = new_figure(len(stages), 1, (7, 3.2 * len(stages)))
    if made is None:
        return f"{MISSING} to get curves.png"
    fig, axes = made
    for ax, (stage, pts) in zip(axes[:, 0], stages.items(), strict=True):
        it = [p["iteration"] + 1 for p in pts]
        ax.plot(it, [p["compression"] for p in pts], label="compression", color="tab:blue")
        ax.plot(it, [p["accuracy"] for p in pts], label="accuracy", color="tab:green")
        ax.plot(it, [p["reward"] for p in pts], label="reward (mean)", color="tab:orange")
        ax.plot(
            it,
            [p["best_reward"] for p in pts],
            label="reward (best)",
            color="tab:orange",
            linestyle="--",
        )
        ax.set_title(f"stage: {stage}")
        ax.set_xlabel("iteration")
        ax.set_ylim(-1.05, 1.05)
        ax.grid(alpha=0.3)
        ax.legend(loc="lower right", fontsize=8)
    save_png(fig, path)
    return None


def _teacher_lines(m: dict[str, Any]) -> list[str]:
    """How the teacher was trained, and its warning, from teacher.json ``m`` (runs that trained one)."""
    lines = []
    if "best_epoch" in m:
        lines.append(
            f"Teacher: trained {m.get('epochs')} epochs (best validation epoch {m.get('best_epoch')}, stopped by "
            f"{m.get('stopped')}); validation accuracy {m.get('val_accuracy', math.nan):.4f}."
        )
    if m.get("warning"):
        lines.append(f"**Warning:** {m['warning']}")
    return [*lines, ""] if lines else []


def write_report(run: RunDir, teacher: fx.GraphModule, student: fx.GraphModule, diff: Diff) -> dict[str, str]:
    """Render report.md, report.txt (and curves.png, the Pareto files) from what the search
    recorded (summary.json, history, config) for the run's ``student``; return the tables.

    Nothing is measured here: summary.json is the search's (``n2n_fx.search.summary``)."""
    summary = run.read_json("summary.json")
    history = run.history()
    teacher_info = run.read_json("teacher.json") if run.file("teacher.json").is_file() else {}
    learned = learning_lines(summary)

    main = tabulate(summary_rows(summary), headers=SUMMARY_HEADERS, tablefmt="github")
    layers = tabulate(layer_table(teacher, student, diff), headers=LAYER_HEADERS, tablefmt="github")
    hint = curves(history, run.file("curves.png"))
    cfg = json.loads(run.file("config.json").read_text())
    sc = model_cost(student)
    pareto = write_pareto(run)
    heavy = heavier_lines(summary)
    tolerance = tolerance_lines(summary, cfg.get("max_accuracy_drop"))
    # students whose final training diverged keep their search-time weights (search/final.py)
    fallbacks = [
        f"the {'stage 1' if key == 'stage1' else 'stage 2'} student's {summary[key]['fallback']}"
        for key in ("stage1", "stage2")
        if isinstance(summary.get(key), dict) and summary[key].get("fallback")
    ]
    md = [
        f"# n2n-fx compression report: {cfg.get('model')} on {cfg.get('dataset')}",
        "",
        *_teacher_lines(teacher_info),
        "Accuracy is on the test split after final training (CE + λ·KD); rewards used the validation split. "
        "`*` marks the run's result (the student with the highest search reward, or under `max_accuracy_drop` "
        "the first of it and its more accurate runners-up to train to within that many points of the teacher "
        "on validation): `student.pt`.",
        "",
        main,
        "",
        f"{summary['rollouts']} rollouts ({summary['degenerate_rollouts']} degenerate, {summary['cache_hits']} reward-cache hits). "
        f"Final student: {sc.params:,} parameters, {sc.flops:,} FLOPs per sample.",
        "",
        *[f"- {line}" for line in learned],
        "",
        *[f"{line}.\n" for line in tolerance],
        *[f"**Note**: {line} (lower `final_lr`).\n" for line in fallbacks],
        *[f"**Heavier than the teacher**: {line} (see pareto.md).\n" for line in heavy],
        f"Objective: C on {cfg.get('objective', 'params')}{_plugins(cfg)}. Every evaluated student, accuracy vs params, FLOPs "
        f"and latency with the Pareto fronts: [pareto.md](pareto.md) ({len(pareto.points)} students).",
        "",
        "## Graph diff (teacher -> student)",
        "",
        "```",
        diff.table(),
        "```",
        "",
        "## Per layer",
        "",
        layers,
        "",
    ]
    md += ["![curves](curves.png)", ""] if hint is None else [f"_{hint}_", ""]
    atomic_write_text(run.file("report.md"), "\n".join(md))
    txt = "\n".join(
        [tabulate(summary_rows(summary), headers=SUMMARY_HEADERS), *fallbacks, *tolerance]
        + [f"heavier than the teacher: {line}" for line in heavy]
        + ["", *learned, "", diff.table(), ""]
        + ([] if hint is None else [hint])
    )
    atomic_write_text(run.file("report.txt"), txt)
    return {"summary": main, "layers": layers, "text": txt, "learning": "\n".join(learned)}
