"""The N2N reward: compression (on params, FLOPs or latency) x relative accuracy, constraints, measurements, a cache;
reward functions by name (``registry``: ``paper``, ``accuracy_squared``, ``register_reward``)."""

from .accuracy_squared import accuracy_squared
from .cache import CACHE_FORMAT, RewardCache, arch_hash, arch_signature
from .constraints import (
    PENALTY_MODES,
    QUANTITIES,
    SCHEDULES,
    Constraints,
    LinearConstraint,
    Penalty,
)
from .evaluator import REWARD_MODES, RewardEvaluator, RewardRecord
from .formula import DEGENERATE_REWARD, compression, n2n_reward
from .measure import (
    Measurement,
    count_flops,
    count_params,
    latency_ms,
    measure,
    peak_activation_bytes,
)
from .objective import OBJECTIVES, Objective
from .registry import DEFAULT_REWARD, RewardFn, register_reward, reward_function, reward_name, reward_names

__all__ = [
    "CACHE_FORMAT",
    "DEFAULT_REWARD",
    "DEGENERATE_REWARD",
    "PENALTY_MODES",
    "QUANTITIES",
    "SCHEDULES",
    "Constraints",
    "LinearConstraint",
    "Measurement",
    "OBJECTIVES",
    "Objective",
    "Penalty",
    "RewardCache",
    "RewardFn",
    "REWARD_MODES",
    "RewardEvaluator",
    "RewardRecord",
    "accuracy_squared",
    "arch_hash",
    "arch_signature",
    "compression",
    "count_flops",
    "count_params",
    "latency_ms",
    "measure",
    "n2n_reward",
    "peak_activation_bytes",
    "register_reward",
    "reward_function",
    "reward_name",
    "reward_names",
]
