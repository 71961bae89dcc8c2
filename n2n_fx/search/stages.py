"""The search's stage loop (paper Algorithm 1): per iteration m rollouts from the stage's policy,
their students and rewards, one policy update, the stage's best, an atomic checkpoint."""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Any

import torch
from torch import fx

from ..errors import ConfigError
from ..features import FEATURE_DIM, RATIOS
from ..graph.layers import Analysis, analyze
from ..policy import Learner, LearnerConfig, PolicySettings, load_policy, make_policy, policy_name, save_policy
from ..progress import progress_bar
from ..reward import RewardEvaluator
from ..rewrite import Rewrite
from ..rewrite.sample import KEEP_BIASES, legal_keep_bias
from ..seeds import derive_seed
from .executors import Job
from .final import rebuild_student
from .stage import Stage, make_stage
from .state import STAGE_ORDER, StageBest, best_key

__all__ = ["StageLoop", "learner_seed"]


def learner_seed(seed: int, stage: str) -> int:
    """The seed of ``stage``'s learner (its rollout sampling) in a run seeded ``seed``."""
    return derive_seed(seed, "sampling", stage)


logger = logging.getLogger(__name__)


class StageLoop:
    """``Search``'s stages (a mixin: it reads the search's config, state, executor and supernet)."""

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

    def _policy_settings(self, stage: Stage) -> PolicySettings:
        """What a fresh policy of ``stage`` is built with (``policy.registry.make_policy``); only a removal
        policy needs the removal start, so a shrink stage never measures it."""
        cfg = self.cfg
        settings = PolicySettings(feature_dim=FEATURE_DIM, ratios=RATIOS, value_head=cfg.algo == "actor_critic")
        if stage.kind == "removal":
            return dataclasses.replace(settings, remove_prior=self.remove_prior())
        return dataclasses.replace(settings, keep_bias=self.keep_bias(stage.name, stage.analysis))

    def keep_bias(self, stage: str, analysis: Analysis) -> float:
        """The logit slope a fresh shrink policy of ``stage`` starts at (and its supernet draws random
        students at): the config's, or (None) the mild default unless a parameter limit needs narrower
        random shrinks of the stage's base ``analysis`` to be legal. Measured once per stage and run."""
        cfg = self.cfg
        if cfg.shrink_keep_bias is not None:
            return cfg.shrink_keep_bias
        if cfg.max_params is None:
            return KEEP_BIASES[0]
        known = self.state.keep_bias.get(stage)
        if known is not None:
            return known
        rng = random.Random(derive_seed(cfg.seed, "keep_bias", stage))
        bias, measured = legal_keep_bias(analysis, rng, cfg.max_params, kernels=cfg.shrink_kernels)
        tried = ", ".join(f"{share:.0%} at {b:g}" for b, share in measured.items())
        logger.info(f"{stage}: shrink start: ratio logits {bias:g} * r (random shrinks within max_params: {tried})")
        self.state.keep_bias[stage] = bias
        return bias

    def _policy(self, stage: Stage):
        """The policy ``stage`` starts from: its saved one (transfer), or a fresh one of its registered type."""
        if not stage.pretrained:
            return make_policy(stage.kind, stage.policy_type, self._policy_settings(stage))
        policy = load_policy(stage.pretrained)
        if (policy.kind, policy_name(policy)) != (stage.kind, stage.policy_type):
            raise ConfigError(
                f"{stage.pretrained} holds a {policy_name(policy)} {policy.kind} policy; stage {stage.name} "
                f"samples from a {stage.policy_type} {stage.kind} policy (give a {stage.kind} policy file, or its type)"
            )
        return policy

    def _learner(self, stage: Stage) -> Learner:
        cfg = self.cfg
        torch.manual_seed(derive_seed(cfg.seed, "policy_init", stage.name))
        policy = self._policy(stage)
        learns = any(p.requires_grad for p in policy.parameters())
        if cfg.algo == "actor_critic" and learns and getattr(policy, "value", None) is None:
            where = stage.pretrained or f"the {stage.policy_type} {stage.kind} policy"
            raise ConfigError(f"{where} has no value head; actor_critic needs one (use --algo reinforce)")
        seed = learner_seed(cfg.seed, stage.name)
        learner = Learner(
            policy,
            LearnerConfig(
                algo=cfg.algo,
                lr=stage.lr,
                rollouts=cfg.rollouts,
                baseline_decay=cfg.baseline_decay,
                baseline=cfg.reinforce_baseline,
                entropy_coef=cfg.entropy_coef,
                seed=seed,
            ),
        )
        if stage.name in self.state.learners:
            learner.load_state_dict(self.state.learners[stage.name])
        return learner

    def _stage(
        self,
        name: str,
        evaluator: RewardEvaluator,
        analysis: Analysis,
        base_actions: dict[str, Any],
    ) -> None:
        cfg = self.cfg
        stage = make_stage(name, cfg, analysis, base_actions)
        offset = self._offset(name)
        n_iter = stage.iterations
        inputs = stage.inputs()
        if inputs is None:
            logger.info(f"{name}: nothing left to {stage.kind}")
            return
        learner = self._learner(stage)
        m = self.cfg.rollouts
        bar = progress_bar(n_iter * m, f"stage {name} (students)", self.state.iteration * m)
        while self.state.iteration < n_iter:
            it = self.state.iteration
            ro = learner.sample(**inputs)
            jobs, rewrites, all_acts = [], [], []
            for k in range(ro.actions.shape[0]):
                acts = stage.decode(ro.actions[k])
                rw, student = self._student(stage, acts)
                step = offset + it
                seed = derive_seed(cfg.seed, "student", step, k)  # its training
                jobs.append(Job(student if student is not None else rw.degenerate, step, seed))
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
                    "stage": name,
                    "iteration": it,
                    "rollout": k,
                    "step": offset + it,
                    "actions": stage.recorded(acts),
                    "params": rec.params,
                    "flops": rec.flops,
                    "accuracy": rec.accuracy,
                    "latency_ms": rec.latency_ms,
                    "compression": rec.compression,
                    "objective_compression": rec.objective_compression,  # C of the reward (objective)
                    "arch": rec.arch,
                    "reward": rec.reward,
                    "raw_reward": rec.raw_reward,
                    "degenerate": None if rec.degenerate is None else str(rec.degenerate),  # "reason: detail"
                    "violations": list(rec.violations),
                    # stage 1 of a two-stage run under a parameter limit: what its narrowest shrink breaks
                    "floor_violations": None if rec.floor_violations is None else list(rec.floor_violations),
                    "cache_hit": rec.cache_hit,
                    "surgery_s": rw.seconds,
                    "wall_s": rec.wall_s,
                }
                self.run_dir.append_history(row)
                best = self.state.best.get(best_key(name))
                trained = jobs[k].trained  # None: trained in place, in this process
                if (
                    rw.valid
                    and not rec.is_degenerate
                    and not rec.blocking
                    and (best is None or rec.reward > best.reward)
                    and not rec.cache_hit
                ):
                    sd = trained if trained is not None else jobs[k].student.state_dict()
                    sd = {kk: v.detach().cpu().clone() for kk, v in sd.items()}
                    self.state.best[best_key(name)] = StageBest(rec.reward, rec.to_dict(), acts, sd)
            stats = learner.update(ro, rewards, **inputs)
            if stats.skipped:
                logger.info(f"{name} {it + 1}/{n_iter}: policy update skipped: {stats.skipped}")
            self.state.iteration = it + 1
            self.state.learners[name] = learner.state_dict()
            evaluator.cache.save(self.run_dir.file("reward_cache.json"))
            save_policy(learner.policy, self.run_dir.file(f"policies/{name}.pt"))
            self.save_checkpoint()  # last: it commits the iteration
            b = self.state.best.get(best_key(name))
            logger.info(
                f"{name} {it + 1}/{n_iter}: mean reward {stats.mean_reward:.3f}, best {b.reward if b else float('nan'):.3f}"
                + (f" ({b.record.get('params')} params, acc {b.record.get('accuracy', 0):.3f})" if b else "")
            )
        bar.close()

    def _removal_analysis(self) -> Analysis:
        return self.supernet.analysis if self.supernet is not None else analyze(self.teacher)

    def _student(self, stage: Stage, acts: dict[str, Any]) -> tuple[Rewrite, fx.GraphModule | None]:
        """The rewrite of one rollout and the student to score (None when degenerate).

        ``kd`` mode: the stage's surgery on its base (the teacher, or the best stage-1 student
        with its trained weights). Shared modes: the supernet's student, shared weights."""
        if self.supernet is not None:
            arch = self.supernet.arch(acts)
            return arch.rewrite, (self.supernet.extract(arch) if arch.valid else None)
        rw = stage.rewrite(acts, self.cfg.max_linear_growth)
        return rw, (rw.student if rw.valid else None)

    def _stage1_removal(self) -> list[str]:
        """The layers stage 1's best student removed (none when stage 1 did not run). When every student
        of stage 1 broke a constraint (a parameter limit removals alone cannot meet, say), its valid student
        of best raw reward: stage 2 may still narrow it within the limits, where the teacher may not."""
        best1 = self.state.best.get("removal")
        if best1 is not None:
            return sorted(best1.actions["remove"])
        row = self._stage1_unconstrained_best()
        return sorted(row["actions"]) if row is not None else []

    def _stage1_unconstrained_best(self) -> dict[str, Any] | None:
        """Stage 1's valid student of best raw reward (constraints aside), the first of equals; None
        when stage 1 scored none."""
        rows = [r for r in self.run_dir.history() if r["stage"] == "removal" and r["degenerate"] is None]
        return max(rows, key=lambda r: r["raw_reward"], default=None)

    def _shrink_teacher(self) -> bool:
        """Whether stage 2 also shrinks the teacher itself: asked for, and stage 1's winner removed something."""
        return self.cfg.shrink_teacher and bool(self._stage1_removal())

    def _base_for_shrink(self, stage: str = "shrink") -> tuple[Analysis, dict[str, Any]]:
        """The layers a shrink stage shrinks and the actions that made them: the best stage-1
        student's (``shrink``), or the teacher's own (``shrink_teacher``)."""
        best1 = self.state.best.get("removal") if stage == "shrink" else None
        remove = self._stage1_removal() if stage == "shrink" else []
        if stage == "shrink" and best1 is None and remove:
            logger.info(
                f"stage 1 found no student within the constraints: stage 2 narrows its best-rewarded valid one "
                f"(removing {', '.join(remove)})"
            )
        if self.supernet is not None:
            return self.supernet.stage1_analysis(remove), {"remove": remove}
        growth = self.cfg.max_linear_growth
        if best1 is not None:
            student = rebuild_student(self.teacher, best1.actions, best1.state_dict, growth).student
        elif remove:  # the teacher's weights: stage 1 trained none of the students it refused
            student = rebuild_student(self.teacher, {"remove": remove}, None, growth).student
        else:
            student = self.teacher
        return analyze(student.eval()), {"remove": remove}
