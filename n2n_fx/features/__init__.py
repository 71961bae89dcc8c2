"""Per-layer feature vectors: the paper's state x_t and a teacher-independent policy input."""

from .features import (
    FEATURE_DIM,
    N_SCALARS,
    RATIOS,
    RAW_COLUMNS,
    ShrinkStep,
    policy_input,
    raw_features,
    removal_mask,
    shrink_input,
    shrink_steps,
)

__all__ = [
    "FEATURE_DIM",
    "N_SCALARS",
    "RATIOS",
    "RAW_COLUMNS",
    "ShrinkStep",
    "policy_input",
    "raw_features",
    "removal_mask",
    "shrink_input",
    "shrink_steps",
]
