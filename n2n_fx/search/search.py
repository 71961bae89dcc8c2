"""Paper Algorithm 1: the two-stage search, one checkpointed iteration at a time.

Stage 1 samples m removal rollouts per iteration from the removal policy on the teacher;
each becomes a student (surgery) and a reward (KD evaluation); the policy then takes one
REINFORCE step. The best stage-1 student (trained weights) is stage 2's starting point,
where the shrink policy acts the same way. The best students are trained to convergence
with CE + λ·KD. After every iteration the whole search state is written atomically, so a
crash or kill loses at most the iteration in flight (``resume``).
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import fx

from ..distill import DistillConfig, LogitCache, accuracy, distill
from ..errors import CheckpointError, ConfigError, RunDirError
from ..features import FEATURE_DIM, RATIOS, policy_input, removal_mask, shrink_input, shrink_steps
from ..graph.cost import model_cost
from ..graph.layers import Analysis, analyze
from ..policy import (
    REMOVE,
    Learner,
    LearnerConfig,
    RemovalPolicy,
    RemovalPolicyConfig,
    ShrinkPolicy,
    ShrinkPolicyConfig,
    load_policy,
    save_policy,
)
from ..reward import Constraints, Objective, Penalty, RewardCache, RewardEvaluator, latency_ms
from ..rewrite import Rewrite, apply_actions
from ..storage import atomic_torch_save, atomic_write_bytes, atomic_write_text
from ..supernet import Supernet, train_supernet
from ..teacher.quality import majority_accuracy
from .config import SearchConfig
from .executors import Job, make_executor
from ..rundir import RunDir, safe_torch_load

__all__ = ["Search", "StageBest", "rebuild_student", "final_distill_config", "CKPT_FORMAT"]

CKPT_FORMAT = "n2n_fx.search-checkpoint/1"
SUPERNET_FORMAT = "n2n_fx.supernet/2"
# the search's stages in order: removal, shrink of stage 1's winner, shrink of the teacher itself
# (``shrink_teacher``: stage 2 over the full depth too; its best competes for the stage-2 student)
STAGE_ORDER = ("removal", "shrink", "shrink_teacher")
SUPERNET_FILES = {  # shared weights per stage
    "removal": "supernet.pt",
    "shrink": "supernet_shrink.pt",
    "shrink_teacher": "supernet_shrink_teacher.pt",
}


def _tag(net: Supernet) -> str:
    """A short hash of the shared weights: rewards cached for one supernet never serve another."""
    return hashlib.sha1(net.flat.detach().cpu().numpy().tobytes()).hexdigest()[:16]


PHASES = (*STAGE_ORDER, "final", "done")


def _best_key(stage: str) -> str:
    """Which best a stage competes for: stage 1's, or stage 2's (both shrink stages)."""
    return "removal" if stage == "removal" else "shrink"


@dataclass
class StageBest:
    """The best student a stage found so far."""

    reward: float  # its reward
    record: dict[str, Any]  # its reward record (as dict)
    actions: dict[str, Any]  # {"remove": [...]} and/or {"shrink": {...}} from the teacher
    state_dict: dict[str, torch.Tensor] | None = None  # its weights after KD evaluation

    def to_state(self) -> dict[str, Any]:
        return {
            "reward": self.reward,
            "record": self.record,
            "actions": self.actions,
            "state_dict": self.state_dict,
        }

    @classmethod
    def from_state(cls, d: dict[str, Any] | None) -> StageBest | None:
        return None if d is None else cls(d["reward"], d["record"], d["actions"], d.get("state_dict"))


def rebuild_student(
    teacher: fx.GraphModule,
    actions: dict[str, Any],
    state_dict: dict | None = None,
    max_linear_growth: float = 8.0,
):
    """Re-create a student from the teacher and its actions; load its weights if given.

    Returns the ``Rewrite`` of the last stage applied (``.student`` holds the model)."""
    r = apply_actions(teacher, remove=actions.get("remove", ()), strict=False, max_linear_growth=max_linear_growth)
    if actions.get("shrink") and r.valid:
        r2 = apply_actions(r.student, shrink=actions["shrink"], strict=False, max_linear_growth=max_linear_growth)
        r2.diff = r.diff.then(r2.diff)
        r2.teacher_cost = r.teacher_cost
        r = r2
    if not r.valid:
        raise CheckpointError(f"the saved actions no longer give a valid student ({r.degenerate})")
    if state_dict is not None:
        try:
            r.student.load_state_dict(state_dict)
        except RuntimeError as e:
            raise CheckpointError(
                f"saved student weights do not fit its architecture: {str(e).splitlines()[0]}"
            ) from None
    return r


def final_distill_config(cfg: SearchConfig, device: str) -> DistillConfig:
    """How the run's best students are trained at the end (CE + λ·KD); baselines reuse it."""
    return DistillConfig(
        keep_best=True,  # the best validation epoch, the search's own weights counting as epoch 0
        loss=cfg.final_loss,
        schedule="cosine",
        lam=cfg.final_lambda,
        lr=cfg.final_lr,
        epochs=max(1, cfg.final_epochs),
        batch_size=cfg.batch_size,
        device=device,
        amp=cfg.amp,
        seed=cfg.seed,
    )


