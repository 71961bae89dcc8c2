"""Train the shared weights once per run, so that every student works without its own training.

Each step takes one batch and runs several students through the shared weights (the
"sandwich": the full network, the narrowest one, and random students), each distilled
towards the frozen teacher's cached logits; their gradients add up in the shared vector.

Which students a step draws is the *space* being trained, in the order the search needs them:

* ``removal``: the teacher and random removals at full width (stage 1's students);
* ``shrink``: one removal ``remove`` (stage 1's winner) at full width, at its narrowest, and
  random shrinks of it (stage 2's students), continuing from the removal space's weights;
* ``both``: removal with a random rate, then random shrink ratios on what is left.

Training the two spaces one after the other, as the two stages search them, is what makes
shared weights rank students (vgg_tiny, 400 steps each: random stage-1 students read 0.41 mean
accuracy with removal-space weights, 0.16 with ``both``, where almost every student is near
chance; docs/benchmarks.md).

A long training (a large teacher on the CPU: hours) can save its progress to a ``checkpoint``
file every ``checkpoint_every`` seconds: the shared weights, the optimiser, every random stream
and the place in the data. Called again with the same file, it goes on from there and ends with
exactly the weights an uninterrupted training gives.
"""

from __future__ import annotations

import logging
import math
import random
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Dataset

from ..data.loaders import make_loader
from ..distill.logit_cache import IndexedDataset, LogitCache
from ..distill.loss import kd_kl_loss, kd_l2_loss
from ..errors import ConfigError
from ..features.features import RATIOS
from ..rewrite.sample import random_actions
from .progress import Progress, as_tuples
from .shared import SharedArch, Supernet, SupernetError, actions_key, smallest_actions

__all__ = ["SPACES", "SupernetConfig", "SupernetResult", "train_supernet", "sample_actions", "sandwich"]

SPACES = ("removal", "shrink", "both")  # the student spaces a supernet can be trained over
MAX_REDRAWS = 500  # random draws in a row without a usable student before training gives up
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SupernetConfig:
    """How the shared weights are trained."""

    # optimiser steps (each runs 2 + random_students students on one batch). conv4 on MNIST-10k, Kendall τ
    # of shared rewards vs 400-step KD: 800 steps 0.48, 1600 steps 0.69 (docs/benchmarks.md)
    steps: int = 1600
    lr: float = 2e-3  # Adam learning rate (cosine-annealed to 0 over the steps)
    batch_size: int = 32  # samples per step (each student sees the same batch)
    random_students: int = 2  # random students per step, besides the full and the narrowest one
    max_remove: float = 0.6  # a random student removes each layer with a rate drawn from U(0, max_remove)
    remove_passive: bool = False  # random students may remove passive layers (what the removal policy may)
    # a random student is drawn anew with probability 1/arch_reuse, else one drawn before is reused:
    # surgery costs more than a training step of a small student, so each one serves a few steps
    arch_reuse: int = 4
    grad_clip: float = 5.0  # clip the global gradient norm of the shared weights
    # distillation loss of each student: "kl" (T² KL at ``temperature``: bounded, reads like accuracy)
    # or "l2" (logit L2, as the paper's reward-time KD; dominated by the worst students)
    loss: str = "kl"
    temperature: float = 2.0  # softmax temperature of the kl loss
    narrowest: float = 0.3  # the narrowest student of each step: every shrink variable at this ratio (or the
    # smallest legal one above it); the search's shrink policy rarely goes below it
    seed: int = 0  # seeds the batches and the random students
    # random students costing more FLOPs than this multiple of the teacher's are drawn again (None: any):
    # the search's FLOPs cap (SearchConfig.max_flops_ratio) rejects them, so training them is wasted, and
    # removing a pool or a stride can multiply a student's cost (resnet18 at 32 px: 2-3x slower steps)
    max_flops_ratio: float | None = None
    # under a parameter limit (SearchConfig.max_params), the shrink space's random students: each variable
    # drawn as the search's fresh shrink policy draws it (legal ratio r with weight exp(shrink_bias * r)),
    # those over the limit drawn again; the narrowest student then sits at the smallest legal ratios
    max_params: float | None = None
    shrink_bias: float | None = None
    shrink_kernels: bool = True  # students shrink kernel sizes too (False: the channels-only shrink space)

    def __post_init__(self) -> None:
        if self.steps < 0 or self.random_students < 0 or self.batch_size < 1:
            raise ConfigError("supernet steps and random_students must be >= 0, batch_size >= 1")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"supernet lr={self.lr} must be a positive number")
        if self.loss not in ("kl", "l2"):
            raise ConfigError(f"supernet loss {self.loss!r} must be kl or l2")
        if not 0.0 < self.narrowest <= 1.0:
            raise ConfigError(f"supernet narrowest={self.narrowest} must be in (0, 1]")
        if self.arch_reuse < 1:
            raise ConfigError(f"supernet arch_reuse={self.arch_reuse} must be at least 1")
        if not 0.0 <= self.max_remove < 1.0:
            raise ConfigError(f"supernet max_remove={self.max_remove} must be in [0, 1)")
        if self.max_flops_ratio is not None and not self.max_flops_ratio > 0:
            raise ConfigError(f"supernet max_flops_ratio={self.max_flops_ratio} must be positive")
        if self.max_params is not None and not self.max_params > 0:
            raise ConfigError(f"supernet max_params={self.max_params} must be positive")


