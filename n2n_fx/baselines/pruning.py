"""Greedy filter pruning with the Taylor criterion (Molchanov et al. 2016), paper §4.4.1 baseline.

Each step scores every output channel of every prunable channel space (``taylor``) by
Θ(z) = |mean over positions of activation × ∂loss/∂activation|, averaged over a few
batches, normalised per space (L2, as Molchanov et al.); removes the globally
lowest-ranked channels with ``apply_actions`` (coupled channels of residual adds go
together: a channel of a space disappears from every tensor of the space); then
fine-tunes briefly with CE (+ λ·KD). Pruning stops by the paper's rule: when accuracy
falls more than ``tolerance`` below the reference student's, or when the parameter count
falls below the reference's.
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import fx, nn

from ..data.splits import DataSplits
from ..distill import DistillConfig, accuracy, distill
from ..errors import ConfigError
from ..graph.channels import ChannelClass
from ..graph.cost import model_cost
from ..graph.layers import Analysis, analyze
from ..progress import progress_bar
from ..rewrite import apply_actions
from ..seeds import derive_seed
from .taylor import prunable_spaces, taylor_scores

__all__ = [
    "PruneConfig",
    "Reference",
    "PruneStep",
    "PruneResult",
    "prunable_spaces",
    "taylor_scores",
    "stop_reason",
    "prune",
    "STOP_ACCURACY",
    "STOP_PARAMS",
]

logger = logging.getLogger(__name__)

STOP_ACCURACY = "accuracy"  # stop reason: accuracy fell more than the tolerance below the reference
STOP_PARAMS = "params"  # stop reason: the parameter count fell below the reference's


@dataclass(frozen=True)
class PruneConfig:
    """How the greedy pruning runs.

    Example:
        >>> PruneConfig(step_fraction=0.02, finetune_steps=50, kd_lambda=1.0).loss
        'ce+l2'
    """

    step_fraction: float = 0.1  # share of the teacher's prunable channels removed per step
    score_batches: int = 4  # batches the Taylor criterion is averaged over
    finetune_steps: int = 20  # optimiser steps of fine-tuning after each pruning step (0: none)
    finetune_lr: float = 1e-3  # Adam learning rate of the fine-tuning
    kd_lambda: float = 0.0  # λ of CE + λ·L2 KD during fine-tuning (0: plain CE)
    batch_size: int = 64  # batch size of scoring and fine-tuning
    min_channels: int = 1  # channels every space keeps at least
    max_steps: int = 200  # safety cap on the number of pruning steps
    device: str = "cpu"  # torch device of scoring and fine-tuning
    seed: int = 0  # seeds scoring batches and fine-tuning order

    def __post_init__(self) -> None:
        if not 0.0 < self.step_fraction < 1.0:
            raise ConfigError(f"step_fraction={self.step_fraction} must be in (0, 1)")
        if self.score_batches < 1 or self.batch_size < 1 or self.max_steps < 1:
            raise ConfigError("score_batches, batch_size and max_steps must be >= 1")
        if self.finetune_steps < 0 or self.kd_lambda < 0 or self.min_channels < 1:
            raise ConfigError("finetune_steps and kd_lambda must be >= 0, min_channels >= 1")
        if not self.finetune_lr > 0:
            raise ConfigError(f"finetune_lr={self.finetune_lr} must be positive")

    @property
    def loss(self) -> str:
        """The fine-tuning loss: "ce", or "ce+l2" when ``kd_lambda`` > 0."""
        return "ce+l2" if self.kd_lambda > 0 else "ce"


@dataclass(frozen=True)
class Reference:
    """The student pruning is compared with (paper: the N2N student).

    Example:
        >>> Reference(accuracy=0.97, params=20_000).floor
        0.96
    """

    accuracy: float  # its (validation) accuracy in [0, 1]
    params: int | None = None  # its parameter count; None: no size floor
    tolerance: float = 0.01  # allowed accuracy drop below it (paper: 1%, absolute)

    def __post_init__(self) -> None:
        if not 0.0 <= self.accuracy <= 1.0 or self.tolerance < 0:
            raise ConfigError(f"reference accuracy {self.accuracy} must be in [0, 1], tolerance >= 0")
        if self.params is not None and self.params < 1:
            raise ConfigError(f"reference params={self.params} must be positive")

    @property
    def floor(self) -> float:
        """The lowest accuracy pruning may reach."""
        return round(self.accuracy - self.tolerance, 12)


@dataclass(frozen=True)
class PruneStep:
    """One row of the pruning log (step 0 is the unpruned teacher)."""

    step: int  # pruning step (0: the teacher)
    pruned: dict[str, int]  # owner layer of each space -> channels removed at this step
    channels: int  # prunable channels left after the step
    params: int  # parameters after the step
    flops: int  # FLOPs per sample after the step
    accuracy: float  # accuracy after fine-tuning (what the stopping rule reads)
    stop: str | None  # why pruning stops here (STOP_ACCURACY, STOP_PARAMS, ...), or None
    seconds: float  # wall time of the step (scoring, surgery, fine-tuning, evaluation)


@dataclass
class PruneResult:
    """The outcome of ``prune``."""

    student: fx.GraphModule  # the pruned, fine-tuned student that is reported
    accuracy: float  # its accuracy (as given by ``evaluate``: validation by default)
    params: int  # its parameters
    teacher_params: int  # the teacher's parameters
    step: int  # the step it comes from (0: nothing could be pruned)
    stop: str  # why pruning stopped
    log: list[PruneStep] = field(default_factory=list)  # every step, the rejected last one too

    @property
    def compression(self) -> float:
        """Teacher params / student params (the paper's "×")."""
        return self.teacher_params / max(1, self.params)

    def log_rows(self) -> list[dict[str, Any]]:
        """The log as JSON-able dicts."""
        return [asdict(s) for s in self.log]


def stop_reason(accuracy: float, params: int, reference: Reference) -> str | None:
    """The paper's stopping rule (§4.4.1) for a pruned student; None to go on.

    ``STOP_ACCURACY`` when accuracy is more than the tolerance below the reference (that
    student is rejected: the previous one is reported), ``STOP_PARAMS`` when the student has
    fewer parameters than the reference (it is reported).

    Example:
        >>> ref = Reference(0.90, params=1000)
        >>> stop_reason(0.895, 5000, ref), stop_reason(0.85, 5000, ref), stop_reason(0.9, 900, ref)
        (None, 'accuracy', 'params')
    """
    if not math.isfinite(accuracy) or accuracy < reference.floor:
        return STOP_ACCURACY
    if reference.params is not None and params < reference.params:
        return STOP_PARAMS
    return None


def _keep_importance(keep: dict[int, torch.Tensor]) -> Callable:
    """An importance function that makes exactly the ``keep`` mask's channels the top ones."""

    def importance(gm: fx.GraphModule, cls: ChannelClass) -> torch.Tensor:
        return keep[cls.root].float() if cls.root in keep else torch.ones(cls.size)

    return importance


def _prune_step(scores: dict[int, torch.Tensor], analysis: Analysis, n: int, cfg: PruneConfig):
    """Remove the ``n`` globally lowest-scored channels; returns (Rewrite | None, pruned)."""
    spaces = prunable_spaces(analysis)
    cands: list[tuple[float, int, int]] = []
    for root, (cls, _) in spaces.items():
        s = scores.get(root)
        if s is None or cls.size <= cfg.min_channels:
            continue
        order = torch.argsort(s)[: cls.size - cfg.min_channels]  # never the last channels
        cands += [(float(s[i]), root, int(i)) for i in order]
    if not cands:
        return None, {}
    cands.sort()
    keep = {root: torch.ones(spaces[root][0].size, dtype=torch.bool) for root in spaces}
    for _, root, ch in cands[:n]:
        keep[root][ch] = False
    shrink, pruned = {}, {}
    for root, mask in keep.items():
        cls, owner = spaces[root]
        k = int(mask.sum())
        if k < cls.size:
            shrink[owner] = {"out": k / cls.size}
            pruned[owner] = cls.size - k
    r = apply_actions(analysis, shrink=shrink, importance=_keep_importance(keep))
    return r, pruned


def _channels(analysis: Analysis) -> int:
    return sum(int(cls.size) for cls, _ in prunable_spaces(analysis).values())


def prune(
    teacher: fx.GraphModule,
    splits: DataSplits,
    config: PruneConfig | None = None,
    reference: Reference | None = None,
    *,
    evaluate: Callable[[nn.Module], float] | None = None,
) -> PruneResult:
    """Greedy Taylor pruning of ``teacher`` (a traced GraphModule), stopped by the paper's rule.

    Channels are scored on ``splits.train_plain``, fine-tuning uses ``splits.train`` (with
    the teacher's logits when ``kd_lambda`` > 0), accuracy is ``evaluate(model)`` (default:
    validation accuracy). Without ``reference`` the teacher's own accuracy is the
    reference (no size floor). The teacher is not modified. Each step is logged (INFO, logger
    ``n2n_fx.baselines.pruning``) and drawn as a progress bar.

    Example:
        >>> from n2n_fx import trace
        >>> from n2n_fx.data import load_splits
        >>> splits = load_splits("synthetic", num_samples=200, image_size=16)
        >>> teacher = trace("conv4", input_size=(1, 16, 16))  # a trained teacher in practice
        >>> res = prune(teacher, splits, PruneConfig(max_steps=2, finetune_steps=2, score_batches=1),
        ...             Reference(accuracy=0.0, params=1_000))  # any accuracy will do, >= 1000 params
        >>> res.params < res.teacher_params, res.compression > 1, res.stop
        (True, True, 'max_steps')
    """
    cfg = config or PruneConfig()
    evaluate = evaluate or (lambda m: accuracy(m, splits.val, device=cfg.device))
    teacher = teacher.eval()
    t0 = time.perf_counter()
    teacher_cost = model_cost(teacher)
    acc0 = float(evaluate(teacher))
    ref = reference or Reference(acc0)
    analysis = analyze(teacher)
    total = _channels(analysis)
    if total == 0:
        raise ConfigError("the teacher has no prunable channel space (all pinned or grouped)")
    n = max(1, round(cfg.step_fraction * total))
    steps = [
        PruneStep(
            0,
            {},
            total,
            teacher_cost.params,
            teacher_cost.flops,
            acc0,
            None,
            time.perf_counter() - t0,
        )
    ]
    current, cur_acc, cur_step = teacher, acc0, 0
    stop = "max_steps"
    kd_teacher = teacher if cfg.kd_lambda > 0 else None
    bar = progress_bar(cfg.max_steps, "pruning (steps)")  # the cap: the stopping rule ends it earlier
    for step in range(1, cfg.max_steps + 1):
        t0 = time.perf_counter()
        scores = taylor_scores(
            current,
            splits.train_plain,
            batches=cfg.score_batches,
            batch_size=cfg.batch_size,
            device=cfg.device,
            seed=derive_seed(cfg.seed, "taylor", step),
            analysis=analysis,
        )
        r, pruned = _prune_step(scores, analysis, n, cfg)
        if r is None:
            stop = "nothing left to prune"
            break
        if not r.valid:
            stop = f"degenerate: {r.degenerate}"
            break
        student = r.student
        if cfg.finetune_steps:
            dcfg = DistillConfig(
                loss=cfg.loss,
                lam=cfg.kd_lambda,
                lr=cfg.finetune_lr,
                steps=cfg.finetune_steps,
                batch_size=cfg.batch_size,
                device=cfg.device,
                seed=derive_seed(cfg.seed, "finetune", step),
            )
            res = distill(student, splits.train, dcfg, teacher=kd_teacher)
            if not res.ok:
                stop = f"fine-tuning failed: {res.degenerate}"
                break
        student.cpu().eval()
        acc = float(evaluate(student))
        cost = model_cost(student)
        new_analysis = analyze(student)
        reason = stop_reason(acc, cost.params, ref)
        steps.append(
            PruneStep(
                step,
                pruned,
                _channels(new_analysis),
                cost.params,
                cost.flops,
                acc,
                reason,
                time.perf_counter() - t0,
            )
        )
        logger.info(f"prune step {step}: {cost.params:,} params, accuracy {acc:.4f}")
        bar.update(1)
        if reason == STOP_ACCURACY:
            stop = reason
            break
        current, cur_acc, cur_step, analysis = student, acc, step, new_analysis
        if reason == STOP_PARAMS:
            stop = reason
            break
    bar.close()
    logger.debug(f"pruning stopped ({stop}); kept step {cur_step}")
    if cur_step == 0:
        current = copy.deepcopy(teacher)  # nothing pruned: a copy, never the caller's teacher
    return PruneResult(current, cur_acc, model_cost(current).params, teacher_cost.params, cur_step, stop, steps)
