"""Policy-gradient learner: REINFORCE with an EMA baseline, or actor-critic (paper §3.4, app. 6)."""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from ..errors import CheckpointError, ConfigError
from .checkpoint import Policy, build_policy, policy_spec
from .rollout import Rollout

__all__ = ["LearnerConfig", "UpdateStats", "Learner", "LEARNER_FORMAT", "ALGOS", "BASELINES"]

LEARNER_FORMAT = "n2n_fx.learner/1"  # "format" key of Learner.state_dict()
ALGOS = ("reinforce", "actor_critic")
BASELINES = ("ema", "batch")
NON_FINITE = "its outputs are not finite; lower its learning rate, or start from another policy"


@dataclass(frozen=True)
class LearnerConfig:
    """How a ``Learner`` turns rewards into policy updates.

    Defaults are the paper's (Adam, m = 5, no entropy bonus). On the synthetic objectives in
    tests/test_learning.py, plain REINFORCE sometimes collapses early onto a deterministic
    sub-optimal policy; ``entropy_coef`` of 0.003-0.01 (per step, summed over steps) with
    lr 0.01 was markedly more reliable.

    Example::

        LearnerConfig(lr=0.003)                      # removal stage (paper)
        LearnerConfig(lr=0.01, algo="actor_critic")  # shrink stage, critic as baseline
    """

    algo: str = "reinforce"  # "reinforce" (EMA baseline) or "actor_critic" (value head baseline)
    lr: float = 0.003  # Adam learning rate (paper: 0.003 removal, 0.01-0.1 shrink)
    rollouts: int = 5  # m, rollouts sampled per update by Learner.sample (paper: 5)
    baseline_decay: float = 0.9  # EMA of mean reward: b <- decay * b + (1 - decay) * mean(R)
    # REINFORCE baseline: "ema" (the paper's moving average above) or "batch" (for rollout k, the
    # mean reward of the other m - 1 rollouts of the same batch: unbiased, and it follows the policy)
    baseline: str = "ema"
    normalize_advantages: bool = False  # divide advantages by the batch's reward std (if > 1e-8)
    entropy_coef: float = 0.0  # weight of the entropy bonus (summed over steps, mean over m)
    value_coef: float = 0.5  # weight of the critic's MSE to R_k (policies with a value head)
    max_grad_norm: float | None = None  # clip the global gradient norm to this; None: no clip
    seed: int = 0  # seed of the learner's own sampling generator (saved in state_dict)

    def __post_init__(self) -> None:
        if self.algo not in ALGOS:
            raise ConfigError(f"algo={self.algo!r} is unknown; use one of {ALGOS}")
        if not self.lr > 0 or self.rollouts < 1:
            raise ConfigError(f"lr={self.lr}, rollouts={self.rollouts} must be positive")
        if self.baseline not in BASELINES:
            raise ConfigError(f"baseline={self.baseline!r} is unknown; use one of {BASELINES}")
        if self.baseline == "batch" and self.rollouts < 2:
            raise ConfigError("baseline='batch' needs rollouts >= 2 (it averages the other rollouts)")
        if not 0.0 <= self.baseline_decay < 1.0:
            raise ConfigError(f"baseline_decay={self.baseline_decay} must be in [0, 1)")
        if self.entropy_coef < 0 or self.value_coef < 0:
            raise ConfigError("entropy_coef and value_coef must be >= 0")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise ConfigError(f"max_grad_norm={self.max_grad_norm} must be > 0 or None")


@dataclass(frozen=True)
class UpdateStats:
    """What one ``Learner.update`` did (plain floats, for logs)."""

    update: int  # number of updates done so far, this one included
    mean_reward: float  # mean of R_k over the batch
    baseline: float  # baseline b used for this batch (REINFORCE; "batch": the batch mean); NaN under actor-critic
    loss: float  # total loss minimised
    policy_loss: float  # -(1/m) sum_k sum_t log pi(a_t|h_t) (R_k - b)
    value_loss: float  # critic MSE to R_k over decision steps; NaN without a value head
    entropy: float  # mean over rollouts of the summed per-step entropy
    grad_norm: float  # global gradient norm before clipping
    skipped: str | None = None  # why the step was not taken (non-finite loss or policy outputs), or None