@dataclass(frozen=True)
class SupernetResult:
    """What training the shared weights cost and gave."""

    steps: int  # optimiser steps taken
    wall_s: float  # seconds
    losses: tuple[float, ...]  # mean KD loss over the students of each logged window of steps
    students: int  # student forward/backward passes run
    archs: int  # distinct architectures seen

    def to_dict(self) -> dict[str, Any]:
        return {
            "steps": self.steps,
            "wall_s": self.wall_s,
            "losses": list(self.losses),
            "students": self.students,
            "archs": self.archs,
        }


def sample_actions(
    net: Supernet,
    rng: random.Random,
    max_remove: float,
    space: str = "both",
    remove: Sequence[str] = (),
    passive: bool = False,
    shrink_bias: float | None = None,
    kernels: bool = True,
) -> dict[str, Any]:
    """A random student of ``space``: removal at a random rate (``removal``), random shrink ratios
    on the student of ``remove`` (``shrink``), or the one then the other (``both``). Passive layers
    (``Kind.passive``) are removed only with ``passive``, as in the search's removal space.
    ``shrink_bias``: every variable of a ``shrink`` student drawn with weight exp(shrink_bias * r);
    ``kernels=False``: no kernel shrunk."""
    if space == "shrink":
        base = sorted(remove)
        p_shrink = rng.random() if shrink_bias is None else 1.0
        _, shrink = random_actions(
            net.stage1_analysis(base), rng, p_remove=0.0, p_shrink=p_shrink, bias=shrink_bias, kernels=kernels
        )
        return {"remove": base, "shrink": shrink}
    removed, _ = random_actions(net.analysis, rng, p_remove=rng.uniform(0.0, max_remove), p_shrink=0.0, passive=passive)
    if space == "removal" or not net.arch({"remove": removed}).valid:
        return {"remove": removed}
    _, shrink = random_actions(net.stage1_analysis(removed), rng, p_remove=0.0, p_shrink=rng.random(), kernels=kernels)
    return {"remove": removed, "shrink": shrink}


def sandwich(
    net: Supernet, space: str, remove: Sequence[str] = (), narrowest: float = 0.3, *, kernels: bool = True
) -> list[dict[str, Any]]:
    """The students every step of ``space`` runs: the widest one, and the narrowest where widths vary
    (``kernels=False``: at full kernel sizes)."""
    if space == "removal":
        return [{"remove": []}]
    base = sorted(remove) if space == "shrink" else []
    narrow = smallest_actions(net.stage1_analysis(base) if base else net.analysis, RATIOS, narrowest, kernels=kernels)
    return [{"remove": base}, {**narrow, "remove": base}]


