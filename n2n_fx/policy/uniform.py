"""The uniform policy (``uniform``, both kinds): every legal action drawn at random, nothing learned.

It is random search's policy (``baselines/random_search.py``), and the control of the learned ones:
a search with ``removal_policy_type="uniform"`` / ``shrink_policy_type="uniform"`` differs from N2N
only in learning. Removal: each removable layer is removed with probability ``remove_prior``. Shrink:
each variable gets a ratio drawn uniformly from its legal ratios. Its draws are those of a fresh
``RemovalPolicy`` / ``ShrinkPolicy`` whose head weights are zero (same generator calls, same
probabilities to the bit), so random search records what it recorded before it was a registered
policy. It has no parameters: a ``Learner`` records its rewards and changes nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from ..features import RATIOS
from .registry import register_policy
from .rollout import Rollout, as_generator, resolve_feature_dim

__all__ = ["UniformRemoval", "UniformRemovalConfig", "UniformShrink", "UniformShrinkConfig"]


@dataclass(frozen=True)
class UniformRemovalConfig:
    """Settings of a ``UniformRemoval``."""

    feature_dim: int | None = None  # F, width of a layer row (read only to check the input)
    remove_prior: float = 0.5  # P(remove) of each removable layer

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_dim", resolve_feature_dim(self.feature_dim))
        if not 0.0 < self.remove_prior < 1.0:
            raise ConfigError(f"remove_prior={self.remove_prior} must be strictly between 0 and 1")


@register_policy("uniform")
class UniformRemoval(nn.Module):
    """Removes each removable layer with probability ``remove_prior``, independently; fixed layers stay.

    Example::

        policy = UniformRemoval(UniformRemovalConfig(feature_dim=16, remove_prior=0.3))
        policy.sample(x, removable, m=5, generator=0).actions  # (5, L), REMOVE=1 / KEEP=0
    """

    kind = "removal"
    config_class = UniformRemovalConfig
    value = None  # no critic: nothing is learned

    def __init__(self, config: UniformRemovalConfig | None = None) -> None:
        super().__init__()
        self.config = config or UniformRemovalConfig()
        p = self.config.remove_prior
        self._logit = torch.tensor(math.log(p / (1.0 - p)))  # float32, as a fresh RemovalPolicy's head bias

    def logits(self, x: torch.Tensor, removable: torch.Tensor | None = None) -> torch.Tensor:
        """Remove-logit per layer, ``(L,)``; fixed layers get -inf (never removed)."""
        if x.dim() != 2 or x.shape[1] != self.config.feature_dim:
            raise ConfigError(f"policy input has shape {tuple(x.shape)}, expected (L, {self.config.feature_dim})")
        n = x.shape[0]
        removable = torch.ones(n, dtype=torch.bool) if removable is None else torch.as_tensor(removable).bool()
        return self._logit.expand(n).masked_fill(~removable, float("-inf"))  # (L,)

    def forward(self, x: torch.Tensor, removable: torch.Tensor | None = None) -> torch.Tensor:
        """P(remove) per layer, ``(L,)``; 0 for fixed layers."""
        return torch.sigmoid(self.logits(x, removable))

    def _score(self, z: torch.Tensor, actions: torch.Tensor) -> Rollout:
        """Scores of ``actions  # (m, L)`` under remove-logits ``z  # (L,)``."""
        m, n = actions.shape
        if n == 0:
            return Rollout.empty(m, False)
        removable = torch.isfinite(z)  # (L,)
        logp_remove, logp_keep = F.logsigmoid(z), F.logsigmoid(-z)  # (L,)
        p = torch.sigmoid(z)  # (L,)
        ent = -(p * logp_remove + (1.0 - p) * logp_keep)  # (L,)
        mask = removable.unsqueeze(0).expand(m, n)  # (m, L)
        zero = z.new_zeros(())
        log_probs = torch.where(mask, torch.where(actions == 1, logp_remove, logp_keep), zero)  # (m, L)
        return Rollout(actions, log_probs, torch.where(mask, ent.expand(m, n), zero), mask)

    def sample(self, x: torch.Tensor, removable: torch.Tensor | None = None, *, m: int = 1, generator=None) -> Rollout:
        """``m`` rollouts, actions ``(m, L)``: one uniform draw per layer, below P(remove) removes it."""
        if m < 1:
            raise ConfigError(f"m={m} rollouts; sample at least 1")
        z = self.logits(x, removable)  # (L,)
        if z.shape[0] == 0:
            return Rollout.empty(m, False)
        p = torch.sigmoid(z)  # (L,)
        u = torch.rand((m, z.shape[0]), generator=as_generator(generator), dtype=p.dtype)  # (m, L)
        return self._score(z, ((u < p) & torch.isfinite(z)).long())

    def greedy(self, x: torch.Tensor, removable: torch.Tensor | None = None) -> torch.Tensor:
        """REMOVE where P(remove) > 0.5, ``(L,)`` long."""
        return (self.logits(x, removable) > 0).long()

    def evaluate(self, x: torch.Tensor, removable: torch.Tensor | None = None, *, actions: torch.Tensor) -> Rollout:
        """Score stored ``actions  # (m, L)`` (no gradients: there is nothing to learn)."""
        z = self.logits(x, removable)
        actions = torch.as_tensor(actions).long()
        return self._score(z, actions.unsqueeze(0) if actions.dim() == 1 else actions)


