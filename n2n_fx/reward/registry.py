"""Reward functions by name: the formula that turns a student's accuracy and compression into its reward.

A reward function takes ``(accuracy, teacher_accuracy, compression, chance)`` — the student's
validation accuracy, the teacher's, the compression ``C = 1 − student/teacher`` on the run's
objective (params, FLOPs or latency) and the accuracy that counts as guessing (0 with
``reward_accuracy="ratio"``) — and returns the raw reward, before constraints. ``RewardEvaluator``
floors it at −1 (no student scores below a degenerate one) and refuses a value that is not finite.
``@register_reward(name)`` makes it selectable (``SearchConfig.reward_fn``,
``RewardEvaluator(reward_fn=name)``); ``paper`` (``formula.n2n_reward``) is the default.
"""

from __future__ import annotations

from typing import Protocol

from ..errors import ConfigError

__all__ = ["DEFAULT_REWARD", "RewardFn", "register_reward", "reward_function", "reward_name", "reward_names"]

DEFAULT_REWARD = "paper"  # R = C(2 − C) · R_a (paper §3.3)


class RewardFn(Protocol):
    """A reward function: the raw reward of one student (see the module docstring)."""

    def __call__(self, accuracy: float, teacher_accuracy: float, compression: float, chance: float) -> float: ...


_REWARDS: dict[str, RewardFn] = {}
_NAMES: dict[RewardFn, str] = {}


def register_reward(name: str):
    """Decorator: make a reward function selectable by ``name``; a second registration raises.

    Example::

        @register_reward("compression_only")
        def compression_only(accuracy, teacher_accuracy, compression, chance):
            return compression if accuracy > chance else 0.0
        SearchConfig(reward_fn="compression_only")
    """

    def register(fn: RewardFn) -> RewardFn:
        if name in _REWARDS:
            raise ConfigError(f"a reward function named {name!r} is already registered")
        if fn in _NAMES:
            raise ConfigError(f"{getattr(fn, '__name__', fn)!r} is already registered as {_NAMES[fn]!r}")
        _REWARDS[name] = fn
        _NAMES[fn] = name
        return fn

    return register


def reward_names() -> tuple[str, ...]:
    """The registered reward functions, in registration order."""
    return tuple(_REWARDS)


def reward_function(name: str) -> RewardFn:
    """The reward function registered as ``name`` (ConfigError, one line, naming the choices)."""
    fn = _REWARDS.get(name)
    if fn is None:
        raise ConfigError(f"unknown reward function {name!r}; registered: {', '.join(_REWARDS)}")
    return fn


def reward_name(fn: RewardFn) -> str:
    """The name ``fn`` is registered under (ConfigError if it is not: a run records its reward by name)."""
    name = _NAMES.get(fn)
    if name is None:
        raise ConfigError(
            f"reward function {getattr(fn, '__name__', fn)!r} is not registered; decorate it with @register_reward(name)"
        )
    return name