class Learner:
    """Trains one policy from (actions, rewards) batches; exactly checkpointable.

    Gradient (REINFORCE, eq. 2): (1/m) sum_k sum_t grad log pi(a_t | h_t) (R_k - b), with b an
    exponential moving average of past mean rewards (the first batch uses its own mean), or with
    ``baseline="batch"`` the mean of the batch's other rollouts (leave-one-out); with
    ``normalize_advantages`` the advantages are divided by the batch's reward std. With
    ``algo="actor_critic"`` (appendix 6) the policy's value head V_t replaces b per step and is
    fitted by MSE to R_k. A value head, if present, is always fitted (so it is ready, and every
    parameter trains). The actions are re-scored by ``policy.evaluate`` at update time, so
    rollouts can be sampled, stored, evaluated for hours, and the update done afterwards.

    Example::

        learner = Learner(RemovalPolicy(feature_dim=F), LearnerConfig(lr=0.003))
        ro = learner.sample(x=x, removable=removable)       # m rollouts, no grad
        rewards = [reward_of(a) for a in ro.actions]         # (m,) float
        learner.update(ro, rewards, x=x, removable=removable)
        torch.save(learner.state_dict(), path)               # resume: Learner.from_state_dict
    """

    def __init__(self, policy: Policy, config: LearnerConfig | None = None, **kwargs) -> None:
        if config is None:
            config = LearnerConfig(**kwargs)
        elif kwargs:
            raise ConfigError(f"pass either a LearnerConfig or keyword args, not both: {kwargs}")
        policy_spec(policy)  # raises ConfigError for a policy that is not registered
        weights = [p for p in policy.parameters() if p.requires_grad]
        if weights and config.algo == "actor_critic" and getattr(policy, "value", None) is None:
            raise ConfigError("actor_critic needs a policy with a value head; build it with value_head=True")
        self.policy = policy
        self.config = config
        # a policy without weights (``uniform``) has nothing to learn: update records its rewards only
        self.optimizer = torch.optim.Adam(weights, lr=config.lr) if weights else None
        self.baseline: float | None = None  # EMA of mean rewards; None before the first update
        self.updates = 0  # number of updates done
        self.generator = torch.Generator().manual_seed(config.seed)

    # ---- acting ----------------------------------------------------------------------------

    def sample(self, m: int | None = None, **inputs: Any) -> Rollout:
        """``config.rollouts`` (or ``m``) rollouts from the learner's generator, without grad."""
        with torch.no_grad():
            ro = self.policy.sample(**inputs, m=m or self.config.rollouts, generator=self.generator).detach()
        if not (torch.isfinite(ro.log_probs).all() and torch.isfinite(ro.entropy).all()):
            raise ConfigError(f"the {policy_spec(self.policy)['kind']} policy has diverged: {NON_FINITE}")
        return ro

    def greedy(self, **inputs: Any) -> torch.Tensor:
        """The policy's greedy actions for evaluation (no randomness consumed)."""
        return self.policy.greedy(**inputs)

    # ---- learning --------------------------------------------------------------------------

    def update(
        self,
        actions: Rollout | torch.Tensor,
        rewards: Sequence[float] | torch.Tensor,
        **inputs: Any,
    ) -> UpdateStats:
        """One gradient step on m stored rollouts ``actions  # (m, T)`` with rewards ``(m,)``.

        ``inputs`` are the policy's inputs by name (removal: x, removable; shrink: x,
        variable, legal) — the same ones the actions were sampled from.
        """
        if isinstance(actions, Rollout):
            actions = actions.actions
        cfg = self.config
        r = torch.as_tensor(rewards, dtype=torch.float32).flatten()  # (m,)
        if r.numel() != actions.shape[0] or not torch.isfinite(r).all():
            raise ConfigError(f"got {r.numel()} rewards for {actions.shape[0]} rollouts; give one finite reward each")
        m = r.numel()
        if self.optimizer is None:  # nothing to learn
            self.updates += 1
            nan = math.nan
            return UpdateStats(self.updates, float(r.mean()), nan, 0.0, 0.0, nan, nan, 0.0)
        self.policy.train()
        ev = self.policy.evaluate(**inputs, actions=actions)
        log_probs = ev.log_probs  # (m, T)
        r_mean = float(r.mean())
        if cfg.algo == "reinforce" and cfg.baseline == "batch" and m > 1:
            b = r_mean
            adv = (r - (r.sum() - r) / (m - 1)).unsqueeze(1).expand_as(log_probs)  # (m, T), leave-one-out
        elif cfg.algo == "reinforce":
            b = r_mean if self.baseline is None else self.baseline
            adv = (r - b).unsqueeze(1).expand_as(log_probs)  # (m, T)
        else:
            b = math.nan
            adv = r.unsqueeze(1) - ev.values.detach()  # (m, T)
        if cfg.normalize_advantages and m > 1:
            std = float(r.std())
            if std > 1e-8:
                adv = adv / std
        adv = adv.to(log_probs.dtype)
        policy_loss = -(log_probs * adv).sum() / m
        entropy = ev.entropy.sum() / m
        loss = policy_loss - cfg.entropy_coef * entropy
        value_loss = torch.tensor(math.nan)
        if ev.values is not None:
            err = (ev.values - r.unsqueeze(1).to(ev.values.dtype))[ev.mask]  # (n_decisions,)
            value_loss = (err**2).mean() if err.numel() else ev.values.sum() * 0.0
            loss = loss + cfg.value_coef * value_loss

        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        params = [p for p in self.policy.parameters() if p.grad is not None]
        max_norm = cfg.max_grad_norm if cfg.max_grad_norm is not None else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(params, max_norm)) if params else 0.0
        skipped = self._safe_step(loss, grad_norm, actions, inputs)

        if self.baseline is None:
            self.baseline = r_mean
        else:
            d = cfg.baseline_decay
            self.baseline = d * self.baseline + (1.0 - d) * r_mean
        self.updates += 1
        return UpdateStats(
            update=self.updates,
            mean_reward=r_mean,
            baseline=float(b),
            loss=float(loss.detach()),
            policy_loss=float(policy_loss.detach()),
            value_loss=float(value_loss.detach()),
            entropy=float(entropy.detach()),
            grad_norm=grad_norm,
            skipped=skipped,
        )

    def _safe_step(self, loss: torch.Tensor, grad_norm: float, actions: torch.Tensor, inputs: dict) -> str | None:
        """Take the optimiser step unless it breaks the policy; then undo it and say why.

        A step is refused when the loss or gradient is not finite, or when the policy's
        outputs on this batch are no longer finite after it (an lr far too large)."""
        if not (torch.isfinite(loss) and math.isfinite(grad_norm)):
            self.optimizer.zero_grad(set_to_none=True)
            return f"non-finite loss or gradient (loss {float(loss):.3g}, grad norm {grad_norm:.3g})"
        before = (copy.deepcopy(self.policy.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
        self.optimizer.step()
        with torch.no_grad():
            ev = self.policy.evaluate(**inputs, actions=actions)
        outs = [ev.log_probs, ev.entropy] + ([ev.values] if ev.values is not None else [])
        if all(bool(torch.isfinite(t).all()) for t in outs):
            return None
        self.policy.load_state_dict(before[0])
        self.optimizer.load_state_dict(before[1])
        return f"the policy's outputs became non-finite (lr {self.config.lr:g} is too large)"

    # ---- checkpointing ---------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """A snapshot (deep copy) of everything needed to resume exactly; tensors + plain types.

        Loadable with ``torch.load(weights_only=True)``.
        """
        return {
            "format": LEARNER_FORMAT,
            "config": dataclasses.asdict(self.config),
            "policy_spec": policy_spec(self.policy),
            "policy": copy.deepcopy(self.policy.state_dict()),
            "optimizer": copy.deepcopy(self.optimizer.state_dict()) if self.optimizer is not None else None,
            "baseline": self.baseline,
            "updates": self.updates,
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a ``state_dict()`` into this learner (same config and policy shape)."""
        _check_format(state)
        state = copy.deepcopy(state)  # the optimizer would otherwise share (and mutate) its tensors
        mine = dataclasses.asdict(self.config)
        defaults = dataclasses.asdict(LearnerConfig())
        saved = {k: state["config"].get(k, defaults[k]) for k in mine}  # older checkpoints lack newer keys
        diff = [k for k in mine if saved.get(k) != mine[k]]
        if diff:
            raise CheckpointError(
                f"learner checkpoint has {diff[0]}={saved.get(diff[0])!r}, this learner "
                f"{mine[diff[0]]!r}; use Learner.from_state_dict(state)"
            )
        if state["policy_spec"] != policy_spec(self.policy):
            raise CheckpointError(
                "learner checkpoint was made for another policy config; use Learner.from_state_dict(state)"
            )
        try:
            self.policy.load_state_dict(state["policy"])
            if self.optimizer is not None:
                self.optimizer.load_state_dict(state["optimizer"])
            self.generator.set_state(state["generator"])
        except (KeyError, RuntimeError, ValueError) as err:
            first = str(err).strip().splitlines()[0][:120]
            raise CheckpointError(f"learner checkpoint does not match its policy ({first}); re-save it") from None
        self.baseline = None if state["baseline"] is None else float(state["baseline"])
        self.updates = int(state["updates"])

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> Learner:
        """Rebuild policy and learner from a ``state_dict()`` alone (resume after a crash)."""
        _check_format(state)
        try:
            config = LearnerConfig(**state["config"])
        except (TypeError, ConfigError) as err:
            raise CheckpointError(f"learner checkpoint config is invalid ({err}); re-save it") from None
        learner = cls(build_policy(state["policy_spec"]), config)
        learner.load_state_dict(state)
        return learner


def _check_format(state: Any) -> None:
    if not isinstance(state, dict) or state.get("format") != LEARNER_FORMAT:
        raise CheckpointError(f"not a {LEARNER_FORMAT} state; save it with Learner.state_dict()")
    missing = {
        "config",
        "policy_spec",
        "policy",
        "optimizer",
        "baseline",
        "updates",
        "generator",
    } - set(state)
    if missing:
        raise CheckpointError(f"learner state lacks {sorted(missing)}; re-save it with Learner.state_dict()")
