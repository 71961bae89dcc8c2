"""Turn benchmarks/paper/results/*.json into the tables of docs/results.md and the curve PNGs.

    python -m benchmarks.paper.report

Only the part of docs/results.md between the ``generated`` markers is replaced; the
discussion around it is written by hand. Experiments without a result file are listed as
not run.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tabulate import tabulate

from .common import RESULTS, ROOT

DOC = ROOT / "docs" / "results.md"
IMG = ROOT / "docs" / "img"
START, END = "<!-- generated:start -->", "<!-- generated:end -->"


def _load(name: str) -> dict[str, Any] | None:
    path = RESULTS / f"{name}.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None:
        return "–"
    return f"{100 * x:+.2f}%" if signed else f"{100 * x:.2f}%"


def _k(n: int | None) -> str:
    if n is None:
        return "–"
    return f"{n / 1e6:.2f}M" if n >= 1e6 else (f"{n / 1e3:.1f}K" if n >= 1e3 else str(n))


def _footer(r: dict[str, Any]) -> str:
    # searches resumed from finished runs cost this command nothing: report their own time too
    searches = sum(max(run.get("search_s", 0.0), run.get("students_s", 0.0)) for run in r.get("runs", []))
    time_s = f"wall {r['wall_s'] / 60:.1f} min" + (
        f" (this command; the searches themselves: {searches / 60:.1f} min in all)" if searches else ""
    )
    return f"Command: `{r['command']}` · seed {r.get('seed', r.get('seeds'))} · {time_s} · {r['machine']} · {r['finished']}"


def _section(title: str, name: str, cmd: str) -> tuple[list[str], dict[str, Any] | None]:
    """The section's heading and result (or a "not run yet" line naming the command)."""
    out, found = _sections(title, f"{name}.json", cmd)
    return out, (found[0][1] if found else None)


def _sections(title: str, pattern: str, cmd: str) -> tuple[list[str], list[tuple[Path, dict[str, Any]]]]:
    """The heading and every result file matching ``pattern`` (one per variant), or "not run yet"."""
    out = [f"### {title}", ""]
    found = [(path, json.loads(path.read_text())) for path in sorted(RESULTS.glob(pattern))]
    if not found:
        out += [_missing(cmd), ""]
    return out, found


def _missing(cmd: str) -> str:
    return f"_Not run yet_: `{cmd}`"


def table1() -> list[str]:
    out = ["### Table 1 in kind: compression by stage", ""]
    variants = [(t, suffix) for t in ("conv4", "vgg13_small") for suffix in ("-shared", "")]
    for t in ("conv4", "vgg13_small"):  # runs asked for a compression (--min-compression X), after the plain ones
        at = variants.index((t, ""))
        found = sorted(RESULTS.glob(f"table1-{t}-shared-c*.json"))
        variants[at:at] = [(t, path.stem.removeprefix(f"table1-{t}")) for path in found]
    for teacher, suffix in variants:
        r = _load(f"table1-{teacher}{suffix}")
        how = "shared-weight rewards" if suffix else "kd rewards (the paper's protocol)"
        if r is not None and r["config"].get("max_params"):
            how += f", at most {r['config']['max_params']:,} parameters (`{r['command'].split('table1 ')[-1]}`)"
        out.append(f"**{teacher} teacher, {how}**")
        out.append("")
        if r is None:
            mode = "" if suffix else " --reward-mode kd"
            out += [_missing(f"python -m benchmarks.paper.table1 --teacher {teacher}{mode}"), ""]
            continue
        rows = [["Teacher", _pct(r["teacher"]["test_accuracy"]), _k(r["teacher"]["params"]), "–", "1×"]]
        for key, label in (("stage1", "Student (stage 1)"), ("stage2", "Student (stage 1+2)")):
            s = r.get(key)
            if s:
                rows.append(
                    [
                        label,
                        _pct(s["test_accuracy"]),
                        _k(s["params"]),
                        _pct(s["delta_accuracy"], True),
                        f"{s['compression']:.1f}×",
                    ]
                )
        out += [tabulate(rows, ["", "test acc.", "#params", "Δ acc.", "compression"], tablefmt="github"), ""]
        then = (
            " (kd rewards were the default then: today `--reward-mode kd`)"
            if not suffix and "--reward-mode" not in r["command"]
            else ""
        )
        out += [
            f"Winner (best reward over both stages): {r.get('winner')}; {r.get('rollouts')} students scored. "
            + _footer(r)
            + then,
            "",
        ]
        png = _curves(r["iterations"], f"table1-{teacher}{suffix}")
        if png:
            out += [f"![learning curves {teacher}](img/{png})", ""]
    return out


