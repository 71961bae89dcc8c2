"""Reward fidelity: how well each cheap reward ranks students, and what it costs per student.

For one teacher on MNIST-10k: train the supernet once (its cost reported apart), draw
distinct random valid students (removal at a random rate, then random shrink ratios, as the
supernet and random search draw them; ``--space removal``: full-width removals, the students
stage 1 rewards, with the supernet the search trains for them; ``--max-flops-ratio``: only
students within the search's FLOPs limit), and read for each

* ``kd400`` — the reference: the paper's protocol, teacher weights inherited by the
  surgery, 400 steps of logit-L2 KD (Adam, the run's reward lr), validation accuracy;
* ``kd40`` / ``kd150`` — the same training read after 40 and 150 steps (a constant
  learning rate, so these are exactly what 40- and 150-step rewards give);
* ``shared`` — the student extracted with the supernet's weights, batch norms
  recalibrated on a few training batches, no gradient step;
* ``shared+kd`` — ``shared`` and then a few KD steps.

Kendall's τ of each against ``kd400``, and seconds per student, side by side in one run.
``--reference final`` ranks them against what the winner of a search gets instead: the
config's final training (CE + KL, cosine-annealed, 8 epochs on MNIST-10k) from the inherited
weights, read at its last epoch.

    python -m benchmarks.reward_fidelity --model conv4 --students 40
    python -m benchmarks.reward_fidelity --model vgg13_small --students 40
    python -m benchmarks.reward_fidelity --model vgg13_small --students 40 --space removal --max-flops-ratio 1
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import random
import time
from pathlib import Path

import torch

from n2n_fx.distill import DistillConfig, LogitCache, accuracy, distill
from n2n_fx.distill.calibrate import recalibrate_bn
from n2n_fx.search.config import SearchConfig
from n2n_fx.search.final import final_distill_config
from n2n_fx.search.teacher_setup import prepare
from n2n_fx.supernet.shared import Supernet, actions_key
from n2n_fx.supernet.train import SupernetConfig, sample_actions, train_supernet
from n2n_fx.teacher.trace import trace

from .paper.common import DATA_ROOT, RUNS, mnist_config

RESULTS = Path(__file__).resolve().parent / "results"


def kendall_tau(a: list[float], b: list[float]) -> float:
    """Kendall's τ-b of two equally long lists (ties counted as neither concordant nor discordant)."""
    n = len(a)
    conc = disc = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da, db = a[i] - a[j], b[i] - b[j]
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif (da > 0) == (db > 0):
                conc += 1
            else:
                disc += 1
    denom = ((conc + disc + ties_a) * (conc + disc + ties_b)) ** 0.5
    return (conc - disc) / denom if denom else 0.0


def tau_interval(a: list[float], b: list[float], *, draws: int = 1000, seed: int = 0) -> tuple[float, float]:
    """A 90 % bootstrap interval of ``kendall_tau(a, b)``: students drawn again with replacement.

    How far the τ of 40 students moves with which 40 were drawn; pairs of one student drawn twice
    are ties in both lists and count for neither side."""
    rng = random.Random(seed)
    n = len(a)
    taus = []
    for _ in range(draws):
        pick = [rng.randrange(n) for _ in range(n)]
        taus.append(kendall_tau([a[i] for i in pick], [b[i] for i in pick]))
    taus.sort()
    return taus[int(0.05 * draws)], taus[int(0.95 * draws) - 1]


def _kd_marks(student, splits, cache, kd: DistillConfig) -> dict[str, float]:
    """Accuracy and cost after 40, 150 and ``kd.steps`` KD steps of one run.

    The cost of a reading is what a reward of that budget costs: the training up to that step
    plus one accuracy read on the validation split (the readings on the way are not counted
    in the later ones)."""
    marks: dict[str, float] = {}
    clock = {"start": time.perf_counter(), "eval": 0.0}

    def read(step: int) -> None:
        if step in (40, 150) and step < kd.steps:
            e0 = time.perf_counter()
            marks[f"kd{step}"] = accuracy(student, splits.val)
            took = time.perf_counter() - e0
            marks[f"kd{step}_s"] = e0 - clock["start"] - clock["eval"] + took
            clock["eval"] += took

    torch.manual_seed(kd.seed)  # its dropout masks: as the search's executors seed each reward
    r = distill(student, splits.train_plain, kd, logit_cache=cache, val_data=splits.val, on_step=read)
    marks[f"kd{kd.steps}_s"] = time.perf_counter() - clock["start"] - clock["eval"]  # distill reads val itself
    marks[f"kd{kd.steps}"] = r.val_accuracy if r.ok else 0.0
    if not r.ok:  # diverged: every reading of this run counts as zero
        marks.update({k: 0.0 for k in marks if not k.endswith("_s")})
    return marks


