"""Layer-removal policy: a bidirectional LSTM over the teacher's layers, keep/remove per layer."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError
from .registry import register_policy
from .rollout import Rollout, as_generator, resolve_feature_dim

__all__ = ["RemovalPolicyConfig", "RemovalPolicy", "KEEP", "REMOVE"]

KEEP = 0  # action code: the layer stays
REMOVE = 1  # action code: the layer is removed


@dataclass(frozen=True)
class RemovalPolicyConfig:
    """Shape and initialisation of a ``RemovalPolicy`` (nothing here depends on the teacher).

    Example::

        cfg = RemovalPolicyConfig(feature_dim=16, remove_prior=0.3)
    """

    feature_dim: int | None = None  # F, width of a layer row; None: n2n_fx.features.FEATURE_DIM
    hidden_size: int = 30  # LSTM units per direction (paper: 30)
    num_layers: int = 2  # stacked BiLSTM layers (paper: 2)
    remove_prior: float = 0.5  # P(remove) of a fresh policy on each removable layer
    init_scale: float = 0.01  # std of the output head's initial weights (small: prior dominates)
    value_head: bool = False  # add a critic (fc on the LSTM state -> scalar) for actor-critic

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_dim", resolve_feature_dim(self.feature_dim))
        if self.hidden_size <= 0 or self.num_layers <= 0:
            raise ConfigError(f"hidden_size={self.hidden_size}, num_layers={self.num_layers} must be positive")
        if not 0.0 < self.remove_prior < 1.0:
            raise ConfigError(f"remove_prior={self.remove_prior} must be strictly between 0 and 1")
        if self.init_scale < 0:
            raise ConfigError(f"init_scale={self.init_scale} must be >= 0")


@register_policy("bilstm")
class RemovalPolicy(nn.Module):
    """pi_remove(a_t | h_{t-1}, h_{t+1}, x_t): keep or remove each layer (paper §3.2.1).

    A 2-layer bidirectional LSTM (30 units) reads the per-layer rows ``x  # (L, F)``; a linear
    head gives one remove-logit per layer (a Bernoulli). A fresh policy removes each removable
    layer with probability ``config.remove_prior`` (default 0.5: a uniformly random policy,
    as in the paper), up to a jitter of a few % from the small random head weights. The head
    sees both LSTM directions and the layer's own row, as in pi(a_t | h_{t-1}, h_{t+1}, x_t). Layers with
    ``removable[l] == False`` are always kept and add no log-prob, entropy or gradient.
    Nothing depends on L, so a policy trained on one teacher runs on another (transfer).

    Example::

        policy = RemovalPolicy(feature_dim=16)
        ro = policy.sample(x, removable, m=5, generator=torch.Generator().manual_seed(0))
        ro.actions  # (5, L) long, REMOVE=1 / KEEP=0
        policy.greedy(x, removable)  # (L,) long
    """

    kind = "removal"
    config_class = RemovalPolicyConfig

    def __init__(self, config: RemovalPolicyConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = RemovalPolicyConfig(**kwargs)
        elif kwargs:
            raise ConfigError(f"pass either a RemovalPolicyConfig or keyword args, not both: {kwargs}")
        self.config = config
        h = config.hidden_size
        self.lstm = nn.LSTM(
            config.feature_dim,
            h,
            num_layers=config.num_layers,
            batch_first=True,
            bidirectional=True,
        )
        # the head sees both directions' states and the layer's own row: (h_{t-1}, h_{t+1}, x_t)
        self.head = nn.Linear(2 * h + config.feature_dim, 1)
        self.value = nn.Linear(2 * h + config.feature_dim, 1) if config.value_head else None
        with torch.no_grad():
            nn.init.normal_(self.head.weight, std=config.init_scale)
            p = config.remove_prior
            self.head.bias.fill_(math.log(p / (1.0 - p)))

    def feature_blocks(self) -> dict[str, int]:
        """Weights that read the feature row ``x_t``, and the input column where it starts."""
        h = self.config.hidden_size
        return {"lstm.weight_ih_l0": 0, "lstm.weight_ih_l0_reverse": 0, "head.weight": 2 * h, "value.weight": 2 * h}

    # ---- inputs ----------------------------------------------------------------------------

    def _check(self, x: torch.Tensor, removable: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        if x.dim() != 2 or x.shape[1] != self.config.feature_dim:
            raise ConfigError(
                f"policy input has shape {tuple(x.shape)}, expected (L, {self.config.feature_dim}); "
                "build it with n2n_fx.features.policy_input"
            )
        x = x.to(self.head.weight.dtype)  # (L, F)
        if removable is None:
            removable = torch.ones(x.shape[0], dtype=torch.bool)
        removable = torch.as_tensor(removable, dtype=torch.bool)
        if removable.shape != (x.shape[0],):
            raise ConfigError(f"removable has shape {tuple(removable.shape)}, expected ({x.shape[0]},): one per layer")
        return x, removable

    def _trunk(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(x.unsqueeze(0))  # (1, L, 2H)
        return torch.cat([out[0], x], dim=-1)  # (L, 2H + F)

    # ---- distribution ----------------------------------------------------------------------

    def logits(self, x: torch.Tensor, removable: torch.Tensor | None = None) -> torch.Tensor:
        """Remove-logit per layer, ``(L,)``; fixed layers get -inf (never removed)."""
        x, removable = self._check(x, removable)
        if x.shape[0] == 0:
            return x.new_zeros(0)
        z = self.head(self._trunk(x)).squeeze(-1)  # (L,)
        return z.masked_fill(~removable, float("-inf"))

    def forward(self, x: torch.Tensor, removable: torch.Tensor | None = None) -> torch.Tensor:
        """P(remove) per layer, ``(L,)``; 0 for fixed layers."""
        return torch.sigmoid(self.logits(x, removable))

    def _score(self, feats: torch.Tensor, z: torch.Tensor, removable: torch.Tensor, actions: torch.Tensor) -> Rollout:
        """Scores of ``actions  # (m, L)`` from trunk features and remove-logits ``z  # (L,)``."""
        m, n = actions.shape
        logp_remove = F.logsigmoid(z)  # (L,)
        logp_keep = F.logsigmoid(-z)  # (L,)
        p = torch.sigmoid(z)  # (L,)
        ent = -(p * logp_remove + (1.0 - p) * logp_keep)  # (L,)
        mask = removable.unsqueeze(0).expand(m, n)  # (m, L)
        logp = torch.where(actions == REMOVE, logp_remove, logp_keep)  # (m, L)
        zero = logp.new_zeros(())
        log_probs = torch.where(mask, logp, zero)  # (m, L)
        entropy = torch.where(mask, ent.unsqueeze(0).expand(m, n), zero)  # (m, L)
        values = None
        if self.value is not None:
            values = self.value(feats).squeeze(-1).unsqueeze(0).expand(m, n)  # (m, L)
        return Rollout(actions, log_probs, entropy, mask, values)

    # ---- acting ----------------------------------------------------------------------------

    def sample(
        self,
        x: torch.Tensor,
        removable: torch.Tensor | None = None,
        *,
        m: int = 1,
        generator: torch.Generator | int | None = None,
    ) -> Rollout:
        """Sample ``m`` independent rollouts at once; actions ``(m, L)``, fixed layers KEEP.

        Runs under the ambient grad mode: wrap in ``torch.no_grad()`` when the log-probs
        are only stored (the learner re-scores them with ``evaluate``).
        """
        if m < 1:
            raise ConfigError(f"m={m} rollouts; sample at least 1")
        x, removable = self._check(x, removable)
        g = as_generator(generator)
        n = x.shape[0]
        if n == 0:
            return Rollout.empty(m, self.value is not None)
        feats = self._trunk(x)  # (L, 2H + F)
        z = self.head(feats).squeeze(-1)  # (L,)
        p = torch.sigmoid(z.detach())  # (L,)
        u = torch.rand((m, n), generator=g, dtype=p.dtype)  # (m, L)
        actions = ((u < p) & removable).long()  # (m, L)
        return self._score(feats, z, removable, actions)

    def greedy(self, x: torch.Tensor, removable: torch.Tensor | None = None) -> torch.Tensor:
        """Most likely action per layer, ``(L,)`` long: REMOVE where P(remove) > 0.5."""
        with torch.no_grad():
            return (self.logits(x, removable) > 0).long()

    def evaluate(self, x: torch.Tensor, removable: torch.Tensor | None = None, *, actions: torch.Tensor) -> Rollout:
        """Re-score stored ``actions  # (m, L)`` (or ``(L,)``) with gradients: a ``Rollout``."""
        x, removable = self._check(x, removable)
        actions = torch.as_tensor(actions).long()
        if actions.dim() == 1:
            actions = actions.unsqueeze(0)
        if actions.dim() != 2 or actions.shape[1] != x.shape[0]:
            raise ConfigError(f"actions have shape {tuple(actions.shape)}, expected (m, {x.shape[0]}): one per layer")
        if ((actions != KEEP) & (actions != REMOVE)).any():
            raise ConfigError("removal actions must be KEEP=0 or REMOVE=1")
        if (actions[:, ~removable] == REMOVE).any():
            raise ConfigError("actions remove a fixed layer (removable=False); keep fixed layers")
        if actions.shape[1] == 0:
            return Rollout.empty(actions.shape[0], self.value is not None)
        feats = self._trunk(x)  # (L, 2H + F)
        return self._score(feats, self.head(feats).squeeze(-1), removable, actions)

    def log_prob(self, x: torch.Tensor, removable: torch.Tensor | None, actions: torch.Tensor) -> torch.Tensor:
        """Summed log-probability of each stored rollout, ``(m,)`` (with gradients)."""
        return self.evaluate(x, removable, actions=actions).log_prob
