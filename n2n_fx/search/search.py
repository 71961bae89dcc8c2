"""Paper Algorithm 1: the two-stage search, one checkpointed iteration at a time.

Stage 1 samples m removal rollouts per iteration from the removal policy on the teacher;
each becomes a student (surgery) and a reward (KD evaluation); the policy then takes one
REINFORCE step. The best stage-1 student (trained weights) is stage 2's starting point,
where the shrink policy acts the same way (``shrink_teacher``: on the teacher's full depth
too). The best students are trained to convergence with CE + λ·KD. After every iteration
the whole search state is written atomically, so a crash or kill loses at most the
iteration in flight (``resume``).

The parts, one module each: ``state`` (stages, bests, checkpoint), ``stages`` (the loop of
one stage), ``shared_weights`` (a supernet per stage), ``final`` (final training); this
module wires them: setup, reward evaluator, the phase machine.
"""

from __future__ import annotations

import copy
import logging
import math
import random
import time
from typing import Any

import torch
from torch import fx

from ..distill import DistillConfig, LogitCache, accuracy
from ..errors import ConfigError, RunDirError
from ..graph.cost import model_cost
from ..graph.layers import analyze
from ..reward import Constraints, Objective, Penalty, RewardCache, RewardEvaluator, latency_ms
from ..rewrite.sample import legal_remove_prior
from ..rundir import RunDir
from ..seeds import derive_seed
from ..supernet import Supernet
from ..teacher.quality import majority_accuracy
from .config import SearchConfig
from .executors import make_executor
from .final import FinalTraining, final_distill_config, rebuild_student
from .shared_weights import SharedWeights
from .stages import StageLoop
from .state import CKPT_FORMAT, PHASES, STAGE_ORDER, SearchState, StageBest

__all__ = [
    "CKPT_FORMAT",
    "STAGE_ORDER",
    "Search",
    "StageBest",
    "final_distill_config",
    "rebuild_student",
]

logger = logging.getLogger(__name__)


class Search(StageLoop, SharedWeights, FinalTraining):
    """One compression run over a run directory (fresh or resumed)."""

    def __init__(
        self,
        cfg: SearchConfig,
        run: RunDir,
        teacher: fx.GraphModule,
        splits,
    ) -> None:
        self.cfg = cfg
        self.run_dir = run
        self.teacher = teacher.eval()
        self.splits = splits
        self.device = cfg.resolved_device()
        self.state = SearchState()
        self.teacher_cost = model_cost(teacher)
        self.executor = make_executor(cfg)
        self._remove_prior: float | None = None  # resolved once (remove_prior())
        self.supernet: Supernet | None = None  # shared reward modes: the trained shared weights
        self._on_device: fx.GraphModule | None = None  # the teacher's copy on self.device (device_teacher)

    def device_teacher(self) -> fx.GraphModule:
        """The teacher on the run's device, for everything that runs it (accuracy, logit cache, final KD).

        ``self.teacher`` stays on the CPU: surgery reads its weights and students are built there."""
        if self._on_device is None:
            on_cpu = torch.device(self.device).type == "cpu"
            self._on_device = self.teacher if on_cpu else copy.deepcopy(self.teacher).to(self.device).eval()
        return self._on_device

    # -- checkpoint ------------------------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        self.state.save(self.run_dir.file("checkpoint.pt"))

    def load_checkpoint(self) -> None:
        self.state = SearchState.load(self.run_dir.file("checkpoint.pt"))
        order = {p: i for i, p in enumerate(PHASES)}
        pos = (order[self.state.phase], self.state.iteration)
        kept = self.run_dir.truncate_history(lambda r: (order[r["stage"]], r["iteration"]) < pos)
        logger.info(f"resuming at {self.state.phase} iteration {self.state.iteration} ({kept} history rows kept)")

    # -- setup -----------------------------------------------------------------------------------------
    def remove_prior(self) -> float:
        """P(remove) per layer of a fresh removal policy and the removal supernet's rates: the config's,
        or (None) the first rate at which 40 % of random removals of the teacher are legal."""
        cfg = self.cfg
        if cfg.remove_prior is not None:
            return cfg.remove_prior
        if self._remove_prior is not None:
            return self._remove_prior
        cap = None if cfg.max_flops_ratio is None else cfg.max_flops_ratio * self.teacher_cost.flops
        rng = random.Random(derive_seed(cfg.seed, "remove_prior"))
        prior, measured = legal_remove_prior(analyze(self.teacher), rng, cap, passive=cfg.remove_passive)
        tried = ", ".join(f"{share:.0%} at {rate}" for rate, share in measured.items())
        logger.info(f"removal start: P(remove) {prior} per layer (legal random students: {tried})")
        self._remove_prior = prior
        return prior

    def _reward_train(self):
        """The training data students (and the supernet) are distilled and recalibrated on."""
        if self.cfg.reward_subset:
            return self.splits.subset(train=self.cfg.reward_subset).train_plain
        return self.splits.train_plain

    def _reward_data(self) -> tuple[Any, LogitCache]:
        """The training data students (and the supernet) are distilled on, and its teacher logits."""
        train = self._reward_train()
        logger.info(f"teacher logits: caching on {len(train)} training samples")
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
            reward_fn=cfg.reward_fn,
        )

    def _reward_cache(self) -> RewardCache:
        """The run's reward cache, without entries of an iteration the last checkpoint does not cover.

        A crash mid-iteration leaves its students' rewards in the cache but not their trained
        weights in the checkpoint; re-running that iteration must train them again, exactly
        as the uninterrupted run did."""
        cache = RewardCache(self.run_dir.file("reward_cache.json"))
        now = self._global_step()
        cache.discard_where(lambda e: int(e.get("step", 0)) >= now)
        return cache

    # -- main ------------------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> SearchState:
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
            # stage 2 will narrow stage 1's winner: stage 1 judges a parameter limit on each student's narrowest shrink
            evaluator.reachable = cfg.stage == "both"
            evaluator.reachable_kernels = cfg.shrink_kernels
            self._stage("removal", evaluator, self._removal_analysis(), {})
            evaluator.reachable = False
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
