"""Score one rollout: measure the student, distill it, turn accuracy and size into the N2N reward.

The search loop calls a ``RewardEvaluator`` once per rollout with the student, or with
the ``n2n_fx.degenerate.Degenerate`` surgery gave instead (or its text, ``"empty: ..."``),
and the search iteration ``t``. A degenerate record carries a ``Degenerate`` too (surgery's,
training's ``diverged`` / ``failed``, or ``no_trainable``); its file form is the text.
Architectures already scored come from the reward cache without training; the
constraint penalty is recomputed for the current ``t``.

Three reward modes (``REWARD_MODES``) say how a student's accuracy is read:

* ``kd``: the paper's protocol — the student (teacher weights inherited by the surgery)
  is distilled for the configured budget, then evaluated;
* ``shared``: the student carries a trained supernet's shared weights
  (``n2n_fx.supernet``); its batch norms are recalibrated on a few training batches and its
  accuracy is read with no gradient step;
* ``shared+kd``: the same, then the configured KD budget (typically a few steps).
"""

from __future__ import annotations

import copy
import math
import numbers
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

import torch
from torch import fx, nn
from torch.utils.data import Dataset

from ..degenerate import Degenerate, Reason
from ..distill.calibrate import recalibrate_bn
from ..distill.config import DistillConfig
from ..distill.evaluate import accuracy
from ..distill.logit_cache import LogitCache, dataset_fingerprint
from ..distill.trainer import distill
from ..errors import ConfigError, first_line
from .cache import RewardCache, arch_hash
from .constraints import Constraints, Penalty
from .formula import DEGENERATE_REWARD, check_chance, compression
from .measure import count_flops, count_params, latency_ms, peak_activation_bytes
from .objective import Objective
from .reachable import FLOOR_QUANTITIES, narrowest_cost
from .registry import DEFAULT_REWARD, RewardFn, reward_function, reward_name

__all__ = ["RewardRecord", "RewardEvaluator", "REWARD_MODES"]

# how a student's accuracy is read: KD from inherited weights (paper), shared weights, or both
REWARD_MODES = ("kd", "shared", "shared+kd")