def table2() -> list[str]:
    out, r = _section(
        "Table 2 in kind: Taylor filter pruning vs N2N", "table2-pruning", "python -m benchmarks.paper.table2_pruning"
    )
    if r is None:
        return out
    t, n, p = r["teacher"], r["n2n"], r["pruning"]
    rows = [
        ["Teacher", _pct(t["test_accuracy"]), _k(t["params"]), "1×", "–"],
        [
            "Pruning (Molchanov et al.)",
            _pct(p["test_accuracy"]),
            _k(p["params"]),
            f"{p['compression']:.1f}×",
            _pct(p["test_accuracy"] - t["test_accuracy"], True),
        ],
        [
            "N2N",
            _pct(n["test_accuracy"]),
            _k(n["params"]),
            f"{n['compression']:.1f}×",
            _pct(n["test_accuracy"] - t["test_accuracy"], True),
        ],
    ]
    out += [tabulate(rows, ["", "test acc.", "#params", "compression", "Δ acc."], tablefmt="github"), ""]
    out += [
        f"Pruning ran {p['steps']} steps and stopped on `{p['stop']}` (validation accuracy of the N2N student: "
        f"{_pct(n['val_accuracy'])}). " + _footer(r),
        "",
    ]
    return out


def table3() -> list[str]:
    out, r = _section(
        "Table 3 in kind: hand-designed students with KD vs N2N",
        "table3-handmade",
        "python -m benchmarks.paper.table3_handmade",
    )
    if r is None:
        return out
    rows = [["Teacher", _pct(r["teacher"]["test_accuracy"]), _k(r["teacher"]["params"]), "–"]]
    for h in r["handmade"]:
        rows.append([f"{h['arch']} (KD, scratch)", _pct(h["test_accuracy"]), _k(h["params"]), h["epochs"]])
    rows.append(["N2N", _pct(r["n2n"]["test_accuracy"]), _k(r["n2n"]["params"]), r["n2n"]["epochs"]])
    out += [tabulate(rows, ["", "test acc.", "#params", "training epochs"], tablefmt="github"), "", _footer(r), ""]
    return out


def table4() -> list[str]:
    out, found = _sections(
        "Table 4 in kind: a parameter-count constraint", "table4-*.json", "python -m benchmarks.paper.table4_constraint"
    )
    for path, r in found:
        rows = [["Teacher", _pct(r["teacher"]["test_accuracy"]), _k(r["teacher"]["params"]), "1×", "–"]]
        for key, label in (("stage1", "Student (stage 1)"), ("stage2", "Student (stage 1+2)")):
            s = r.get(key)
            if s:
                rows.append(
                    [
                        label,
                        _pct(s["test_accuracy"]),
                        _k(s["params"]),
                        f"{s['compression']:.1f}×",
                        _k(int(r["max_params"])),
                    ]
                )
        out += [f"**{r['teacher_model']}, at most {_k(int(r['max_params']))} parameters**", ""]
        out += [tabulate(rows, ["", "test acc.", "#params", "compression", "constraint"], tablefmt="github"), ""]
        out += [
            f"Winner: {r['winner']}, meets the constraint: **{'yes' if r['meets_constraint'] else 'no'}**; "
            f"{r['violating_rollouts']} of {r['rollouts']} rollouts violated it (annealed penalty). " + _footer(r),
            "",
        ]
        png = _curves(r["iterations"], path.stem)
        if png:
            out += [f"![learning curves {path.stem}](img/{png})", ""]
    return out


