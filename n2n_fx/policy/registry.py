"""Policies by name: a search stage samples from the policy its config names.

A policy is an ``nn.Module`` class that decides one kind of action (``kind``: ``"removal"``, keep or
remove each layer; ``"shrink"``, a ratio per shrink variable) from the inputs the stage gives it, and
holds its settings in a frozen dataclass ``config`` (of its class's ``config_class``), so it can be
saved as plain data and rebuilt (``policy.checkpoint``). ``@register_policy(name)`` makes it
selectable: ``SearchConfig.removal_policy_type`` / ``shrink_policy_type`` name it, and a search
builds it with ``make_policy`` from the run's ``PolicySettings`` (its config takes the settings it
declares a field for). The paper's policies are ``bilstm`` (removal) and ``lstm`` (shrink); ``uniform``
(both kinds) draws every legal action uniformly (removal: with the removal prior) and learns nothing:
random search's policy.

What a policy class provides (the ``Policy`` protocol; ``RemovalPolicy`` and ``UniformRemoval`` are
examples)::

    kind = "removal"                        # or "shrink"
    config_class = MyConfig                 # frozen dataclass; MyPolicy(MyConfig(...)) builds it
    def sample(self, **inputs, m, generator) -> Rollout     # m rollouts, actions (m, T)
    def evaluate(self, **inputs, actions) -> Rollout        # re-scored with gradients
    def greedy(self, **inputs) -> Tensor                    # (T,) most likely actions
    value: nn.Module | None                 # a critic head, for actor-critic (None: none)
    def feature_blocks(self) -> dict[str, int]  # optional: weights that read x, by first column
                                            # (a policy saved before a new feature column loads)

removal inputs are ``x  # (L, F), removable  # (L,)``; shrink inputs ``x  # (T, F), variable  # (T,),
legal  # (T, n_ratios)``. A policy without trainable parameters learns nothing (``Learner`` records
its rewards only).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Protocol

import torch
from torch import nn

from ..errors import ConfigError
from ..features import RATIOS
from .rollout import Rollout

__all__ = [
    "DEFAULT_POLICIES",
    "POLICY_KINDS",
    "Policy",
    "PolicySettings",
    "make_policy",
    "policy_class",
    "policy_name",
    "policy_names",
    "register_policy",
]

POLICY_KINDS = ("removal", "shrink")  # what a policy decides: which layers go / a ratio per shrink variable
DEFAULT_POLICIES = {"removal": "bilstm", "shrink": "lstm"}  # the paper's (§3.2.1, §3.2.2)


class Policy(Protocol):
    """What a search and a ``Learner`` use of a policy (see the module docstring)."""

    kind: str  # "removal" or "shrink"
    config: Any  # a frozen dataclass of its settings
    value: nn.Module | None  # critic head (actor-critic), or None

    def sample(self, *args: Any, m: int = 1, generator: torch.Generator | int | None = None) -> Rollout: ...
    def evaluate(self, *args: Any, actions: torch.Tensor) -> Rollout: ...
    def greedy(self, *args: Any) -> torch.Tensor: ...
    def parameters(self, recurse: bool = True) -> Any: ...
    def state_dict(self, *args: Any, **kwargs: Any) -> dict[str, Any]: ...


@dataclass(frozen=True)
class PolicySettings:
    """What a search tells a fresh policy; ``make_policy`` passes each to the policy's config if it has that field."""

    feature_dim: int  # F, width of a layer / step row (n2n_fx.features.FEATURE_DIM)
    remove_prior: float = 0.5  # removal: P(remove) of a fresh policy on each removable layer
    ratios: tuple[float, ...] = RATIOS  # shrink: the ratio grid (fraction of a variable kept)
    keep_bias: float = 0.0  # shrink: initial logit slope over the ratios (0: uniform)
    value_head: bool = False  # a critic head, for actor-critic


_POLICIES: dict[tuple[str, str], type[nn.Module]] = {}  # (kind, name) -> class
_NAMES: dict[type[nn.Module], str] = {}  # class -> name


def register_policy(name: str):
    """Class decorator: make a policy class selectable by ``name`` for its ``kind``; a second registration raises.

    Example::

        @register_policy("greedy_l1")
        class L1Removal(nn.Module):
            kind = "removal"
            config_class = L1RemovalConfig
            ...
        SearchConfig(removal_policy_type="greedy_l1")
    """

    def register(cls: type[nn.Module]) -> type[nn.Module]:
        kind = getattr(cls, "kind", None)
        if kind not in POLICY_KINDS:
            raise ConfigError(f"policy class {cls.__name__} has kind {kind!r}; give it kind = one of {POLICY_KINDS}")
        config_class = getattr(cls, "config_class", None)
        if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
            raise ConfigError(f"policy class {cls.__name__} needs config_class, the dataclass of its settings")
        if (kind, name) in _POLICIES:
            raise ConfigError(
                f"a {kind} policy named {name!r} is already registered ({_POLICIES[kind, name].__name__})"
            )
        if cls in _NAMES:
            raise ConfigError(f"{cls.__name__} is already registered as {_NAMES[cls]!r}")
        _POLICIES[kind, name] = cls
        _NAMES[cls] = name
        return cls

    return register


def policy_names(kind: str) -> tuple[str, ...]:
    """The registered policies of ``kind``, in registration order."""
    return tuple(n for k, n in _POLICIES if k == kind)


def policy_class(kind: str, name: str) -> type[nn.Module]:
    """The policy class registered as ``name`` for ``kind`` (ConfigError, one line, naming the choices)."""
    cls = _POLICIES.get((kind, name))
    if cls is None:
        raise ConfigError(f"unknown {kind} policy {name!r}; registered: {', '.join(policy_names(kind))}")
    return cls


def policy_name(policy: nn.Module) -> str:
    """The name ``policy``'s class is registered under (ConfigError if it is not registered)."""
    name = _NAMES.get(type(policy))
    if name is None:
        raise ConfigError(
            f"{type(policy).__name__} is not a registered policy; decorate it with @register_policy(name)"
        )
    return name


def make_policy(kind: str, name: str, settings: PolicySettings) -> nn.Module:
    """A fresh ``name`` policy of ``kind``; its config takes the ``settings`` it has a field for.

    Example:
        >>> make_policy("removal", "uniform", PolicySettings(feature_dim=16, remove_prior=0.3)).config.remove_prior
        0.3
    """
    cls = policy_class(kind, name)
    wanted = {f.name for f in dataclasses.fields(cls.config_class)}
    given = {k: v for k, v in dataclasses.asdict(settings).items() if k in wanted}
    return cls(cls.config_class(**given))