def _finite(state_dict: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(v).all()) for v in state_dict.values() if v.is_floating_point())


@dataclass
class _State:
    phase: str = "removal"
    iteration: int = 0  # next iteration to run in ``phase``
    learners: dict[str, Any] = field(default_factory=dict)  # stage -> Learner.state_dict()
    best: dict[str, StageBest | None] = field(default_factory=lambda: {"removal": None, "shrink": None})
    teacher: dict[str, Any] = field(default_factory=dict)  # val/test accuracy, params, flops
    final: dict[str, Any] = field(default_factory=dict)  # final-training results per stage
    supernet: dict[str, Any] = field(default_factory=dict)  # supernet training record (shared modes)


class Search:
    """One compression run over a run directory (fresh or resumed)."""

    def __init__(
        self,
        cfg: SearchConfig,
        run: RunDir,
        teacher: fx.GraphModule,
        splits,
        *,
        quiet: bool = False,
    ) -> None:
        self.cfg = cfg
        self.run_dir = run
        self.teacher = teacher.eval()
        self.splits = splits
        self.quiet = quiet
        self.device = cfg.resolved_device()
        self.state = _State()
        self.teacher_cost = model_cost(teacher)
        self.executor = make_executor(cfg)
        self.supernet: Supernet | None = None  # shared reward modes: the trained shared weights
        self._on_device: fx.GraphModule | None = None  # the teacher's copy on self.device (device_teacher)

    def device_teacher(self) -> fx.GraphModule:
        """The teacher on the run's device, for everything that runs it (accuracy, logit cache, final KD).

        ``self.teacher`` stays on the CPU: surgery reads its weights and students are built there."""
        if self._on_device is None:
            on_cpu = torch.device(self.device).type == "cpu"
            self._on_device = self.teacher if on_cpu else copy.deepcopy(self.teacher).to(self.device).eval()
        return self._on_device

    # -- logging -------------------------------------------------------------------------------------
    def log(self, msg: str) -> None:
        if not self.quiet:
            from tqdm import tqdm

            tqdm.write(msg, file=sys.stderr)  # prints above an active progress bar

    def _bar(self, total: int, desc: str, initial: int = 0):
        from tqdm import tqdm

        return tqdm(
            total=total,
            initial=initial,
            desc=desc,
            disable=self.quiet or not sys.stderr.isatty(),
            leave=False,
        )

    # -- checkpoint ------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        s = self.state
        atomic_torch_save(
            {
                "format": CKPT_FORMAT,
                "phase": s.phase,
                "iteration": s.iteration,
                "learners": s.learners,
                "best": {k: (v.to_state() if v else None) for k, v in s.best.items()},
                "teacher": s.teacher,
                "final": s.final,
                "supernet": s.supernet,
                "torch_rng": torch.get_rng_state(),
            },
            self.run_dir.file("checkpoint.pt"),
        )

    def load_checkpoint(self) -> None:
        ck = safe_torch_load(self.run_dir.file("checkpoint.pt"))
        if not isinstance(ck, dict) or ck.get("format") != CKPT_FORMAT:
            raise CheckpointError(f"{self.run_dir.file('checkpoint.pt')} is not a search checkpoint of this version")
        self.state = _State(
            phase=ck["phase"],
            iteration=int(ck["iteration"]),
            learners=ck["learners"],
            best={k: StageBest.from_state(v) for k, v in ck["best"].items()},
            teacher=ck["teacher"],
            final=ck.get("final", {}),
            supernet=ck.get("supernet", {}),
        )
        torch.set_rng_state(ck["torch_rng"])
        order = {p: i for i, p in enumerate(PHASES)}
        pos = (order[self.state.phase], self.state.iteration)
        kept = self.run_dir.truncate_history(lambda r: (order[r["stage"]], r["iteration"]) < pos)
        self.log(f"resuming at {self.state.phase} iteration {self.state.iteration} ({kept} history rows kept)")

    # -- setup -----------------------------------------------------------------------------------------
    def _reward_data(self) -> tuple[Any, LogitCache]:
        """The training data students (and the supernet) are distilled on, and its teacher logits."""
        train = self.splits.train_plain
        if self.cfg.reward_subset:
            train = self.splits.subset(train=self.cfg.reward_subset).train_plain
        self.log(f"teacher logits: caching on {len(train)} training samples")
        return train, LogitCache.build(self.device_teacher(), train, device=self.device)

    def _evaluator(self, train, cache: LogitCache) -> RewardEvaluator:
        cfg = self.cfg
        dcfg = DistillConfig(
            loss="l2",
            lr=cfg.resolved_reward_lr(),
            epochs=max(1, cfg.reward_epochs),
            steps=cfg.reward_steps or None,
            batch_size=cfg.batch_size,
            device=self.device,
            amp=cfg.amp,
            seed=cfg.seed,
        )
        constraints = Constraints.from_limits(
            max_params=cfg.max_params,
            max_flops=cfg.flops_limit(self.teacher_cost.flops),
            max_latency_ms=cfg.max_latency_ms,
        )
        horizon = max(1, cfg.removal_iterations + cfg.shrink_iterations * (1 + cfg.shrink_teacher))
        penalty = Penalty(cfg.penalty, cfg.penalty_schedule, horizon=horizon)
        val, teacher_acc = self.splits.val, self.state.teacher["val_accuracy"]
        subset = cfg.resolved_reward_val_subset()
        if subset and subset < len(val):
            val = self.splits.subset(val=subset).val
            teacher_acc = accuracy(self.device_teacher(), val, device=self.device)
        self.state.teacher["reward_accuracy"] = teacher_acc  # what students' accuracies compare with
        chance = majority_accuracy(val) if cfg.reward_accuracy == "above_chance" else 0.0
        self.state.teacher["reward_chance"] = chance  # and the accuracy R_a counts from
        return RewardEvaluator(
            train,
            val,
            teacher_accuracy=max(1e-6, teacher_acc),
            teacher_params=self.teacher_cost.params,
            input_size=self.splits.input_size,
            config=dcfg,
            logit_cache=cache,
            constraints=constraints,
            penalty=penalty,
            cache=self._reward_cache(),
            mode=cfg.reward_mode,
            calib_batches=cfg.calib_batches,
            supernet_tag=self.state.supernet[self.state.phase]["tag"] if self.supernet is not None else None,
            objective=Objective.of(cfg.objective, self.state.teacher),
            measure_latency=True,  # every student's latency is recorded, whatever the objective
            chance_accuracy=chance,
        )

    def _supernet(self, train, cache: LogitCache, space: str, remove: Sequence[str] = ()) -> Supernet:
        """The shared weights stage ``space`` scores its students with: loaded from the run
        directory, or trained once and saved there (``SUPERNET_FILES``).

        Stage 1's are trained from the teacher over removals; stage 2's go on from stage 1's over
        the shrinks of stage 1's winner ``remove`` (from the teacher when stage 1 did not run).
        Training time is part of the search time (``state.supernet[space]["wall_s"]``)."""
        path = self.run_dir.file(SUPERNET_FILES[space])
        record = self.state.supernet.get(space)
        net = None
        if space != "removal" and record is None and "removal" in self.state.supernet:  # go on from stage 1's
            keep = space == "shrink" and self.supernet is not None  # stage 1's, still in memory
            net = self.supernet if keep else self._supernet(train, cache, "removal")
        if net is None:
            net = Supernet(self.teacher, max_linear_growth=self.cfg.max_linear_growth)
        if record and path.is_file():
            saved = safe_torch_load(path)
            if not isinstance(saved, dict) or saved.get("format") != SUPERNET_FORMAT:
                raise CheckpointError(f"{path} is not a supernet checkpoint of this version; delete the run")
            net.load_flat(saved["flat"])
            if _tag(net) != record.get("tag"):
                raise CheckpointError(
                    f"{path} does not hold the weights this run trained; delete the run and start again"
                )
            self.log(f"supernet ({space}): loaded ({record['steps']} steps, {record['wall_s']:.0f} s)")
            return net
        scfg = self.cfg.supernet_config("removal" if space == "removal" else "shrink")
        what = "removals" if space == "removal" else f"shrinks of the {'stage-1 winner' if remove else 'teacher'}"
        self.log(
            f"supernet: training shared weights over {what} ({scfg.steps} steps, {2 + scfg.random_students} students a step)"
        )
        bar = self._bar(scfg.steps, f"supernet {space} (steps)")
        res = train_supernet(
            net,
            train,
            cache,
            scfg,
            space="removal" if space == "removal" else "shrink",
            remove=remove,
            device=self.device,
            on_step=lambda *_: bar.update(1),
        )
        bar.close()
        atomic_torch_save({"format": SUPERNET_FORMAT, "flat": net.flat.detach().cpu()}, path)
        self.state.supernet[space] = {**res.to_dict(), "tag": _tag(net), "remove": sorted(remove)}
        self.save_checkpoint()
        self.log(
            f"supernet ({space}): {res.steps} steps in {res.wall_s:.0f} s, "
            f"KD loss {res.losses[0]:.3f} -> {res.losses[-1]:.3f}"
            if res.losses
            else f"supernet ({space}): no training steps"
        )
        return net

    def _reward_cache(self) -> RewardCache:
        """The run's reward cache, without entries of an iteration the last checkpoint does not cover.

        A crash mid-iteration leaves its students' rewards in the cache but not their trained
        weights in the checkpoint; re-running that iteration must train them again, exactly
        as the uninterrupted run did."""
        cache = RewardCache(self.run_dir.file("reward_cache.json"))
        now = self._global_step()
        cache.discard_where(lambda e: int(e.get("step", 0)) >= now)
        return cache

    def _offset(self, stage: str) -> int:
        """The global step of ``stage``'s first iteration (the stages that run before it, counted)."""
        cfg = self.cfg
        if stage == "removal":
            return 0
        offset = cfg.removal_iterations if cfg.stage == "both" else 0
        return offset + (cfg.shrink_iterations if stage == "shrink_teacher" else 0)

    def _global_step(self) -> int:
        phase = self.state.phase
        return self._offset(phase) + self.state.iteration if phase in STAGE_ORDER else 1 << 30

    def _learner(self, stage: str) -> Learner:
        cfg = self.cfg
        ac = cfg.algo == "actor_critic"
        path = cfg.removal_policy if stage == "removal" else cfg.shrink_policy
        torch.manual_seed(cfg.seed * 7919 + 11 + STAGE_ORDER.index(stage))  # policy init
        if path:
            policy = load_policy(path)
            if ac and getattr(policy, "value", None) is None:
                raise ConfigError(f"{path} has no value head; actor_critic needs one (use --algo reinforce)")
        elif stage == "removal":
            policy = RemovalPolicy(
                RemovalPolicyConfig(feature_dim=FEATURE_DIM, remove_prior=cfg.remove_prior, value_head=ac)
            )
        else:
            policy = ShrinkPolicy(
                ShrinkPolicyConfig(
                    feature_dim=FEATURE_DIM, ratios=RATIOS, keep_bias=cfg.shrink_keep_bias, value_head=ac
                )
            )
        lr = cfg.removal_lr if stage == "removal" else cfg.shrink_lr
        seed = cfg.seed * 7919 + 1 + STAGE_ORDER.index(stage)
        learner = Learner(
            policy,
            LearnerConfig(
                algo=cfg.algo,
                lr=lr,
                rollouts=cfg.rollouts,
                baseline_decay=cfg.baseline_decay,
                baseline=cfg.reinforce_baseline,
                entropy_coef=cfg.entropy_coef,
                seed=seed,
            ),
        )
        if stage in self.state.learners:
            learner.load_state_dict(self.state.learners[stage])
        return learner

    # -- the stages ------------------------------------------------------------------------------------
    def _stage(
        self,
        stage: str,
        evaluator: RewardEvaluator,
        analysis: Analysis,
        base_actions: dict[str, Any],
    ) -> None:
        cfg = self.cfg
        offset = self._offset(stage)
        n_iter = cfg.removal_iterations if stage == "removal" else cfg.shrink_iterations
        layers = analysis.layers
        if stage == "removal":
            inputs = {
                "x": policy_input(layers),
                "removable": removal_mask(layers, passive=cfg.remove_passive),
            }
        else:
            steps = shrink_steps(layers, RATIOS)
            if not steps:
                self.log("shrink: nothing left to shrink")
                return
            x, var, legal = shrink_input(layers, steps)
            inputs = {"x": x, "variable": var, "legal": legal}
        learner = self._learner(stage)
        m = self.cfg.rollouts
        bar = self._bar(n_iter * m, f"stage {stage} (students)", self.state.iteration * m)
        while self.state.iteration < n_iter:
            it = self.state.iteration
            ro = learner.sample(**inputs)
            jobs, rewrites, all_acts = [], [], []
            for k in range(ro.actions.shape[0]):
                a = ro.actions[k]
                if stage == "removal":
                    acts = {"remove": [layers[i].node for i in range(len(layers)) if int(a[i]) == REMOVE]}
                else:
                    shr: dict[str, dict[str, float]] = {}
                    for st, ai in zip(steps, a.tolist(), strict=True):
                        shr.setdefault(st.node, {})[st.variable] = RATIOS[ai]
                    acts = {**base_actions, "shrink": shr}
                rw, student = self._student(analysis, acts, stage)
                step = offset + it
                seed = cfg.seed * 1_000_003 + step * 101 + k
                jobs.append(Job(student if student is not None else f"{rw.degenerate}", step, seed))
                rewrites.append(rw)
                all_acts.append(acts)
            start = bar.n
            self.executor.on_done = lambda: bar.update(1)
            records = self.executor.evaluate(evaluator, jobs)
            bar.update(max(0, start + len(jobs) - bar.n))  # executors that do not report per student
            rewards = []
            for k, (rw, acts, rec) in enumerate(zip(rewrites, all_acts, records, strict=True)):
                rewards.append(rec.reward)
                row = {
                    "stage": stage,
                    "iteration": it,
                    "rollout": k,
                    "step": offset + it,
                    "actions": acts.get("remove") if stage == "removal" else acts["shrink"],
                    "params": rec.params,
                    "flops": rec.flops,
                    "accuracy": rec.accuracy,
                    "latency_ms": rec.latency_ms,
                    "compression": rec.compression,
                    "objective_compression": rec.objective_compression,  # C of the reward (objective)
                    "arch": rec.arch,
                    "reward": rec.reward,
                    "raw_reward": rec.raw_reward,
                    "degenerate": rec.degenerate,
                    "violations": list(rec.violations),
                    "cache_hit": rec.cache_hit,
                    "surgery_s": rw.seconds,
                    "wall_s": rec.wall_s,
                }
                self.run_dir.append_history(row)
                best = self.state.best.get(_best_key(stage))
                trained = jobs[k].trained  # None: trained in place, in this process
                if (
                    rw.valid
                    and not rec.is_degenerate
                    and not rec.violations
                    and (best is None or rec.reward > best.reward)
                    and not rec.cache_hit
                ):
                    sd = trained if trained is not None else jobs[k].student.state_dict()
                    sd = {kk: v.detach().cpu().clone() for kk, v in sd.items()}
                    self.state.best[_best_key(stage)] = StageBest(rec.reward, rec.to_dict(), acts, sd)
            stats = learner.update(ro, rewards, **inputs)
            if stats.skipped:
                self.log(f"{stage} {it + 1}/{n_iter}: policy update skipped: {stats.skipped}")
            self.state.iteration = it + 1
            self.state.learners[stage] = learner.state_dict()
            evaluator.cache.save(self.run_dir.file("reward_cache.json"))
            save_policy(learner.policy, self.run_dir.file(f"policies/{stage}.pt"))
            self.save_checkpoint()  # last: it commits the iteration
            b = self.state.best.get(_best_key(stage))
            self.log(
                f"{stage} {it + 1}/{n_iter}: mean reward {stats.mean_reward:.3f}, best {b.reward if b else float('nan'):.3f}"
                + (f" ({b.record.get('params')} params, acc {b.record.get('accuracy', 0):.3f})" if b else "")
            )
        bar.close()

    def _removal_analysis(self) -> Analysis:
        return self.supernet.analysis if self.supernet is not None else analyze(self.teacher)

    def _student(self, analysis: Analysis, acts: dict[str, Any], stage: str) -> tuple[Rewrite, fx.GraphModule | None]:
        """The rewrite of one rollout and the student to score (None when degenerate).

        ``kd`` mode: the surgery on the stage's base (the teacher, or the best stage-1 student
        with its trained weights). Shared modes: the supernet's student, shared weights."""
        if self.supernet is not None:
            arch = self.supernet.arch(acts)
            return arch.rewrite, (self.supernet.extract(arch) if arch.valid else None)
        rw = apply_actions(
            analysis,
            remove=acts["remove"] if stage == "removal" else (),
            shrink=acts.get("shrink") if stage != "removal" else None,
            strict=False,
            max_linear_growth=self.cfg.max_linear_growth,
        )
        return rw, (rw.student if rw.valid else None)

    def _stage1_removal(self) -> list[str]:
        """The layers stage 1's best student removed (none when stage 1 did not run)."""
        best1 = self.state.best.get("removal")
        return sorted(best1.actions["remove"]) if best1 is not None else []

    def _shrink_teacher(self) -> bool:
        """Whether stage 2 also shrinks the teacher itself: asked for, and stage 1's winner removed something."""
        return self.cfg.shrink_teacher and bool(self._stage1_removal())

    def _base_for_shrink(self, stage: str = "shrink") -> tuple[Analysis, dict[str, Any]]:
        """The layers a shrink stage shrinks and the actions that made them: the best stage-1
        student's (``shrink``), or the teacher's own (``shrink_teacher``)."""
        best1 = self.state.best.get("removal") if stage == "shrink" else None
        remove = self._stage1_removal() if stage == "shrink" else []
        if self.supernet is not None:
            return self.supernet.stage1_analysis(remove), {"remove": remove}
        if best1 is None:
            return analyze(self.teacher), {"remove": []}
        r = rebuild_student(self.teacher, best1.actions, best1.state_dict, self.cfg.max_linear_growth)
        return analyze(r.student.eval()), {"remove": remove}

    def _final(self) -> None:
        """Train the best students with CE + λ·KD; keep the best validation epoch; record test accuracy.

        The weights the search measured count as epoch 0, so the shipped student is never worse
        on validation than the search reported; the log says which epoch was kept."""
        cfg = self.cfg
        dcfg = final_distill_config(cfg, self.device)
        b1, b2 = self.state.best.get("removal"), self.state.best.get("shrink")
        # the run's result is the best-rewarded student (stage 1 when stage 2 found nothing better)
        winner = "shrink" if b2 is not None and (b1 is None or b2.reward >= b1.reward) else "removal"
        for stage in ("removal", "shrink"):
            best = self.state.best.get(stage)
            if best is None or stage in self.state.final or (cfg.final_students == "winner" and stage != winner):
                continue
            r = rebuild_student(self.teacher, best.actions, best.state_dict, cfg.max_linear_growth)
            student = r.student
            searched = {k: v.detach().clone() for k, v in student.state_dict().items()}  # the fallback
            torch.manual_seed(cfg.seed)
            self.log(
                f"final training of the best {stage} student ({model_cost(student).params:,} params, {dcfg.epochs} epochs)"
            )
            ebar = self._bar(dcfg.epochs, f"final training ({stage})")
            res = distill(
                student,
                self.splits.train,
                dcfg,
                teacher=self.device_teacher(),
                val_data=self.splits.val,
                on_epoch=lambda *_, b=ebar: b.update(1),
            )
            ebar.close()
            fallback = None
            if res.degenerate or not _finite(student.state_dict()):
                # never ship a broken student: keep the weights it had when the search scored it
                fallback = f"final training {res.degenerate or 'gave non-finite weights'}; kept the search-time weights"
                if not _finite(searched):
                    raise CheckpointError(f"the best {stage} student's search-time weights are not finite either")
                student.load_state_dict(searched)
                self.log(f"final training of the best {stage} student: {fallback} (lower final_lr)")
            test_acc = accuracy(student, self.splits.test, device=self.device) if len(self.splits.test) else math.nan
            val_acc = accuracy(student, self.splits.val, device=self.device) if len(self.splits.val) else math.nan
            student.cpu().eval()  # saved and shipped from the CPU
            searched = best.record.get("accuracy")
            self.log(
                f"final {stage}: kept epoch {res.best_epoch} of {res.epochs} (val acc {val_acc:.4f}; "
                f"the search measured {searched if searched is not None else float('nan'):.4f})"
            )
            cost = model_cost(student)
            name = "student_stage1" if stage == "removal" else "student_stage2"
            atomic_torch_save(
                {
                    "format": "n2n_fx.student/1",
                    "actions": best.actions,
                    "state_dict": student.state_dict(),
                    "params": cost.params,
                    "flops": cost.flops,
                },
                self.run_dir.file(f"{name}.pt"),
            )
            atomic_write_text(self.run_dir.file(f"{name}.py"), student.code)
            atomic_write_text(self.run_dir.file(f"{name}_diff.txt"), r.diff.table() + "\n")
            self.run_dir.write_json(f"{name}_diff.json", json.loads(r.diff.to_json()))
            self.state.final[stage] = {
                "test_accuracy": test_acc,
                "val_accuracy": val_acc,
                "params": cost.params,
                "flops": cost.flops,
                "diverged": res.degenerate,
                "fallback": fallback,  # why the search-time weights were kept, or None
                "epochs": dcfg.epochs,
                "best_epoch": res.best_epoch,
                "search_val_accuracy": searched,
                "file": f"{name}.pt",
            }
            self.save_checkpoint()
        self.state.final["winner"] = winner
        name = "student_stage1" if winner == "removal" else "student_stage2"
        for ext in (".pt", ".py", "_diff.txt", "_diff.json"):
            src = self.run_dir.file(f"{name}{ext}")
            if src.is_file():
                atomic_write_bytes(self.run_dir.file(f"student{ext}"), src.read_bytes())

    # -- main ------------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> _State:
        cfg = self.cfg
        if resume:
            self.load_checkpoint()
        else:
            self.state.phase = "removal" if cfg.stage in ("removal", "both") else "shrink"
        if not self.state.teacher:
            t0 = time.perf_counter()
            teacher = self.device_teacher()
            val = accuracy(teacher, self.splits.val, device=self.device) if len(self.splits.val) else math.nan
            test = accuracy(teacher, self.splits.test, device=self.device) if len(self.splits.test) else math.nan
            self.state.teacher = {
                "val_accuracy": val,
                "test_accuracy": test,
                "params": self.teacher_cost.params,
                "flops": self.teacher_cost.flops,
                "eval_s": time.perf_counter() - t0,
            }
            if not val > 0:
                raise ConfigError("the teacher has zero validation accuracy; train it first (n2n-fx train-teacher)")
            self.save_checkpoint()
        if self.state.teacher.get("latency_device") != self.device:  # students are timed the same way
            ms = latency_ms(self.teacher, self.splits.input_size, device=self.device)
            self.state.teacher.update(latency_ms=ms, latency_device=self.device)
            self.save_checkpoint()
        evaluator = None
        shared = cfg.reward_mode != "kd"
        if self.state.phase in STAGE_ORDER:
            train, cache = self._reward_data()
            if shared:  # the shared weights of the stage the run is in
                remove = self._stage1_removal() if self.state.phase == "shrink" else ()
                self.supernet = self._supernet(train, cache, self.state.phase, remove)
            evaluator = self._evaluator(train, cache)
        if self.state.phase == "removal":
            self._stage("removal", evaluator, self._removal_analysis(), {})
            self.state.phase, self.state.iteration = (
                ("shrink" if cfg.stage == "both" else "final"),
                0,
            )
            self.save_checkpoint()
        for stage, after in (("shrink", "shrink_teacher"), ("shrink_teacher", "final")):
            if self.state.phase != stage:
                continue
            if shared and stage not in self.state.supernet:  # the stage before ran in this process
                # the stage's own shared weights: stage 1's, trained on over the shrinks of its base
                remove = self._stage1_removal() if stage == "shrink" else ()
                self.supernet = self._supernet(train, cache, stage, remove)
                evaluator.supernet_tag = self.state.supernet[stage]["tag"]
            base, base_actions = self._base_for_shrink(stage)
            self._stage(stage, evaluator, base, base_actions)
            if after == "shrink_teacher" and not self._shrink_teacher():
                after = "final"
            self.state.phase, self.state.iteration = after, 0
            self.save_checkpoint()
        self.executor.close()  # rollouts done: stop local workers / Ray actors
        if self.state.phase == "final":
            if not any(self.state.best.values()):
                lifted = " (--max-flops-ratio none lifts the default FLOPs limit)" if cfg.max_flops_ratio else ""
                raise RunDirError(f"no valid student was found; raise the iterations or loosen the constraints{lifted}")
            self._final()
            self.state.phase = "done"
            self.save_checkpoint()
        return self.state