def table5() -> list[str]:
    out, found = _sections(
        "Table 5 in kind: policy transfer, first updates", "table5-*.json", "python -m benchmarks.paper.table5_transfer"
    )
    for path, r in found:
        rows = []
        for label in ("pretrained", "scratch"):
            s = r[label]
            rows.append(
                [
                    label,
                    f"{s['mean_reward']:.3f}",
                    _pct(s["mean_compression"]),
                    _pct(s["mean_accuracy"]),
                    s["degenerate"],
                ]
            )
        n = len(r["scratch"]["iterations"])
        source = Path(r["source_run"]).name
        how = (
            f"lr {r.get('removal_lr', 0.003):g}, {r.get('reinforce_baseline', 'ema')} baseline, "
            f"{r.get('reward_mode', 'kd')} rewards"
        )
        out += [f"**conv4 ({source}) → {r['target']}, {how}, mean over the first {n} updates**", ""]
        out += [tabulate(rows, ["policy", "reward", "compression C", "accuracy", "degenerate"], tablefmt="github"), ""]
        out += [_footer(r), ""]
        png = _transfer_plot(r, path.stem)
        if png:
            out += [f"![transfer {path.stem}](img/{png})", ""]
    return out


def random_vs_n2n() -> list[str]:
    out, found = _sections(
        "N2N vs random search (same budget)", "random-vs-n2n*.json", "python -m benchmarks.paper.random_vs_n2n"
    )
    for path, r in found:
        rows = []
        tail = max(1, -(-r["iterations"] // 3))  # the last third of the iterations
        for run in r["runs"]:
            rows.append([run["method"], run["seed"], *_reward_cols([run], tail)])
        if len(r["seeds"]) > 1:
            for method in ("n2n", "random"):
                runs = [x for x in r["runs"] if x["method"] == method]
                rows.append([f"**{method}, mean of seeds**", "", *_reward_cols(runs, tail)])
        baseline = r.get("reinforce_baseline", "ema")
        out += [
            f"**N2N removal-policy lr {r.get('removal_lr', 0.003):g}, {baseline} baseline, "
            f"{r['iterations']} updates × 5 students, {r.get('reward_mode', 'kd')} rewards, "
            f"seed{'s' if len(r['seeds']) > 1 else ''} {', '.join(map(str, r['seeds']))}, {r['finished'][:10]}**",
            "",
        ]
        out += [
            tabulate(
                rows,
                [
                    "method",
                    "seed",
                    "mean reward, first it.",
                    f"mean reward, last {tail} it.",
                    "mean reward, all",
                    "best reward",
                ],
                tablefmt="github",
            ),
            "",
        ]
        for run in r["runs"]:
            if run.get("p_remove"):
                ps = ", ".join(f"{k} {v:.2f}" for k, v in run["p_remove"].items())
                out += [f"P(remove) of the final N2N policy, seed {run['seed']}: {ps}", ""]
        out += [_footer(r), ""]
        png = _random_plot(r, path.stem)
        if png:
            out += [f"![N2N vs random search]({'img/' + png})", ""]
    return out


def _reward_cols(runs: list[dict[str, Any]], tail: int) -> list[str]:
    """First, last-``tail``, overall mean reward and best reward, averaged over ``runs``."""
    stats = [
        [
            run["mean_reward"][0],
            sum(run["mean_reward"][-tail:]) / tail,
            sum(run["mean_reward"]) / len(run["mean_reward"]),
            run["best_so_far"][-1],
        ]
        for run in runs
    ]
    return [f"{sum(col) / len(col):.3f}" for col in zip(*stats, strict=True)]


def removal_learning() -> list[str]:
    out, r = _section(
        "Removal-policy learning speed (surrogate reward)",
        "removal-learning",
        "python -m benchmarks.paper.removal_learning",
    )
    if r is None:
        return out
    sur = r["surrogate"]
    out += [
        f"Surrogate fitted to {sur['students']} logged conv4 removal students (residual std of accuracy "
        f"{sur['residual_std']:.3f}, correlation {sur['correlation']:.2f}); {len(r['seeds'])} searches per "
        "setting, m = 5. Cells: mean reward of the last 4 updates / noise-free reward of the greedy policy.",
        "",
    ]
    cps = [str(c) for c in r["checkpoints"]]
    for noise, by_setting in r["results"].items():
        rows = []
        for name, res in by_setting.items():
            cells = [f"{res['at'][c]['last4_mean']:.3f} / {res['at'][c]['greedy']:.3f}" for c in cps]
            rows.append([name, *cells])
        out += [f"**accuracy noise std {noise}**", ""]
        out += [tabulate(rows, ["setting", *[f"after {c} updates" for c in cps]], tablefmt="github"), ""]
        png = _learning_plot(by_setting, f"removal-learning-noise{noise}")
        if png:
            out += [f"![removal-policy learning speed, noise {noise}](img/{png})", ""]
    out += [_footer(r), ""]
    return out


# -- plots ------------------------------------------------------------------------------------


def _plt():
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        return plt
    except ImportError:
        return None


def _save(plt, fig, stem: str) -> str:
    """Write ``fig`` to docs/img/<stem>.png; return the file name."""
    IMG.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(IMG / f"{stem}.png", dpi=90)
    plt.close(fig)
    return f"{stem}.png"


def _curves(its: list[dict[str, Any]], stem: str) -> str | None:
    plt = _plt()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 3, figsize=(12, 3.2))
    for stage, style in (("removal", "-o"), ("shrink", "-s")):
        rows = [r for r in its if r["stage"] == stage]
        if not rows:
            continue
        x = list(range(len(rows)))
        axes[0].plot(x, [r["mean_reward"] for r in rows], style, label=stage)
        axes[1].plot(x, [r["mean_accuracy"] for r in rows], style, label=stage)
        axes[2].plot(x, [r["mean_compression"] for r in rows], style, label=stage)
    for ax, title in zip(axes, ("mean reward", "mean accuracy (after KD)", "mean compression C"), strict=True):
        ax.set_title(title)
        ax.set_xlabel("policy update")
        ax.legend()
    return _save(plt, fig, stem)


def _transfer_plot(r: dict[str, Any], stem: str) -> str | None:
    plt = _plt()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(5, 3.2))
    for label in ("pretrained", "scratch"):
        ax.plot([it["mean_reward"] for it in r[label]["iterations"]], "-o", label=label)
    ax.set_xlabel("policy update")
    ax.set_ylabel("mean reward")
    ax.legend()
    return _save(plt, fig, stem)