def train_supernet(
    net: Supernet,
    train_data: Dataset,
    logit_cache: LogitCache,
    config: SupernetConfig | None = None,
    *,
    space: str = "both",
    remove: Sequence[str] = (),
    device: str | torch.device = "cpu",
    on_step: Callable[[int, float], None] | None = None,
    log_every: int = 50,
    checkpoint: Path | str | None = None,
    checkpoint_every: float = 60.0,
) -> SupernetResult:
    """Train ``net.flat`` in place over the students of ``space`` (``remove``: the removal the
    ``shrink`` space narrows); ``train_data`` is the un-augmented split the cache was built on.

    ``checkpoint``: a file the progress is saved to every ``checkpoint_every`` seconds and at the
    end; if it exists, training goes on from it (``on_step`` is called for the steps still to run;
    the result counts every step and second). A file another training wrote (other config, space,
    or starting weights) raises ``CheckpointError``."""
    cfg = config or SupernetConfig()
    if space not in SPACES:
        raise ConfigError(f"supernet space {space!r} is not one of {', '.join(SPACES)}")
    if space == "shrink" and not net.arch({"remove": sorted(remove)}).valid:
        raise SupernetError(f"the student to shrink (removing {sorted(remove)}) is degenerate")
    logit_cache.check(train_data)
    device = torch.device(device)
    forked = [device.index or 0] if device.type == "cuda" else []
    if not checkpoint_every >= 0:
        raise ConfigError(f"checkpoint_every={checkpoint_every} must be >= 0 seconds")
    saver = Progress(Path(checkpoint), checkpoint_every, cfg, space, remove, net.digest()) if checkpoint else None
    with torch.random.fork_rng(devices=forked):  # dropout draws seeded, the caller's RNG untouched
        torch.manual_seed(cfg.seed)
        return _train(net, train_data, logit_cache, cfg, space, remove, device, on_step, log_every, saver)


def _train(
    net, train_data, logit_cache, cfg: SupernetConfig, space, remove, device, on_step, log_every, saver
) -> SupernetResult:
    start = time.perf_counter()
    rng = random.Random(cfg.seed)
    placed: weakref.WeakValueDictionary[int, SharedArch] = weakref.WeakValueDictionary()
    try:
        net.to(device)
        return _steps(
            net, train_data, logit_cache, cfg, space, remove, device, on_step, log_every, rng, placed, start, saver
        )
    finally:  # the shared weights and every student the net hands out afterwards live on the CPU
        net.cpu()
        for a in list(placed.values()):
            _place(a, torch.device("cpu"))


def _within(arch: SharedArch, cfg: SupernetConfig, max_params: float | None) -> bool:
    """Is the student within the search's limits: at most ``max_flops_ratio`` times the teacher's FLOPs
    and ``max_params`` parameters (None: no parameter limit)?"""
    rw = arch.rewrite
    if cfg.max_flops_ratio is not None and rw.student_cost.flops > cfg.max_flops_ratio * rw.teacher_cost.flops:
        return False
    return max_params is None or rw.student_cost.params <= max_params


def _place(arch: SharedArch, device: torch.device) -> SharedArch:
    """Move a student's template (its buffers) and its codes to ``device``; the same record is returned."""
    arch.template.to(device)
    arch.codes = {name: idx.to(device) for name, idx in arch.codes.items()}
    return arch


