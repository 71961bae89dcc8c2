"""The one configuration of a compression run: every choice, with a sensible default."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

from ..errors import ConfigError
from ..features import RATIOS
from ..policy.learner import LearnerConfig
from ..policy.registry import policy_names
from ..reward import Constraints, Penalty, reward_names
from ..supernet.train import SupernetConfig
from .fields import check_fields

__all__ = ["SearchConfig", "STAGES", "load_config_file"]

# the choices of the string-valued fields (check_fields and the CLI's `choices` read them from the annotations;
# the registry-backed ones must name what their registry holds: tests/test_cli.py checks that)
Stage = Literal["removal", "shrink", "both"]
FinalLoss = Literal["ce+kl", "ce+l2"]  # final training: CE plus a KD term (distill.loss)
RewardAccuracy = Literal["above_chance", "ratio"]  # how the reward's R_a reads a student's accuracy
Algo = Literal["reinforce", "actor_critic"]  # policy.learner
Baseline = Literal["ema", "batch"]  # policy.learner.BASELINES
RewardMode = Literal["kd", "shared", "shared+kd"]  # reward.REWARD_MODES
ObjectiveName = Literal["params", "flops", "latency"]  # reward.OBJECTIVES
PenaltyMode = Literal["anneal", "hard", "none"]  # reward.PENALTY_MODES
PenaltySchedule = Literal["linear", "exponential"]  # reward.SCHEDULES
ExecutorName = Literal["sequential", "local", "ray"]  # search.executors.EXECUTORS
FinalStudents = Literal["winner", "both"]  # which stage bests get the final training
STAGES = get_args(Stage)


@dataclass(frozen=True)
class SearchConfig:
    """Everything a run depends on. Defaults give a complete few-minute CPU run on synthetic data."""

    # -- teacher and data ---------------------------------------------------------------------
    model: str = "vgg_tiny"  # teacher architecture: a project model or torchvision classifier (`n2n-fx models`)
    dataset: str = "synthetic"  # data set name (`n2n-fx datasets`; n2n_fx.data.dataset_names())
    data_root: str | None = None  # where data sets live (None: the default data root)
    download: bool = False  # let torchvision download a missing data set
    # data set options, e.g. augment=crop, image_size=32, val_size=0.1 (`n2n-fx datasets` lists each data set's;
    # None: its defaults; synthetic: 2400 samples)
    dataset_options: dict[str, Any] | None = None
    teacher_checkpoint: str | None = None  # trained teacher (n2n-fx train-teacher); None: train one, cached
    # teacher trained on the fly: at most this many epochs, stopped when validation accuracy
    # plateaus (teacher_patience) and the best epoch kept (4 fixed epochs gave a 71% teacher, issue 19)
    teacher_epochs: int = 30
    teacher_patience: int = 3  # epochs without progress before lr/10, then as many before stopping
    # -- search (paper Algorithm 1) -----------------------------------------------------------
    stage: Stage = "both"  # "removal", "shrink" or "both"
    removal_iterations: int = 60  # N1: policy updates of the removal stage
    shrink_iterations: int = 30  # N2: policy updates of the shrink stage
    rollouts: int = 5  # m: students sampled per update (paper: 5)
    removal_lr: float = 0.03  # Adam lr of the removal policy (paper: 0.003)
    shrink_lr: float = 0.01  # Adam lr of the shrink policy (paper: 0.01)
    # P(remove) of a fresh removal policy on each removable layer (the paper's uniform start: 0.5); the
    # removal supernet trains students drawn at removal rates U(0, min(0.6, 2 * remove_prior)): the
    # rates a fresh policy draws, and never so many removals that nothing is left to learn. None (auto):
    # 0.5 where at least 40 % of 128 students drawn at 0.5 are legal (valid, within max_flops_ratio), else
    # the first of 0.4, 0.3, 0.2, 0.1 where they are (rewrite.legal_remove_prior). VGG-13 and resnet18
    # draw about 20 % legal students at 0.5: their removal policies collapsed onto removing everything or
    # nothing (docs/results.md); they start at 0.1-0.3. vgg_tiny (56-64 %) and conv4 (83-89 %) keep 0.5
    remove_prior: float | None = None
    # let the removal policy decide passive layers too (norms, activations, gates, dropout), as the
    # paper's action space does; they cost nothing, so by default they stay (docs/usage.md)
    remove_passive: bool = False
    # stage 2 also shrinks the teacher itself (full depth, its own shared weights and policy, as many
    # updates as the shrink of stage 1's winner); the better-rewarded of the two is the stage-2 student.
    # Stage 1 may remove layers a uniformly narrowed full-depth student keeps to its profit (docs/usage.md)
    shrink_teacher: bool = False
    # fresh shrink policy: the logit of ratio r starts at bias * r (3: mean ratio ~0.75). None (auto): 3, or
    # under max_params the first of 3, 1.5, 0, -2, ... at which 40 % of such random shrinks of the stage's
    # base are within the limit (VGG-13 asked for 127x: its stage-1 student had to shrink 15x more)
    shrink_keep_bias: float | None = None
    # stage 2 also chooses kernel sizes (centre crops of a conv's kernel, as the paper's stage 2 does); by
    # default it chooses channels and heads only. The shared weights read kernel cuts too high: conv4 on
    # MNIST-10k, `--stage shrink`, two teachers, 5 final-training seeds: with kernels 98.29 % at 9.1x and
    # 98.81 % at 6.7x (two kernels cut to 1x1), channels only 98.48 % at 10.5x and 99.19 % at 13.0x
    # (docs/usage.md). The paper's experiments (benchmarks/paper) turn kernels on
    shrink_kernels: bool = False
    algo: Algo = "reinforce"  # "reinforce" (EMA baseline) or "actor_critic"
    baseline_decay: float = 0.9  # EMA decay of the REINFORCE baseline
    # REINFORCE baseline: "ema" (paper: moving average of mean rewards) or "batch" (leave-one-out
    # mean of the other rollouts of the update; not consistently better, docs/results.md)
    reinforce_baseline: Baseline = "ema"
    entropy_coef: float = 0.0  # entropy bonus weight
    removal_policy: str | None = None  # pre-trained removal policy to start from (transfer)
    shrink_policy: str | None = None  # pre-trained shrink policy to start from (transfer)
    # the policy stage 1 samples from, a registered name (n2n_fx.policy.register_policy): "bilstm" (the paper's
    # bidirectional LSTM, learned) or "uniform" (each removable layer removed at remove_prior, nothing learned:
    # random search)
    removal_policy_type: str = "bilstm"
    # the policy stage 2 samples from: "lstm" (the paper's autoregressive LSTM, learned) or "uniform" (each
    # variable's ratio drawn uniformly from its legal ones, nothing learned: random search)
    shrink_policy_type: str = "lstm"
    max_linear_growth: float = 8.0  # a Linear whose input grows more than this is degenerate
    # -- reward evaluation (students trained briefly by KD, paper §3.5) -----------------------
    # how a student's accuracy is read: "kd" (paper: inherited teacher weights, reward_steps of KD),
    # "shared" (weights of a supernet trained once per run, batch norms recalibrated, no training),
    # "shared+kd" (shared weights, then reward_steps of KD)
    reward_mode: RewardMode = "shared"
    # what the reward's compression C = 1 − student/teacher is taken on: "params" (paper), "flops"
    # (per sample) or "latency" (median batch-1 ms on `device`); all three are recorded for every student
    objective: ObjectiveName = "params"
    # the reward's accuracy term: "above_chance" ((A − chance) / (A_teacher − chance), chance = the
    # majority class's share of the validation split: a student that guesses is worth 0) or "ratio"
    # (the paper's A / A_teacher, under which chance-level students earn 0.1·C(2 − C) on ten classes
    # and the default run's removal policy learned to remove 18 of 24 layers; docs/usage.md)
    reward_accuracy: RewardAccuracy = "above_chance"
    # the reward function, a registered name (n2n_fx.reward.register_reward): "paper" (R = C(2 − C) · R_a,
    # §3.3) or "accuracy_squared" (C(2 − C) · R_a²: each point of relative accuracy costs about two of
    # reward, for students that must keep the teacher's accuracy; n2n_fx/reward/accuracy_squared.py)
    reward_fn: str = "paper"
    # optimiser steps (batch 32) training stage 1's shared weights over removals (shared modes)
    supernet_steps: int = 400
    # optimiser steps going on from them over the shrinks of stage 1's winner, before stage 2; None: supernet_steps.
    # The built-in data, seeds 0-2: 300 steps gave 3.3-4.6x students, 1500 gave 5.0-8.5x, all within 0.35
    # points (narrow students read too low with few steps, so the reward stopped at wide ones; docs/usage.md)
    supernet_shrink_steps: int | None = 1500
    supernet_lr: float = 2e-3  # Adam lr of the shared weights (cosine-annealed)
    supernet_students: int = 2  # random students per supernet step, besides the full and narrowest ones
    # seconds between saves of a supernet training's progress to the run directory: a run killed in the
    # middle of it goes on from the last save when resumed (0: after every step)
    supernet_checkpoint_s: float = 60.0
    # training batches that recalibrate a shared-weight student's batch norms (conv4: 2, 4 and 8 batches
    # of 64 rank students alike, τ 0.70 / 0.695 / 0.695)
    calib_batches: int = 2
    reward_steps: int = 40  # optimiser steps of KD per student (0: use reward_epochs)
    reward_epochs: int = 1  # epochs of KD per student when reward_steps is 0 (paper: 5)
    # Adam lr of the reward-time KD; None: 1e-2 in kd mode (on MNIST-10k, 60 steps at 1e-3 left most
    # conv4 students near chance; 1e-2 gave 0.73 mean accuracy, 3e-3 0.64), 1e-3 in shared+kd mode
    # (shared weights are already good: 10 steps at 1e-2 took a 0.95 student to 0.33)
    reward_lr: float | None = None
    batch_size: int = 64  # KD batch size
    reward_subset: float | None = None  # train on a stratified part of the training split (count or fraction)
    # score rewards on a stratified part of the validation split (count or fraction; the teacher's
    # reward accuracy too). None: all of it in kd mode, 300 samples in the shared modes, where reading
    # accuracy is the whole cost (conv4, MNIST-10k: τ vs 400-step KD 0.708 on 300, 0.695 on all 1000)
    reward_val_subset: float | None = None
    # -- constraints (paper §3.3.1) -------------------------------------------------------------
    max_params: float | None = None  # student parameters <= this
    max_flops: float | None = None  # student FLOPs per sample <= this
    # student FLOPs <= this multiple of the teacher's (None: no such limit): by default a student never
    # costs more compute than its teacher (removing a pooling layer or a stride can raise FLOPs 2-4x)
    max_flops_ratio: float | None = 1.0
    max_latency_ms: float | None = None  # student CPU latency (batch 1, median) <= this
    penalty: PenaltyMode = "anneal"  # "anneal" (ε_t(R+1)−1), "hard" (−1) or "none"
    penalty_schedule: PenaltySchedule = "linear"  # how ε_t decays: "linear" or "exponential"
    # -- final training (CE + λ·KD) ---------------------------------------------------------------
    # who gets it: "winner" (the run's result: the best-rewarded student of either stage) or "both" (each
    # stage's best, the two rows of the paper's Table 1: twice the final training time)
    final_students: FinalStudents = "winner"
    # the most validation accuracy (points) the run's result may lose against its teacher after final
    # training (None: no limit, the paper's pick). Over it, the final phase trains the best-rewarded
    # student the search read as more accurate, and so on (at most final_candidates in all), and ships
    # the first within it (none: the most accurate). The paper's reward alone gave the built-in data's
    # seeds 5.3-8.8x at 1.15-1.35 points below; docs/usage.md
    max_accuracy_drop: float | None = 1.0
    final_candidates: int = 4  # students at most trained to convergence to find one within max_accuracy_drop
    final_epochs: int = 10  # epochs of final training of the best students (cosine lr decay, best val epoch kept)
    # the KD term: "ce+kl" (T=4 soft targets) or "ce+l2" (the paper's logit L2). conv4 on the built-in
    # data, an 8x student, 10 cosine epochs from 3e-3: test acc 97.5 % with ce+kl, 96.9 % with ce+l2
    final_loss: FinalLoss = "ce+kl"
    final_lambda: float = 1.0  # λ of CE + λ·KD
    final_lr: float = 3e-3  # Adam lr of the final training (cosine-annealed to 0)
    # -- run ---------------------------------------------------------------------------------------
    executor: ExecutorName = "sequential"  # who trains the m students of an iteration: sequential, local, ray
    workers: int = 2  # local worker processes / Ray actors (0: one per core, or per GPU on CUDA)
    ray_address: str | None = None  # Ray cluster address for the ray executor (None: start a local Ray)
    # torch threads that train each student, in every executor (None: sequential keeps torch's
    # setting, workers take cores // workers). Set it to get bit-identical results across executors.
    rollout_threads: int | None = None
    seed: int = 0  # seeds data splits, policies and every student's training
    device: str = "auto"  # "auto", "cpu" or "cuda"
    amp: bool = False  # bfloat16 autocast for KD training on CUDA

    def __post_init__(self) -> None:
        # every field: its annotated type (a Literal: one of its values), finite numbers in range (search/fields.py)
        check_fields(self)
        for name, kind in (("removal_policy_type", "removal"), ("shrink_policy_type", "shrink")):
            if getattr(self, name) not in policy_names(kind):
                raise ConfigError(
                    f"{name} {getattr(self, name)!r} is not a registered {kind} policy; use one of "
                    f"{', '.join(policy_names(kind))}"
                )
        if self.reward_fn not in reward_names():
            raise ConfigError(
                f"reward_fn {self.reward_fn!r} is not a registered reward function; use one of {', '.join(reward_names())}"
            )
        for name in ("removal_iterations", "shrink_iterations", "rollouts", "batch_size"):
            if getattr(self, name) < (0 if "iterations" in name else 1):
                raise ConfigError(f"{name}={getattr(self, name)} must be positive")
        if self.calib_batches < 1:
            raise ConfigError(f"calib_batches={self.calib_batches} must be at least 1")
        if self.teacher_epochs < 1 or self.teacher_patience < 0:
            raise ConfigError("teacher_epochs must be >= 1 and teacher_patience >= 0")
        if self.rollout_threads is not None and self.rollout_threads < 1:
            raise ConfigError(f"rollout_threads={self.rollout_threads} must be at least 1 (or unset)")
        if self.reward_steps < 0 or self.reward_epochs < 1 and self.reward_steps == 0:
            raise ConfigError("give reward_steps > 0 or reward_epochs >= 1")
        if self.device not in ("auto", "cpu", "cuda") and not self.device.startswith("cuda:"):
            raise ConfigError(f"device {self.device!r} must be auto, cpu or cuda")
        try:  # the learner checks its baseline itself
            LearnerConfig(baseline=self.reinforce_baseline, rollouts=self.rollouts)
        except ConfigError as e:
            raise ConfigError(f"reinforce_baseline: {e}") from None
        Constraints.from_limits(
            max_params=self.max_params, max_flops=self.max_flops, max_latency_ms=self.max_latency_ms
        )
        self.supernet_config()  # checks the supernet settings
        if self.max_flops_ratio is not None and not (math.isfinite(self.max_flops_ratio) and self.max_flops_ratio > 0):
            raise ConfigError(f"max_flops_ratio={self.max_flops_ratio} must be a positive number (or None)")
        Penalty(self.penalty, self.penalty_schedule)

    def flops_limit(self, teacher_flops: float) -> float | None:
        """The FLOPs limit students get: the smaller of ``max_flops`` and ``max_flops_ratio`` x the teacher's."""
        limits = [x for x in (self.max_flops, self.max_flops_ratio and self.max_flops_ratio * teacher_flops) if x]
        return min(limits) if limits else None

    def resolved_reward_lr(self) -> float:
        """The reward-time KD learning rate: ``reward_lr``, or the mode's default."""
        if self.reward_lr is not None:
            return self.reward_lr
        return 1e-3 if self.reward_mode == "shared+kd" else 1e-2

    def resolved_reward_val_subset(self) -> float | None:
        """The validation samples rewards read: ``reward_val_subset``, or the mode's default."""
        if self.reward_val_subset is not None:
            return self.reward_val_subset
        return 300 if self.reward_mode != "kd" else None

    def supernet_config(
        self, space: str = "removal", remove_prior: float | None = None, keep_bias: float | None = None
    ):
        """How this run trains the shared weights of ``space`` (``n2n_fx.supernet.SupernetConfig``);
        ``remove_prior`` / ``keep_bias``: the run's resolved ones when the config leaves them to the search."""
        shrink = self.supernet_steps if self.supernet_shrink_steps is None else self.supernet_shrink_steps
        prior = next(p for p in (remove_prior, self.remove_prior, 0.5) if p is not None)
        bias = next((b for b in (keep_bias, self.shrink_keep_bias) if b is not None), None)
        limited = self.max_params is not None  # shrink students drawn where the search draws them, within the limit
        return SupernetConfig(
            steps=shrink if space == "shrink" else self.supernet_steps,
            lr=self.supernet_lr,
            random_students=self.supernet_students,
            max_remove=min(0.6, 2.0 * prior),
            remove_passive=self.remove_passive,
            seed=self.seed,
            max_flops_ratio=self.max_flops_ratio,  # students the search would refuse are not trained
            max_params=self.max_params,
            shrink_bias=bias if limited else None,
            narrowest=min(RATIOS) if limited else SupernetConfig.narrowest,
            shrink_kernels=self.shrink_kernels,
        )

    def resolved_device(self) -> str:
        import torch

        if self.device == "auto":
            return "cuda" if torch.cuda.is_available() else "cpu"
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise ConfigError("device cuda was asked for but CUDA is not available; use --device cpu")
        return self.device

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown config key(s) {', '.join(unknown)}; see `n2n-fx compress --help`")
        return cls(**data)

    def replace(self, **changes: Any) -> SearchConfig:
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})


def load_config_file(path: str | Path) -> dict[str, Any]:
    """Read a TOML or JSON config file into a dict of SearchConfig fields."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    text = p.read_text()
    try:
        if p.suffix == ".toml":
            data = _toml().loads(text)
        else:
            data = json.loads(text)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"cannot parse {p}: {str(e).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{p} must hold a table of settings")
    return data


def _toml():
    """The TOML reader: the standard library's from Python 3.11, the ``tomli`` backport (a dependency) before."""
    if sys.version_info >= (3, 11):
        import tomllib

        return tomllib
    import tomli

    return tomli