@dataclass(frozen=True)
class UniformShrinkConfig:
    """Settings of a ``UniformShrink``."""

    feature_dim: int | None = None  # F, width of a step row (read only to check the input)
    ratios: tuple[float, ...] = RATIOS  # the ratio grid

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_dim", resolve_feature_dim(self.feature_dim))
        object.__setattr__(self, "ratios", tuple(float(r) for r in self.ratios))
        if not self.ratios:
            raise ConfigError("ratios is empty; give the ratio grid, e.g. 0.1 .. 1.0")


@register_policy("uniform")
class UniformShrink(nn.Module):
    """One ratio per shrink step, uniform over the step's legal ratios.

    Example::

        policy = UniformShrink(UniformShrinkConfig(feature_dim=16))
        policy.sample(x, variable, legal, m=5, generator=0).actions  # (5, T) ratio indices
    """

    kind = "shrink"
    config_class = UniformShrinkConfig
    value = None  # no critic: nothing is learned

    def __init__(self, config: UniformShrinkConfig | None = None) -> None:
        super().__init__()
        self.config = config or UniformShrinkConfig()

    def _log_probs(self, x: torch.Tensor, legal: torch.Tensor | None) -> torch.Tensor:
        """Log-probability of each ratio per step, ``(T, n)``: uniform over the legal ones, -inf elsewhere."""
        n = len(self.config.ratios)
        if x.dim() != 2 or x.shape[1] != self.config.feature_dim:
            raise ConfigError(f"shrink step input has shape {tuple(x.shape)}, expected (T, {self.config.feature_dim})")
        legal = torch.ones(x.shape[0], n, dtype=torch.bool) if legal is None else torch.as_tensor(legal).bool()
        if legal.shape != (x.shape[0], n) or not legal.any(dim=1).all():
            raise ConfigError(
                f"legal has shape {tuple(legal.shape)} or a step without a legal ratio; expected ({x.shape[0]}, {n})"
            )
        return torch.log_softmax(torch.zeros(legal.shape).masked_fill(~legal, float("-inf")), dim=-1)  # (T, n)

    def _score(self, logp: torch.Tensor, actions: torch.Tensor) -> Rollout:
        m = actions.shape[0]
        legal = torch.isfinite(logp)  # (T, n)
        safe = logp.masked_fill(~legal, 0.0)  # (T, n)
        entropy = -(safe.exp() * safe).sum(-1).expand(m, -1)  # (m, T)
        log_probs = safe.expand(m, -1, -1).gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (m, T)
        mask = (legal.sum(-1) > 1).expand(m, -1)  # (m, T): steps with a choice
        return Rollout(actions, log_probs, entropy, mask)

    def sample(self, x, variable, legal=None, *, m: int = 1, generator=None) -> Rollout:
        """``m`` rollouts, ``(m, T)``: per step, one multinomial draw over its legal ratios."""
        if m < 1:
            raise ConfigError(f"m={m} rollouts; sample at least 1")
        logp = self._log_probs(x, legal)  # (T, n)
        if logp.shape[0] == 0:
            return Rollout.empty(m, False)
        g = as_generator(generator)
        # step by step, each an (m, n) draw, as the shrink LSTM draws (the same generator calls)
        masked = torch.zeros(logp.shape).masked_fill(~torch.isfinite(logp), float("-inf"))  # (T, n)
        acts = [
            torch.multinomial(torch.softmax(masked[t].expand(m, -1).contiguous(), dim=-1), 1, generator=g).squeeze(1)
            for t in range(logp.shape[0])
        ]
        return self._score(logp, torch.stack(acts, dim=1))  # (m, T)

    def greedy(self, x, variable, legal=None) -> torch.Tensor:
        """The first legal ratio per step (all are equally likely), ``(T,)``."""
        return self._log_probs(x, legal).argmax(dim=-1)

    def evaluate(self, x, variable, legal=None, *, actions: torch.Tensor) -> Rollout:
        """Score stored ``actions  # (m, T)`` (no gradients: there is nothing to learn)."""
        actions = torch.as_tensor(actions).long()
        return self._score(self._log_probs(x, legal), actions.unsqueeze(0) if actions.dim() == 1 else actions)