def _final_mark(student, splits, cache, final: DistillConfig) -> dict[str, float]:
    """Validation accuracy after ``final`` (the run's final training, read at its last epoch: no best-epoch
    pick on the validation split it is scored on) from the inherited weights."""
    t0 = time.perf_counter()
    torch.manual_seed(final.seed)  # its dropout masks
    r = distill(student, splits.train_plain, final, logit_cache=cache, val_data=splits.val)
    return {"final": r.val_accuracy if r.ok else 0.0, "final_s": time.perf_counter() - t0}


def _per_student(path: Path, net: Supernet, students: list[dict], train, label: str) -> dict[str, dict]:
    """``train(student)``'s readings of every student (inherited weights), by ``actions_key``; cached in the
    JSON file ``path``, written after each student so that a killed run keeps what it finished."""
    done = json.loads(path.read_text()) if path.is_file() else {}
    for k, acts in enumerate(students):
        key = json.dumps(actions_key(acts))
        if key not in done:
            done[key] = train(net.extract(net.arch(acts), teacher_weights=True))
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(done))
            print(f"{label} {k + 1}/{len(students)}: {done[key]}", flush=True)
    return done


def _supernet(net: Supernet, splits, cache, scfg: SupernetConfig, space: str, remove, path: Path) -> dict:
    """Load ``net``'s shared weights from ``path``, or train them over ``space`` going on from the weights
    ``net`` holds and save them there; the training's record (its cost, as measured when it ran)."""
    if path.is_file():  # the same supernet as an earlier run of this benchmark (its cost recorded there)
        saved = torch.load(path, weights_only=True)
        net.load_flat(saved["flat"])
        return saved["record"]
    path.parent.mkdir(parents=True, exist_ok=True)
    sn = train_supernet(
        net,
        splits.train_plain,
        cache,
        scfg,
        space=space,
        remove=remove,
        log_every=max(1, scfg.steps // 10),
        on_step=lambda k, loss: print(f"supernet step {k}: loss {loss:.2f}", flush=True) if k % 50 == 0 else None,
        checkpoint=path.with_suffix(".progress.pt"),  # a killed training goes on from its last save
        checkpoint_every=300,
    )
    record = {**sn.to_dict(), "config": scfg.__dict__, "space": space, "remove": sorted(remove)}
    torch.save({"flat": net.flat.detach(), "record": record}, path)
    path.with_suffix(".progress.pt").unlink(missing_ok=True)
    return record


def main() -> None:
    logging.basicConfig(format="%(message)s")  # n2n_fx's progress lines on stderr
    logging.getLogger("n2n_fx").setLevel(logging.INFO)
    ap = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    ap.add_argument("--model", default="conv4")
    ap.add_argument(
        "--space",
        choices=("both", "removal", "shrink"),
        default="both",
        help="the students drawn and the supernet's training space: both (removal at a random rate, then random "
        "shrinks: the hardest case, no search rewards it) or removal (full-width removals: stage 1's students, "
        "with the shared weights the search trains for stage 1) or shrink (random shrinks of the student of "
        "--remove: stage 2's students, with the removal space's weights trained on over them, as the search does)",
    )
    ap.add_argument("--remove", nargs="+", default=[], help="--space shrink: the layers removed (stage 1's winner)")
    ap.add_argument(
        "--shrink-bias",
        type=float,
        default=None,
        help="--space shrink: draw every layer's ratio r with weight exp(bias * r) (students and the supernet's "
        "random ones, as the search's stage 2 under a parameter limit draws them: -2 leans to narrow students; "
        "pass --narrowest 0.1 with it, as the search does)",
    )
    ap.add_argument(
        "--shrink-steps",
        type=int,
        default=SearchConfig.supernet_shrink_steps,
        help="--space shrink: supernet steps over the shrinks, after --supernet-steps over the removals",
    )
    ap.add_argument(
        "--max-flops-ratio",
        type=float,
        default=None,
        help="draw students (and train the supernet's random ones) within this multiple of the teacher's FLOPs, as "
        "the search does (its default: 1.0); default: no limit",
    )
    ap.add_argument("--students", type=int, default=40)
    ap.add_argument("--supernet-steps", type=int, default=600)
    ap.add_argument(
        "--narrowest",
        type=float,
        default=SupernetConfig.narrowest,
        help="the width ratio of the narrowest student every supernet step trains (the search's default: 0.3)",
    )
    ap.add_argument("--kd-steps", type=int, default=400, help="the reference KD budget")
    ap.add_argument("--shared-kd-steps", type=int, default=10, help="KD steps of the shared+kd mode")
    ap.add_argument(
        "--ref-seeds",
        type=int,
        nargs="+",
        default=None,
        help="KD seeds (data orders) of the reference; it is their mean accuracy (default: --seed)",
    )
    ap.add_argument(
        "--calib-batches",
        type=int,
        nargs="+",
        default=[2],
        help="batches of 64 recalibrating a shared student's batch norms; more than one value: a shared mode each "
        "(the first is `shared`, the others `shared@cN`), side by side",
    )
    ap.add_argument("--val-subset", type=int, default=300, help="validation samples the shared modes read")
    ap.add_argument(
        "--reference",
        choices=("kd", "final"),
        default="kd",
        help="what the rewards are ranked against: kd (--kd-steps of the kd mode's KD, the default) or final (the "
        "final training the search's winner gets in this config: CE + KL, cosine lr, from the inherited weights, "
        "last epoch read); mean over --ref-seeds either way",
    )
    ap.add_argument("--reward-lr", type=float, default=1e-2, help="Adam lr of the kd reference")
    ap.add_argument("--shared-kd-lr", type=float, default=1e-3, help="Adam lr of the shared+kd steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--teacher-checkpoint", default=None, help="the teacher (default: the cached one of its recipe)")
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="read and time kd40 / kd150 again, student by student between the shared readings (a 150-step run "
        "of the first reference seed); the references come from the cache",
    )
    ap.add_argument("--only-reference", action="store_true", help="compute the KD references and stop")
    ap.add_argument(
        "--only-supernet",
        action="store_true",
        help="train (and cache) the supernet and stop: on two cores, beside an --only-reference job",
    )
    ap.add_argument("--out", default=None, help="result JSON (default: benchmarks/results/reward_fidelity-MODEL.json)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("N2N_FX_CACHE", str(RUNS / "cache"))
    if not (DATA_ROOT / "mnist" / "raw").is_dir():
        raise SystemExit(f"MNIST files not found under {DATA_ROOT}/mnist/raw; this benchmark needs ../shared")
    cfg = mnist_config(args.model, seed=args.seed, teacher_checkpoint=args.teacher_checkpoint)
    prep = prepare(cfg)
    splits = prep.splits
    teacher = trace(prep.model, input_size=splits.input_size)
    teacher_val = accuracy(teacher, splits.val)
    cache = LogitCache.build(teacher, splits.train_plain)

    # the students: drawn from the teacher's structure only, so every run draws the same ones
    net = Supernet(teacher)
    if args.space == "shrink" and not net.arch({"remove": args.remove}).valid:
        raise SystemExit(f"--remove {' '.join(args.remove)}: not a valid removal of {args.model}'s layers")
    rng = random.Random(args.seed + 1)
    students, seen = [], set()
    while len(students) < args.students:  # distinct valid students, within the FLOPs limit if there is one
        acts = sample_actions(net, rng, 0.6, args.space, args.remove, shrink_bias=args.shrink_bias)
        a, key = net.arch(acts), actions_key(acts)
        cap = args.max_flops_ratio
        if (
            a.valid
            and key not in seen
            and (cap is None or a.rewrite.student_cost.flops <= cap * a.rewrite.teacher_cost.flops)
        ):
            students.append(acts)
            seen.add(key)

    # the reference (and kd40 / kd150): KD from inherited weights; cached per student.
    # With several --ref-seeds the reference is the mean accuracy of one such training per seed (its
    # data order), kd40 / kd150 and the timings are the first seed's run
    kd = DistillConfig(loss="l2", lr=args.reward_lr, steps=args.kd_steps, batch_size=64, seed=args.seed)
    ref_seeds = args.ref_seeds or [args.seed]
    all_refs: dict[int, dict] = {}
    # kd40 / kd150 are the first seed's readings; the kd references of the others only when they are the reference
    kd_seeds = ref_seeds if args.reference == "kd" else ref_seeds[:1]
    for ref_seed in [] if args.only_supernet else kd_seeds:
        ref_kd = dataclasses.replace(kd, seed=ref_seed)
        all_refs[ref_seed] = _per_student(
            RUNS / "cache" / f"fidelity-kd-{args.model}-seed{ref_seed}-lr{args.reward_lr:g}-{args.kd_steps}.json",
            net,
            students,
            lambda student, ref_kd=ref_kd: _kd_marks(student, splits, cache, ref_kd),
            f"reference (KD seed {ref_seed})",
        )
    finals: dict[int, dict] = {}  # --reference final: the final training's accuracy per seed and student
    for ref_seed in ref_seeds if args.reference == "final" and not args.only_supernet else []:
        final = dataclasses.replace(final_distill_config(cfg, "cpu"), keep_best=False, seed=ref_seed)
        finals[ref_seed] = _per_student(
            RUNS / "cache" / f"fidelity-final-{args.model}-seed{ref_seed}-{final.loss}-{final.epochs}ep.json",
            net,
            students,
            lambda student, final=final: _final_mark(student, splits, cache, final),
            f"final-training reference (seed {ref_seed})",
        )
    if args.only_reference:
        return

    base = f"supernet-{args.model}-{args.supernet_steps}-seed{args.seed}"
    narrowest = "" if args.narrowest == SupernetConfig.narrowest else f"-narrowest{args.narrowest:g}"
    flops = "" if args.max_flops_ratio is None else f"-flops{args.max_flops_ratio:g}"
    scfg = SupernetConfig(steps=args.supernet_steps, seed=args.seed, max_flops_ratio=args.max_flops_ratio)
    first = None
    if args.space == "shrink":  # as the search: the removal space's weights, then the shrinks of one removal
        # (the removal space has no narrowest student: --narrowest is the shrink training's)
        first = _supernet(net, splits, cache, scfg, "removal", (), RUNS / "cache" / f"{base}-removal{flops}.pt")
        removal = hashlib.sha1(json.dumps(sorted(args.remove)).encode()).hexdigest()[:8]
        bias = "" if args.shrink_bias is None else f"-bias{args.shrink_bias:g}"
        name = f"{base}-removal{flops}-shrink{args.shrink_steps}-{removal}{narrowest}{bias}"
        scfg = dataclasses.replace(scfg, steps=args.shrink_steps, shrink_bias=args.shrink_bias)
    else:
        name = f"{base}{narrowest}{'' if args.space == 'both' else '-' + args.space}{flops}"
    remove = args.remove if args.space == "shrink" else ()
    scfg = dataclasses.replace(scfg, narrowest=args.narrowest)
    sn_record = _supernet(net, splits, cache, scfg, args.space, remove, RUNS / "cache" / f"{name}.pt")
    if first is not None:
        sn_record["removal_supernet"] = first  # trained first, as the search trains it for stage 1
    print(
        f"supernet: {sn_record['steps']} steps, {sn_record['wall_s']:.0f} s, losses {sn_record['losses']}", flush=True
    )
    if args.only_supernet:
        return

    val = splits.subset(val=args.val_subset).val if args.val_subset else splits.val
    shared_modes = ["shared"] + [f"shared@c{c}" for c in args.calib_batches[1:]]
    rows = []
    for acts in students:
        arch = net.arch(acts)
        row = {"actions": acts, "params": arch.rewrite.student_cost.params}
        # shared: extract, recalibrate, read (once per number of calibration batches asked for)
        for c, mode in zip(args.calib_batches, shared_modes, strict=True):
            t0 = time.perf_counter()
            s = net.extract(arch)
            recalibrate_bn(s, splits.train_plain, batches=c, seed=args.seed)
            row[mode] = accuracy(s, val)
            row[f"{mode}_s"] = time.perf_counter() - t0
        # shared+kd: the same, then a few KD steps
        t0 = time.perf_counter()
        s = net.extract(arch)
        recalibrate_bn(s, splits.train_plain, batches=args.calib_batches[0], seed=args.seed)
        torch.manual_seed(args.seed)
        r = distill(
            s,
            splits.train_plain,
            DistillConfig(**{**kd.__dict__, "steps": args.shared_kd_steps, "lr": args.shared_kd_lr}),
            logit_cache=cache,
            val_data=val,
        )
        row["shared+kd"] = r.val_accuracy if r.ok else 0.0
        row["shared+kd_s"] = time.perf_counter() - t0
        key = json.dumps(actions_key(acts))
        row.update(all_refs[ref_seeds[0]][key])
        if args.fresh:  # kd40 / kd150 timed now, under the load the shared readings saw
            again = _kd_marks(
                net.extract(arch, teacher_weights=True),
                splits,
                cache,
                dataclasses.replace(kd, seed=ref_seeds[0], steps=150),
            )
            row.update(again)
        row["reference_seeds"] = (
            [finals[r][key]["final"] for r in ref_seeds]
            if args.reference == "final"
            else [all_refs[r][key][f"kd{args.kd_steps}"] for r in ref_seeds]
        )
        row["reference"] = sum(row["reference_seeds"]) / len(ref_seeds)
        rows.append(row)
        print(
            f"{len(rows):3d} params {row['params']:>8d} shared {row['shared']:.3f} shared+kd {row['shared+kd']:.3f} "
            f"kd40 {row['kd40']:.3f} kd150 {row['kd150']:.3f} reference {row['reference']:.3f} "
            f"({row['shared_s']:.2f} s / {row[f'kd{args.kd_steps}_s']:.1f} s)",
            flush=True,
        )

    ref = [r["reference"] for r in rows]
    modes = [*shared_modes, "shared+kd", "kd40", "kd150"]
    summary = {}
    for m in modes:
        vals = [r[m] for r in rows]
        secs = sorted(r[f"{m}_s"] for r in rows)
        summary[m] = {
            "tau": kendall_tau(vals, ref),
            "tau_90": tau_interval(vals, ref),
            "median_s": secs[len(secs) // 2],
            "mean_acc": sum(vals) / len(vals),
        }
    # how well one reference training ranks like another of another data order: the ceiling a reward's
    # tau against a single-seed reference can reach
    pairs = list(itertools.combinations(range(len(ref_seeds)), 2))
    repeat = [
        kendall_tau([r["reference_seeds"][a] for r in rows], [r["reference_seeds"][b] for r in rows]) for a, b in pairs
    ]
    for m in modes:
        summary[m]["cheaper_than_kd40"] = summary["kd40"]["median_s"] / summary[m]["median_s"]
    out = {
        "model": args.model,
        "seed": args.seed,
        "students": len(rows),
        "teacher_val_accuracy": teacher_val,
        "supernet": sn_record,
        "reference": (
            f"final training ({cfg.final_epochs} epochs of {cfg.final_loss}, cosine lr from {cfg.final_lr:g}, from the "
            f"inherited weights, last epoch), mean over seeds {ref_seeds}"
            if args.reference == "final"
            else f"kd{args.kd_steps}, mean over KD seeds {ref_seeds}"
        ),
        "reference_repeatability_tau": sum(repeat) / len(repeat) if repeat else None,
        "kd_timings": (
            "kd40 / kd150 read and timed in this run, student by student between the shared readings (dropout "
            "seeded per reading; reference runs cached before that seeding was added drew other masks, so their "
            "kd40 / kd150 differ slightly from these)"
            if args.fresh
            else "kd40 / kd150 timings from the cached reference runs"
        ),
        "summary": summary,
        "rows": rows,
        "threads": args.threads,
        "command": "python -m benchmarks.reward_fidelity "
        + " ".join(
            f"--{k.replace('_', '-')}"
            + ("" if v is True else " " + (" ".join(map(str, v)) if isinstance(v, list) else str(v)))
            for k, v in vars(args).items()
            if v not in (None, False) and k != "out"
        ),
    }
    RESULTS.mkdir(exist_ok=True)
    path = Path(args.out) if args.out else RESULTS / f"reward_fidelity-{args.model}.json"
    path.write_text(json.dumps(out, indent=1))
    for m in modes:
        s = summary[m]
        print(
            f"{m:10s} tau {s['tau']:+.3f} (90 %: {s['tau_90'][0]:+.2f} to {s['tau_90'][1]:+.2f})  "
            f"median {s['median_s']:.2f} s/student  "
            f"{s['cheaper_than_kd40']:.1f}x cheaper than kd40  mean acc {s['mean_acc']:.3f}"
        )
    if repeat:
        print(f"reference repeatability: tau {out['reference_repeatability_tau']:+.3f} between KD seeds {ref_seeds}")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
