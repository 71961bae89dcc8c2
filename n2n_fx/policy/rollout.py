"""The record of m sampled (or re-scored) rollouts of a policy on one input."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import ConfigError
from ..features.features import FEATURE_DIM

__all__ = ["Rollout", "resolve_feature_dim", "as_generator"]


@dataclass(frozen=True)
class Rollout:
    """m rollouts of one policy on one input sequence of T steps.

    ``log_probs`` and ``entropy`` are 0 at steps where the policy had no choice (a fixed
    layer, or a shrink step with a single legal ratio), so sums over steps are the
    trajectory's log-probability and entropy.

    Example::

        ro = policy.sample(x, removable, m=5)
        ro.actions.shape  # (5, L)
        ro.log_prob       # (5,) log pi(a_1..a_T)
    """

    actions: torch.Tensor  # (m, T) long: REMOVE/KEEP per layer, or ratio index per shrink step
    log_probs: torch.Tensor  # (m, T) float: log pi(a_t | h_t); 0 at steps with no choice
    entropy: torch.Tensor  # (m, T) float: entropy of pi(. | h_t); 0 at steps with no choice
    mask: torch.Tensor  # (m, T) bool: steps where the policy made a choice
    values: torch.Tensor | None = None  # (m, T) float: critic's estimate of R per step, or None

    @property
    def log_prob(self) -> torch.Tensor:
        """Summed log-probability of each rollout, ``(m,)``."""
        return self.log_probs.sum(dim=-1)

    @property
    def m(self) -> int:
        """Number of rollouts."""
        return int(self.actions.shape[0])

    @property
    def steps(self) -> int:
        """Trajectory length T."""
        return int(self.actions.shape[1])

    @classmethod
    def empty(cls, m: int, with_values: bool) -> Rollout:
        """``m`` rollouts of zero steps (a teacher with no layer / shrink variable to act on)."""
        z = torch.zeros(m, 0)
        return cls(torch.zeros(m, 0, dtype=torch.long), z, z, z.bool(), z if with_values else None)

    def detach(self) -> Rollout:
        """The same rollout with every tensor cut from the autograd graph."""
        values = None if self.values is None else self.values.detach()
        return Rollout(self.actions, self.log_probs.detach(), self.entropy.detach(), self.mask, values)


def resolve_feature_dim(feature_dim: int | None) -> int:
    """``feature_dim`` itself, or ``n2n_fx.features.FEATURE_DIM`` when it is None."""
    if feature_dim is None:
        feature_dim = int(FEATURE_DIM)
    if int(feature_dim) <= 0:
        raise ConfigError(f"feature_dim={feature_dim} must be a positive int (width of a layer row)")
    return int(feature_dim)


def as_generator(generator: torch.Generator | int | None) -> torch.Generator | None:
    """A ``torch.Generator``: given as is, seeded from an int, or None (global RNG)."""
    if generator is None or isinstance(generator, torch.Generator):
        return generator
    return torch.Generator().manual_seed(int(generator))
