"""How a student is trained: one frozen config with a comment per field."""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError
from .evaluate import EVAL_BATCH
from .loss import LOSSES

__all__ = ["DistillConfig"]

_OPTIMIZERS = ("sgd", "adam")
_SCHEDULES = ("constant", "cosine")


@dataclass(frozen=True)
class DistillConfig:
    """Training budget, optimiser and loss for distilling a student.

    The default is the reward-time setting: logit L2 only (paper §3.5), Adam at 1e-3 for
    the paper's 5 epochs. The final student uses ``loss="ce+l2"`` and a longer budget.

    Example:
        >>> DistillConfig(epochs=1, lr=0.01).loss
        'l2'
    """

    loss: str = "l2"  # one of LOSSES: l2, ce+l2, kl, ce+kl, ce
    lam: float = 1.0  # weight λ of the KD term in ce+l2 / ce+kl
    temperature: float = 4.0  # softmax temperature of the kl losses
    optimizer: str = "adam"  # "adam" or "sgd" (momentum below, nesterov off)
    lr: float = 1e-3  # learning rate
    momentum: float = 0.9  # SGD momentum (ignored by Adam)
    weight_decay: float = 0.0  # L2 weight decay of the optimiser
    schedule: str = "constant"  # learning-rate schedule over the whole budget: constant or cosine
    epochs: int = 5  # passes over the training data (paper: 5 to compare students)
    steps: int | None = None  # if set, the budget in optimiser steps instead of epochs
    batch_size: int = 64  # training batch size
    eval_batch_size: int = EVAL_BATCH  # batch size of accuracy evaluation (evaluate.EVAL_BATCH: 64)
    eval_every: int = 0  # evaluate validation accuracy every this many epochs (0: only at the end)
    # early stopping on validation: evaluate before training and after every epoch, and return
    # the weights of the best evaluation (the starting weights when no epoch beats them)
    keep_best: bool = False
    patience: int = 0  # with keep_best: stop after this many epochs without a better accuracy (0: never)
    grad_clip: float | None = None  # clip the global gradient norm to this (None: no clipping)
    device: str = "cpu"  # torch device for student, teacher and batches
    amp: bool = False  # bfloat16 autocast on CUDA; ignored on other devices
    seed: int = 0  # seeds the shuffling order
    num_workers: int = 0  # DataLoader workers

    def __post_init__(self) -> None:
        if self.loss not in LOSSES:
            raise ConfigError(f"unknown loss {self.loss!r}; use one of {sorted(LOSSES)}")
        if self.optimizer not in _OPTIMIZERS:
            raise ConfigError(f"unknown optimizer {self.optimizer!r}; use one of {_OPTIMIZERS}")
        if self.schedule not in _SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; use one of {_SCHEDULES}")
        if self.lr <= 0 or self.batch_size <= 0 or self.eval_batch_size <= 0:
            raise ConfigError("lr, batch_size and eval_batch_size must be positive")
        if self.steps is None and self.epochs <= 0:
            raise ConfigError(f"epochs={self.epochs} must be positive (or set steps)")
        if self.steps is not None and self.steps <= 0:
            raise ConfigError(f"steps={self.steps} must be positive")
        if self.lam < 0 or self.eval_every < 0 or self.patience < 0:
            raise ConfigError("lam, eval_every and patience must be >= 0")
