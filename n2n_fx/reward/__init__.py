"""The N2N reward: compression (on params, FLOPs or latency) x relative accuracy, constraints, measurements, a cache."""

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

__all__ = [
    "CACHE_FORMAT",
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
    "REWARD_MODES",
    "RewardEvaluator",
    "RewardRecord",
    "arch_hash",
    "arch_signature",
    "compression",
    "count_flops",
    "count_params",
    "latency_ms",
    "measure",
    "n2n_reward",
    "peak_activation_bytes",
]
