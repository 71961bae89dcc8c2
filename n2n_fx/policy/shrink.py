"""Layer-shrink policy: an autoregressive LSTM choosing a size ratio per configurable variable."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..errors import ConfigError
from .registry import register_policy
from .rollout import Rollout, as_generator, resolve_feature_dim

__all__ = ["ShrinkPolicyConfig", "ShrinkPolicy", "DEFAULT_RATIOS", "N_VARIABLES"]

DEFAULT_RATIOS = tuple(round(0.1 * i, 1) for i in range(1, 11))  # 0.1, 0.2, ..., 1.0 (paper)
N_VARIABLES = 4  # default variable vocabulary: 0 = output channels/features, 1 = kernel size, ...


@dataclass(frozen=True)
class ShrinkPolicyConfig:
    """Shape and initialisation of a ``ShrinkPolicy`` (nothing here depends on the teacher).

    Example::

        cfg = ShrinkPolicyConfig(feature_dim=16, ratios=(0.25, 0.5, 0.75, 1.0))
    """

    feature_dim: int | None = None  # F, width of a step row; None: n2n_fx.features.FEATURE_DIM
    hidden_size: int = 50  # LSTM units (paper: 50)
    num_layers: int = 2  # stacked LSTM layers (paper: 2)
    ratios: tuple[float, ...] = DEFAULT_RATIOS  # the action grid: fraction of a variable kept
    n_variables: int = N_VARIABLES  # size of the variable-id vocabulary (ids 0 .. n_variables-1)
    variable_dim: int = 8  # width of the variable-id embedding
    action_dim: int = 8  # width of the previous-action embedding (ratio index or start token)
    init_scale: float = 0.01  # std of the output head's initial weights (fresh policy ~ uniform)
    keep_bias: float = 0.0  # initial logit of ratio r is keep_bias * r (0: uniform; > 0: mild shrinks first)
    value_head: bool = False  # add a critic (fc on the LSTM state -> scalar) for actor-critic

    def __post_init__(self) -> None:
        object.__setattr__(self, "feature_dim", resolve_feature_dim(self.feature_dim))
        ratios = tuple(float(r) for r in self.ratios)
        object.__setattr__(self, "ratios", ratios)
        if not ratios or any(not 0.0 < r <= 1.0 for r in ratios) or len(set(ratios)) != len(ratios):
            raise ConfigError(f"ratios={ratios} must be distinct values in (0, 1]; e.g. 0.1 .. 1.0")
        for name in ("hidden_size", "num_layers", "n_variables", "variable_dim", "action_dim"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name}={getattr(self, name)} must be a positive int")
        if self.init_scale < 0:
            raise ConfigError(f"init_scale={self.init_scale} must be >= 0")

    @property
    def n_ratios(self) -> int:
        """Number of choices per step."""
        return len(self.ratios)


@register_policy("lstm")
class ShrinkPolicy(nn.Module):
    """pi_shrink(a_t | a_{t-1}, h_{t-1}, x_t): one ratio per configurable variable (§3.2.2).

    The trajectory has one step per configurable variable of each remaining layer. Step t
    feeds the LSTM (2 layers, 50 units) with the step's layer row ``x[t]``, an embedding of
    ``variable[t]`` and an embedding of the previous action (a start token at t=0); a linear
    head gives logits over ``config.ratios``, with ``legal[t] == False`` choices masked to
    -inf. A fresh policy is near-uniform over the legal ratios. Nothing depends on T.

    Example::

        policy = ShrinkPolicy(feature_dim=16)
        ro = policy.sample(x, variable, legal, m=5, generator=0)  # x (T, F), legal (T, 10)
        policy.ratio_of(ro.actions)  # (5, T) float ratios
        policy.greedy(x, variable, legal)  # (T,) ratio indices
    """

    kind = "shrink"
    config_class = ShrinkPolicyConfig

    def __init__(self, config: ShrinkPolicyConfig | None = None, **kwargs) -> None:
        super().__init__()
        if config is None:
            config = ShrinkPolicyConfig(**kwargs)
        elif kwargs:
            raise ConfigError(f"pass either a ShrinkPolicyConfig or keyword args, not both: {kwargs}")
        self.config = config
        n, h = config.n_ratios, config.hidden_size
        self.variable_embed = nn.Embedding(config.n_variables, config.variable_dim)
        self.action_embed = nn.Embedding(n + 1, config.action_dim)  # index n: start token
        in_dim = config.feature_dim + config.variable_dim + config.action_dim
        self.lstm = nn.LSTM(in_dim, h, num_layers=config.num_layers, batch_first=True)
        # the head sees the LSTM state and the step's own row: (h_t, x_t, variable_t)
        head_in = h + config.feature_dim + config.variable_dim
        self.head = nn.Linear(head_in, n)
        self.value = nn.Linear(head_in, 1) if config.value_head else None
        with torch.no_grad():
            nn.init.normal_(self.head.weight, std=config.init_scale)
            self.head.bias.copy_(config.keep_bias * torch.tensor(config.ratios))

    def feature_blocks(self) -> dict[str, int]:
        """Weights that read the feature row ``x_t``, and the input column where it starts."""
        h = self.config.hidden_size
        return {"lstm.weight_ih_l0": 0, "head.weight": h, "value.weight": h}

    @property
    def start_token(self) -> int:
        """Previous-action index fed at t = 0."""
        return self.config.n_ratios

    def ratio_of(self, actions: torch.Tensor) -> torch.Tensor:
        """Ratio values of action indices, same shape as ``actions``."""
        grid = torch.tensor(self.config.ratios, dtype=torch.float32)
        return grid[torch.as_tensor(actions).long()]

    # ---- inputs ----------------------------------------------------------------------------

    def _check(
        self, x: torch.Tensor, variable: torch.Tensor, legal: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        cfg = self.config
        if x.dim() != 2 or x.shape[1] != cfg.feature_dim:
            raise ConfigError(
                f"shrink step input has shape {tuple(x.shape)}, expected (T, {cfg.feature_dim}); "
                "build it with n2n_fx.features.shrink_steps"
            )
        x = x.to(self.head.weight.dtype)  # (T, F)
        steps = x.shape[0]
        variable = torch.as_tensor(variable).long()  # (T,)
        if variable.shape != (steps,):
            raise ConfigError(f"variable has shape {tuple(variable.shape)}, expected ({steps},)")
        if steps and (variable.min() < 0 or variable.max() >= cfg.n_variables):
            raise ConfigError(f"variable ids must be in 0..{cfg.n_variables - 1}; raise n_variables in the config")
        if legal is None:
            legal = torch.ones(steps, cfg.n_ratios, dtype=torch.bool)
        legal = torch.as_tensor(legal, dtype=torch.bool)  # (T, n)
        if legal.shape != (steps, cfg.n_ratios):
            raise ConfigError(f"legal has shape {tuple(legal.shape)}, expected ({steps}, {cfg.n_ratios})")
        if steps and not legal.any(dim=1).all():
            bad = int((~legal.any(dim=1)).nonzero()[0, 0])
            raise ConfigError(f"shrink step {bad} has no legal ratio; allow at least ratio 1.0")
        return x, variable, legal

    def _static(self, x: torch.Tensor, variable: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.variable_embed(variable)], dim=-1)  # (T, F + V)

    def _masked_log_softmax(self, out: torch.Tensor, legal: torch.Tensor) -> torch.Tensor:
        logits = self.head(out).masked_fill(~legal, float("-inf"))  # (m, T, n)
        return torch.log_softmax(logits, dim=-1)  # (m, T, n); -inf where illegal

    def _finish(
        self,
        actions: torch.Tensor,
        logp_all: torch.Tensor,
        out: torch.Tensor,
        legal: torch.Tensor,
    ) -> Rollout:
        m = actions.shape[0]
        safe = logp_all.masked_fill(~legal, 0.0)  # (m, T, n); no 0 * -inf in forward/backward
        entropy = -(safe.exp() * safe).masked_fill(~legal, 0.0).sum(-1)  # (m, T)
        log_probs = safe.gather(-1, actions.unsqueeze(-1)).squeeze(-1)  # (m, T)
        mask = (legal.sum(-1) > 1).unsqueeze(0).expand(m, -1)  # (m, T)
        values = self.value(out).squeeze(-1) if self.value is not None else None  # (m, T)
        return Rollout(actions, log_probs, entropy, mask, values)

    # ---- acting ----------------------------------------------------------------------------

    def sample(
        self,
        x: torch.Tensor,
        variable: torch.Tensor,
        legal: torch.Tensor | None = None,
        *,
        m: int = 1,
        generator: torch.Generator | int | None = None,
    ) -> Rollout:
        """Sample ``m`` rollouts at once (batched LSTM, one step per variable); ``(m, T)``.

        Runs under the ambient grad mode: wrap in ``torch.no_grad()`` when the log-probs
        are only stored (the learner re-scores them with ``evaluate``).
        """
        return self._decode(x, variable, legal, m=m, generator=generator, greedy=False)

    def greedy(self, x: torch.Tensor, variable: torch.Tensor, legal: torch.Tensor | None = None) -> torch.Tensor:
        """Most likely ratio index per step, fed back autoregressively; ``(T,)`` long."""
        with torch.no_grad():
            return self._decode(x, variable, legal, m=1, generator=None, greedy=True).actions[0]

    def _decode(self, x, variable, legal, *, m, generator, greedy) -> Rollout:
        if m < 1:
            raise ConfigError(f"m={m} rollouts; sample at least 1")
        x, variable, legal = self._check(x, variable, legal)
        g = as_generator(generator)
        steps = x.shape[0]
        if steps == 0:
            return Rollout.empty(m, self.value is not None)
        static = self._static(x, variable)  # (T, F + V)
        prev = torch.full((m,), self.start_token, dtype=torch.long)  # (m,)
        # one step at a time through the nn.LSTM's own weights (lstm_cell: ~2x faster per step)
        cells = [
            tuple(getattr(self.lstm, f"{w}_l{k}") for w in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))
            for k in range(self.config.num_layers)
        ]
        h = [static.new_zeros(m, self.config.hidden_size) for _ in cells]  # each (m, H)
        c = [static.new_zeros(m, self.config.hidden_size) for _ in cells]  # each (m, H)
        outs, actions = [], []
        for t in range(steps):
            inp = torch.cat([static[t].expand(m, -1), self.action_embed(prev)], dim=-1)  # (m, D)
            for k, weights in enumerate(cells):
                h[k], c[k] = torch.lstm_cell(inp, (h[k], c[k]), *weights)  # (m, H)
                inp = h[k]
            feats = torch.cat([inp, static[t].expand(m, -1)], dim=-1)  # (m, H + F + V)
            outs.append(feats)
            with torch.no_grad():
                logits = self.head(feats).masked_fill(~legal[t], float("-inf"))  # (m, n)
                if greedy:
                    prev = logits.argmax(dim=-1)  # (m,)
                else:
                    probs = torch.softmax(logits, dim=-1)  # (m, n)
                    if not torch.isfinite(probs).all():
                        raise ConfigError(
                            "the shrink policy has diverged: its probabilities are not finite; lower its lr"
                        )
                    prev = torch.multinomial(probs, 1, generator=g).squeeze(1)  # (m,)
            actions.append(prev)
        out = torch.stack(outs, dim=1)  # (m, T, H + F + V)
        acts = torch.stack(actions, dim=1)  # (m, T)
        return self._finish(acts, self._masked_log_softmax(out, legal), out, legal)

    def evaluate(
        self,
        x: torch.Tensor,
        variable: torch.Tensor,
        legal: torch.Tensor | None = None,
        *,
        actions: torch.Tensor,
    ) -> Rollout:
        """Re-score stored ``actions  # (m, T)`` (or ``(T,)``) in one teacher-forced pass."""
        x, variable, legal = self._check(x, variable, legal)
        actions = torch.as_tensor(actions).long()
        if actions.dim() == 1:
            actions = actions.unsqueeze(0)
        steps = x.shape[0]
        if actions.dim() != 2 or actions.shape[1] != steps:
            raise ConfigError(f"actions have shape {tuple(actions.shape)}, expected (m, {steps}): one per step")
        m = actions.shape[0]
        if steps == 0:
            return Rollout.empty(m, self.value is not None)
        if actions.min() < 0 or actions.max() >= self.config.n_ratios:
            raise ConfigError(f"shrink actions must be ratio indices in 0..{self.config.n_ratios - 1}")
        if not legal.gather(1, actions.t()).all():
            raise ConfigError("shrink actions pick an illegal ratio; they do not match this input")
        start = torch.full((m, 1), self.start_token, dtype=torch.long)
        prev = torch.cat([start, actions[:, :-1]], dim=1)  # (m, T)
        static = self._static(x, variable).unsqueeze(0).expand(m, -1, -1)  # (m, T, F + V)
        inp = torch.cat([static, self.action_embed(prev)], dim=-1)  # (m, T, D)
        out, _ = self.lstm(inp)  # (m, T, H)
        out = torch.cat([out, static], dim=-1)  # (m, T, H + F + V)
        return self._finish(actions, self._masked_log_softmax(out, legal), out, legal)

    def log_prob(
        self,
        x: torch.Tensor,
        variable: torch.Tensor,
        legal: torch.Tensor | None,
        actions: torch.Tensor,
    ) -> torch.Tensor:
        """Summed log-probability of each stored rollout, ``(m,)`` (with gradients)."""
        return self.evaluate(x, variable, legal, actions=actions).log_prob
