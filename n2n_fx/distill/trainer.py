"""Train a student from the weights it was given, against teacher logits; never raise on divergence.

The student is in train mode for every training step of every epoch and in eval mode for
every evaluation (the original N2N code left students in eval mode after the first
evaluation). A NaN/inf loss, or a runtime error inside the student, stops that student
and returns a result marked degenerate with the reason, so a search loop can go on.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset

from ..data.loaders import make_loader
from ..degenerate import Degenerate, Reason
from ..errors import ConfigError, first_line
from .config import DistillConfig
from .evaluate import accuracy, accuracy_and_loss, placed
from .logit_cache import IndexedDataset, LogitCache
from .loss import distill_loss

__all__ = ["DistillResult", "distill"]


@dataclass(frozen=True)
class DistillResult:
    """What training one student gave."""

    student: nn.Module  # the trained student: the module passed in, trained in place, in eval mode
    val_accuracy: float | None  # top-1 on val_data after training (None without val data or if degenerate)
    epochs: int  # epochs started
    steps: int  # optimiser steps taken
    losses: tuple[float, ...]  # mean training loss of each completed epoch
    val_history: tuple[float, ...]  # validation accuracy at each evaluation (eval_every, then the end)
    degenerate: Degenerate | None  # why training stopped (diverged, failed, no_trainable); None if it finished
    wall_s: float  # seconds spent, evaluation included
    best_epoch: int | None = None  # keep_best: the epoch whose weights were kept (0: the starting ones),
    # also when training diverged later (degenerate says so; the kept weights are finite)

    @property
    def ok(self) -> bool:
        return self.degenerate is None

    @property
    def final_loss(self) -> float | None:
        return self.losses[-1] if self.losses else None


def _optimizer(params: list[nn.Parameter], cfg: DistillConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)


def distill(
    student: nn.Module,
    train_data: Dataset,
    config: DistillConfig | None = None,
    *,
    teacher: nn.Module | None = None,
    logit_cache: LogitCache | None = None,
    val_data: Dataset | None = None,
    on_epoch: Callable[[int, float, float | None], None] | None = None,
    on_step: Callable[[int], None] | None = None,
) -> DistillResult:
    """Train ``student`` on ``train_data`` (a data set of ``(x, y)``) with ``config.loss``.

    Teacher logits come from ``logit_cache`` when given (built on this very data set, which
    must then be un-augmented; the teacher is never called), else from ``teacher`` per
    batch. Training starts from the student's current weights (inherited from the teacher
    after surgery). The student is trained in place on ``config.device`` and stays there; a
    live teacher runs there too and goes back to where it was. The budget is ``config.steps`` if set, else ``config.epochs``.
    ``on_epoch(epoch, mean_loss, val_accuracy_or_None)`` is called after each epoch,
    ``on_step(steps_taken)`` after each optimiser step (e.g. to read accuracy along the way).

    Example:
        >>> from n2n_fx.data import load_splits
        >>> splits = load_splits("synthetic", num_samples=200, image_size=8)
        >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> student = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> r = distill(student, splits.train_plain, DistillConfig(epochs=1), teacher=teacher,
        ...             val_data=splits.val)
        >>> r.ok, r.steps
        (True, 3)
    """
    cfg = config or DistillConfig()
    start = time.perf_counter()
    device = torch.device(cfg.device)
    needs_teacher = cfg.loss != "ce"
    if needs_teacher and teacher is None and logit_cache is None:
        raise ConfigError(f"loss {cfg.loss!r} needs a teacher or a logit cache; pass one")
    if logit_cache is not None and needs_teacher:
        logit_cache.check(train_data)
    use_cache = logit_cache is not None and needs_teacher

    epochs = steps = 0
    losses: list[float] = []
    history: list[float] = []

    best: dict = {}  # keep_best: "acc", "epoch", "state" of the best evaluation so far

    def result(degenerate: Degenerate | None, val_acc: float | None = None) -> DistillResult:
        if best:  # keep_best: the best evaluated weights, also after a divergence
            student.load_state_dict(best["state"])
            val_acc = best["acc"]
        student.eval()
        return DistillResult(
            student,
            val_acc,
            epochs,
            steps,
            tuple(losses),
            tuple(history),
            degenerate,
            time.perf_counter() - start,
            best.get("epoch"),
        )

    def keep_if_best(acc: float, loss: float) -> bool:
        """Remember the weights when ``acc`` beats the best so far, or equals it at a lower validation loss
        (on 240 samples epochs often tie, and the earliest of them was kept: seed 2 of the main job kept
        epoch 3 at 97.55 % test where epoch 10 had 98.65 %); False after ``patience`` epochs without a
        better accuracy."""
        loss = loss if math.isfinite(loss) else math.inf
        better = not best or acc > best["acc"]
        if better or (acc == best["acc"] and loss < best["loss"]):
            best.update(acc=acc, loss=loss, epoch=epochs, misses=0 if better else best["misses"] + 1)
            best["state"] = {k: v.detach().clone() for k, v in student.state_dict().items()}
        else:
            best["misses"] += 1
        return better or not cfg.patience or best["misses"] < cfg.patience

    params = [p for p in student.parameters() if p.requires_grad]
    if not params:
        return result(Degenerate(Reason.NO_TRAINABLE, "the student has no trainable parameter"))
    with contextlib.ExitStack() as stack:
        try:
            student.to(device)  # trained in place: it stays there
            if teacher is not None and needs_teacher and not use_cache:  # the caller's: back home afterwards
                stack.enter_context(placed(teacher, device)).eval()
            cached = logit_cache.on(device) if use_cache else None  # (N, n_classes), uploaded once per device
            data = IndexedDataset(train_data) if use_cache else train_data
            loader = make_loader(
                data, cfg.batch_size, shuffle=True, seed=cfg.seed, num_workers=cfg.num_workers, device=device
            )
            if len(loader) == 0:
                raise ConfigError("the training set is empty; give a non-empty training split")
            total = cfg.steps if cfg.steps is not None else cfg.epochs * len(loader)
            optimizer = _optimizer(params, cfg)
            scheduler = (
                torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total) if cfg.schedule == "cosine" else None
            )
            autocast = (
                torch.autocast("cuda", dtype=torch.bfloat16)
                if cfg.amp and device.type == "cuda"
                else contextlib.nullcontext()
            )
            val_acc: float | None = None
            tracking = cfg.keep_best and val_data is not None
            if tracking:
                keep_if_best(*accuracy_and_loss(student, val_data, batch_size=cfg.eval_batch_size, device=device))
            while steps < total:
                epochs += 1
                student.train()
                loss_sum, n_batches = torch.zeros((), device=device), 0
                for batch in loader:
                    x = batch[0].to(device, non_blocking=True)  # (batch, C, H, W)
                    y = batch[1].to(device, non_blocking=True)  # (batch,)
                    if cached is not None:
                        z = cached[batch[2].to(device)]  # (batch, n_classes)
                    elif needs_teacher:
                        with torch.no_grad(), autocast:
                            z = teacher(x).float()  # type: ignore[misc]  # (batch, n_classes)
                    else:
                        z = None
                    with autocast:
                        out = student(x)  # (batch, n_classes)
                    loss = distill_loss(cfg.loss, out, z, y, lam=cfg.lam, temperature=cfg.temperature)
                    if not torch.isfinite(loss):
                        return result(Degenerate(Reason.DIVERGED, f"loss {float(loss.detach())} at step {steps + 1}"))
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    if cfg.grad_clip is not None:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    optimizer.step()
                    if scheduler is not None:
                        scheduler.step()
                    loss_sum += loss.detach()
                    n_batches += 1
                    steps += 1
                    if on_step is not None:
                        on_step(steps)
                    if steps >= total:
                        break
                mean_loss = float(loss_sum) / max(n_batches, 1)
                losses.append(mean_loss)
                if not math.isfinite(mean_loss) or not all(bool(torch.isfinite(p).all()) for p in params):
                    why = f"mean loss {mean_loss}" if not math.isfinite(mean_loss) else "non-finite weights"
                    return result(Degenerate(Reason.DIVERGED, f"{why} after epoch {epochs}"))  # a late broken step
                val_acc, val_loss = None, math.inf
                if tracking:
                    val_acc, val_loss = accuracy_and_loss(
                        student, val_data, batch_size=cfg.eval_batch_size, device=device
                    )
                    history.append(val_acc)
                elif val_data is not None and cfg.eval_every and epochs % cfg.eval_every == 0:
                    val_acc = accuracy(student, val_data, batch_size=cfg.eval_batch_size, device=device)
                    history.append(val_acc)
                if on_epoch is not None:
                    on_epoch(epochs, mean_loss, val_acc)
                if tracking and not keep_if_best(val_acc, val_loss):  # type: ignore[arg-type]
                    break
            if val_data is not None and val_acc is None:
                val_acc = accuracy(student, val_data, batch_size=cfg.eval_batch_size, device=device)
                history.append(val_acc)
            return result(None, val_acc)
        except RuntimeError as e:  # shape errors of a broken student, out of memory, ...
            return result(Degenerate(Reason.FAILED, first_line(e)))