def _random_plot(r: dict[str, Any], stem: str) -> str | None:
    plt = _plt()
    if plt is None:
        return None
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.2))
    colors = {"n2n": "tab:blue", "random": "tab:orange"}
    for run in r["runs"]:
        lab = f"{run['method']} (seed {run['seed']})"
        axes[0].plot(run["mean_reward"], "-", color=colors[run["method"]], alpha=0.7, label=lab)
        axes[1].plot(run["best_so_far"], "-", color=colors[run["method"]], alpha=0.7, label=lab)
    axes[0].set_title("mean reward per iteration")
    axes[1].set_title("best reward so far")
    for ax in axes:
        ax.set_xlabel("iteration")
    axes[1].legend(fontsize=7)
    return _save(plt, fig, stem)


def _learning_plot(by_setting: dict[str, Any], stem: str) -> str | None:
    plt = _plt()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(6, 3.2))
    for name, res in by_setting.items():
        ax.plot(range(1, len(res["mean_reward"]) + 1), res["mean_reward"], label=name)
    ax.set_xlabel("policy update")
    ax.set_ylabel("mean surrogate reward")
    ax.legend(fontsize=8)
    return _save(plt, fig, stem)


def main() -> None:
    lines = [START, ""]
    for part in (table1, table2, table3, table4, table5, random_vs_n2n, removal_learning):
        lines += part()
    lines.append(END)
    block = "\n".join(lines)
    text = DOC.read_text() if DOC.is_file() else f"# Results\n\n{START}\n{END}\n"
    if START not in text:
        text += f"\n{START}\n{END}\n"
    text = re.sub(re.escape(START) + ".*?" + re.escape(END), lambda _: block, text, flags=re.S)
    DOC.write_text(text)
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