@dataclass(frozen=True)
class RewardRecord:
    """The outcome of scoring one student."""

    reward: float  # final reward: raw reward after the constraint penalty (−1 if degenerate)
    raw_reward: float  # the reward function's value (paper: C(2 − C) · R_a) before constraints (−1 if degenerate)
    accuracy: float | None  # student top-1 on the validation split after distillation
    params: int | None  # trainable parameters of the student
    flops: int | None  # FLOPs per sample (2 x MACs of conv/linear layers)
    compression: float | None  # C = 1 − params / teacher_params
    latency_ms: float | None = None  # median batch-1 latency on ``latency_device``, if measured
    activation_bytes: int | None = None  # peak activation bytes at batch 1, if measured
    degenerate: Degenerate | None = None  # why the student is degenerate; None if not
    violations: tuple[str, ...] = ()  # constraints the student breaks
    epsilon: float | None = None  # ε_t used by the annealed penalty (None when nothing was violated)
    step: int = 0  # search iteration t the reward was computed for
    arch: str | None = None  # architecture hash (reward-cache key)
    cache_hit: bool = False  # True if training was skipped because the architecture was cached
    wall_s: float = 0.0  # seconds this evaluation took
    train_s: float | None = None  # seconds of distillation (of the original run for a cache hit)
    extra: dict[str, Any] = field(default_factory=dict)  # free-form details (e.g. per-epoch losses)
    latency_device: str | None = None  # the device latency_ms was measured on ("cpu", "cuda")
    objective_compression: float | None = None  # C on the objective's quantity (= compression for params)
    # ``reachable`` scoring (stage 1 of a two-stage run): params and FLOPs of the student's narrowest shrink
    floor: dict[str, float] | None = None
    floor_violations: tuple[str, ...] | None = None  # the limits that narrowest shrink breaks (None: not judged)

    @property
    def blocking(self) -> tuple[str, ...]:
        """The violations that make the student illegal for its stage: its narrowest shrink's when it was
        judged on that (``RewardEvaluator.reachable``), else its own."""
        return self.violations if self.floor_violations is None else self.floor_violations

    @property
    def is_degenerate(self) -> bool:
        return self.degenerate is not None

    def quantities(self) -> dict[str, float]:
        """Measured quantities by name, for ``Constraints``."""
        out = {"params": self.params, "flops": self.flops}
        out.update(latency_ms=self.latency_ms, activation_bytes=self.activation_bytes)
        return {k: float(v) for k, v in out.items() if v is not None}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists, ``degenerate`` its text)."""
        d = asdict(self)
        d["violations"] = list(self.violations)
        d["floor_violations"] = None if self.floor_violations is None else list(self.floor_violations)
        d["degenerate"] = None if self.degenerate is None else str(self.degenerate)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RewardRecord:
        known = {f.name for f in fields(cls)}
        d = {k: v for k, v in data.items() if k in known}
        d["violations"] = tuple(d.get("violations", ()))
        if d.get("floor_violations") is not None:
            d["floor_violations"] = tuple(d["floor_violations"])
        if d.get("degenerate") is not None:
            d["degenerate"] = Degenerate.of(d["degenerate"])
        return cls(**d)


class RewardEvaluator:
    """Turn students into rewards, with measurements, distillation, constraints and a cache.

    ``train_data`` is the (un-augmented) training split the student is distilled on,
    ``val_data`` the validation split its accuracy is read from (never the test split).
    ``teacher_accuracy`` (validation) and ``teacher_params`` normalise the reward, and
    ``chance_accuracy`` (0: the paper's formula) is the accuracy its R_a counts from;
    compression is always relative to the original teacher. ``objective``
    (``n2n_fx.reward.objective``) says which quantity the reward's C is taken on (default:
    parameters); the cache holds accuracies and measurements, so it serves every objective.
    ``reward_fn`` (a registered name or function, ``n2n_fx.reward.registry``; default ``paper``,
    ``C(2 − C) · R_a``) turns accuracy and C into the raw reward; a cache written under one reward
    function is refused under another (its context names the function).
    Give ``logit_cache`` (built on ``train_data``) or ``teacher``. Latency is measured (on
    ``config.device``) when the objective, a constraint, ``measure_latency`` or ``measure_all``
    needs it, activation memory when a constraint or ``measure_all`` does. The student is
    trained (shared modes: calibrated) in place, on ``config.device``, and left there.

    Example:
        >>> from n2n_fx.data import load_splits
        >>> splits = load_splits("synthetic", num_samples=100, image_size=8)
        >>> teacher = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))
        >>> ev = RewardEvaluator(splits.train_plain, splits.val, teacher_accuracy=0.5,
        ...                      teacher_params=650, input_size=(1, 8, 8), teacher=teacher,
        ...                      config=DistillConfig(epochs=1))
        >>> ev(Degenerate(Reason.EMPTY, "every layer was removed")).reward
        -1.0
    """

    def __init__(
        self,
        train_data: Dataset,
        val_data: Dataset,
        *,
        teacher_accuracy: float,
        teacher_params: int,
        input_size: Sequence[int],
        config: DistillConfig | None = None,
        teacher: nn.Module | None = None,
        logit_cache: LogitCache | None = None,
        constraints: Constraints | None = None,
        penalty: Penalty | None = None,
        cache: RewardCache | None = None,
        measure_all: bool = False,
        latency_repeats: int = 20,
        mode: str = "kd",
        calib_batches: int = 8,
        supernet_tag: str | None = None,
        objective: Objective | None = None,
        measure_latency: bool = False,
        chance_accuracy: float = 0.0,
        reward_fn: str | RewardFn = DEFAULT_REWARD,
    ) -> None:
        self.reward_name = reward_fn if isinstance(reward_fn, str) else reward_name(reward_fn)
        self.reward_fn = reward_function(self.reward_name)  # unknown names: ConfigError naming the choices
        if not 0 < teacher_accuracy <= 1:
            raise ConfigError(f"teacher_accuracy={teacher_accuracy} must be in (0, 1]")
        check_chance(teacher_accuracy, chance_accuracy)
        if teacher_params <= 0:
            raise ConfigError(f"teacher_params={teacher_params} must be positive")
        if mode not in REWARD_MODES:
            raise ConfigError(f"reward mode {mode!r} is not one of {', '.join(REWARD_MODES)}")
        if mode != "kd" and not supernet_tag:
            raise ConfigError(f"reward mode {mode!r} needs the tag of the supernet whose weights students carry")
        if calib_batches < 1:
            raise ConfigError(f"calib_batches={calib_batches} must be at least 1")
        if mode != "shared" and teacher is None and logit_cache is None:
            raise ConfigError("RewardEvaluator needs a teacher or a logit cache; pass one")
        self.mode = mode
        self.calib_batches = int(calib_batches)
        self.supernet_tag = supernet_tag
        self.train_data = train_data
        self.val_data = val_data
        self.teacher_accuracy = float(teacher_accuracy)
        self.chance_accuracy = float(chance_accuracy)  # R_a counts accuracy above this (0: the paper's A / A_t)
        self.teacher_params = int(teacher_params)
        self.input_size = tuple(int(d) for d in input_size)
        self.config = config or DistillConfig()
        self.teacher = teacher
        self.logit_cache = logit_cache
        self.constraints = constraints or Constraints()
        self.penalty = penalty or Penalty()
        self.measure_all = measure_all
        self.latency_repeats = latency_repeats
        self.objective = objective or Objective("params", float(teacher_params))
        self.measure_latency = measure_latency
        # stage 1 of a two-stage run: a student is within a parameter / FLOPs limit when its narrowest
        # shrink is (stage 2 narrows it); its own size is still recorded and rewarded (reward/reachable.py)
        self.reachable = False
        self.reachable_kernels = True  # the narrowest shrink shrinks kernels too (False: stage 2 keeps them)
        self.cache = cache if cache is not None else RewardCache()
        self.cache.bind(self.context())
        if logit_cache is not None:
            logit_cache.check(train_data)

    def context(self) -> dict[str, Any]:
        """Settings a cached reward depends on (stored with the reward cache)."""
        cfg = asdict(self.config)
        for k in ("device", "amp", "num_workers", "eval_batch_size"):  # device and amp: below, the rest does not matter
            cfg.pop(k, None)
        device = torch.device(self.config.device).type  # CPU and GPU rewards differ; GPU k and GPU j do not
        return {
            "device": device,
            "amp": bool(self.config.amp and device == "cuda" and self.mode != "shared"),  # bfloat16 KD (CUDA only)
            "teacher_accuracy": self.teacher_accuracy,
            "teacher_params": self.teacher_params,
            "input_size": list(self.input_size),
            "train_data": dataset_fingerprint(self.train_data),
            "val_data": dataset_fingerprint(self.val_data),
            "distill": cfg if self.mode != "shared" else None,
            "mode": self.mode,
            **({"calib_batches": self.calib_batches} if self.mode != "kd" else {}),
            # cached entries hold rewards: one reward function per cache (the paper's unnamed: older caches)
            **({"reward_fn": self.reward_name} if self.reward_name != DEFAULT_REWARD else {}),
        }

    def key(self, student: nn.Module) -> str:
        """The reward-cache key of ``student``: its architecture, and in the shared modes the
        supernet whose weights it carries (the search trains one set of shared weights per stage)."""
        h = arch_hash(student)
        return h if self.mode == "kd" else f"{h}@{self.supernet_tag}"

    # -- public -----------------------------------------------------------------------------

    def __call__(self, student: nn.Module | Degenerate | str, step: int = 0) -> RewardRecord:
        """The reward record of ``student`` (or of a ``Degenerate``, or its text) at search iteration ``step``."""
        start = time.perf_counter()
        if not isinstance(student, nn.Module):
            return self._degenerate(Degenerate.of(student), step, start)
        params = count_params(student)
        if params == 0:
            why = Degenerate(Reason.NO_TRAINABLE, "the student has no trainable parameter")
            return self._degenerate(why, step, start, params=0)
        key = self.key(student)
        cached = self.cache.get(key)
        if cached is not None:
            stored = RewardRecord.from_dict(cached)
            record = self._fill_measurements(stored, student)
            if record != stored:  # a newly needed quantity was measured: keep it
                self.cache.put(key, record.to_dict())
            return replace(self._score(record, step), cache_hit=True, wall_s=time.perf_counter() - start)
        record = replace(self._evaluate(student, key, params), step=step)  # step: when it was trained
        self.cache.put(key, record.to_dict())
        return replace(self._score(record, step), wall_s=time.perf_counter() - start)

    def reward(self, record: RewardRecord, step: int) -> RewardRecord:
        """Re-score a record at another search iteration (the penalty anneals with ``step``)."""
        return self._score(record, step)

    # -- internals --------------------------------------------------------------------------

    def _degenerate(self, reason: Degenerate, step: int, start: float, **kw: Any) -> RewardRecord:
        return RewardRecord(
            reward=DEGENERATE_REWARD,
            raw_reward=DEGENERATE_REWARD,
            accuracy=None,
            params=kw.get("params"),
            flops=None,
            compression=None,
            degenerate=reason,
            step=step,
            wall_s=time.perf_counter() - start,
        )

    def _needs(self, quantity: str) -> bool:
        return (
            self.measure_all
            or quantity in self.constraints.quantities
            or quantity == self.objective.quantity
            or (quantity == "latency_ms" and self.measure_latency)
        )

    def _fill_measurements(self, record: RewardRecord, student: nn.Module) -> RewardRecord:
        """Measure latency / activation memory if now needed and missing (no training).

        Latency is timed on the run's device; one measured on another device is measured again."""
        if record.degenerate is not None:
            return record
        device = self.config.device
        stale = record.latency_ms is None or record.latency_device != device
        if stale and self._needs("latency_ms"):
            ms = latency_ms(student, self.input_size, repeats=self.latency_repeats, device=device)
            record = replace(record, latency_ms=ms, latency_device=device)
        if record.activation_bytes is None and self._needs("activation_bytes"):
            cpu = student if _on_cpu(student) else copy.deepcopy(student).cpu()
            record = replace(record, activation_bytes=peak_activation_bytes(cpu, self.input_size))
        limited = any(q in self.constraints.quantities for q in FLOOR_QUANTITIES)
        if self.reachable and limited and record.floor is None and isinstance(student, fx.GraphModule):
            floor = narrowest_cost(student, self.input_size, kernels=self.reachable_kernels)
            record = replace(record, floor={q: floor[q] for q in FLOOR_QUANTITIES})
        return record

    def _evaluate(self, student: nn.Module, key: str, params: int) -> RewardRecord:
        base = RewardRecord(
            reward=DEGENERATE_REWARD,
            raw_reward=DEGENERATE_REWARD,
            accuracy=None,
            params=params,
            flops=None,
            compression=compression(params, self.teacher_params),
            arch=key,
        )
        try:
            base = replace(base, flops=count_flops(student, self.input_size))
            base = self._fill_measurements(base, student)
        except RuntimeError as e:  # the student cannot run on this input
            return replace(base, degenerate=Degenerate(Reason.FAILED, first_line(e)))
        if self.mode != "kd":  # shared weights: their batch norms fitted to this student first
            t0 = time.perf_counter()
            student.to(self.config.device)  # distill would move it; calibration and reading come first
            recalibrate_bn(
                student,
                self.train_data,
                batches=self.calib_batches,
                batch_size=self.config.batch_size,
                seed=self.config.seed,
            )
            if self.mode == "shared":
                acc = accuracy(student, self.val_data, batch_size=self.config.eval_batch_size)
                return replace(base, accuracy=acc, train_s=time.perf_counter() - t0)
        result = distill(
            student,
            self.train_data,
            self.config,
            teacher=self.teacher,
            logit_cache=self.logit_cache,
            val_data=self.val_data,
        )
        extra = {"losses": list(result.losses), "epochs": result.epochs, "steps": result.steps}
        base = replace(base, train_s=result.wall_s, extra=extra)
        if result.degenerate is not None:
            return replace(base, degenerate=result.degenerate)
        return replace(base, accuracy=result.val_accuracy)

    def _score(self, record: RewardRecord, step: int) -> RewardRecord:
        """Fill reward, raw reward, violations and ε from the record's measurements."""
        if record.degenerate is not None or record.accuracy is None or record.compression is None:
            return replace(
                record,
                reward=DEGENERATE_REWARD,
                raw_reward=DEGENERATE_REWARD,
                step=step,
                violations=(),
                floor_violations=None,
                epsilon=None,
            )
        c = self.objective.compression(record.quantities())
        raw = self.reward_fn(record.accuracy, self.teacher_accuracy, c, self.chance_accuracy)
        if not isinstance(raw, numbers.Real) or not math.isfinite(raw):
            raise ConfigError(
                f"reward function {self.reward_name!r} gave {raw!r} for accuracy {record.accuracy:.4f}, C {c:.4f}; "
                "it must return a finite number"
            )
        raw = max(DEGENERATE_REWARD, float(raw))  # no student scores below a degenerate one
        violations = tuple(self.constraints.violations(record.quantities())) if self.constraints else ()
        floor_violations = None
        if self.reachable and record.floor is not None:
            floor_violations = tuple(self.constraints.violations({**record.quantities(), **record.floor}))
        blocking = violations if floor_violations is None else floor_violations
        reward = self.penalty.apply(raw, not blocking, step)
        eps = self.penalty.epsilon(step) if blocking and self.penalty.mode == "anneal" else None
        return replace(
            record,
            reward=reward,
            raw_reward=raw,
            violations=violations,
            floor_violations=floor_violations,
            epsilon=eps,
            step=step,
            objective_compression=c,
        )


def _on_cpu(model: nn.Module) -> bool:
    return all(t.device.type == "cpu" for t in model.parameters())