def _steps(
    net, train_data, logit_cache, cfg, space, remove, device, on_step, log_every, rng, placed, start, saver
) -> SupernetResult:
    def use(a: SharedArch) -> SharedArch:  # a cached student may have been evicted and rebuilt on the CPU
        placed[id(a)] = a
        return _place(a, device)

    fixed = [net.arch(a) for a in sandwich(net, space, remove, cfg.narrowest, kernels=cfg.shrink_kernels)]
    for a in fixed:
        if not a.valid:
            raise SupernetError(f"the widest or narrowest student is degenerate ({a.rewrite.degenerate})")
    # the parameter limit holds for shrink students only (stage 1 judges it on narrowest shrinks), and only
    # where some shrink meets it: when even the narrowest does not, the search finds no legal student anyway
    max_params = cfg.max_params if space == "shrink" else None
    if max_params is not None and fixed[-1].rewrite.student_cost.params > max_params:
        max_params = None
    cached = logit_cache.on(device)  # (N, n_classes)
    optimizer = torch.optim.Adam([net.flat], lr=cfg.lr)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, cfg.steps))
    loader = make_loader(IndexedDataset(train_data), cfg.batch_size, shuffle=True, seed=cfg.seed, device=device)
    losses: list[float] = []
    window = torch.zeros((), device=device)
    window_n = 0
    students = 0
    pool: list[dict[str, Any]] = []  # valid random students drawn so far
    rejected = 0  # draws in a row that gave no usable student
    step = 0
    epoch_start = loader.generator.get_state()  # the loader's stream before this epoch drew its order
    skip = 0  # batches of this epoch already trained on (a resumed training)
    before = 0.0  # seconds of the training before it was resumed
    saved = saver.load() if saver is not None else None
    if saved is not None:
        net.load_flat(saved["flat"])
        optimizer.load_state_dict(saved["optimizer"])
        scheduler.load_state_dict(saved["scheduler"])
        rng.setstate(as_tuples(saved["rng"]))
        torch.set_rng_state(saved["torch_rng"])
        if device.type == "cuda" and saved.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(saved["cuda_rng"], device)
        epoch_start, skip = saved["epoch_start"], saved["offset"]
        losses, pool = list(saved["losses"]), list(saved["pool"])
        window.fill_(saved["window"])
        window_n, students, rejected, step, before = (
            saved[k] for k in ("window_n", "students", "rejected", "step", "wall_s")
        )
        start -= before  # the result counts the seconds before the interruption too
        logger.info(f"supernet: going on from step {step} of {cfg.steps} ({saver.path.name}, {before:.0f} s trained)")
    offset = skip
    while step < cfg.steps:
        loader.generator.set_state(epoch_start)
        batches = iter(loader)
        for _ in range(skip):  # batches trained on before the interruption: their data, not their steps
            next(batches)
        skip = 0
        for x, _, i in batches:
            offset += 1
            x, z = x.to(device, non_blocking=True), cached[i.to(device)]  # (B, C, H, W), (B, n_classes)
            archs: list[SharedArch] = [use(a) for a in fixed]
            while len(archs) < 2 + cfg.random_students:  # as many students a step in every space
                if pool and rng.random() >= 1.0 / cfg.arch_reuse:
                    archs.append(use(net.arch(rng.choice(pool))))
                    continue
                acts = sample_actions(
                    net, rng, cfg.max_remove, space, remove, cfg.remove_passive, cfg.shrink_bias, cfg.shrink_kernels
                )
                a = net.arch(acts)
                if a.valid and _within(a, cfg, max_params):
                    archs.append(use(a))
                    pool.append(acts)
                    rejected = 0
                    continue
                rejected += 1
                if rejected == MAX_REDRAWS:
                    limits = [f"{cfg.max_flops_ratio}x the teacher's FLOPs"] if cfg.max_flops_ratio else []
                    limits += [f"{max_params:,.0f} parameters"] if max_params is not None else []
                    raise SupernetError(
                        f"no valid random student within {' and '.join(limits) or 'the limits'} in {MAX_REDRAWS} "
                        "draws; raise max_flops_ratio (--max-flops-ratio) or max_params, or lower remove_prior"
                    )
            optimizer.zero_grad(set_to_none=True)
            total = torch.zeros((), device=device)
            for a in archs:
                a.template.train()
                out = net.forward_student(a, x)  # (B, n_classes)
                loss = kd_l2_loss(out, z) if cfg.loss == "l2" else kd_kl_loss(out, z, cfg.temperature)
                loss.backward()
                total = total + loss.detach()
            if not torch.isfinite(total):
                raise SupernetError(f"supernet training diverged at step {step}; lower the supernet lr")
            torch.nn.utils.clip_grad_norm_([net.flat], cfg.grad_clip)
            optimizer.step()
            scheduler.step()
            students += len(archs)
            window += total / len(archs)
            window_n += 1
            step += 1
            if on_step is not None:
                on_step(step, float(total) / len(archs))
            if window_n == log_every or step == cfg.steps:
                losses.append(float(window) / window_n)
                window.zero_()
                window_n = 0
            if saver is not None and saver.due(step, cfg.steps):
                saver.save(
                    {
                        "flat": net.flat.detach().cpu(),
                        "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": rng.getstate(),
                        "torch_rng": torch.get_rng_state(),
                        "cuda_rng": torch.cuda.get_rng_state(device) if device.type == "cuda" else None,
                        "epoch_start": epoch_start,
                        "offset": offset,
                        "losses": losses,
                        "pool": pool,
                        "window": float(window),
                        "window_n": window_n,
                        "students": students,
                        "rejected": rejected,
                        "step": step,
                        "wall_s": time.perf_counter() - start,
                    }
                )
            if step >= cfg.steps:
                break
        else:  # the epoch is over: the next one draws its order from here
            epoch_start, offset = loader.generator.get_state(), 0
    archs = len({actions_key(a) for a in pool}) + len(fixed)
    return SupernetResult(step, time.perf_counter() - start, tuple(losses), students, archs)
